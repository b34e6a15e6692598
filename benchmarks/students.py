"""Encoding speed of students side by side: passages a second for each model, in one process, interleaved.

    nice -n 19 python benchmarks/students.py \
        --model offline:all-MiniLM-L6-v2 --model runs/fast-students/student/model \
        --model runs/fast-students-tiny/student/model

The first ``--model`` is the reference the others are compared with (speed-up = its median seconds / theirs).
Every model encodes the same real MS MARCO passages (``data/msmarco-dl-5k/corpus.jsonl``) with the library's
engine (``encode_texts``) and with sentence-transformers' ``encode``, at the model's own max length and at a
common one (``--common-max-length``, so that only depth and width differ). One warm-up, then ``--repeats``
rounds; within a round every (model, path, length) runs once, in an order rotated each round. Medians of wall
and process CPU time (CPU time is steadier on a shared machine). JSON written atomically to
``benchmarks/results/students-<device>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _passages(n: int) -> list[str]:
    from retrdistill.data.beir import load_corpus

    corpus = load_corpus(ROOT / "data" / "msmarco-dl-5k", ROOT / ".cache" / "retrdistill" / "corpora")
    texts = corpus.texts(0, min(n, len(corpus)))
    while len(texts) < n:
        texts += texts[: n - len(texts)]
    return texts


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="model reference; repeatable; first = reference")
    p.add_argument("--n-passages", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--common-max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import torch

    from retrdistill.artefacts import write_json_atomic
    from retrdistill.encoding.engine import encode_texts
    from retrdistill.models import load_sentence_transformer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    texts = _passages(args.n_passages)
    models = {ref: load_sentence_transformer(ref, device=device) for ref in args.model}
    own_length = {ref: m.max_seq_length for ref, m in models.items()}
    cases = []  # (model, max length, path); a model whose own max length is the common one runs once
    for ref in args.model:
        for length in sorted({own_length[ref], args.common_max_length}):
            for path in ("retrdistill", "sentence-transformers"):
                cases.append((ref, length, path))

    def run(case, subset):
        ref, length, path = case
        model = models[ref]
        model.max_seq_length = length
        if path == "retrdistill":
            return encode_texts(model, subset, batch_size=args.batch_size, normalize=False)
        return model.encode(subset, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)

    for case in cases:  # warm-up
        run(case, texts[:16])
    times: dict[tuple, list[tuple[float, float]]] = {c: [] for c in cases}
    for r in range(args.repeats):
        order = cases[r % len(cases):] + cases[: r % len(cases)]
        for case in order:
            times[case].append(_timed(lambda: run(case, texts)))
    rows = []
    for case in cases:
        ref, length, path = case
        wall = statistics.median(t[0] for t in times[case])
        cpu = statistics.median(t[1] for t in times[case])
        model = models[ref]
        rows.append({"model": ref, "max_length": length, "own_max_length": length == own_length[ref],
                     "common_max_length": length == args.common_max_length, "path": path,
                     "layers": _layers(model), "dim": model.get_embedding_dimension(),
                     "parameters": int(sum(p.numel() for p in model.parameters())),
                     "median_wall_s": round(wall, 3), "median_cpu_s": round(cpu, 3),
                     "passages_per_s": round(len(texts) / wall, 1), "wall_runs_s": [round(t[0], 3) for t in times[case]]})
    reference = args.model[0]
    for row in rows:  # against the reference on the same path, each at its own max length / both at the common one
        for kind in ("own", "common"):
            if not row[f"{kind}_max_length"]:
                continue
            base = next(r for r in rows if r["model"] == reference and r[f"{kind}_max_length"] and r["path"] == row["path"])
            row[f"speedup_{kind}_wall"] = round(base["median_wall_s"] / row["median_wall_s"], 2)
            row[f"speedup_{kind}_cpu"] = round(base["median_cpu_s"] / row["median_cpu_s"], 2)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"students-{device.split(':')[0]}.json")
    result = {"benchmark": "students", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "device": device, "reference": reference, "passages": len(texts), "batch_size": args.batch_size,
              "repeats": args.repeats, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "platform": platform.platform(), "torch": torch.__version__, "rows": rows}
    write_json_atomic(out, result)
    for row in rows:
        speed = "  ".join(f"{k} x{row[f'speedup_{k}_wall']:.2f} wall x{row[f'speedup_{k}_cpu']:.2f} cpu"
                          for k in ("own", "common") if f"speedup_{k}_wall" in row)
        print(f"{row['model'][-40:]:>40} {row['path']:<22} len {row['max_length']:>3}: {row['passages_per_s']:>7.1f} psg/s  {speed}")
    print(f"wrote {out}")
    return 0


def _layers(model) -> int | None:
    config = getattr(model[0], "auto_model", None)
    config = getattr(config, "config", None)
    return getattr(config, "num_hidden_layers", None)


if __name__ == "__main__":
    raise SystemExit(main())
