"""Peak memory and speed of the demo's train step, side by side: as the checkpoint ships (attention dropout 0.1:
torch's CPU attention keeps every attention matrix for the backward pass), without attention dropout (the fused
CPU kernel applies), and without attention dropout plus a fixed heap threshold (large freed tensors go back
to the system at once, see retrdistill.memory.limit_heap_growth).

Each variant runs in a fresh process (the heap setting is process-wide), rounds interleaved, on the demo's own
scored groups (run the demo first, or pass --scores), the demo's train settings, ``--steps`` optimiser steps.

    nice -n 19 python benchmarks/train_memory.py --steps 10 --rounds 2   # writes benchmarks/results/train-memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "as shipped (attention dropout 0.1)": {"overrides": {}, "heap": False},
    "attention dropout 0": {"overrides": {"attention_probs_dropout_prob": 0.0}, "heap": False},
    "attention dropout 0 + heap threshold": {"overrides": {"attention_probs_dropout_prob": 0.0}, "heap": True},
    # the shipped recipe, each batch of 16 rows run as forward passes of 8 or 4 rows with gradients accumulated
    "micro-batch 8 (as shipped otherwise)": {"overrides": {}, "heap": False, "micro": 8},
    "micro-batch 4 (as shipped otherwise)": {"overrides": {}, "heap": False, "micro": 4},
    "micro-batch 4 + heap threshold": {"overrides": {}, "heap": True, "micro": 4},
    # both: the fused attention kernel and half the activations per forward pass
    "attention dropout 0 + micro-batch 8": {"overrides": {"attention_probs_dropout_prob": 0.0}, "heap": False,
                                            "micro": 8},
}


def child(args: argparse.Namespace) -> None:
    from retrdistill.memory import limit_heap_growth
    from retrdistill.stages.train import TrainConfig, run_train

    variant = VARIANTS[args.variant]
    if variant["heap"]:
        limit_heap_growth()
    options = {"model": "offline:all-MiniLM-L6-v2", "max_seq_length": 256, "config_overrides": variant["overrides"]}
    cfg = TrainConfig(student="dense", options=options, loss="listwise-kl", loss_options={"temperature": 0.05},
                      negatives_per_query=3, epochs=1, max_steps=args.steps, batch_size=16, learning_rate=3e-5, seed=13,
                      micro_batch_size=variant.get("micro"))
    out = Path(args.work) / f"out-{abs(hash(args.variant))}"
    started = time.perf_counter()
    result = run_train(cfg, args.scores, args.collection, out, cache_dir=args.cache_dir, force=True)
    print(json.dumps({"seconds": time.perf_counter() - started, "memory": result.manifest.memory,
                      "train_loss": result.manifest.counts.get("train_loss")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", default=str(ROOT / "runs" / "msmarco-sample" / "scores"))
    parser.add_argument("--collection", default=str(ROOT / "data" / "msmarco-dl-5k"))
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache" / "retrdistill"))
    parser.add_argument("--work", default="/tmp/retrdistill-train-memory")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train-memory.json"))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--only", action="append", help="Run only this variant (repeatable; default: all).")
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    chosen = [name for name in VARIANTS if not args.only or name in args.only]
    unknown = set(args.only or []) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; expected some of {list(VARIANTS)}")
    runs: dict[str, list[dict]] = {name: [] for name in chosen}
    for _ in range(args.rounds):
        for name in chosen:
            cmd = [sys.executable, __file__, "--variant", name, "--steps", str(args.steps), "--scores", args.scores,
                   "--collection", args.collection, "--cache-dir", args.cache_dir, "--work", args.work]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], file=sys.stderr)
    summary = {name: {"median_seconds": statistics.median(r["seconds"] for r in rs),
                      "seconds_per_step": statistics.median(r["seconds"] for r in rs) / args.steps,
                      "peak_rss_mb": max(r["memory"]["peak_rss_mb"] for r in rs),
                      "peak_anon_mb": max(r["memory"]["peak_anon_mb"] for r in rs),
                      "train_loss": rs[0]["train_loss"]} for name, rs in runs.items()}
    report = {"steps": args.steps, "rounds": args.rounds, "batch_size": 16, "columns": "query + positive + 3 negatives",
              "max_seq_length": 256, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                 "load_average": os.getloadavg()},
              "summary": summary, "runs": runs}
    from retrdistill.artefacts import atomic_path

    with atomic_path(Path(args.out)) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
