"""The re-ranking chain's numbers, collected from a finished run of ``pipelines/rerank-chain-sample.yaml``.

    nice -n 10 retrdistill run pipelines/rerank-chain-sample.yaml        # first (OMP_NUM_THREADS=1 on shared cores)
    python benchmarks/rerank_chain.py --workdir runs/rerank-chain-sample [--eval-step eval] [--out FILE]

Reads the eval step's ``results.json`` (every system's test metrics and cost: ms/query, and for ``rerank`` rows
the first stage's and the re-ranking's ms/query) and the train steps' manifests (steps, seconds, loss curve), and
writes ``benchmarks/results/rerank-chain.json`` (atomically): per system the metrics, ms/query and queries/s; for
each re-ranked row its gain over its first stage and, where a teacher re-ranking of the same first stage is on the
board, the fraction of the teacher's nDCG@10 it reaches; per train step its steps, wall seconds and s/step. It
runs nothing: the numbers are the pipeline's, measured by its own steps on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrdistill.artefacts import read_manifest, write_json_atomic  # noqa: E402


def collect(workdir: Path, eval_step: str) -> dict:
    results = json.loads((workdir / eval_step / "results.json").read_text(encoding="utf-8"))
    systems = {}
    for name, data in results["systems"].items():
        cost = data.get("cost", {})
        ms = cost.get("ms_per_query")
        systems[name] = {"metrics": data["mean"], "ms_per_query": ms,
                         "queries_per_s": (1000.0 / ms) if ms else None,
                         **{k: cost[k] for k in ("first_stage_ms_per_query", "rerank_ms_per_query", "rerank_depth",
                                                 "parameters") if k in cost}}
    eval_manifest = read_manifest(workdir / eval_step)
    specs = {s["name"]: s for s in ((eval_manifest.settings or eval_manifest.config).get("systems", []) if eval_manifest else [])}
    for name, row in systems.items():
        spec = specs.get(name, {})
        if spec.get("type") != "rerank":
            continue
        first = spec["options"]["system"]
        ndcg, base = row["metrics"].get("ndcg@10"), systems.get(first, {}).get("metrics", {}).get("ndcg@10")
        row["first_stage"] = first
        row["ndcg@10_gain_over_first_stage"] = None if ndcg is None or base is None else ndcg - base
        teacher = [n for n, s in specs.items() if s.get("type") == "rerank" and n != name
                   and s["options"]["system"] == first and s["options"].get("teacher") != "cross-encoder"]
        if teacher and ndcg is not None:
            row["fraction_of_teacher_reranking_ndcg@10"] = ndcg / systems[teacher[0]]["metrics"]["ndcg@10"]
            row["teacher_reranking_row"] = teacher[0]
    training = {}
    for folder in sorted(p for p in workdir.iterdir() if p.is_dir()):
        manifest = read_manifest(folder)
        if manifest is None or manifest.kind != "student":
            continue
        counts = manifest.counts
        seconds = getattr(manifest, "seconds", None) or counts.get("seconds")
        training[folder.name] = {"student": manifest.config.get("student"), "loss": manifest.config.get("loss"),
                                 "steps": counts.get("steps"), "rows": counts.get("rows"),
                                 "train_loss": counts.get("train_loss"), "loss_curve": counts.get("loss_curve"),
                                 "seconds": seconds,
                                 "s_per_step": (seconds / counts["steps"]) if seconds and counts.get("steps") else None}
    return {"workdir": str(workdir), "eval_step": eval_step, "dataset": results.get("dataset"),
            "judged_queries": results.get("judged_queries"), "machine": platform.platform(),
            "systems": systems, "training": training}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "rerank-chain-sample")
    parser.add_argument("--eval-step", default="eval")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rerank-chain.json")
    args = parser.parse_args()
    write_json_atomic(args.out, collect(args.workdir, args.eval_step))
    print(args.out)


if __name__ == "__main__":
    main()
