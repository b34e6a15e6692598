"""The listwise LLM teacher: permutation parsing on adversarial answers, the sliding windows, and the teacher
with a real small model (SmolLM2-135M) through the score stage: scores are the ranks' mapping over whole groups,
a group with a new pair is re-ranked whole, and a re-run with the score cache gone asks the model nothing (every
window's answer comes from the generation cache)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrdistill import registry
from retrdistill.errors import ConfigError
from retrdistill.teachers.listwise import parse_permutation, windows

SMOL = {"model": "offline:smollm2-135m-instruct"}


@pytest.mark.parametrize("text, size, order, repairs", [
    ("[2] > [1] > [3]", 3, [1, 0, 2], (0, 0, 0, False)),
    ("[3]>[1]>[2]", 3, [2, 0, 1], (0, 0, 0, False)),
    ("Sure! Here is the ranking: 3, 1, 2. Passage 3 is the best.", 3, [2, 0, 1], (1, 0, 0, False)),
    ("[2] > [2] > [1]", 3, [1, 0, 2], (1, 0, 1, False)),
    ("[5] > [1] > [0]", 3, [0, 1, 2], (0, 2, 2, False)),
    ("Passage 2 is most relevant.", 4, [1, 0, 2, 3], (0, 0, 3, False)),
    ("I cannot rank these passages.", 3, [0, 1, 2], (0, 0, 0, True)),
    ("", 2, [0, 1], (0, 0, 0, True)),
])
def test_permutations_are_parsed_and_every_repair_counted(text, size, order, repairs):
    parsed = parse_permutation(text, size)
    assert parsed.order == order and sorted(parsed.order) == list(range(size))
    assert (parsed.repeated, parsed.invented, parsed.missing, parsed.unparsed) == repairs


def test_windows_slide_from_the_end_to_the_start():
    assert windows(10, 4, 2) == [(6, 10), (4, 8), (2, 6), (0, 4)]
    assert windows(7, 4, 3) == [(3, 7), (0, 4)]
    assert windows(3, 4, 2) == [(0, 3)]
    covered = {i for a, b in windows(23, 10, 5) for i in range(a, b)}
    assert covered == set(range(23))


def test_options_are_checked(small_collection, small_cache):
    from retrdistill.data.beir import open_collection

    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    for options, message in [({"window": 3, "stride": 3}, "stride"), ({"score": "softmax"}, "score must be"),
                             ({"template": "relevance"}, r"has no \{passages\}"), ({"llm": "oracle"}, "oracle")]:
        with pytest.raises(ConfigError, match=message):
            registry.build("teacher", "llm-listwise", {"llm_options": SMOL, **options}, corpus=corpus,
                           cache_dir=small_cache)


def _generations(cache: Path) -> int:
    return sum(len(f.read_text(encoding="utf-8").splitlines()) for f in (cache / "llm-generations").rglob("*.jsonl"))


@pytest.mark.slow
def test_listwise_teacher_through_the_score_stage(small_collection, tmp_path):
    from retrdistill.data.beir import open_collection
    from retrdistill.kinds import read_candidates, read_scores
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    cache = tmp_path / "cache"
    run_queries(QueriesConfig(options={"num_queries": 3, "seed": 4}), small_collection, tmp_path / "q", cache_dir=cache)
    run_mine(MineConfig(miner="bm25", depth=10, negatives=4, rank_max=10), small_collection, tmp_path / "q",
             tmp_path / "c", cache_dir=cache)
    options = {"llm_options": {**SMOL, "batch_size": 4}, "window": 3, "stride": 2, "max_new_tokens": 16}
    config = ScoreConfig(teacher="llm-listwise", options=options)
    first = run_score(config, small_collection, tmp_path / "c", tmp_path / "s", cache_dir=cache)
    groups = list(read_scores(tmp_path / "s"))
    assert len(groups) == len(list(read_candidates(tmp_path / "c"))) >= 2
    for g in groups:  # each group's scores are 1 / rank over the whole group: a permutation of 1, 1/2, ...
        assert sorted(g.scores, reverse=True) == pytest.approx([1 / r for r in range(1, len(g.docids) + 1)])
    windows_run = first.manifest.counts["teacher"]["windows"]
    assert windows_run == sum(len(windows(len(g.docids), 3, 2)) for g in groups)
    generated = _generations(cache)
    assert 0 < generated <= windows_run

    (cache / "scores.sqlite").unlink()  # the pair scores gone: every window's answer is in the generation cache
    again = run_score(config, small_collection, tmp_path / "c", tmp_path / "s2", cache_dir=cache)
    assert again.manifest.counts["pairs_scored"] == first.manifest.counts["pairs_scored"]
    assert _generations(cache) == generated  # nothing asked of the model
    assert (tmp_path / "s" / "scores.jsonl").read_text() == (tmp_path / "s2" / "scores.jsonl").read_text()

    # a group that gains a pair is re-ranked whole: its scores stay one permutation, not old ranks plus a new one
    corpus = open_collection(small_collection, cache / "corpora").corpus
    teacher = registry.build("teacher", "llm-listwise", options, corpus=corpus, cache_dir=cache)
    from retrdistill.score_cache import SCORES_FILE, CachedScorer

    scorer = CachedScorer(cache / SCORES_FILE)
    g = groups[0]
    extra = next(d for d in corpus.id_list() if d not in g.docids)
    scores = scorer.scores(teacher, {g.qid: g.query}, {g.qid: g.docids + [extra]})[g.qid]
    assert sorted(scores.tolist(), reverse=True) == pytest.approx(
        [1 / r for r in range(1, len(g.docids) + 2)], rel=1e-5)  # float32 scores
    assert scorer.scored == len(g.docids) + 1
    scorer.close()
    json.dumps(again.manifest.counts)  # the repairs counted are plain numbers
