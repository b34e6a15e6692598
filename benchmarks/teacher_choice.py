"""Does the label-free teacher estimate order the candidates as their test scores do?

    nice -n 10 python benchmarks/teacher_choice.py                                   # scifact-adapt's rate step
    nice -n 10 python benchmarks/teacher_choice.py --skip EmbeddingGemma-300M       # leave a slow candidate out

Runs a pipeline's probe and ``rate-teachers`` steps as the file configures them (default
``pipelines/scifact-adapt.yaml``, steps ``probe`` and ``rate``), into a temporary folder, with ``--skip``
candidates left out; then, after
the choice is made and written, lets each candidate teacher retrieve the top 100 for every judged test query
(its own ``retrieve``, the same teacher object the stage built) and computes nDCG@10 with ranx. Reported: each
candidate's signals, estimate and test nDCG@10; the Spearman and Kendall correlations of estimate and test score
across candidates; the pick, the best candidate on test and the gap between them in nDCG@10 points. The test
judgments are read only after the pick, for this report.

Corpus embeddings come from the cache (``cache_dir`` of the pipeline), shared with every other step and with
``benchmarks/reproductions.py``. Writes ``benchmarks/results/teacher-choice-<dataset>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("teacher_choice")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "scifact-adapt.yaml")
    ap.add_argument("--probe", default="probe")
    ap.add_argument("--rate", default="rate")
    ap.add_argument("--skip", default="", help="candidate names to leave out, comma-separated")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from scipy import stats

    from retrdistill import registry
    from retrdistill.artefacts import write_json_atomic
    from retrdistill.data.beir import open_collection
    from retrdistill.evaluation import evaluate
    from retrdistill.pipeline import load_pipeline
    from retrdistill.stages.queries import run_queries
    from retrdistill.kinds import read_choice
    from retrdistill.stages.rate_teachers import run_rate_teachers

    pipeline = load_pipeline(args.pipeline.resolve())
    probe_step, rate_step = pipeline.steps[args.probe], pipeline.steps[args.rate]
    skip = {s for s in args.skip.split(",") if s}
    candidates = [c for c in rate_step.config.candidates if c["name"] not in skip]
    if len(candidates) < 2:
        raise SystemExit("need at least two candidates")
    cfg = dataclasses.replace(rate_step.config, candidates=candidates)
    cache_dir = pipeline.cache_dir
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        run_queries(probe_step.config, probe_step.collection, probe, cache_dir=cache_dir)
        run_rate_teachers(cfg, rate_step.collection, probe, Path(tmp) / "rate", cache_dir=cache_dir)
        choice = read_choice(Path(tmp) / "rate")
    rate_seconds = time.perf_counter() - started

    collection = open_collection(rate_step.collection, cache_dir / "corpora")
    qrels, _ = collection.qrels("test")
    queries = {q: collection.queries[q] for q in qrels}
    test = {}
    for c in candidates:  # only now are the judgments read
        teacher = registry.build("teacher", c["teacher"], c.get("options", {}), corpus=collection.corpus,
                                 cache_dir=cache_dir)
        run = teacher.retrieve(queries, 100)
        test[c["name"]] = round(float(evaluate(qrels, run, ["ndcg@10"]).mean["ndcg@10"]), 5)
        log.info("%s: estimate %.4f, test nDCG@10 %.4f", c["name"], choice["estimate"][c["name"]], test[c["name"]])
    names = [c["name"] for c in candidates]
    est = [choice["estimate"][n] for n in names]
    scores = [test[n] for n in names]
    best = max(names, key=lambda n: test[n])
    report = {
        "pipeline": os.path.relpath(args.pipeline.resolve(), pipeline.base), "skipped": sorted(skip),
        "dataset": rate_step.collection.name, "test_queries": len(queries),
        "candidates": {n: {"signals": choice["signals"][n], "estimate": choice["estimate"][n],
                           "test_ndcg@10": test[n]} for n in names},
        "picked": choice["picked"], "best_on_test": best,
        "gap_points": round(100 * (test[best] - test[choice["picked"]]), 2),
        "spearman": round(float(stats.spearmanr(est, scores).statistic), 4),
        "kendall": round(float(stats.kendalltau(est, scores).statistic), 4),
        "rate_seconds": round(rate_seconds, 1), "seconds": round(time.perf_counter() - started, 1),
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"teacher-choice-{rate_step.collection.name}.json"
    write_json_atomic(out, report)
    log.info("picked %s, best on test %s (gap %.2f points); Spearman %.3f", report["picked"], best,
             report["gap_points"], report["spearman"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
