"""Evaluation: metrics against pytrec_eval / ir-measures on the real sample, significance tests with known
answers, TREC files, fusion, dataset checks and the leaderboard's JSON and Markdown."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from retrdistill.errors import ConfigError, DataError
from retrdistill.evaluation.checks import check_dataset
from retrdistill.evaluation.compare import (
    compare_results,
    compare_runs,
    fisher_randomization_test,
    holm,
    paired_t_test,
)
from retrdistill.evaluation.fusion import fuse_runs
from retrdistill.evaluation.leaderboard import (
    MARKER,
    SCHEMA_VERSION,
    Leaderboard,
    Row,
    load_leaderboard,
    render_markdown,
    write_json,
    write_markdown,
)
from retrdistill.evaluation.metrics import ACCEPTED_METRICS, EvalResult, evaluate
from retrdistill.evaluation.runs import (
    RunFileStats,
    read_qrels,
    read_trec_run,
    truncate,
    write_trec_run,
)

ROOT = Path(__file__).resolve().parents[1]
# The repository ships the sample under data/; until it does, the shared copy beside the checkout is used.
DATA_CANDIDATES = (ROOT / "data" / "msmarco-dl-5k", ROOT.parent / "shared" / "data" / "msmarco-dl-5k")
TOL = 1e-6
ALL_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map", "precision@5", "ndcg", "mrr", "map@10")
PYTREC_NAMES = {  # ours -> pytrec_eval (mrr@10 is recip_rank on the run cut to 10, checked separately)
    "ndcg@10": "ndcg_cut_10",
    "recall@100": "recall_100",
    "map": "map",
    "precision@5": "P_5",
    "ndcg": "ndcg",
    "mrr": "recip_rank",
    "map@10": "map_cut_10",
}


def _data_dir() -> Path:
    for d in DATA_CANDIDATES:
        if (d / "qrels" / "test.tsv").is_file():
            return d
    pytest.fail(f"sample data not found in any of {[str(d) for d in DATA_CANDIDATES]}")


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _bm25_run(corpus: list[dict], queries: list[dict], stem: bool, k: int = 100) -> dict[str, dict[str, float]]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english") if stem else None
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in corpus]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    q_tokens = bm25s.tokenize([q["text"] for q in queries], stopwords="en", stemmer=stemmer, show_progress=False)
    docs, scores = retriever.retrieve(q_tokens, k=k, show_progress=False, n_threads=1)
    return {
        q["_id"]: {corpus[int(i)]["_id"]: float(s) for i, s in zip(row_docs, row_scores) if s > 0}
        for q, row_docs, row_scores in zip(queries, docs, scores)
    }


@pytest.fixture(scope="module")
def sample():
    d = _data_dir()
    corpus = _jsonl(d / "corpus.jsonl")
    queries = _jsonl(d / "queries.jsonl")
    return {
        "dir": d,
        "qrels": read_qrels(d / "qrels" / "test.tsv"),
        "queries": [q["_id"] for q in queries],
        "corpus_ids": {doc["_id"] for doc in corpus},
        "bm25": _bm25_run(corpus, queries, stem=True),
        "bm25_nostem": _bm25_run(corpus, queries, stem=False),
    }


def _pytrec(qrels, run, measures):
    import pytrec_eval

    return pytrec_eval.RelevanceEvaluator(qrels, set(measures)).evaluate(run)


# ---------------------------------------------------------------- metrics on real data
def test_metrics_equal_pytrec_eval_per_query_and_mean(sample):
    qrels, run = sample["qrels"], sample["bm25"]
    # the BM25 run has tied scores, so the tie order (trec_eval's) is exercised too
    assert any(len(set(docs.values())) < len(docs) for docs in run.values())
    res = evaluate(qrels, run, ALL_METRICS)
    ref = _pytrec(qrels, run, PYTREC_NAMES.values())
    ref10 = _pytrec(qrels, truncate(run, 10), ["recip_rank"])
    judged = sorted(q for q, docs in qrels.items() if any(g >= 1 for g in docs.values()))
    assert res.n_queries == len(judged) == len(ref) == 43
    assert sorted(res.per_query) == sorted(ref) == judged
    for q in judged:
        for ours, theirs in PYTREC_NAMES.items():
            assert res.per_query[q][ours] == pytest.approx(ref[q][theirs], abs=TOL), (q, ours)
        assert res.per_query[q]["mrr@10"] == pytest.approx(ref10[q]["recip_rank"], abs=TOL), q
    for ours, theirs in PYTREC_NAMES.items():
        assert res.mean[ours] == pytest.approx(sum(ref[q][theirs] for q in judged) / len(judged), abs=TOL)
    assert res.unjudged_in_run == sorted(set(sample["queries"]) - set(qrels))
    assert len(res.unjudged_in_run) == 7
    assert res.missing_from_run == [] and res.no_relevant == []


def test_metrics_equal_ir_measures(sample):
    import ir_measures
    from ir_measures import AP, RR, R, nDCG

    qrels, run = sample["qrels"], sample["bm25"]
    res = evaluate(qrels, run)
    ref = ir_measures.calc_aggregate([nDCG @ 10, R @ 100, RR @ 10, AP], qrels, run)
    assert res.mean["ndcg@10"] == pytest.approx(ref[nDCG @ 10], abs=TOL)
    assert res.mean["recall@100"] == pytest.approx(ref[R @ 100], abs=TOL)
    assert res.mean["mrr@10"] == pytest.approx(ref[RR @ 10], abs=TOL)
    assert res.mean["map"] == pytest.approx(ref[AP], abs=TOL)


def test_judged_query_missing_from_run_scores_zero_and_counts(sample):
    qrels, run = sample["qrels"], dict(sample["bm25"])
    dropped = sorted(q for q in qrels if q in run)[:2]
    for q in dropped:
        del run[q]
    res = evaluate(qrels, run, ["ndcg@10"])
    ref = _pytrec(qrels, run, ["ndcg_cut_10"])  # pytrec_eval skips the missing queries
    assert res.missing_from_run == dropped
    assert res.n_queries == 43 and len(ref) == 41
    assert all(res.per_query[q]["ndcg@10"] == 0.0 for q in dropped)
    assert res.mean["ndcg@10"] == pytest.approx(sum(v["ndcg_cut_10"] for v in ref.values()) / 43, abs=TOL)


def test_query_without_relevant_judgment_is_excluded(sample):
    qrels = dict(sample["qrels"])
    qrels["only-zero"] = {"x1": 0, "x2": 0}
    run = dict(sample["bm25"])
    run["only-zero"] = {"x1": 3.0}
    res = evaluate(qrels, run, ["map"])
    assert res.no_relevant == ["only-zero"]
    assert res.n_queries == 43 and "only-zero" not in res.per_query
    assert res.mean["map"] == pytest.approx(evaluate(sample["qrels"], sample["bm25"], ["map"]).mean["map"], abs=1e-12)


def test_relevance_level_three_matches_pytrec_eval(sample):
    import pytrec_eval

    qrels, run = sample["qrels"], sample["bm25"]
    res = evaluate(qrels, run, ["map", "recall@100"], relevance_level=3)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"map", "recall_100"}, relevance_level=3).evaluate(run)
    counted = [q for q in ref if any(g >= 3 for g in qrels[q].values())]
    assert res.n_queries == len(counted) < 43
    for q in counted:
        assert res.per_query[q]["map"] == pytest.approx(ref[q]["map"], abs=TOL)
        assert res.per_query[q]["recall@100"] == pytest.approx(ref[q]["recall_100"], abs=TOL)


def test_ties_are_ranked_like_trec_eval():
    # trec_eval ranks tied scores by doc id descending: c, b, a -> the relevant "a" is third
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}
    assert evaluate(qrels, run, ["mrr"]).mean["mrr"] == pytest.approx(1 / 3)
    assert _pytrec(qrels, run, ["recip_rank"])["q"]["recip_rank"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("bad", ["bleu", "ndcg@ten", "recall", "precision", "ndcg@0", "mrr@-1", ""])
def test_unknown_metric_raises_config_error_listing_accepted(bad):
    with pytest.raises(ConfigError) as exc:
        evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}}, ["ndcg@10", bad])
    for name in ACCEPTED_METRICS:
        assert name in str(exc.value)


def test_metric_names_are_canonicalised():
    res = evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}}, ["nDCG@10", "MAP", "ndcg@10"])
    assert res.metrics == ("ndcg@10", "map")


# ---------------------------------------------------------------- significance with known answers
def _result(values: dict[str, float], metric: str = "ndcg@10") -> EvalResult:
    per_query = {q: {metric: v} for q, v in values.items()}
    mean = {metric: sum(values.values()) / len(values)}
    return EvalResult(metrics=(metric,), mean=mean, per_query=per_query, n_queries=len(values))


def test_identical_systems_have_p_one_and_only_ties():
    base = {f"q{i}": (i % 7) / 7 for i in range(30)}
    for test in ("student", "fisher"):
        cmp = compare_results({"base": _result(base), "same": _result(dict(base))}, "base", test=test)
        assert cmp.p_values["same"]["ndcg@10"] == 1.0
        assert cmp.p_corrected["same"]["ndcg@10"] == 1.0
        assert cmp.win_tie_loss["same"]["ndcg@10"] == (0, 30, 0)
        assert not cmp.significant("same", "ndcg@10")


def test_better_on_every_query_fisher_p_is_one_over_n_permutations():
    n_perm = 2000
    base = {f"q{i}": 0.3 + 0.01 * (i % 5) for i in range(30)}
    better = {q: v + 0.05 + 0.001 * i for i, (q, v) in enumerate(base.items())}
    p = fisher_randomization_test(list(base.values()), list(better.values()), n_permutations=n_perm, seed=1)
    # the observed labelling is the only one this extreme unless a random draw hits all-same signs (2**-29)
    assert p == 1 / n_perm
    cmp = compare_results({"b": _result(base), "s": _result(better)}, "b", test="fisher", n_permutations=n_perm)
    assert cmp.p_values["s"]["ndcg@10"] == 1 / n_perm
    assert cmp.win_tie_loss["s"]["ndcg@10"] == (30, 0, 0)
    assert cmp.significant("s", "ndcg@10")
    assert set(cmp.outcomes("s", "ndcg@10").values()) == {"win"}
    assert compare_results({"b": _result(base), "s": _result(better)}, "b").p_values["s"]["ndcg@10"] < 1e-10


def test_fisher_exact_enumeration_on_small_sets():
    # 5 queries, all better by the same amount: only "all +" and "all -" are as extreme -> p = 2 / 2**5
    assert fisher_randomization_test([0.1] * 5, [0.3] * 5, n_permutations=1000) == pytest.approx(2 / 32)
    # 4 queries, differences (1, 1, 1, -1), observed |sum| = 2. With u = s1+s2+s3 (3: 1 way, 1: 3, -1: 3,
    # -3: 1) and s4 = +-1, |u - s4| >= 2 holds for 2 + 3 + 3 + 2 = 10 of the 16 sign patterns
    assert fisher_randomization_test([0, 0, 0, 1], [1, 1, 1, 0], n_permutations=100) == pytest.approx(10 / 16)


def test_fisher_is_reproducible_for_a_seed():
    base = [0.1 * (i % 9) for i in range(40)]
    other = [v + (0.05 if i % 3 else -0.04) for i, v in enumerate(base)]
    first = fisher_randomization_test(base, other, n_permutations=3000, seed=7)
    assert first == fisher_randomization_test(base, other, n_permutations=3000, seed=7)
    assert 1 / 3000 < first < 1


def test_paired_t_test_known_answer():
    # two queries with differences 1 and 3: t = 2 with 1 degree of freedom (Cauchy): p = 1 - 2 atan(2) / pi
    assert paired_t_test([0.0, 0.0], [1.0, 3.0]) == pytest.approx(1 - 2 * math.atan(2) / math.pi, abs=1e-12)
    assert paired_t_test([0.2, 0.4, 0.6], [0.3, 0.5, 0.7]) == 0.0  # constant non-zero difference
    assert paired_t_test([0.2, 0.4], [0.2, 0.4]) == 1.0


def test_holm_against_hand_computed_values():
    raw = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    # sorted: d .005*4=.02, a .01*3=.03, c .03*2=.06, b .04*1=.04 -> kept monotone: .06
    assert holm(raw) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert holm({"x": 0.6, "y": 0.5}) == pytest.approx({"x": 1.0, "y": 1.0})


def test_compare_runs_on_real_data(sample):
    qrels = sample["qrels"]
    runs = {
        "bm25": sample["bm25"],
        "bm25-nostem": sample["bm25_nostem"],
        "rrf": fuse_runs([sample["bm25"], sample["bm25_nostem"]], "rrf"),
    }
    cmp = compare_runs(qrels, runs, "bm25", ["ndcg@10", "map"], test="student")
    assert cmp.systems == ["bm25-nostem", "rrf"] and len(cmp.queries) == 43
    for metric in cmp.metrics:
        expected = holm({s: cmp.p_values[s][metric] for s in cmp.systems})
        for s in cmp.systems:
            assert cmp.p_corrected[s][metric] == pytest.approx(expected[s])
            assert cmp.p_corrected[s][metric] >= cmp.p_values[s][metric]
            w, t, lo = cmp.win_tie_loss[s][metric]
            outcomes = list(cmp.outcomes(s, metric).values())
            assert (w, t, lo) == (outcomes.count("win"), outcomes.count("tie"), outcomes.count("loss"))
            assert w + t + lo == 43
            deltas = cmp.deltas(s, metric)
            mean_delta = cmp.results[s].mean[metric] - cmp.results["bm25"].mean[metric]
            assert sum(deltas.values()) / 43 == pytest.approx(mean_delta, abs=1e-12)
    everything = compare_runs(qrels, runs, "bm25", ["ndcg@10", "map"], correct_over="all")
    flat = holm({(s, m): everything.p_values[s][m] for s in everything.systems for m in everything.metrics})
    for (s, m), p in flat.items():
        assert everything.p_corrected[s][m] == pytest.approx(p)


def test_compare_rejects_bad_options():
    res = {"a": _result({"q1": 0.1, "q2": 0.2}), "b": _result({"q1": 0.2, "q2": 0.1})}
    with pytest.raises(ConfigError, match="baseline"):
        compare_results(res, "nope")
    with pytest.raises(ConfigError, match="student, fisher"):
        compare_results(res, "a", test="wilcoxon")
    with pytest.raises(ValueError, match="other queries"):
        compare_results({"a": res["a"], "c": _result({"q1": 0.1, "q3": 0.2})}, "a")


# ---------------------------------------------------------------- TREC files
def test_trec_round_trip_is_exact(tmp_path, sample):
    path = tmp_path / "run.trec"
    n = write_trec_run(path, sample["bm25"], tag="bm25s")
    assert n == sum(len(d) for d in sample["bm25"].values())
    stats = RunFileStats()
    assert read_trec_run(path, stats=stats) == sample["bm25"]
    assert stats.rows == n and stats.duplicates == 0 and stats.tags == ("bm25s",)
    rows = [line.split() for line in path.read_text().splitlines()]
    assert all(len(r) == 6 and r[1] == "Q0" and r[5] == "bm25s" for r in rows)
    first = [r for r in rows if r[0] == rows[0][0]]
    assert [int(r[3]) for r in first] == list(range(1, len(first) + 1))
    assert [float(r[4]) for r in first] == sorted((float(r[4]) for r in first), reverse=True)


def test_trec_writer_orders_ties_by_doc_id_like_trec_eval(tmp_path):
    path = tmp_path / "ties.trec"
    write_trec_run(path, {"q": {"a": 1.0, "c": 1.0, "b": 2.0}}, tag="t")
    assert [line.split()[2:4] for line in path.read_text().splitlines()] == [["b", "1"], ["c", "2"], ["a", "3"]]


def test_reads_anserini_style_files(tmp_path):
    path = tmp_path / "anserini.txt"
    path.write_text("1 Q0 D1 1 14.800000 Anserini\n1\tQ0\tD2\t2\t13.5\tAnserini\n\n2 Q0 D1 1 -3 Anserini  \n")
    assert read_trec_run(path) == {"1": {"D1": 14.8, "D2": 13.5}, "2": {"D1": -3.0}}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("q1 Q0 d3 3 1.5", "expected 6 whitespace-separated columns"),
        ("q1 Q0 d3 3 1.5 tag extra", "found 7"),
        ("q1 Q0 d3 3 high tag", "score (column 5) must be a number"),
        ("q1 Q0 d3 third 1.5 tag", "rank (column 4) must be an integer"),
        ("q1 Q0 d3 3 nan tag", "must be finite"),
    ],
)
def test_bad_run_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.trec"
    path.write_text(f"q1 Q0 d1 1 3.0 tag\nq1 Q0 d2 2 2.0 tag\n{line}\n")
    with pytest.raises(DataError) as exc:
        read_trec_run(path)
    assert exc.value.line == 3
    assert str(exc.value).startswith(f"{path}, line 3: ")
    assert problem in str(exc.value)


def test_duplicate_rows_raise_or_keep_max_with_count(tmp_path, caplog):
    path = tmp_path / "dup.trec"
    path.write_text("q Q0 a 1 3 t\nq Q0 b 2 2 t\nq Q0 a 3 5 t\nr Q0 a 1 1 t\nq Q0 b 4 1 t\n")
    with pytest.raises(DataError, match=r"line 3: query 'q', doc 'a' already appeared on line 1"):
        read_trec_run(path)
    stats = RunFileStats()
    with caplog.at_level(logging.WARNING, logger="retrdistill.evaluation.runs"):
        run = read_trec_run(path, on_duplicate="keep-max", stats=stats)
    assert run == {"q": {"a": 5.0, "b": 2.0}, "r": {"a": 1.0}}
    assert stats.duplicates == 2 and stats.lines == 5 and stats.rows == 3
    assert stats.duplicate_examples == (("q", "a", 3), ("q", "b", 5))
    assert "2 duplicate" in caplog.text


def test_qrels_reader_formats_and_errors(tmp_path):
    beir = tmp_path / "beir.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n")
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 2\nq1 0 d2 0\n")
    assert read_qrels(beir) == read_qrels(trec) == {"q1": {"d1": 2, "d2": 0}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t1\nq1\td2\tyes\n")
    with pytest.raises(DataError, match=r"line 2: grade must be an integer"):
        read_qrels(bad)


# ---------------------------------------------------------------- fusion
def test_rrf_and_comb_fusion_by_hand():
    a = {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    b = {"q": {"d3": 10.0, "d1": 10.0}, "q2": {"x": 1.0}}  # tie: d3 ranks before d1 (doc id descending)
    rrf = fuse_runs([a, b], "rrf", k=60)
    assert rrf["q"] == pytest.approx({"d1": 1 / 61 + 1 / 62, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61})
    assert rrf["q2"] == pytest.approx({"x": 1 / 61})
    # min-max: a -> d1 1, d2 .5, d3 0; b (both 10) -> 0 for both
    assert fuse_runs([a, b], "combsum")["q"] == pytest.approx({"d1": 1.0, "d2": 0.5, "d3": 0.0})
    c = {"q": {"d1": 1.0, "d2": 3.0}}  # min-max: d1 0, d2 1
    assert fuse_runs([a, c], "combmnz")["q"] == pytest.approx({"d1": 2 * 1.0, "d2": 2 * 1.5, "d3": 0.0})
    assert fuse_runs([a, c], "wsum", weights=[0.25, 0.75])["q"] == pytest.approx({"d1": 0.25, "d2": 0.875, "d3": 0.0})
    with pytest.raises(ConfigError, match="rrf, combsum, combmnz"):
        fuse_runs([a, b], "borda-ish")


def test_fused_real_runs_score_like_pytrec_eval(sample):
    fused = fuse_runs([sample["bm25"], sample["bm25_nostem"]], "combmnz")
    assert set(fused) == set(sample["bm25"])
    res = evaluate(sample["qrels"], fused, ["ndcg@10"])
    ref = _pytrec(sample["qrels"], fused, ["ndcg_cut_10"])
    assert res.mean["ndcg@10"] == pytest.approx(sum(v["ndcg_cut_10"] for v in ref.values()) / len(ref), abs=TOL)


# ---------------------------------------------------------------- dataset checks
def test_checks_report_counts_on_real_data(tmp_path, sample):
    qrels = sample["qrels"]
    report = check_dataset(qrels, queries=sample["queries"], corpus_ids=sample["corpus_ids"], run=sample["bm25"])
    assert report.n_queries == 50 and report.n_judged_pairs == 4102
    assert len(report.queries_without_judgments) == 7
    assert report.missing_corpus_docs == [] and report.unknown_run_queries == []
    assert not report.ok

    some_query = sorted(qrels)[0]
    removed = set(sorted(qrels[some_query])[:3])
    judged_removed = sum(1 for docs in qrels.values() for d in docs if d in removed)
    run = dict(sample["bm25"], stranger={"d": 1.0})
    path = tmp_path / "run.trec"
    write_trec_run(path, run)
    with open(path, "a") as fh:
        fh.write(f"{some_query} Q0 dup 999 0.5 x\n{some_query} Q0 dup 1000 0.7 x\n")
    report = check_dataset(qrels, queries=sample["queries"], corpus_ids=sample["corpus_ids"] - removed, run_path=path)
    assert len(report.missing_corpus_docs) == judged_removed >= 3
    assert report.unknown_run_queries == ["stranger"]
    assert report.run_duplicate_rows == 1
    counts = report.counts()
    assert counts["missing_corpus_docs"] == judged_removed and counts["run_duplicate_rows"] == 1
    assert "duplicate (query, doc) rows in the run file: 1" in report.summary()


def test_checks_without_query_set_use_qrels():
    report = check_dataset({"q1": {"a": 1}, "q2": {"b": 0}}, run={"q1": {"a": 1.0}, "q9": {"a": 1.0}})
    assert report.queries_without_judgments == ["q2"]
    assert report.unknown_run_queries == ["q9"]
    assert report.missing_corpus_docs is None and report.run_duplicate_rows is None


# ---------------------------------------------------------------- leaderboard JSON and Markdown
def _board(sample) -> Leaderboard:
    qrels = sample["qrels"]
    runs = {"bm25": sample["bm25"], "bm25-nostem": sample["bm25_nostem"]}
    cmp = compare_runs(qrels, runs, "bm25", ["ndcg@10", "recall@100", "mrr@10", "map"], test="student")
    board = Leaderboard(title="sample")
    board.add_result(
        "bm25",
        "msmarco-dl-5k",
        cmp.results["bm25"],
        ms_per_query=0.4,
        index_bytes=3_100_000,
        provenance={"index": "ab" * 32},
    )
    board.add_result("bm25-nostem", "msmarco-dl-5k", cmp.results["bm25-nostem"], ms_per_query=0.3)
    board.add_comparison("msmarco-dl-5k", cmp)
    board.add(Row(system="bm25", dataset="other", metrics={"ndcg@10": 0.5, "map": 0.4}, ms_per_query=0.6))
    board.add(Row(system="bm25-nostem", dataset="other", metrics={"ndcg@10": 0.3}, ms_per_query=0.5, parameters=7))
    return board


def test_leaderboard_json_round_trip_and_schema(tmp_path, sample):
    board = _board(sample)
    path = tmp_path / "lb.json"
    write_json(board, path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["format"] == "retrdistill-leaderboard"
    assert data["metrics"][0] == "ndcg@10" and data["datasets"] == ["msmarco-dl-5k", "other"]
    row = next(r for r in data["rows"] if r["system"] == "bm25-nostem" and r["dataset"] == "msmarco-dl-5k")
    assert set(row["significance"]) == {"ndcg@10", "recall@100", "mrr@10", "map"}
    assert (
        row["significance"]["map"]["wins"] + row["significance"]["map"]["ties"] + row["significance"]["map"]["losses"]
        == 43
    )
    loaded = load_leaderboard(path)
    assert loaded.to_dict() == board.to_dict()
    assert render_markdown(loaded) == render_markdown(board)


def test_leaderboard_mean_rows(sample):
    board = _board(sample)
    means = {m.system: m for m in board.mean_rows()}
    bm25 = board.row("bm25", "msmarco-dl-5k").metrics
    assert means["bm25"].metrics["ndcg@10"] == pytest.approx((bm25["ndcg@10"] + 0.5) / 2)
    assert means["bm25"].metrics["map"] == pytest.approx((bm25["map"] + 0.4) / 2)
    assert "map" not in means["bm25-nostem"].metrics  # missing on one dataset: no mean
    assert means["bm25"].ms_per_query == pytest.approx(0.5)
    assert means["bm25-nostem"].parameters is None  # differs between datasets


def test_leaderboard_markdown_has_tables_and_markers(tmp_path, sample):
    board = _board(sample)
    path = tmp_path / "lb.md"
    write_markdown(board, path)
    text = path.read_text()
    assert "| System | nDCG@10 | R@100 | MRR@10 | MAP | ms/query | queries/s | index |" in text
    bm25 = board.row("bm25", "msmarco-dl-5k")
    assert f"| {bm25.ms_per_query:.2f} | {1000 / bm25.ms_per_query:,.0f} |" in text  # queries/s = 1000 / ms/query
    assert "## Mean over 2 datasets" in text and "## msmarco-dl-5k (43 queries)" in text
    sig = board.row("bm25-nostem", "msmarco-dl-5k").significance
    marked = [m for m, s in sig.items() if s.p_corrected < 0.05]
    for m in sig:
        cell = f"{board.row('bm25-nostem', 'msmarco-dl-5k').metrics[m]:.4f}"
        assert (cell + MARKER in text) == (m in marked)
    assert (MARKER in text) == bool(marked)
    assert "index `abababababab`" in text


def test_leaderboard_rejects_bad_json(tmp_path, sample):
    data = _board(sample).to_dict()
    data["rows"][1]["metrics"]["ndcg@10"] = "high"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"rows\[1\]\.metrics\.ndcg@10: expected a finite number"):
        load_leaderboard(path)
    data = _board(sample).to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="schema_version"):
        load_leaderboard(path)
