"""Label-free validation over a corpus sample: does it choose the checkpoint the whole corpus chooses, and how
much cheaper is it?

    nice -n 10 python benchmarks/validation_sample.py                   # the demo's student (kept checkpoints)
    nice -n 10 python benchmarks/validation_sample.py --pipeline pipelines/msmarco-sample.yaml --step student \
        --samples 500,1000

Reads a pipeline's finished train step that validated with ``keep_checkpoints: true`` (the demo's ``student`` step does)
and re-creates its held-out split from its scores artefact and its recorded validation settings. Each kept
checkpoint is evaluated with the train stage's own evaluator twice over: over the whole corpus (what the
artefact recorded, recomputed here and compared with the record) and over each ``corpus_sample`` size (that many
passages drawn with the validation seed, plus every held-out candidate). Reported per sample size: the value at
every checkpoint, the checkpoint it would keep, whether that is the whole corpus's choice, the rank correlation
(Spearman, Kendall) of the sampled curve with the whole-corpus curve, and the seconds per evaluation beside the
whole corpus's, measured in this run on this machine (load averages recorded).

Nothing here reads a relevance judgment: both curves are label-free, as training sees them.
Writes ``benchmarks/results/validation-sample.json`` (or ``--out``), atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def checkpoints(student: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every kept checkpoint, by step (step 0, the untrained start, is not a candidate)."""
    found = []
    for folder in (student / "checkpoints").glob("step-*"):
        step = int(folder.name.removeprefix("step-"))
        if step > 0:
            found.append((step, folder))
    return sorted(found)


def evaluate(evaluator, load, folder: Path, step: int) -> tuple[dict[str, float], float]:
    model = load(folder)
    started = time.perf_counter()
    values = evaluator(model, steps=step)
    return values, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "msmarco-sample.yaml")
    parser.add_argument("--step", default="student", help="a train step that keeps its checkpoints")
    parser.add_argument("--samples", default="500,1000", help="corpus sample sizes, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "validation-sample.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from scipy import stats

    from retrdistill.artefacts import read_manifest, write_json_atomic
    from retrdistill.data.beir import open_collection
    from retrdistill.pipeline import load_pipeline, prepare_step
    from retrdistill.validation.evaluator import LabelFreeEvaluator
    from retrdistill.validation.split import split_scores

    pipeline = load_pipeline(args.pipeline.resolve())
    step = pipeline.steps[args.step]
    if prepare_step(pipeline, args.step).status()[0] != "current":
        raise SystemExit(f"{args.pipeline}: step {args.step} is not current; run the pipeline first")
    student_dir = pipeline.out_dir(args.step)
    manifest = read_manifest(student_dir)
    cfg = step.config
    settings = cfg.validation_settings()
    kept = checkpoints(student_dir)
    if settings is None or not kept:
        raise SystemExit(f"{student_dir}: trained without validation or without keep_checkpoints")
    scores_dir = pipeline.out_dir(step.refs[0].step)
    corpus = open_collection(step.collection, pipeline.cache_dir / "corpora").corpus
    recorded = {int(p["step"]): {k.removeprefix("eval_"): v for k, v in p["metrics"].items()}
                for p in manifest.counts["validation"]["curve"]}

    def load(folder: Path):  # a kept checkpoint, loaded as the student's own model class loads a folder
        from sentence_transformers import SentenceTransformer, SparseEncoder

        config = folder / "config_sentence_transformers.json"
        sparse = config.is_file() and "SparseEncoder" in config.read_text(encoding="utf-8")
        return (SparseEncoder if sparse else SentenceTransformer)(str(folder), device="cpu")

    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, held, _ = split_scores(scores_dir, Path(tmp), settings)
        metric = settings.metric
        results: dict[str, Any] = {}
        for label, sample in [("corpus", None)] + [(f"sample-{n}", int(n)) for n in args.samples.split(",")]:
            evaluator = LabelFreeEvaluator(held, corpus, settings.parts(), metric, batch_size=settings.batch_size,
                                           corpus_sample=sample, seed=settings.seed)
            points, seconds = [], []
            for step, folder in kept:
                values, took = evaluate(evaluator, load, folder, step)
                points.append({"step": step, "value": round(float(values[metric]), 6)})
                seconds.append(round(took, 2))
                logging.info("%s step %d: %s %.4f (%.1fs)", label, step, metric, values[metric], took)
            searched = len(corpus) if evaluator.searched_rows is None else len(evaluator.searched_rows)
            results[label] = {"corpus_sample": sample, "passages_searched": searched, "points": points,
                              "seconds_per_evaluation": seconds,
                              "seconds_median": sorted(seconds)[len(seconds) // 2]}
    whole = results["corpus"]
    whole_values = [p["value"] for p in whole["points"]]
    whole_best = max(whole["points"], key=lambda p: (p["value"], -p["step"]))["step"]
    whole["matches_recorded_curve"] = all(
        abs(p["value"] - recorded.get(p["step"], {}).get(metric, float("nan"))) < 1e-6 for p in whole["points"])
    whole["keeps_step"] = whole_best
    for label, entry in results.items():
        values = [p["value"] for p in entry["points"]]
        best = max(entry["points"], key=lambda p: (p["value"], -p["step"]))["step"]
        entry["keeps_step"] = best
        if label != "corpus":
            entry["same_choice_as_corpus"] = best == whole_best
            entry["spearman_with_corpus"] = round(float(stats.spearmanr(values, whole_values).statistic), 4)
            entry["kendall_with_corpus"] = round(float(stats.kendalltau(values, whole_values).statistic), 4)
            entry["speedup_vs_corpus"] = round(whole["seconds_median"] / entry["seconds_median"], 2)
    report = {
        "pipeline": os.path.relpath(args.pipeline.resolve(), pipeline.base), "step": args.step, "metric": metric, "held_out_queries": len(held),
        "corpus_passages": len(corpus), "checkpoints": [s for s, _ in kept],
        "kept_by_the_train_step": (manifest.counts["validation"].get("best") or {}).get("step"),
        "results": results, "seconds": round(time.perf_counter() - started, 1),
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    logging.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
