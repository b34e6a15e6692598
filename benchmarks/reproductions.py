"""Published SciFact figures reproduced: each row of benchmarks/reproductions/scifact.yaml through the eval stage.

    nice -n 10 python benchmarks/reproductions.py --rows cheap      # the tested rows (bm25s, Lucene flat, MiniLM)
    nice -n 10 python benchmarks/reproductions.py --rows bm25s,minilm
    nice -n 10 python benchmarks/reproductions.py --rows all        # every runnable row (mpnet, nomic: long on CPU)
    python benchmarks/reproductions.py --table                      # the written matrix as Markdown; runs nothing

Every selected row runs as its own eval (``run_eval`` with an ``EvalConfig`` holding the row's one system) on
``data/scifact``: the 300 test claims, metrics nDCG@10 and Recall@100, depth 100, no cost measurement. Its
means are compared with the published figures: ``difference`` is ours minus published, in points (x 100);
``within_0.5_points`` compares nDCG@10; ``reproduced`` uses the row's ``tolerance_points`` (0.5 unless the row's
``why_different`` states another). Rows marked ``runnable: false`` (no eval system here implements the published
setting) and rows without a published figure are reported, not compared.

Results merge into ``benchmarks/results/reproductions-scifact.json`` (or ``--out``): the rows run now replace
their earlier entries, the others stay as they were measured; each entry keeps its date, machine (cores, CPU
model) and load averages; rows never run are listed with the reason. Corpus embeddings and BM25 / Lucene indexes
are cached in ``--cache`` (default ``.cache/retrdistill``), so a rerun of a dense row costs the queries only
(``--fresh-cache`` uses an empty temporary cache instead, so ``seconds`` is the whole cost); ``--work`` holds
each row's eval artefact (TREC run, per-query results, leaderboard).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MATRIX = ROOT / "benchmarks" / "reproductions" / "scifact.yaml"
OUT = ROOT / "benchmarks" / "results" / "reproductions-scifact.json"
DEFAULT_TOLERANCE = 0.5  # points of nDCG@10

log = logging.getLogger("reproductions")


# ------------------------------------------------------------------ the matrix
def load_matrix(path: str | Path = MATRIX) -> dict[str, Any]:
    """The YAML matrix, its rows checked for what this script reads."""
    import yaml

    matrix = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for name, row in matrix["rows"].items():
        for key in ("label", "published", "source"):
            if key not in row:
                raise ValueError(f"{path}: row {name!r} has no {key!r}")
        if row.get("runnable", True) and not row.get("system"):
            raise ValueError(f"{path}: row {name!r} is runnable but names no system")
    return matrix


def select_rows(matrix: dict[str, Any], spec: str) -> list[str]:
    """Row names from ``all``, ``cheap`` (the rows marked ``test: true``) or a comma-separated list."""
    rows = matrix["rows"]
    if spec == "all":
        return list(rows)
    if spec == "cheap":
        return [name for name, row in rows.items() if row.get("test")]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}; the rows are: {', '.join(rows)}")
    return names


def tolerance(matrix: dict[str, Any], row: dict[str, Any]) -> float:
    """Points of nDCG@10 within which the row counts as reproduced."""
    return float(row.get("tolerance_points", matrix.get("tolerance_points", DEFAULT_TOLERANCE)))


def unavailable(row: dict[str, Any]) -> str | None:
    """Why the row cannot run here (not runnable, Lucene missing, an unknown offline model), or None."""
    if not row.get("runnable", True):
        return "not runnable: " + str(row.get("why_different", "no eval system implements this setting"))
    if row.get("needs") == "lucene":
        from retrdistill.lucene.runtime import lucene_unavailable

        reason = lucene_unavailable()
        if reason:
            return reason
    model = (row.get("system") or {}).get("options", {}).get("model", "")
    if isinstance(model, str) and model.startswith("offline:"):
        from retrdistill.models import OFFLINE_MODELS

        if model[len("offline:"):] not in OFFLINE_MODELS:
            return f"{model} is not an offline model of this version of retrdistill"
    return None


# ------------------------------------------------------------------ measuring
def measure_row(matrix: dict[str, Any], name: str, *, cache_dir: Path, work_dir: Path,
                collection: Path | None = None) -> dict[str, Any]:
    """The row's system evaluated on the collection: ``{"ours": {metric: mean}, "seconds": wall time}``.

    The eval artefact goes to ``work_dir/<name>``; an unchanged artefact there is reused (the eval stage skips
    a step whose inputs and config are the same), so ``seconds`` then counts the check only."""
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    row = matrix["rows"][name]
    system = {"name": name, "type": row["system"]["type"], "options": dict(row["system"].get("options") or {})}
    cfg = EvalConfig(split=matrix.get("split", "test"), metrics=list(matrix["metrics"]),
                     depth=int(matrix.get("depth", 100)), systems=[system], measure_cost=False,
                     dataset_name="scifact")
    started = time.perf_counter()
    result = run_eval(cfg, collection or ROOT / matrix["dataset"], work_dir / name, cache_dir=cache_dir)
    seconds = time.perf_counter() - started
    counts = result.manifest.counts
    return {"ours": dict(counts["systems"][name]), "seconds": round(seconds, 1), "skipped": result.skipped,
            "judged_queries": counts["judged_queries"]}


def compare(matrix: dict[str, Any], name: str, ours: dict[str, float] | None) -> dict[str, Any]:
    """Published against ours: differences in points (ours - published), within 0.5 points on nDCG@10, and
    reproduced within the row's tolerance. None where either side is missing."""
    row = matrix["rows"][name]
    published = dict(row["published"])
    difference = {}
    for metric in matrix["metrics"]:
        p, o = published.get(metric), (ours or {}).get(metric)
        difference[metric] = None if p is None or o is None else round(100 * (o - p), 2) + 0.0  # no -0.0
    primary = difference.get("ndcg@10")
    limit = tolerance(matrix, row)
    return {
        "published": published,
        "ours": {m: round(v, 5) for m, v in ours.items()} if ours else None,
        "difference": difference,
        "within_0.5_points": None if primary is None else abs(primary) <= 0.5,
        "tolerance_points": limit,
        "reproduced": None if primary is None else abs(primary) <= limit,
    }


def machine() -> dict[str, Any]:
    """Cores, CPU model and the Python / platform this ran on."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version()}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def row_record(matrix: dict[str, Any], name: str, measured: dict[str, Any] | None, *,
               reason: str | None = None) -> dict[str, Any]:
    """What the JSON holds for one row: the comparison, where the figures come from, how each side ran."""
    row = matrix["rows"][name]
    record = {"label": row["label"], **compare(matrix, name, measured["ours"] if measured else None)}
    record.update({
        "source": row["source"],
        "settings": {"published": row.get("settings"), "ours": row.get("system"),
                     **({"ours_notes": row["ours"]} if row.get("ours") else {})},
        "seconds": measured["seconds"] if measured else None,
    })
    if row.get("why_different"):
        record["why_different"] = row["why_different"]
    if reason:
        record["not_measured"] = reason
    return record


def _points(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}" if signed else f"{100 * value:.2f}"


def markdown_table(report: dict[str, Any], order: list[str] | None = None) -> str:
    """The matrix of a written report as a Markdown table (nDCG@10 and Recall@100 in points), rows in
    ``order`` (the matrix's) where given."""
    lines = ["| row | published nDCG@10 | ours | diff | published R@100 | ours | diff | source |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    names = sorted(report["rows"], key=lambda n: order.index(n) if order and n in order else len(order or []))
    for name in names:
        row = report["rows"][name]
        ours = row.get("ours") or {}
        source = row["source"]
        where = f"{source['repository']} `{source['path']}`" + (f" @{source['commit'][:8]}" if source.get("commit")
                                                                 else "")
        lines.append(" | ".join([
            f"| {row['label']}", _points(row["published"].get("ndcg@10")), _points(ours.get("ndcg@10")),
            _points(row["difference"].get("ndcg@10"), True), _points(row["published"].get("recall@100")),
            _points(ours.get("recall@100")), _points(row["difference"].get("recall@100"), True), where]) + " |")
    return "\n".join(lines) + "\n"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


# ------------------------------------------------------------------ the script
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="cheap", help="all, cheap (the tested rows) or names joined by commas")
    parser.add_argument("--matrix", type=Path, default=MATRIX)
    parser.add_argument("--collection", type=Path, default=None, help="default: the matrix's dataset")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "retrdistill")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="a new empty cache folder, removed afterwards: every row encodes and indexes the corpus, "
                             "so its seconds are the whole cost")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "reproductions")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true", help="print the matrix in --out as Markdown; run nothing")
    args = parser.parse_args(argv)
    if args.table:
        order = list(load_matrix(args.matrix)["rows"])
        sys.stdout.write(markdown_table(json.loads(args.out.read_text(encoding="utf-8")), order))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import tempfile

    from retrdistill.artefacts import write_json_atomic

    matrix = load_matrix(args.matrix)
    with tempfile.TemporaryDirectory(prefix="reproductions-") as tmp:
        if args.fresh_cache:
            args.cache, args.work = Path(tmp) / "cache", Path(tmp) / "work"
        _run(args, matrix, write_json_atomic)


def _run(args: argparse.Namespace, matrix: dict[str, Any], write_json_atomic) -> None:
    names = select_rows(matrix, args.rows)
    rows: dict[str, Any] = {}
    host = machine()
    for name in names:
        row = matrix["rows"][name]
        reason = unavailable(row)
        if reason:
            log.warning("%s: not measured: %s", name, reason)
            rows[name] = row_record(matrix, name, None, reason=reason)
            continue
        before = load_average()
        log.info("%s: %s", name, row["label"])
        try:
            measured = measure_row(matrix, name, cache_dir=args.cache, work_dir=args.work,
                                   collection=args.collection)
        except Exception as exc:  # one row failing (a model not materialisable) leaves the others measured
            log.exception("%s: failed", name)
            rows[name] = row_record(matrix, name, None, reason=f"{type(exc).__name__}: {exc}")
            continue
        record = row_record(matrix, name, measured)
        record.update({"measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": host,
                       "load_before": before, "load_after": load_average(),
                       "judged_queries": measured["judged_queries"], "reused_artefact": measured["skipped"],
                       "cache": "fresh (corpus encoded and indexed in this run)" if args.fresh_cache
                       else f"{_shown(args.cache)} (corpus embeddings and indexes may come from an earlier run)"})
        rows[name] = record
        log.info("%s: ours %s, published %s, difference %s points", name, record["ours"], record["published"],
                 record["difference"])
    # the file as it is now (another run may have written it meanwhile), the rows run here replacing theirs
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    kept = {}
    for name, record in previous.get("rows", {}).items():  # earlier measurements, compared with the matrix as it is
        if name in matrix["rows"] and name not in rows and record.get("ours"):
            fresh = row_record(matrix, name, {"ours": record["ours"], "seconds": record.get("seconds")})
            record = {**{k: v for k, v in record.items() if k != "why_different"}, **fresh}
        kept[name] = record
    rows = {**kept, **rows}
    order = list(matrix["rows"])
    for name in order:  # every row of the matrix is listed, the ones never run as such
        if name not in rows or (rows[name].get("ours") is None and name not in names):
            reason = unavailable(matrix["rows"][name]) or f"not run yet: --rows {name}"
            rows[name] = row_record(matrix, name, None, reason=reason)
    report = {
        "dataset": matrix["dataset"], "split": matrix.get("split", "test"), "metrics": matrix["metrics"],
        "depth": matrix.get("depth", 100), "matrix": _shown(args.matrix),
        "updated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": host,
        "load": load_average(),
        "rows": {n: rows[n] for n in sorted(rows, key=lambda n: order.index(n) if n in order else len(order))},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
