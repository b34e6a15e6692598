"""Throughput of the encoding engine against sentence-transformers, and of exact search against FAISS.

    nice -n 19 python benchmarks/throughput.py                                   # CPU default, ~5 min on 2 cores
    python benchmarks/throughput.py --device cuda --n-passages 20000 --model offline:all-mpnet-base-v2
    python benchmarks/throughput.py --backend onnx,onnx-int8,openvino,openvino-bf16   # + CPU fast paths

Everything is timed in one process on one device, with the same model object, precision, max length,
batch size and texts on both sides:

* encode: ``SentenceTransformer.encode`` vs ``retrdistill.encoding.engine.encode_texts`` on real MS MARCO
  passages (``data/msmarco-dl-5k/corpus.jsonl``, repeated when more are asked for);
* extra backends (``--backend``): ``encode_texts`` on the model compiled by
  ``retrdistill.encoding.backends``, compared with the fp32 torch embeddings (cosine, max abs diff);
* cross-encoder: ``CrossEncoder.predict`` vs ``score_pairs`` on (real query, real passage) pairs, with a
  cross-encoder built from the same encoder checkpoint plus a fresh 1-logit head (no relevance-trained
  cross-encoder is available offline; speed and equality do not depend on the head);
* search: ``exact_search`` vs ``faiss.IndexFlatIP.search`` (raw FAISS, same threads) on normalised vectors.

Each measurement: one warm-up on a small slice, then ``--repeats`` timed runs, sides interleaved and their
order alternated; medians of wall time and of process CPU time (the second is steadier on a shared machine).
The JSON goes atomically to ``benchmarks/results/throughput-<device>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

log = logging.getLogger("benchmarks.throughput")

CORPUS_CANDIDATES = (
    ROOT / "data" / "msmarco-dl-5k",
    ROOT.parent / "shared" / "data" / "msmarco-dl-5k",
    Path("/work/shared/data/msmarco-dl-5k"),
)


# ------------------------------------------------------------------------------------------------ data
def collection_dir() -> Path:
    for folder in CORPUS_CANDIDATES:
        if (folder / "corpus.jsonl").is_file():
            return folder
    raise SystemExit("no msmarco-dl-5k corpus found in: " + ", ".join(map(str, CORPUS_CANDIDATES)))


def read_jsonl_texts(path: Path) -> list[str]:
    # not splitlines(): passage texts contain U+0085 and U+2028
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    return [json.loads(line)["text"] for line in lines if line.strip()]


def take(texts: list[str], n: int) -> list[str]:
    """The first ``n`` texts, cycling through the list when it is shorter."""
    return [texts[i % len(texts)] for i in range(n)]


# ------------------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def compare(sides: dict[str, Callable[[], Any]], repeats: int, warmups: dict[str, Callable[[], Any]]) -> dict:
    """Run every side ``repeats`` times, interleaved with alternating order; returns outputs and timings."""
    for name, fn in warmups.items():
        log.info("warm-up: %s", name)
        fn()
    walls: dict[str, list[float]] = {n: [] for n in sides}
    cpus: dict[str, list[float]] = {n: [] for n in sides}
    outputs: dict[str, Any] = {}
    names = list(sides)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out, wall, cpu = timed(sides[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
            outputs[name] = out
            log.info("repeat %d %-28s wall %7.2fs  cpu %7.2fs", r + 1, name, wall, cpu)
    return {
        "outputs": outputs,
        "wall": {n: statistics.median(v) for n, v in walls.items()},
        "cpu": {n: statistics.median(v) for n, v in cpus.items()},
        "wall_all": walls,
        "cpu_all": cpus,
    }


def side_report(n_items: int, unit: str, res: dict, name: str) -> dict:
    wall, cpu = res["wall"][name], res["cpu"][name]
    return {
        f"{unit}_per_s": n_items / wall,
        f"{unit}_per_cpu_s": n_items / cpu if cpu > 0 else None,
        "wall_s_median": wall,
        "cpu_s_median": cpu,
        "wall_s_all": [round(x, 4) for x in res["wall_all"][name]],
        "cpu_s_all": [round(x, 4) for x in res["cpu_all"][name]],
    }


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)


# ------------------------------------------------------------------------------------------------ machine
def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    with_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                with_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {with_model or platform.processor() or platform.machine()}"


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "sentence-transformers", "transformers", "tokenizers", "faiss-cpu", "faiss-gpu-cu12",
                 "numpy", "onnxruntime", "onnx", "openvino"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


# ------------------------------------------------------------------------------------------------ benchmarks
def bench_encode(args: argparse.Namespace, passages: list[str]) -> tuple[dict, Any]:
    from retrdistill.encoding.engine import encode_texts, last_run_stats
    from retrdistill.models import load_sentence_transformer

    model = load_sentence_transformer(args.model, device=args.device)
    model.max_seq_length = args.max_length
    bs = args.batch_size
    warm = passages[: min(len(passages), 2 * bs)]
    res = compare(
        {
            "sentence_transformers": lambda: model.encode(passages, batch_size=bs, convert_to_numpy=True,
                                                          show_progress_bar=False),
            "project": lambda: encode_texts(model, passages, batch_size=bs),
        },
        args.repeats,
        {
            "sentence_transformers": lambda: model.encode(warm, batch_size=bs, show_progress_bar=False),
            "project": lambda: encode_texts(model, warm, batch_size=bs),
        },
    )
    stats = last_run_stats()
    st_out = np.asarray(res["outputs"]["sentence_transformers"], dtype=np.float32)
    ours = res["outputs"]["project"]
    tok = model.tokenizer
    lengths = np.array([len(x) for x in tok(passages, truncation=True, max_length=args.max_length)["input_ids"]])
    report = {
        "model": args.model,
        "n_passages": len(passages),
        "distinct_passages": len(set(passages)),
        "batch_size": bs,
        "max_length": args.max_length,
        "real_tokens": int(lengths.sum()),
        "sentence_transformers_padded_tokens": st_padded_tokens(passages, lengths, bs),
        "project_padded_tokens": stats.get("padded_tokens"),
        "project_batches": stats.get("batches"),
        "sentence_transformers": side_report(len(passages), "passages", res, "sentence_transformers"),
        "project": side_report(len(passages), "passages", res, "project"),
        "ratio_wall": res["wall"]["sentence_transformers"] / res["wall"]["project"],
        "ratio_cpu": res["cpu"]["sentence_transformers"] / res["cpu"]["project"],
        "max_abs_diff": float(np.abs(st_out - ours).max()),
        "min_cosine": float(cosine_rows(st_out, ours).min()),
    }
    return report, (model, st_out)


def st_padded_tokens(texts: list[str], lengths: np.ndarray, bs: int) -> int:
    """Padded tokens of sentence-transformers' batches (it sorts by character count, batches of ``bs``)."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return int(sum(lengths[order[s : s + bs]].max() * len(order[s : s + bs]) for s in range(0, len(texts), bs)))


def bench_backends(args: argparse.Namespace, passages: list[str], reference: tuple[Any, np.ndarray],
                   st_wall: float, st_cpu: float) -> dict:
    from retrdistill.encoding.backends import available_backends, load_encoder
    from retrdistill.encoding.engine import encode_texts

    _, st_out = reference
    out: dict[str, Any] = {}
    have = available_backends()
    bs = args.batch_size
    for backend in args.backends:
        if backend == "torch":
            continue
        if not have.get(backend):
            out[backend] = {"skipped": "runtime not installed"}
            continue
        t0 = time.perf_counter()
        model = load_encoder(args.model, backend, max_seq_length=args.max_length)
        load_s = time.perf_counter() - t0
        warm = passages[: min(len(passages), 2 * bs)]
        res = compare({backend: lambda m=model: encode_texts(m, passages, batch_size=bs)}, args.repeats,
                      {backend: lambda m=model, w=warm: encode_texts(m, w, batch_size=bs)})
        emb = res["outputs"][backend]
        cos = cosine_rows(st_out, emb)
        out[backend] = {
            **side_report(len(passages), "passages", res, backend),
            "load_and_compile_s": load_s,
            "ratio_wall_vs_sentence_transformers": st_wall / res["wall"][backend],
            "ratio_cpu_vs_sentence_transformers": st_cpu / res["cpu"][backend],
            "max_abs_diff_vs_fp32": float(np.abs(st_out - emb).max()),
            "cosine_vs_fp32_min": float(cos.min()),
            "cosine_vs_fp32_mean": float(cos.mean()),
            "cosine_vs_fp32_p01": float(np.quantile(cos, 0.01)),
        }
        del model
    return out


def bench_cross(args: argparse.Namespace, passages: list[str], queries: list[str]) -> dict:
    import torch

    from retrdistill.encoding.engine import last_run_stats, score_pairs
    from retrdistill.models import load_cross_encoder, resolve_model

    torch.manual_seed(0)
    ce_ref = args.cross_model or args.model
    model = load_cross_encoder(resolve_model(ce_ref), device=args.device,
                               **({} if args.cross_model else {"num_labels": 1}))
    model.max_seq_length = args.max_length
    n = args.n_pairs
    pairs = [(queries[i % len(queries)], passages[i % len(passages)]) for i in range(n)]
    bs = args.batch_size
    warm = pairs[: min(n, 2 * bs)]
    res = compare(
        {
            "sentence_transformers": lambda: model.predict([list(p) for p in pairs], batch_size=bs,
                                                           convert_to_numpy=True, show_progress_bar=False),
            "project": lambda: score_pairs(model, pairs, batch_size=bs),
        },
        args.repeats,
        {
            "sentence_transformers": lambda: model.predict([list(p) for p in warm], batch_size=bs,
                                                           show_progress_bar=False),
            "project": lambda: score_pairs(model, warm, batch_size=bs),
        },
    )
    stats = last_run_stats()
    st_out = np.asarray(res["outputs"]["sentence_transformers"], dtype=np.float32).reshape(n)
    return {
        "model": ce_ref + ("" if args.cross_model else " (+ fresh 1-logit head)"),
        "n_pairs": n,
        "batch_size": bs,
        "max_length": args.max_length,
        "project_padded_tokens": stats.get("padded_tokens"),
        "project_real_tokens": stats.get("real_tokens"),
        "sentence_transformers": side_report(n, "pairs", res, "sentence_transformers"),
        "project": side_report(n, "pairs", res, "project"),
        "ratio_wall": res["wall"]["sentence_transformers"] / res["wall"]["project"],
        "ratio_cpu": res["cpu"]["sentence_transformers"] / res["cpu"]["project"],
        "max_abs_diff": float(np.abs(st_out - res["outputs"]["project"]).max()),
    }


def bench_search(args: argparse.Namespace, dim: int) -> dict:
    import faiss

    from retrdistill.encoding.search import exact_search

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((args.search_docs, dim), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = rng.standard_normal((args.search_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    k = args.k
    index = faiss.IndexFlatIP(dim)
    index.add(docs)
    warm_q = queries[: min(len(queries), 16)]
    res = compare(
        {
            "faiss_flat_ip": lambda: index.search(queries, k),
            "project": lambda: exact_search(queries, docs, k, device=args.device, chunk_size=args.chunk_size),
        },
        args.repeats,
        {
            "faiss_flat_ip": lambda: index.search(warm_q, k),
            "project": lambda: exact_search(warm_q, docs, k, device=args.device, chunk_size=args.chunk_size),
        },
    )
    fs, fi = res["outputs"]["faiss_flat_ip"]
    ps, pi = res["outputs"]["project"]
    nq = len(queries)
    return {
        "n_docs": args.search_docs,
        "n_queries": nq,
        "dim": dim,
        "k": k,
        "chunk_size": args.chunk_size,
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_flat_ip": side_report(nq, "queries", res, "faiss_flat_ip"),
        "project": side_report(nq, "queries", res, "project"),
        "ratio_wall": res["wall"]["faiss_flat_ip"] / res["wall"]["project"],
        "ratio_cpu": res["cpu"]["faiss_flat_ip"] / res["cpu"]["project"],
        "identical_index_fraction": float((fi == pi).mean()),
        "same_top_k_set_fraction": float(np.mean([set(a) == set(b) for a, b in zip(fi, pi)])),
        "max_abs_score_diff": float(np.abs(fs - ps).max()),
    }


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--model", default="offline:all-MiniLM-L6-v2")
    p.add_argument("--cross-model", default=None,
                   help="a CrossEncoder checkpoint (default: --model's encoder with a fresh 1-logit head)")
    p.add_argument("--n-passages", type=int, default=1000)
    p.add_argument("--n-pairs", type=int, default=None, help="default: n-passages / 4")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--backend", default="torch",
                   help="comma-separated extra backends for encoding: onnx, onnx-int8, openvino, openvino-bf16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--search-docs", type=int, default=100_000)
    p.add_argument("--search-queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--chunk-size", type=int, default=65536)
    p.add_argument("--skip", default="", help="comma-separated parts to skip: encode, cross, search")
    p.add_argument("--out", default=None, help="default: benchmarks/results/throughput-<device>.json")
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.n_pairs is None:
        args.n_pairs = max(1, args.n_passages // 4)
    args.backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("sentence_transformers", "transformers", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = parse_args(argv)

    import torch

    from retrdistill.artefacts import write_json_atomic

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    started = time.time()
    folder = collection_dir()
    passages = take(read_jsonl_texts(folder / "corpus.jsonl"), args.n_passages)
    queries = read_jsonl_texts(folder / "queries.jsonl")
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {
        "device": {
            "requested": args.device,
            "name": device_name(args.device),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": load_start,
        },
        "versions": versions(),
        "data": str(folder / "corpus.jsonl"),
        "repeats": args.repeats,
        "timing": "median of repeats after one warm-up; wall = perf_counter, cpu = process_time (all threads)",
    }
    dim = None
    if "encode" not in args.skip:
        log.info("encode: %d passages, %s, max length %d", len(passages), args.model, args.max_length)
        enc, reference = bench_encode(args, passages)
        result["encode"] = enc
        dim = reference[1].shape[1]
        if any(b != "torch" for b in args.backends):
            if args.device != "cpu":
                result["encode_backends"] = {"skipped": "compiled backends are CPU fast paths"}
            else:
                result["encode_backends"] = bench_backends(
                    args, passages, reference, enc["sentence_transformers"]["wall_s_median"],
                    enc["sentence_transformers"]["cpu_s_median"],
                )
        del reference
    if "cross" not in args.skip:
        log.info("cross-encoder: %d pairs", args.n_pairs)
        result["cross_encoder"] = bench_cross(args, passages, queries)
    if "search" not in args.skip:
        log.info("search: %d queries x %d docs", args.search_queries, args.search_docs)
        result["search"] = bench_search(args, dim or 384)
    result["device"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["seconds_total"] = time.time() - started
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"throughput-{slug(args.device)}.json"
    write_json_atomic(out, result)
    log.info("wrote %s", out)
    summary = {k: result[k].get("ratio_wall") for k in ("encode", "cross_encoder", "search") if k in result}
    log.info("ratios (wall, baseline / project): %s", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
