"""The LLM teacher (yes/no next-token logits) and teacher ensembles, on real data with real models.

Fast tests: ensembles of cheap real teachers (all-MiniLM-L6-v2 as a bi-encoder, BM25, a cross-encoder
checkpoint) through the real score stage, equal to the normalised combination of what each member cached, and
rescoring nothing after their members were scored; the fusion teacher as a two-member ensemble; templates and
options refused with clear errors. Slow tests load the smallest real instruct LLM (SmolLM2-135M-Instruct,
GGUF) and check its scores against transformers' own logits of each prompt scored alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj
from retrdistill.data.beir import open_collection
from retrdistill.errors import ConfigError
from retrdistill.kinds import read_scores
from retrdistill.stages.mine import MineConfig, run_mine
from retrdistill.stages.queries import QueriesConfig, run_queries
from retrdistill.stages.score import ScoreConfig, run_score
from retrdistill.score_cache import SCORES_FILE, ScoreCache
from retrdistill.teachers.ensemble import normalise

SMALL_LLM = "offline:smollm2-135m-instruct"
# encode_corpus off (output-neutral: the same fingerprint): only the candidates are encoded, which is quicker here
MINILM = {"teacher": "bi-encoder", "options": {"model": "offline:all-MiniLM-L6-v2", "encode_corpus": False}}
BM25 = {"teacher": "bm25"}


@pytest.fixture(scope="module")
def work(tmp_path_factory, small_collection):
    root = tmp_path_factory.mktemp("llm-teacher")
    return {"root": root, "collection": small_collection, "cache": root / "cache"}


@pytest.fixture(scope="module", autouse=True)
def _cross_encoder(work, tiny_cross_encoder):
    work["cross_encoder"] = tiny_cross_encoder


@pytest.fixture(scope="module")
def corpus(work):
    return open_collection(work["collection"], work["cache"] / "corpora").corpus


@pytest.fixture(scope="module")
def candidates(work):
    queries = work["root"] / "queries"
    run_queries(QueriesConfig(options={"num_queries": 8, "seed": 3}), work["collection"], queries,
                cache_dir=work["cache"])
    out = work["root"] / "candidates"
    run_mine(MineConfig(miner="bm25", depth=20, negatives=5, rank_max=20), work["collection"], queries, out,
             cache_dir=work["cache"])
    return out


def _score(work, candidates, name: str, teacher: str, options: dict):
    result = run_score(ScoreConfig(teacher=teacher, options=options), work["collection"], candidates,
                       work["root"] / name, cache_dir=work["cache"])
    return result, {g.qid: g for g in read_scores(work["root"] / name)}


def _cached(work, corpus, member: dict, groups) -> dict[str, np.ndarray]:
    """A member's scores of each group, read straight from the score cache under the member's fingerprint."""
    teacher = registry.build("teacher", member["teacher"], member.get("options", {}), corpus=corpus,
                             cache_dir=work["cache"])
    cache = ScoreCache(work["cache"] / SCORES_FILE, fingerprint_obj(teacher.fingerprint()))
    try:
        out = {}
        for g in groups.values():
            got = cache.get(g.qid, g.query, g.docids)
            assert set(got) == set(g.docids), f"{member['teacher']}: not every pair of {g.qid} is cached"
            out[g.qid] = np.array([got[d] for d in g.docids])
        return out
    finally:
        cache.close()


# ------------------------------------------------------------------ ensembles
def test_normalise_minmax_zscore_rank():
    x = np.array([3.0, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(normalise(x, "minmax"), [1.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(normalise(x, "zscore"), (x - x.mean()) / x.std())
    np.testing.assert_allclose(normalise(x, "rank"), [1.0, 0.0, 0.5, 0.5])  # ties share their mean rank
    for method in ("minmax", "zscore", "rank"):
        assert normalise(np.array([5.0, 5.0]), method).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(x, "softmax")


@pytest.mark.parametrize("method", ["minmax", "zscore", "rank"])
def test_ensemble_equals_the_normalised_combination_of_its_members_cached_scores(work, corpus, candidates, method):
    """Members scored alone first; the ensemble step then rescores nothing and writes exactly the weighted mean of
    each member's cached scores, normalised per query."""
    members = [MINILM, BM25, {"teacher": "cross-encoder", "options": {"model": work["cross_encoder"]}}]
    for i, m in enumerate(members):
        _score(work, candidates, f"member-{i}", m["teacher"], m.get("options", {}))
    weights = [2.0, 1.0, 1.0]
    options = {"members": [{**m, "weight": w} for m, w in zip(members, weights)], "normalise": method,
               "combine": "weighted"}
    result, groups = _score(work, candidates, f"ensemble-{method}", "ensemble", options)
    counts = result.manifest.counts
    pairs = sum(len(g.docids) for g in groups.values())
    assert counts["pairs_scored"] == 0 and counts["pairs_from_cache"] == 3 * pairs
    cached = [_cached(work, corpus, m, groups) for m in members]
    for q, g in groups.items():
        want = sum(w * normalise(c[q], method) for w, c in zip(weights, cached)) / sum(weights)
        np.testing.assert_allclose(g.scores, want, rtol=1e-5, atol=1e-6)
        assert g.docids[: g.positives] and len(g.scores) == len(g.docids)


def test_ensemble_scores_a_new_member_only(work, corpus, candidates):
    """An ensemble over one member scored before and one never scored: only the new member's pairs are scored,
    and they land in the cache under the new member's own fingerprint."""
    _score(work, candidates, "minilm-alone", MINILM["teacher"], MINILM["options"])
    bm25_k1 = {"teacher": "bm25", "options": {"k1": 0.9}}
    result, groups = _score(work, candidates, "ensemble-new-member", "ensemble", {"members": [MINILM, bm25_k1]})
    pairs = sum(len(g.docids) for g in groups.values())
    assert result.manifest.counts["pairs_scored"] == pairs
    assert result.manifest.counts["pairs_from_cache"] == pairs
    again, _ = _score(work, candidates, "ensemble-new-member-again", "ensemble",
                      {"members": [bm25_k1, MINILM], "normalise": "rank"})
    assert again.manifest.counts["pairs_scored"] == 0
    cached = [_cached(work, corpus, m, groups) for m in (MINILM, bm25_k1)]
    for q, g in groups.items():
        np.testing.assert_allclose(g.scores, 0.5 * normalise(cached[0][q], "minmax") +
                                   0.5 * normalise(cached[1][q], "minmax"), rtol=1e-5, atol=1e-6)


def test_fusion_is_the_two_member_ensemble_of_teacher_and_bm25(work, corpus, candidates):
    fusion = registry.build("teacher", "fusion", {"teacher_options": MINILM["options"]}, corpus=corpus,
                            cache_dir=work["cache"])
    ensemble = registry.build("teacher", "ensemble",
                              {"members": [{**MINILM, "weight": 0.7}, {**BM25, "weight": 0.3}], "combine": "weighted"},
                              corpus=corpus, cache_dir=work["cache"])
    _, groups = _score(work, candidates, "member-0", MINILM["teacher"], MINILM["options"])
    queries = {q: g.query for q, g in groups.items()}
    docs = {q: g.docids for q, g in groups.items()}
    got, want = fusion.score_groups(queries, docs), ensemble.score_groups(queries, docs)
    for q in docs:
        np.testing.assert_allclose(got[q], want[q], rtol=1e-6)
        assert got[q].min() >= 0.0 and got[q].max() <= 1.0 + 1e-6
    assert [fingerprint_obj(t.fingerprint()) for t in fusion.members()] == \
        [fingerprint_obj(t.fingerprint()) for t in ensemble.members()]


def test_ensemble_as_a_retriever_pools_its_members_top_passages(work, corpus):
    queries = dict(list(open_collection(work["collection"]).queries.items())[:2])
    reranker = {"teacher": "cross-encoder", "options": {"model": work["cross_encoder"], "rerank_depth": 12}}
    ensemble = registry.build("teacher", "ensemble", {"members": [reranker, {"teacher": "bm25", "options": {"k1": 0.9}}],
                                                      "rerank_depth": 15}, corpus=corpus, cache_dir=work["cache"])
    run = ensemble.retrieve(queries, 10)
    dense = ensemble.members()[0].retrieve(queries, 15)
    lexical = ensemble.members()[1].retrieve(queries, 15)
    for q in queries:
        assert len(run[q]) == 10 and set(run[q]) <= set(dense[q]) | set(lexical[q])
        values = list(run[q].values())
        assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("options, message", [
    ({"members": []}, "an ensemble needs members"),
    ({"members": [{"teacher": "nope"}]}, "unknown teacher 'nope'"),
    ({"members": [{"teacher": "bm25", "model": "x"}]}, "expected {teacher, options, weight}"),
    ({"members": [MINILM, {**BM25, "weight": 2.0}]}, "use combine: weighted"),
    ({"members": [MINILM, BM25], "normalise": "softmax"}, "normalise must be one of"),
])
def test_ensemble_options_are_checked(corpus, work, options, message):
    with pytest.raises(ConfigError, match=message):
        registry.build("teacher", "ensemble", options, corpus=corpus, cache_dir=work["cache"])


# ------------------------------------------------------------------ LLM teacher: without loading a model
def test_llm_template_must_fill_query_and_passage(corpus, work, tmp_path):
    own = tmp_path / "judge.txt"
    own.write_text("## user\nIs this passage any good? {passage}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"judge.txt has no \{query\}"):
        registry.build("teacher", "llm", {"model": SMALL_LLM, "template": str(own)}, corpus=corpus,
                       cache_dir=work["cache"])
    with pytest.raises(ConfigError, match="neither a bundled template"):
        registry.build("teacher", "llm", {"template": str(tmp_path / "missing.txt")}, corpus=corpus,
                       cache_dir=work["cache"])


@pytest.mark.parametrize("options, message", [
    ({"score": "probability"}, "score must be one of logit-diff, p-yes"),
    ({"yes_words": ["yes"], "no_words": ["yes"]}, "both a yes and a no"),
    ({"max_passage_tokens": 0}, "must be positive"),
])
def test_llm_options_are_checked(corpus, work, options, message):
    with pytest.raises(ConfigError, match=message):
        registry.build("teacher", "llm", {"model": SMALL_LLM, **options}, corpus=corpus, cache_dir=work["cache"])


def test_llm_fingerprint_keys_template_score_and_words_not_batch(corpus, work, tmp_path):
    def fp(**options):
        teacher = registry.build("teacher", "llm", {"model": SMALL_LLM, **options}, corpus=corpus,
                                 cache_dir=work["cache"])
        return fingerprint_obj(teacher.fingerprint())

    base = fp()
    own = tmp_path / "own.txt"
    own.write_text("## user\nQuery: {query}\nPassage: {passage}\nRelevant? yes or no.\n", encoding="utf-8")
    assert len({base, fp(template=str(own)), fp(score="p-yes"), fp(yes_words=["yes"]),
                fp(max_passage_tokens=128), fp(template="relevance-brief")}) == 6
    assert fp(batch_size=2, rerank_depth=7) == base
    edited = tmp_path / "edited.txt"  # the same messages with another description: the same digest
    edited.write_text("my judge\n\n" + own.read_text(encoding="utf-8"), encoding="utf-8")
    assert fp(template=str(edited)) == fp(template=str(own))


# ------------------------------------------------------------------ LLM teacher: a real small LLM
@pytest.fixture(scope="module")
def judge(corpus, work):
    teacher = registry.build("teacher", "llm", {"model": SMALL_LLM, "batch_size": 3, "max_passage_tokens": 96}, corpus=corpus,
                             cache_dir=work["cache"])
    teacher.model  # noqa: B018 - load once for the module
    return teacher


def _reference_scores(teacher, pairs, yes_words, no_words):
    """What the judge should say: transformers' causal LM (the same loaded weights) on each prompt alone, no
    padding, log-sum-exp of the answer words' first tokens at the last position, yes minus no."""
    import torch

    tokenizer = teacher.tokenizer
    lm = teacher.model[0].model
    out = []
    for text in teacher.prompts(pairs):
        ids = tokenizer(text, add_special_tokens=not teacher._chat, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            logits = lm(input_ids=ids).logits[0, -1].float()
        lead = "" if text[-1:].isspace() else " "
        start = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        first = lambda w: tokenizer(text + lead + w, add_special_tokens=False)["input_ids"][start]  # noqa: E731
        yes = torch.logsumexp(logits[sorted({first(w) for w in yes_words})], 0)
        no = torch.logsumexp(logits[sorted({first(w) for w in no_words})], 0)
        out.append(float(yes - no))
    return np.array(out)


@pytest.mark.slow
def test_llm_scores_are_the_yes_no_logits_of_each_prompt_scored_alone(judge, corpus):
    """Batched with left padding through CrossEncoder + LogitScore, the judge's score of every pair equals the
    log-odds read from transformers' logits of that prompt alone; p-yes is its sigmoid."""
    assert judge._chat  # SmolLM2-Instruct has a chat template: the prompt ends with the assistant header
    row = corpus.row_index()
    ids = list(row)[:5]
    texts = corpus.texts_at([row[d] for d in ids])
    pairs = [("what is a thermometer", t) for t in texts[:3]] + [("how long do eggs boil", texts[0] * 3)]
    got = judge.score_pairs(pairs)
    want = _reference_scores(judge, pairs, judge.options.yes_words, judge.options.no_words)
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert len(set(np.round(got, 4))) > 1  # different passages, different scores
    prompt = judge.prompts([("q", "p")])[0]
    assert prompt.rstrip().endswith("assistant") and "Query: q" in prompt and "Passage: p" in prompt
    p_yes = registry.build("teacher", "llm", {**judge.options_dict(), "score": "p-yes"}, corpus=corpus,
                           cache_dir=judge.cache_dir)
    p_yes._model, p_yes._chat = judge.model, judge._chat  # the same weights, read as a probability
    np.testing.assert_allclose(p_yes.score_pairs(pairs), 1 / (1 + np.exp(-got)), atol=1e-5)
    # a long passage is cut to max_passage_tokens before the question, which stays at the end
    long_prompt = judge.prompts([("q", texts[0] * 40)])[0]
    assert len(judge.tokenizer(long_prompt)["input_ids"]) < judge.options.max_passage_tokens + 120
    assert "Does the passage answer the query?" in long_prompt


@pytest.fixture(scope="module")
def few_candidates(work):
    """3 queries with their positive and 3 BM25 negatives each: 12 pairs for the LLM to judge."""
    queries = work["root"] / "few-queries"
    run_queries(QueriesConfig(options={"num_queries": 3, "seed": 4}), work["collection"], queries,
                cache_dir=work["cache"])
    out = work["root"] / "few-candidates"
    run_mine(MineConfig(miner="bm25", depth=10, negatives=3, rank_max=10), work["collection"], queries, out,
             cache_dir=work["cache"])
    return out


@pytest.mark.slow
def test_llm_teacher_through_the_score_stage_is_cached(work, few_candidates, judge):
    """The score stage with the LLM teacher writes what the teacher scores; a re-run scores nothing, and an
    ensemble of the judge with a bi-encoder rescores nothing of the judge's."""
    candidates = few_candidates
    options = {"model": SMALL_LLM, "batch_size": 3, "max_passage_tokens": 64}
    first, groups = _score(work, candidates, "llm-scores", "llm", options)
    pairs = sum(len(g.docids) for g in groups.values())
    assert first.manifest.counts["pairs_scored"] == pairs
    teacher = registry.build("teacher", "llm", options, corpus=judge.corpus, cache_dir=work["cache"])
    teacher._model, teacher._chat = judge.model, judge._chat
    g = next(iter(groups.values()))
    np.testing.assert_allclose(g.scores, teacher.score_groups({g.qid: g.query}, {g.qid: g.docids})[g.qid], atol=2e-3)
    again, _ = _score(work, candidates, "llm-scores-again", "llm", {**options, "batch_size": 5})
    assert again.manifest.counts["pairs_scored"] == 0
    _score(work, candidates, "minilm-for-llm", MINILM["teacher"], MINILM["options"])
    ensemble, _ = _score(work, candidates, "llm-ensemble", "ensemble",
                         {"members": [MINILM, {"teacher": "llm", "options": options}]})
    assert ensemble.manifest.counts["pairs_scored"] == 0


@pytest.mark.slow
def test_llm_teacher_plain_prompt_for_a_model_without_chat_template(corpus, work):
    """chat_template: false prompts with plain text ending in 'Answer:'; the answer words then follow a space."""
    plain = registry.build("teacher", "llm", {"model": SMALL_LLM, "chat_template": False, "yes_words": ["yes"],
                                              "no_words": ["no"], "batch_size": 2}, corpus=corpus,
                           cache_dir=work["cache"])
    pairs = [("what is a thermometer", "A thermometer measures temperature."),
             ("what is a thermometer", "Paris is the capital of France.")]
    got = plain.score_pairs(pairs)
    prompt = plain.prompts(pairs[:1])[0]
    assert prompt.endswith("\nAnswer:") and "<|im_start|>" not in prompt
    np.testing.assert_allclose(got, _reference_scores(plain, pairs, ["yes"], ["no"]), atol=2e-3)
