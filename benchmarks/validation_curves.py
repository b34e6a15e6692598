"""Do the label-free validation metrics track the test metric? Per-epoch curves of two bundled students.

    nice -n 19 python benchmarks/validation_curves.py            # full: the bundled pipelines' data (the lead's run)
    nice -n 19 python benchmarks/validation_curves.py --quick    # a smoke run: a small slice, few queries and steps

Reads the demo student (``pipelines/msmarco-sample.yaml``, step ``student``) and the fast-students 3-layer
student (``pipelines/fast-students.yaml``, step ``minilm-l3``) as their pipelines train them: both validate
label-free (10% of the training queries held out, seed 13, evaluated before training and every 19 steps or
every epoch) and keep every evaluated checkpoint, so the pipeline's own train step is used (run first if it is
not current) and nothing is trained twice. A pipeline step that does not keep its checkpoints is trained here
into ``--workdir`` with validation and kept checkpoints added. After training, each kept checkpoint is
evaluated on the sample's test queries (nDCG@10, exact search): computed after the fact, never used to choose.
Reported per student and checkpoint: every validation value beside the test nDCG@10, and across checkpoints
the rank correlation (Spearman, Kendall) of each validation metric with the test nDCG@10.

Quick mode builds its own small collection (the judged passages of 3 test queries plus 100 others), 60
inverse-cloze queries, BM25 negatives and all-MiniLM-L6-v2 as the teacher, and trains 2 epochs, so it runs in
minutes on 2 CPU cores; its numbers only show that the script works.

Writes ``benchmarks/results/validation_curves[-quick].json`` and ``.svg`` (atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "data" / "msmarco-dl-5k"
STUDENTS = {"demo (MiniLM-L6)": ("pipelines/msmarco-sample.yaml", "student", None),
            "fast-students MiniLM-L3": ("pipelines/fast-students.yaml", "minilm-l3", None)}
VALIDATION = {"fraction": 0.1, "seed": 13, "metric": "pseudo-mrr@10", "at_start": True, "keep_checkpoints": True}
QUICK_VALIDATION = {**VALIDATION, "fraction": 0.25}


def quick_collection(out: Path, n_queries: int = 3, others: int = 100) -> Path:
    """A BEIR folder cut from the sample: the judged passages of ``n_queries`` test queries plus ``others``."""
    if (out / "qrels" / "test.tsv").is_file():
        return out
    qrels = [line.split("\t") for line in (SAMPLE / "qrels" / "test.tsv").read_text().splitlines()]
    keep = sorted({r[0] for r in qrels if r[0] != "query-id"})[:n_queries]
    judged = {r[1] for r in qrels if r[0] in keep}
    kept, extra = [], 0
    for line in (SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n"):
        doc = json.loads(line)
        if doc["_id"] in judged or extra < others:
            extra += doc["_id"] not in judged
            kept.append(line)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    queries = [q for q in (SAMPLE / "queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in keep]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (out / "qrels" / "test.tsv").write_text("".join("\t".join(r) + "\n" for r in qrels if r[0] in keep),
                                             encoding="utf-8")
    return out


def quick_scores(work: Path, cache: Path) -> tuple[Path, Path]:
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    collection = quick_collection(work / "collection")
    run_queries(QueriesConfig(options={"num_queries": 60, "min_words": 4, "max_words": 12, "seed": 13},
                              eval_split="test"), collection, work / "queries", cache_dir=cache)
    run_mine(MineConfig(miner="bm25", depth=30, negatives=8, rank_min=1, rank_max=30, sampling="random", seed=13),
             collection, work / "queries", work / "candidates", cache_dir=cache)
    run_score(ScoreConfig(options={"model": "offline:all-MiniLM-L6-v2"}), collection, work / "candidates",
              work / "scores", cache_dir=cache)
    return collection, work / "scores"


def pipeline_scores(file: str) -> tuple[Path, Path, Any]:
    """The pipeline's scores artefact (its upstream steps run first if not current) and its collection."""
    from retrdistill.pipeline import load_pipeline, prepare_step, run_pipeline

    pipeline = load_pipeline(ROOT / file, base_dir=ROOT)
    if prepare_step(pipeline, "scores").status()[0] != "current":
        run_pipeline(pipeline, only={"queries", "candidates", "scores"})
    return pipeline.collection, pipeline.out_dir("scores"), pipeline


def train_config(file: str, step: str, epochs: float | None, quick: bool):
    from retrdistill.pipeline import load_pipeline

    cfg = load_pipeline(ROOT / file, base_dir=ROOT).steps[step].config
    changes: dict[str, Any] = {"validation": dict(QUICK_VALIDATION if quick else VALIDATION),
                               "save_untrained": False}
    if epochs is not None:
        changes["epochs"] = float(epochs)
    if quick:
        changes.update(epochs=2.0, batch_size=8)
        changes["options"] = {**cfg.options, "max_seq_length": 128}
    return dataclasses.replace(cfg, **changes)


def test_ndcg(model: Path, collection: Path, cache: Path) -> float:
    """nDCG@10 of ``model`` on the collection's test queries (exact search; embeddings cached by content)."""
    from retrdistill.data.beir import open_collection
    from retrdistill.evaluation.metrics import evaluate
    from retrdistill.systems import DenseSystem

    opened = open_collection(collection, cache / "corpora")
    qrels, _ = opened.qrels("test")
    queries = {q: t for q, t in opened.queries.items() if q in qrels}
    out = DenseSystem(DenseSystem.Options(model=str(model))).run(opened.corpus, queries, 100, cache, False)
    return float(evaluate(qrels, out.run, ["ndcg@10"]).mean["ndcg@10"])


def correlations(points: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    from retrdistill.validation.metrics import kendall, spearman

    test = [p["test_ndcg@10"] for p in points]
    return {name: {"spearman": spearman(vals, test), "kendall": kendall(vals, test)}
            for name in points[0]["validation"]
            for vals in [[p["validation"][name] for p in points]]} if len(points) > 2 else {}


def pipeline_train(file: str, step: str):
    """The pipeline's own train step (run first if it is not current), when it already validates and keeps every
    evaluated checkpoint: nothing is trained twice. None when the step would have to be trained differently."""
    from retrdistill.artefacts import read_manifest
    from retrdistill.pipeline import load_pipeline, prepare_step, run_pipeline
    from retrdistill.stages.base import StageResult

    pipeline = load_pipeline(ROOT / file, base_dir=ROOT)
    cfg = pipeline.steps[step].config
    if not (cfg.validation or {}).get("keep_checkpoints") or not (cfg.validation or {}).get("at_start"):
        return None
    if prepare_step(pipeline, step).status()[0] != "current":
        upstream = {"queries", "candidates", "scores", step}
        run_pipeline(pipeline, only=upstream & set(pipeline.steps))
    out = pipeline.out_dir(step)
    return pipeline.collection, cfg, StageResult("train", out, read_manifest(out), skipped=True)


def run_student(name: str, file: str, step: str, epochs: float | None, args, cache: Path) -> dict[str, Any]:
    from retrdistill.stages.train import run_train

    log = logging.getLogger("validation_curves")
    started = time.perf_counter()
    own = None if args.quick else pipeline_train(file, step)
    if own is not None:  # the pipeline's step as it runs (its checkpoints kept by the pipeline itself)
        collection, cfg, result = own
    else:
        if args.quick:
            collection, scores = quick_scores(args.workdir / "data", cache)
        else:
            collection, scores, _ = pipeline_scores(file)
        cfg = train_config(file, step, epochs, args.quick)
        result = run_train(cfg, scores, collection, args.workdir / step, cache_dir=cache)
    record = result.manifest.counts["validation"]
    points = []
    for p in record["curve"]:
        checkpoint = result.out_dir / "checkpoints" / f"step-{p['step']}"
        value = test_ndcg(checkpoint, collection, cache)
        log.info("%s: step %d: validation %s, test nDCG@10 %.4f", name, p["step"], p["metrics"], value)
        points.append({"step": p["step"], "epoch": p["epoch"], "validation": dict(p["metrics"]),
                       "test_ndcg@10": value, "kept": p["step"] == record.get("best", {}).get("step")})
    return {"pipeline": file, "step": step, "epochs_upper_bound": cfg.epochs, "validation": cfg.validation,
            "split": record["split"], "metric": record["metric"], "kept_step": record.get("best", {}).get("step"),
            "test_ndcg@10_kept": next((p["test_ndcg@10"] for p in points if p["kept"]), None),
            "test_ndcg@10_last": points[-1]["test_ndcg@10"], "test_ndcg@10_best_possible":
            max(p["test_ndcg@10"] for p in points[1:]) if len(points) > 1 else None,
            "points": points, "correlation_with_test_ndcg@10": correlations(points),
            "train_seconds": result.manifest.seconds, "seconds": round(time.perf_counter() - started, 1)}


def plot_svg(results: dict[str, Any]) -> str:
    """One panel per student: the chosen validation metric and the test nDCG@10 against the step, each on its
    own scale (left and right), the kept checkpoint ringed."""
    from html import escape

    w, h, ml, mr, mt, mb = 420, 240, 52, 52, 28, 36
    panels = []
    for i, (name, r) in enumerate(results["students"].items()):
        pts = r["points"]
        xs = [p["step"] for p in pts]
        series = [("#3b73c4", r["metric"], [p["validation"][r["metric"]] for p in pts]),
                  ("#c4453b", "test nDCG@10", [p["test_ndcg@10"] for p in pts])]
        x0, x1 = min(xs), max(xs) or 1
        out = [f'<g transform="translate({i * w} 0)"><text x="{w / 2}" y="16" text-anchor="middle" '
               f'font-size="13">{escape(name)}</text>',
               f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" stroke="#888"/>']
        for side, (color, label, ys) in enumerate(series):
            lo, hi = min(ys), max(ys)
            pad = max((hi - lo) * 0.1, 0.005)
            lo, hi = lo - pad, hi + pad

            def px(v, x0=x0, x1=x1):
                return ml + (v - x0) / ((x1 - x0) or 1) * (w - ml - mr)

            def py(v, lo=lo, hi=hi):
                return h - mb - (v - lo) / (hi - lo) * (h - mt - mb)

            ax = ml if side == 0 else w - mr
            anchor = "end" if side == 0 else "start"
            dx = -4 if side == 0 else 4
            out.append(f'<line x1="{ax}" y1="{mt}" x2="{ax}" y2="{h - mb}" stroke="{color}"/>')
            for v in (lo + pad, hi - pad):
                out.append(f'<text x="{ax + dx}" y="{py(v) + 4:.1f}" text-anchor="{anchor}" font-size="10" '
                           f'fill="{color}">{v:.3f}</text>')
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="'
                       + " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys)) + '"/>')
            for p, y in zip(pts, ys):
                out.append(f'<circle cx="{px(p["step"]):.1f}" cy="{py(y):.1f}" r="{5 if p["kept"] else 2.5}" '
                           f'fill="{color}"><title>step {p["step"]}: {escape(label)} {y:.4f}</title></circle>')
            out.append(f'<text x="{ml + side * 150}" y="{h - 6}" font-size="11" fill="{color}">{escape(label)}</text>')
        for x in sorted(set(xs)):
            out.append(f'<text x="{ml + (x - x0) / ((x1 - x0) or 1) * (w - ml - mr):.1f}" y="{h - mb + 13}" '
                       f'text-anchor="middle" font-size="9">{x}</text>')
        panels.append("".join(out) + "</g>")
    total = w * max(1, len(panels))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{h}" viewBox="0 0 {total} {h}" '
            f'font-family="sans-serif">' + "".join(panels) + "</svg>\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small slice, few queries and steps (a smoke run)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the students are trained")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "retrdistill")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (the SVG is written beside it)")
    parser.add_argument("--only", action="append", help="a student name to run (repeatable; default: both)")
    args = parser.parse_args()
    suffix = "-quick" if args.quick else ""
    args.workdir = args.workdir or ROOT / ".cache" / f"validation-curves{suffix}"
    out = args.out or ROOT / "benchmarks" / "results" / f"validation_curves{suffix}.json"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "datasets", "urllib3", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from retrdistill.artefacts import library_versions, write_json_atomic, write_text_atomic

    started = time.perf_counter()
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "students": {},
                               "versions": library_versions("torch", "sentence-transformers", "transformers")}
    for name, (file, step, epochs) in STUDENTS.items():
        if args.only and name not in args.only:
            continue
        results["students"][name] = run_student(name, file, step, epochs, args, args.cache_dir)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out, results)
    write_text_atomic(out.with_suffix(".svg"), plot_svg(results))
    for name, r in results["students"].items():
        print(f"{name}: kept step {r['kept_step']} (test nDCG@10 {r['test_ndcg@10_kept']}, last "
              f"{r['test_ndcg@10_last']:.4f}); correlation with test nDCG@10: {r['correlation_with_test_ndcg@10']}")
        for p in r["points"]:
            vals = ", ".join(f"{k} {v:.4f}" for k, v in p["validation"].items())
            print(f"  step {p['step']:>5} epoch {p['epoch']}: {vals} | test nDCG@10 {p['test_ndcg@10']:.4f}"
                  + ("  <- kept" if p["kept"] else ""))
    print(f"wrote {out} and {out.with_suffix('.svg')} in {results['seconds']} s")


if __name__ == "__main__":
    main()
