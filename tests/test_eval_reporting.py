"""What an evaluation says it scored: "N of M queries judged" in the log, results.json, the manifest and every
leaderboard (Markdown, HTML, JSON); the queries without judgments by id; a warning when judged queries score 0
for every system (broken judgments); and each system against the baseline (Δ, p-value, wins/ties/losses)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from retrdistill.evaluation.leaderboard import (
    SCHEMA_VERSION,
    Leaderboard,
    Row,
    load_leaderboard,
    query_coverage,
    render_markdown,
    write_json,
)

DOCS = {
    "d1": "a synapse passes a signal between two neurons",
    "d2": "the capital of france is paris",
    "d3": "photosynthesis turns light into chemical energy in plants",
    "d4": "the moon orbits the earth about once a month",
    "d5": "a violin has four strings tuned in fifths",
    "d6": "glaciers carve valleys as they move",
    "d7": "bread rises because yeast makes carbon dioxide",
    "d8": "a prime number has exactly two divisors",
}
QUERIES = {
    "q1": "what passes signals between neurons",
    "q2": "capital of france",
    "q3": "how do plants make energy from light",
    "q4": "how often does the moon orbit the earth",  # judged on a passage the corpus lacks: broken
    "q5": "how many strings does a violin have",  # judged, nothing relevant: excluded
    "q6": "why does bread rise",  # no judgment at all
}
QRELS = [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d3", 2), ("q3", "d6", 0), ("q4", "moon-404", 1), ("q5", "d5", 0)]


def _collection(root: Path, qrels=QRELS) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in DOCS.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()), encoding="utf-8")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels), encoding="utf-8")
    return root


def _run(path: Path, order: dict[str, list[str]]) -> str:
    lines = [f"{q} Q0 {d} {rank} {10 - rank} x\n" for q, docs in order.items() for rank, d in enumerate(docs, 1)]
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture()
def evaluated(tmp_path, caplog):
    """Two run-file systems on a six-query collection: q1-q4 judged (q4 on a passage the corpus lacks), q5
    judged with nothing relevant, q6 without judgments; ``good`` ranks the relevant passage first, ``late``
    third."""
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    collection = _collection(tmp_path / "tiny")
    good = _run(tmp_path / "good.trec", {q: [f"d{q[1]}", "d7", "d8"] for q in QUERIES})
    late = _run(tmp_path / "late.trec", {q: ["d7", "d8", f"d{q[1]}"] for q in QUERIES})
    cfg = EvalConfig(systems=[{"name": "late", "type": "run", "options": {"path": late}},
                              {"name": "good", "type": "run", "options": {"path": good}}],
                     baseline="late", measure_cost=False)
    with caplog.at_level(logging.INFO, logger="retrdistill"):
        result = run_eval(cfg, collection, tmp_path / "eval", cache_dir=tmp_path / "cache")
    return result, caplog.records


def test_results_json_and_manifest_say_what_was_scored(evaluated):
    result, _ = evaluated
    results = json.loads((result.out_dir / "results.json").read_text(encoding="utf-8"))
    assert (results["queries"], results["judged_queries"]) == (6, 4)
    assert results["queries_without_judgments"] == ["q6"]
    assert results["queries_without_relevant_judgment"] == ["q5"]
    assert results["queries_zero_for_every_system"] == ["q4"]
    assert results["primary_metric"] == "ndcg@10" and results["shard"] is None
    counts = result.manifest.counts
    assert (counts["queries"], counts["judged_queries"], counts["queries_without_judgments"],
            counts["queries_without_relevant_judgment"], counts["queries_zero_for_every_system"]) == (6, 4, 1, 1, 1)


def test_the_log_says_n_of_m_judged_and_warns_of_zero_scores(evaluated):
    _, records = evaluated
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert any("4 of 6 queries judged: every mean is over these 4." in m and "q6" in m for m in infos)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    zero = [m for m in warnings if "for every system" in m]
    assert len(zero) == 1
    assert "1 of the 4 judged queries scores 0 on nDCG@10 for every system (q4)" in zero[0]
    assert "the qrels judge 1 passage the corpus lacks" in zero[0]


def test_every_leaderboard_says_what_was_scored_and_against_the_baseline(evaluated):
    result, _ = evaluated
    out = result.out_dir
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "## tiny (4 of 6 queries judged)" in markdown
    assert "4 of 6 queries judged: every mean is over these 4." in markdown
    assert "1 query without judgments (not scored): q6." in markdown
    assert "1 query judged with no relevant passage (not scored): q5." in markdown
    assert "> **Warning:** 1 of the 4 judged queries scores 0 on nDCG@10 for every system (q4)" in markdown
    # good against late: the relevant passage first instead of third on q1-q3, both 0 on q4
    board = load_leaderboard(out / "leaderboard.json")
    good, late = board.row("good", "tiny"), board.row("late", "tiny")
    delta = good.metrics["ndcg@10"] - late.metrics["ndcg@10"]
    sig = good.significance["ndcg@10"]
    assert (sig.wins, sig.ties, sig.losses) == (3, 1, 0)
    sign = "+" if delta > 0 else "\u2212"
    assert "| System | \u0394 nDCG@10 | p | W/T/L |" in markdown
    assert f"| good | {sign}{abs(delta):.4f} | {sig.p_corrected:.3f} | 3/1/0 |" in markdown

    html = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert "4 of 6 queries judged" in html and "q6" in html
    assert '<p class="warning" role="alert">' in html and "(q4)" in html
    assert f">{sign}{abs(delta):.4f}</td>" in html and ">3/1/0</td>" in html

    data = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert data["schema_version"] == SCHEMA_VERSION == 4
    assert data["coverage"]["tiny"] == {
        "queries": 6, "judged": 4, "without_judgments": 1, "no_relevant": 1, "zero_for_every_system": 1,
        "judged_documents_not_in_corpus": 1, "shard": None,
        "ids": {"without_judgments": ["q6"], "no_relevant": ["q5"], "zero_for_every_system": ["q4"]}}
    assert len(data["warnings"]) == 1 and data["warnings"][0].startswith("tiny: 1 of the 4 judged queries")
    rows = {r["system"]: r for r in data["rows"]}
    assert rows["good"]["delta"]["ndcg@10"] == pytest.approx(delta) and rows["late"]["delta"] == {}
    # the stored form rebuilds the same pages
    assert board.to_dict() == data
    assert render_markdown(board) == markdown


def test_a_shard_lists_only_the_splits_queries_without_judgments(tmp_path):
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    collection = _collection(tmp_path / "tiny")
    good = _run(tmp_path / "good.trec", {q: [f"d{q[1]}", "d7"] for q in QUERIES})
    cfg = EvalConfig(systems=[{"name": "good", "type": "run", "options": {"path": good}}], measure_cost=False,
                     shard="0/2")
    result = run_eval(cfg, collection, tmp_path / "eval", cache_dir=tmp_path / "cache")
    results = json.loads((result.out_dir / "results.json").read_text(encoding="utf-8"))
    # the other shard's judged queries are not "without judgments"
    assert results["queries_without_judgments"] == ["q6"] and results["shard"] == "0/2"
    markdown = (result.out_dir / "leaderboard.md").read_text(encoding="utf-8")
    assert f"Shard 0/2: {results['judged_queries']} judged queries scored" in markdown


def test_the_many_dataset_leaderboard_carries_each_datasets_coverage(tmp_path):
    from retrdistill.stages.evaluate import EvalConfig, run_eval_datasets

    root = tmp_path / "datasets"
    _collection(root / "broken")
    _collection(root / "sound", qrels=[q for q in QRELS if q[0] != "q4"])
    good = _run(tmp_path / "good.trec", {q: [f"d{q[1]}", "d7", "d8"] for q in QUERIES})
    late = _run(tmp_path / "late.trec", {q: ["d7", "d8", f"d{q[1]}"] for q in QUERIES})
    cfg = EvalConfig(systems=[{"name": "late", "type": "run", "options": {"path": late}},
                              {"name": "good", "type": "run", "options": {"path": good}}],
                     baseline="late", measure_cost=False)
    run_eval_datasets(cfg, [root], tmp_path / "eval", cache_dir=tmp_path / "cache")
    board = load_leaderboard(tmp_path / "eval" / "leaderboard" / "leaderboard.json")
    assert {ds: (c.judged, c.queries) for ds, c in board.coverage.items()} == {"broken": (4, 6), "sound": (3, 6)}
    assert [w.split(":")[0] for w in board.warnings()] == ["broken"]
    markdown = (tmp_path / "eval" / "leaderboard" / "leaderboard.md").read_text(encoding="utf-8")
    assert "## broken (4 of 6 queries judged)" in markdown and "## sound (3 of 6 queries judged)" in markdown
    mean = markdown.split("## Mean over 2 datasets")[1].split("## broken")[0]
    assert "| System | \u0394 nDCG@10 |" in mean  # the means against the baseline's means


def test_the_primary_metric_is_the_first_one_when_ndcg_at_10_is_not_evaluated(tmp_path):
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    collection = _collection(tmp_path / "tiny")
    late = _run(tmp_path / "late.trec", {q: ["d7", "d8", f"d{q[1]}"] for q in QUERIES})
    cfg = EvalConfig(systems=[{"name": "late", "type": "run", "options": {"path": late}}], metrics=["mrr@10"],
                     measure_cost=False)
    result = run_eval(cfg, collection, tmp_path / "eval", cache_dir=tmp_path / "cache")
    assert json.loads((result.out_dir / "leaderboard.json").read_text())["primary_metric"] == "mrr@10"
    assert "scores 0 on MRR@10 for every system (q4)" in (result.out_dir / "leaderboard.md").read_text(encoding="utf-8")


def test_coverage_lists_are_cut_on_the_page_and_the_older_schema_still_loads(tmp_path):
    board = Leaderboard(baseline="a")
    board.add(Row("a", "d", {"ndcg@10": 0.5}, n_queries=3))
    board.coverage["d"] = query_coverage(500, 3, {"without_judgments": [f"u{i:03d}" for i in range(497)]})
    assert len(board.coverage["d"].ids["without_judgments"]) == 100  # the JSON keeps the first 100
    markdown = render_markdown(board)
    assert "497 queries without judgments (not scored): u000, u001," in markdown
    assert "u019, \u2026 (477 more in results.json)." in markdown and "u020" not in markdown
    write_json(board, tmp_path / "b.json")
    assert load_leaderboard(tmp_path / "b.json").coverage == board.coverage
    old = {"format": "retrdistill-leaderboard", "schema_version": 3, "title": "t", "primary_metric": "ndcg@10",
           "baseline": None, "metrics": ["ndcg@10"],
           "rows": [{"system": "s", "dataset": "d", "metrics": {"ndcg@10": 0.5}, "n_queries": 43}]}
    again = Leaderboard.from_dict(old)
    assert again.coverage == {} and "## d (43 queries)" in render_markdown(again)
    from retrdistill.errors import DataError

    with pytest.raises(DataError, match="delta"):  # a version-3 file has no such field
        Leaderboard.from_dict({**old, "rows": [{**old["rows"][0], "delta": {}}]})
    with pytest.raises(DataError, match=r"coverage\.d\.judged: expected a non-negative integer"):
        Leaderboard.from_dict({**old, "schema_version": 4, "coverage": {"d": {"queries": 5, "judged": -1}}})
