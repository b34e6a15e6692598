"""Hard negatives: each candidate filter on hand-made scores (known answers, negative scores, teachers whose
scales differ by 100×), the select stage's drop / relabel / sampling, and mining wide then selecting on a real
sub-collection, including cross-encoder-ranked mining through the shared score cache and its crash resume."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from killing import run_until_marker_then_kill

from retrdistill import registry
from retrdistill.kinds import ScoredGroup, read_scores
from retrdistill.parts import FilterView
from retrdistill.stages.select import SelectConfig, build_filters, select_group

TINY = "offline:tiny-bert-mlm"
TEACHER = {"model": TINY, "max_seq_length": 48, "encode_corpus": False}


def view(pos, negs, ranks=None) -> FilterView:
    negs = np.asarray(negs, dtype=float)
    ranks = np.arange(1, len(negs) + 1) if ranks is None else np.asarray(ranks)
    return FilterView("q1", np.asarray(pos, dtype=float), negs, ranks, np.full(len(negs), np.nan))


def flags(name: str, v: FilterView, fit: list[float] | None = None, **options) -> list[bool]:
    part = registry.build("filter", name, options)
    part.fit(np.asarray(fit if fit is not None else v.positive_scores, dtype=float))
    return np.asarray(part.flag(v)).tolist()


POS, NEGS = [0.8], [0.9, 0.79, 0.7, 0.5, 0.1]


# ------------------------------------------------------------------ filters, known answers
def test_rank_window_keeps_the_window():
    assert flags("rank-window", view(POS, NEGS, ranks=[1, 2, 3, 4, 5]), min_rank=2, max_rank=4) == \
        [True, False, False, False, True]


def test_absolute_margin():
    assert flags("margin", view(POS, NEGS), margin=0.0) == [True, False, False, False, False]
    assert flags("margin", view(POS, NEGS), margin=0.05) == [True, True, False, False, False]
    # several positives: the weakest is the reference by default, the strongest when asked
    assert flags("margin", view([0.8, 0.6], NEGS), margin=0.0) == [True, True, True, False, False]
    assert flags("margin", view([0.8, 0.6], NEGS), margin=0.0, reference="max") == [True, False, False, False, False]


def test_relative_margin_is_right_for_negative_scores():
    assert flags("relative-margin", view(POS, NEGS), ratio=0.1) == [True, True, False, False, False]  # below 0.72
    # a logit teacher: positive -2.0; with ratio 0.1 a negative must score below -2.2. (-2.1 is within 5% of the
    # positive, so it is flagged; the naive `neg > ratio' * pos` rule would compare with -1.8 and keep it.)
    assert flags("relative-margin", view([-2.0], [-1.0, -2.1, -2.3, -5.0]), ratio=0.1) == [True, True, False, False]


def test_positive_percentile_uses_every_positive():
    every_positive = [0.5, 0.6, 0.7, 0.8, 0.9]
    assert flags("positive-percentile", view(POS, NEGS), fit=every_positive, percentile=50) == \
        [True, True, False, False, False]  # above the median positive, 0.7
    assert flags("positive-percentile", view(POS, NEGS), fit=every_positive, percentile=0) == \
        [True, True, True, False, False]  # above the weakest positive, 0.5


def test_normalised_margin_keeps_the_same_candidates_at_any_teacher_scale():
    cosine = view(POS, NEGS)
    logits = view([100 * p + 7 for p in POS], [100 * s + 7 for s in NEGS])  # 100x the scale, shifted
    for method in ("minmax", "zscore"):
        a = flags("normalised-margin", cosine, margin=0.1, method=method)
        b = flags("normalised-margin", logits, margin=0.1, method=method)
        assert a == b, method
    # min-max over [0.8, 0.9, 0.79, 0.7, 0.5, 0.1]: positive 0.875, negatives 1, .8625, .75, .5, 0
    assert flags("normalised-margin", cosine, margin=0.1) == [True, True, False, False, False]
    # the same absolute margin does not survive the change of scale
    assert flags("margin", cosine, margin=0.05) != flags("margin", logits, margin=0.05)


def test_positive_rank_drops_queries_whose_positive_the_teacher_ranks_low():
    assert flags("positive-rank", view(POS, NEGS), max_rank=1) == [True]  # one negative above the positive
    assert flags("positive-rank", view(POS, NEGS), max_rank=2) == [False]
    assert flags("positive-rank", view([0.95], NEGS), max_rank=1) == [False]


# ------------------------------------------------------------------ the select stage on one group
def group(scores=(0.8, 0.9, 0.79, 0.7, 0.5, 0.1)) -> ScoredGroup:
    ids = ["p"] + [f"n{i}" for i in range(1, len(scores))]
    return ScoredGroup("q1", "a query", ids, list(scores), 1, list(range(1, len(scores))),
                       [10.0 - i for i in range(1, len(scores))])


def select(g: ScoredGroup, **cfg):
    config = SelectConfig(**cfg)
    return select_group(g, build_filters(config), config)


def test_drop_then_sample_the_best_ranked():
    kept, record, rejects = select(group(), filters=[{"filter": "margin", "options": {"margin": 0.05}}],
                                   negatives=2, keep_rejects=True)
    assert kept.docids == ["p", "n3", "n4"] and kept.positives == 1 and kept.ranks == [3, 4]
    assert kept.miner_scores == [7.0, 6.0]
    assert record == {"qid": "q1", "candidates": 5, "flagged": {"margin": 2}, "relabelled": 0, "kept": 2,
                      "dropped_query": None}
    assert [r["docid"] for r in rejects] == ["n1", "n2"] and all(r["action"] == "drop" for r in rejects)


def test_relabel_makes_a_flagged_candidate_an_extra_positive():
    kept, record, _ = select(group(), filters=[{"filter": "margin", "action": "relabel"}], negatives=8)
    assert kept.docids[:kept.positives] == ["p", "n1"] and kept.scores[:2] == [0.8, 0.9]
    assert kept.docids[kept.positives:] == ["n2", "n3", "n4", "n5"]
    assert record["relabelled"] == 1


def test_filters_run_in_order_on_what_is_left():
    _, record, _ = select(group(), filters=[{"filter": "rank-window", "options": {"min_rank": 2}},
                                            {"filter": "margin", "options": {"margin": 0.05}}])
    assert record["flagged"] == {"rank-window": 1, "margin": 1}  # n1 went to the first, n2 to the second


def test_sampling_orders():
    g = group()
    assert select(g, negatives=3, sampling="spread")[0].docids[1:] == ["n1", "n3", "n5"]
    assert select(g, negatives=2, order="teacher")[0].docids[1:] == ["n1", "n2"]
    first = select(g, negatives=2, sampling="random", seed=1)[0].docids
    assert first == select(g, negatives=2, sampling="random", seed=1)[0].docids and len(first) == 3


def test_query_drops_are_recorded():
    kept, record, _ = select(group(), filters=[{"filter": "positive-rank"}])
    assert kept is None and record["dropped_query"] == "positive-rank"
    kept, record, _ = select(group(), filters=[{"filter": "margin", "options": {"margin": 1.0}}], min_negatives=1)
    assert kept is None and record["dropped_query"] == "fewer than 1 negatives left"


def test_bad_filter_specs_are_clear_errors():
    from retrdistill.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown filter 'nope'; expected one of: rank-window"):
        SelectConfig(filters=[{"filter": "nope"}])
    with pytest.raises(ValueError, match=r"filters\[1\]: unknown key\(s\) margin"):
        SelectConfig(filters=[{"filter": "margin", "margin": 0.1}])
    with pytest.raises(ValueError, match="judges whole queries"):
        SelectConfig(filters=[{"filter": "positive-rank", "action": "relabel"}])


# ------------------------------------------------------------------ mine wide, score, select on real data
@pytest.fixture(scope="module")
def mined(small_collection, tmp_path_factory):
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    work = tmp_path_factory.mktemp("select")
    cache = work / "cache"
    run_queries(QueriesConfig(options={"num_queries": 24, "seed": 13}), small_collection, work / "queries",
                cache_dir=cache)
    mine = run_mine(MineConfig(depth=20, rank_max=20, sampling="all"), small_collection, work / "queries",
                    work / "candidates", cache_dir=cache)
    scores = run_score(ScoreConfig(teacher="bi-encoder", options=dict(TEACHER)), small_collection,
                       work / "candidates", work / "scores", cache_dir=cache)
    return work, cache, mine, scores


def test_mine_wide_keeps_every_rank_with_the_miners_scores(mined):
    from retrdistill.kinds import read_candidates

    work, _, mine, _ = mined
    rows = list(read_candidates(work / "candidates"))
    assert mine.manifest.counts["queries"] == len(rows) == 24
    for row in rows:
        assert 0 < len(row.negatives) <= 20  # BM25 returns only passages sharing a term with the query
        assert row.ranks == list(range(1, len(row.negatives) + 1))
        assert row.miner_scores == sorted(row.miner_scores, reverse=True)
    scored = list(read_scores(work / "scores"))
    assert [g.ranks for g in scored] == [r.ranks for r in rows]


def test_select_stage_counts_agree_with_its_files(mined, small_collection, tmp_path):
    from retrdistill.filters.normalised_margin import normalise
    from retrdistill.stages.select import run_select
    from retrdistill.training.data import TrainingInputs

    work, cache, _, scores = mined
    cfg = SelectConfig(filters=[{"filter": "normalised-margin", "options": {"margin": 0.1}},
                                {"filter": "positive-rank", "options": {"max_rank": 10}}],
                       negatives=4, sampling="spread", keep_rejects=True)
    result = run_select(cfg, work / "scores", tmp_path / "selected")
    counts = result.manifest.counts
    records = [json.loads(line) for line in (tmp_path / "selected" / "selection.jsonl").read_text().splitlines()]
    kept = list(read_scores(tmp_path / "selected"))
    assert counts["queries"] == len(records) == 24
    assert counts["queries_kept"] == len(kept) == sum(r["dropped_query"] is None for r in records)
    assert counts["filters"]["normalised-margin"]["flagged"] == sum(r["flagged"].get("normalised-margin", 0)
                                                                    for r in records)
    assert counts["negatives_kept"] == sum(len(g.docids) - g.positives for g in kept)
    rejects = (tmp_path / "selected" / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == counts["filters"]["normalised-margin"]["flagged"]
    assert counts["scored_by"]["teacher"] == "bi-encoder"
    # every kept negative passes the filter, recomputed here on the original group
    original = {g.qid: g for g in read_scores(work / "scores")}
    for g in kept:
        o = original[g.qid]
        norm = dict(zip(o.docids, normalise(np.asarray(o.scores), "minmax")))
        pos = min(norm[d] for d in o.docids[:o.positives])
        assert all(norm[d] <= pos - 0.1 for d in g.docids[g.positives:])
    q = counts["score_quantiles"]
    assert len(q["q"]) == len(q["positive"]) == 21 and q["margin_after"][0] >= q["margin_before"][0]
    # the train step reads the selection like any scores artefact, and finds the teacher that scored it
    inputs = TrainingInputs(tmp_path / "selected", small_collection, cache)
    assert inputs.scores_config()["teacher"] == "bi-encoder"
    assert run_select(cfg, work / "scores", tmp_path / "selected").skipped


def test_reranked_mining_shares_the_teachers_score_cache(mined, small_collection, tmp_path):
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.score import ScoreConfig, run_score

    work, _, _, _ = mined
    cache = tmp_path / "cache"
    options = {"teacher": "bi-encoder", "teacher_options": dict(TEACHER), "first_depth": 20}
    mine = run_mine(MineConfig(miner="reranked", options=options, depth=20, rank_min=3, rank_max=20,
                               sampling="all"), small_collection, work / "queries", tmp_path / "ce-candidates",
                    cache_dir=cache)
    assert mine.manifest.counts["miner"]["pairs_scored"] > 0
    from retrdistill.kinds import read_candidates

    for row in read_candidates(tmp_path / "ce-candidates"):
        assert row.miner_scores == sorted(row.miner_scores, reverse=True)  # the teacher's order
        assert not row.ranks or row.ranks[0] == 3  # ranks 1-2 of the teacher's order are left out
    scores = run_score(ScoreConfig(teacher="bi-encoder", options=dict(TEACHER)), small_collection,
                       tmp_path / "ce-candidates", tmp_path / "ce-scores", cache_dir=cache)
    positives = sum(g.positives for g in read_scores(tmp_path / "ce-scores"))
    # every negative was scored while mining; only positives the first stage missed are new
    assert scores.manifest.counts["pairs_scored"] <= positives
    for g in read_scores(tmp_path / "ce-scores"):
        assert g.scores[g.positives:] == pytest.approx(g.miner_scores, abs=1e-6)


@pytest.mark.slow  # a child process imports torch and loads a model
def test_killed_reranked_mining_rescores_nothing_already_cached(mined, small_collection, tmp_path):
    from retrdistill.stages.mine import MineConfig, run_mine

    work, _, _, _ = mined
    cache, marker = tmp_path / "cache", tmp_path / "killed-here"
    options = {"teacher": "bi-encoder", "teacher_options": dict(TEACHER), "first_depth": 20}
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from retrdistill.score_cache import ScoreCache
        from retrdistill.stages.mine import MineConfig, run_mine

        put, calls = ScoreCache.put, []
        def put_then_hang(self, rows):
            put(self, rows)
            calls.append(len(rows))
            if len(calls) == 2:
                Path({str(marker)!r}).write_text(str(sum(calls)))
                time.sleep(3600)
        ScoreCache.put = put_then_hang
        cfg = MineConfig(miner="reranked", options={options!r}, depth=20, rank_max=20, sampling="all",
                         batch_queries=6)
        run_mine(cfg, {str(small_collection)!r}, {str(work / 'queries')!r}, {str(tmp_path / 'cands')!r},
                 cache_dir={str(cache)!r})
    """)
    run_until_marker_then_kill(script, marker)
    before_kill = int(marker.read_text())
    resumed = run_mine(MineConfig(miner="reranked", options=options, depth=20, rank_max=20, sampling="all",
                                  batch_queries=6), small_collection, work / "queries", tmp_path / "cands",
                       cache_dir=cache)
    stats = resumed.manifest.counts["miner"]
    assert stats["pairs_from_cache"] == before_kill
    reference = run_mine(MineConfig(miner="reranked", options=options, depth=20, rank_max=20, sampling="all",
                                    batch_queries=6), small_collection, work / "queries", tmp_path / "reference", cache_dir=tmp_path / "c2")
    assert stats["pairs_scored"] + before_kill == reference.manifest.counts["miner"]["pairs_scored"]
    assert (tmp_path / "cands" / "candidates.jsonl").read_text() == \
        (tmp_path / "reference" / "candidates.jsonl").read_text()


def test_mining_report_and_the_leaderboards_margin_figure(mined, tmp_path):
    from retrdistill.artefacts import read_manifest
    from retrdistill.evaluation import leaderboard as lb
    from retrdistill.evaluation.leaderboard_html import render_html
    from retrdistill.evaluation.mining import mining_report, negatives_record
    from retrdistill.stages.select import run_select

    work, _, _, _ = mined
    run_select(SelectConfig(negatives=4), work / "scores", tmp_path / "plain")
    run_select(SelectConfig(negatives=4, filters=[{"filter": "margin", "options": {"margin": 0.02}}]),
               work / "scores", tmp_path / "filtered")
    report = mining_report({"wide": work / "candidates", "plain": tmp_path / "plain",
                            "filtered": tmp_path / "filtered"})
    assert report["artefacts"]["wide"]["kind"] == "candidates"
    assert report["artefacts"]["plain"]["negatives_per_query"] <= 4
    assert report["artefacts"]["filtered"]["flagged"]["margin"] == \
        read_manifest(tmp_path / "filtered").counts["filters"]["margin"]["flagged"]
    overlap = report["overlap_jaccard"]
    assert overlap["plain"]["plain"] == 1.0 and 0.0 < overlap["wide"]["plain"] < 1.0
    assert overlap["plain"]["filtered"] == overlap["filtered"]["plain"]

    record = negatives_record(read_manifest(tmp_path / "filtered"))
    assert record["stage"] == "select" and record["flagged"] == {"margin": report["artefacts"]["filtered"]["flagged"]["margin"]}
    board = lb.Leaderboard(title="t", metric_order=["ndcg@10"])
    board.add(lb.Row(system="student", dataset="d", metrics={"ndcg@10": 0.5}, negatives=record))
    lb.write_json(board, tmp_path / "board.json")
    again = lb.load_leaderboard(tmp_path / "board.json")
    assert again.rows[0].negatives == record
    html = render_html(again)
    assert 'class="margins"' in html and "teacher margin" in html
