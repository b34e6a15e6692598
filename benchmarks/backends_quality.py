"""Quality and speed of the distilled student under each encoding backend, measured in one run.

    nice -n 10 python benchmarks/backends_quality.py                     # ~15 min on 2 shared cores
    python benchmarks/backends_quality.py --model runs/msmarco-sample/student/model --backends onnx,onnx-int8

On the sample (``data/msmarco-dl-5k``: 5,000 passages, its test queries and qrels) each side encodes the whole
corpus (timed: wall and process CPU seconds), the queries are encoded one at a time and searched in an exact
FAISS flat index (ms per query, median of two rounds), and the run is scored with the project's evaluation
(nDCG@10, Recall@100 over the judged queries). Sides:

* ``sentence-transformers``: ``SentenceTransformer.encode`` on the torch model (fp32), the reference speed;
* ``torch``: the encoding engine (``encode_texts``) on the same torch model;
* ``onnx``, ``onnx-int8``, ``openvino``, ``openvino-bf16``: the engine on the model compiled by
  :mod:`retrdistill.encoding.backends`, loaded as the product loads it (``load_encoder(ref, backend)``).

Each backend's embeddings are compared with torch's (min cosine, max abs difference) and its top-10 with
torch's (overlap). The acceptance of the throughput issue is checked per side: at least 2x the encode
throughput of sentence-transformers (per CPU second; wall too) at a loss of at most 0.5 nDCG@10 points
against fp32 torch. The student is ``runs/msmarco-sample/student/model`` (train it with
``retrdistill run pipelines/msmarco-sample.yaml`` first). The JSON goes atomically to
``benchmarks/results/backends-quality-cpu.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

log = logging.getLogger("benchmarks.backends_quality")

ST = "sentence-transformers"
TARGET_RATIO = 2.0
TARGET_LOSS_POINTS = 0.5


def load_sample(folder: Path) -> tuple[list[str], list[str], dict[str, str], dict[str, dict[str, int]]]:
    """(doc ids, passage texts as the product encodes them, queries, qrels) of a BEIR-format folder."""
    from retrdistill.data.beir import load_qrels, load_queries, passage_text

    ids, texts = [], []
    # not splitlines(): passage texts contain U+0085 and U+2028
    for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n"):
        doc = json.loads(line)
        ids.append(doc["_id"])
        texts.append(passage_text(doc.get("title", ""), doc["text"]))
    queries, _ = load_queries(folder / "queries.jsonl")
    qrels, _ = load_qrels(folder / "qrels" / "test.tsv")
    return ids, texts, queries, qrels


def timed(fn) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def measure(name: str, model, texts: list[str], ids: list[str], queries: dict[str, str], batch_size: int,
            depth: int) -> dict[str, Any]:
    """One side: the corpus encoded (timed), the queries encoded one by one and searched (timed), the run."""
    import faiss

    from retrdistill.encoding.engine import encode_texts

    def encode(batch: list[str], bs: int) -> np.ndarray:
        if name == ST:
            return np.asarray(model.encode(batch, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True,
                                           show_progress_bar=False), dtype=np.float32)
        return encode_texts(model, batch, batch_size=bs, normalize=True)

    encode(texts[:16], batch_size)  # warm-up (thread pools, first-call allocation)
    emb, wall, cpu = timed(lambda: encode(texts, batch_size))
    log.info("%-22s corpus: %d passages in %.1fs wall, %.1fs cpu", name, len(texts), wall, cpu)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(np.ascontiguousarray(emb))
    qids = list(queries)
    rounds, cpu_rounds = [], []
    for _ in range(2):
        started, cpu_started = time.perf_counter(), time.process_time()
        q_emb = np.concatenate([encode([queries[q]], 1) for q in qids])
        scores, rows = index.search(q_emb, depth)
        rounds.append(1000 * (time.perf_counter() - started) / len(qids))
        cpu_rounds.append(1000 * (time.process_time() - cpu_started) / len(qids))
    run = {q: {ids[r]: float(s) for s, r in zip(srow, rrow) if r >= 0} for q, srow, rrow in zip(qids, scores, rows)}
    return {"embeddings": emb, "run": run, "wall_s": wall, "cpu_s": cpu,
            "passages_per_s": len(texts) / wall, "passages_per_cpu_s": len(texts) / cpu if cpu > 0 else None,
            "ms_per_query": statistics.median(rounds), "ms_per_query_rounds": rounds,
            "cpu_ms_per_query": statistics.median(cpu_rounds)}


def top_overlap(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], k: int = 10) -> float:
    def top(run: dict[str, float]) -> set[str]:
        return set(sorted(run, key=lambda d: -run[d])[:k])

    return float(np.mean([len(top(a[q]) & top(b[q])) / k for q in a]))


def summarise(sides: dict[str, dict[str, Any]], qrels, model_dir: Path, reference, args, n_passages: int,
              n_queries: int, skipped: dict[str, str], started: float) -> dict[str, Any]:
    """The JSON of the sides measured so far (written after each side, so a killed run keeps what it measured)."""
    import torch

    from retrdistill.artefacts import library_versions, read_manifest, write_json_atomic
    from retrdistill.evaluation.metrics import evaluate
    from retrdistill.stages.base import VERSIONED

    ref = sides.get("torch")
    st = sides.get(ST)
    results: dict[str, Any] = {}
    for name, side in sides.items():
        res = evaluate(qrels, side["run"], ["ndcg@10", "recall@100"])
        row = {k: v for k, v in side.items() if k not in ("embeddings", "run")}
        row.update(ndcg_at_10=res.mean["ndcg@10"], recall_at_100=res.mean["recall@100"], n_queries=res.n_queries)
        if ref is not None:
            emb, ref_emb = side["embeddings"], ref["embeddings"]
            cos = (emb * ref_emb).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref_emb, axis=1) + 1e-12)
            ref_ndcg = evaluate(qrels, ref["run"], ["ndcg@10"]).mean["ndcg@10"]
            row.update(cosine_vs_torch_min=float(cos.min()), max_abs_diff_vs_torch=float(np.abs(emb - ref_emb).max()),
                       top10_overlap_vs_torch=top_overlap(side["run"], ref["run"]),
                       ndcg_at_10_loss_points_vs_torch=100 * (ref_ndcg - row["ndcg_at_10"]))
        if st is not None:
            row["ratio_wall_vs_sentence_transformers"] = side["passages_per_s"] / st["passages_per_s"]
            row["ratio_cpu_vs_sentence_transformers"] = (side["passages_per_cpu_s"] / st["passages_per_cpu_s"]
                                                         if side["passages_per_cpu_s"] and st["passages_per_cpu_s"]
                                                         else None)
        if "ratio_cpu_vs_sentence_transformers" in row and "ndcg_at_10_loss_points_vs_torch" in row:
            row["meets_target"] = bool((row["ratio_cpu_vs_sentence_transformers"] or 0) >= TARGET_RATIO
                                       and row["ratio_wall_vs_sentence_transformers"] >= TARGET_RATIO
                                       and row["ndcg_at_10_loss_points_vs_torch"] <= TARGET_LOSS_POINTS)
        results[name] = row
    manifest = read_manifest(model_dir.parent)
    out = {
        "benchmark": "backends_quality",
        "model": str(model_dir.relative_to(ROOT) if model_dir.is_relative_to(ROOT) else model_dir),
        "model_manifest": manifest.fingerprint if manifest is not None else None,
        "max_seq_length": int(reference.max_seq_length),
        "collection": str(Path(args.collection).name),
        "passages": n_passages,
        "queries": n_queries,
        "batch_size": args.batch_size,
        "target": {"ratio_vs_sentence_transformers": TARGET_RATIO, "max_ndcg_at_10_loss_points": TARGET_LOSS_POINTS,
                   "ratio_on": "both wall and process-CPU passages/s"},
        "sides": results,
        "skipped": skipped,
        "device": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                   "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                   "load_average_now": os.getloadavg()},
        "versions": library_versions(*VERSIONED, "onnxruntime", "openvino"),
        "seconds_total": time.perf_counter() - started,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs" / "msmarco-sample" / "student" / "model"))
    p.add_argument("--collection", default=str(ROOT / "data" / "msmarco-dl-5k"))
    p.add_argument("--backends", default="onnx-int8,openvino-bf16,onnx,openvino")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--n-passages", type=int, default=0, help="encode only the first N passages (0: all)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "backends-quality-cpu.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from retrdistill.encoding.backends import available_backends, backend_info, load_encoder, output_key

    model_dir = Path(args.model)
    if not (model_dir / "modules.json").is_file():
        raise SystemExit(f"{model_dir}: no trained student; run `retrdistill run pipelines/msmarco-sample.yaml` first")
    ids, texts, queries, qrels = load_sample(Path(args.collection))
    if args.n_passages:
        ids, texts = ids[: args.n_passages], texts[: args.n_passages]
    started = time.perf_counter()

    reference = load_encoder(str(model_dir), "torch", device="cpu")
    sides: dict[str, dict[str, Any]] = {}
    for name in (ST, "torch"):
        sides[name] = measure(name, reference, texts, ids, queries, args.batch_size, args.depth)
        sides[name]["backend"] = {"backend": "torch"}
        summarise(sides, qrels, model_dir, reference, args, len(texts), len(queries), {}, started)
    have = available_backends()
    skipped = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if not have.get(backend):
            skipped[backend] = "runtime not installed"
            continue
        model, load_wall, _ = timed(lambda b=backend: load_encoder(str(model_dir), b, device="cpu"))
        sides[backend] = measure(backend, model, texts, ids, queries, args.batch_size, args.depth)
        sides[backend].update(backend=backend_info(model), load_and_compile_s=load_wall,
                              changes_fingerprints=output_key(backend) is not None)
        del model
        summarise(sides, qrels, model_dir, reference, args, len(texts), len(queries), skipped, started)

    out = summarise(sides, qrels, model_dir, reference, args, len(texts), len(queries), skipped, started)
    results = out["sides"]
    width = max(map(len, results))
    log.info("%s  nDCG@10  R@100  psg/s  psg/cpu-s  x ST(cpu)  ms/query  target", "side".ljust(width))
    for name, row in results.items():
        log.info("%s  %.4f  %.4f  %6.1f  %8.1f  %8.2f  %8.2f  %s", name.ljust(width), row["ndcg_at_10"],
                 row["recall_at_100"], row["passages_per_s"], row["passages_per_cpu_s"] or 0,
                 row["ratio_cpu_vs_sentence_transformers"] or 0, row["ms_per_query"],
                 "yes" if row["meets_target"] else "no")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
