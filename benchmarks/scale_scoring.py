"""Scoring throughput with 1, 2 and 4 local worker processes: shards run as processes, then merged.

    nice -n 10 python benchmarks/scale_scoring.py                      # CPU default (MiniLM teacher), a few min
    python benchmarks/scale_scoring.py --workers 1,2,4,8 --queries 2000 --model offline:all-mpnet-base-v2

Upstream (once, not timed): pseudo-queries from the sample collection and BM25 candidates. Then for each worker
count N: a fresh score cache, N processes ``retrdistill score --shard I/N`` started together (each with
``OMP_NUM_THREADS = cores // N`` threads, at least 1), timed from the first start to the last exit, then
``retrdistill merge``; the merged ``scores.jsonl`` is checked byte-identical to the 1-worker run's. Reported:
wall seconds, scored pairs per second and the speed-up over 1 worker. Each worker loads the model itself, so the
fixed start-up cost (Python, torch, the model) is in the wall time, as it is for real array jobs.

The JSON goes atomically to ``benchmarks/results/scale-scoring-<device>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _max_difference(a: bytes, b: bytes) -> float:
    """The largest absolute difference between two scores.jsonl files' scores (same queries, same order)."""
    rows_a = [json.loads(line) for line in a.decode("utf-8").splitlines()]
    rows_b = [json.loads(line) for line in b.decode("utf-8").splitlines()]
    if [r["docids"] for r in rows_a] != [r["docids"] for r in rows_b]:
        raise SystemExit("merged scores hold other candidates than the one-worker run's")
    return max((abs(x - y) for ra, rb in zip(rows_a, rows_b) for x, y in zip(ra["scores"], rb["scores"])),
               default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collection", type=Path, default=ROOT / "data" / "msmarco-dl-5k")
    parser.add_argument("--model", default="offline:all-MiniLM-L6-v2")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/retrdistill-scale-scoring"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale-scoring-cpu.json")
    args = parser.parse_args()

    from retrdistill.artefacts import read_manifest, write_json_atomic
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries

    work, cache = args.workdir, args.workdir / "upstream-cache"
    run_queries(QueriesConfig(options={"num_queries": args.queries}), args.collection, work / "queries", cache_dir=cache)
    run_mine(MineConfig(negatives=args.negatives, depth=50, rank_max=50), args.collection, work / "queries",
             work / "candidates", cache_dir=cache)
    cores = os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    options = ["-o", f"model={args.model}", "-o", "encode_corpus=false", "-o", "max_seq_length=128"]
    runs, reference = [], None
    by_threads: dict[int, bytes] = {}  # threads per worker -> the first merged scores at that count
    for n in [int(x) for x in args.workers.split(",")]:
        run_dir = work / f"workers-{n}"
        shutil.rmtree(run_dir, ignore_errors=True)
        threads = max(cores // n, 1)
        started = time.perf_counter()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "retrdistill.cli.app", "score", "--collection", str(args.collection),
             "--candidates", str(work / "candidates"), "--out", str(run_dir / f"shard-{i}"),
             "--cache-dir", str(run_dir / "cache"), "--shard", f"{i}/{n}", "--quiet", *options],
            env={**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(n)]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"a score worker failed:\n{err.decode()[-3000:]}")
        seconds = time.perf_counter() - started
        subprocess.run([sys.executable, "-m", "retrdistill.cli.app", "merge",
                        *(str(run_dir / f"shard-{i}") for i in range(n)), "--out", str(run_dir / "scores"),
                        "--cache-dir", str(run_dir / "cache"), "--quiet"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        merged = (run_dir / "scores" / "scores.jsonl").read_bytes()
        reference = reference if reference is not None else merged
        same_threads = by_threads.setdefault(threads, merged)
        pairs = read_manifest(run_dir / "scores").counts["pairs_scored"]
        runs.append({"workers": n, "threads_per_worker": threads, "wall_seconds": round(seconds, 2),
                     "pairs": pairs, "pairs_per_second": round(pairs / seconds, 1),
                     "merged_equals_one_worker": merged == reference,
                     # torch's float sums depend on its thread count, not on the sharding: compare like with like
                     "merged_equals_first_run_at_same_threads": merged == same_threads,
                     "max_abs_difference_vs_one_worker": _max_difference(merged, reference)})
        print(json.dumps(runs[-1]), flush=True)
    base = runs[0]["pairs_per_second"]
    for r in runs:
        r["speedup_vs_first"] = round(r["pairs_per_second"] / base, 3)
    write_json_atomic(args.out, {
        "benchmark": "scale-scoring", "model": args.model, "queries": args.queries, "negatives": args.negatives,
        "cpu_count": cores, "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
        "machine": platform.machine(), "runs": runs,
        "note": "each worker is a separate process loading the model itself; timed from the first start to the "
                "last exit, so start-up is included; a shared machine's load makes ratios noisy. Runs with the "
                "same threads per worker give byte-identical merged scores; across thread counts torch's sums "
                "differ in the last float bits (max_abs_difference_vs_one_worker)",
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
