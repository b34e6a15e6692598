"""The sparse teacher: SPLADE dot products as teacher scores, alone and as a hybrid-ensemble member."""

from __future__ import annotations

import numpy as np
import pytest

from retrdistill import registry
from retrdistill.errors import ConfigError


@pytest.fixture(scope="module")
def corpus(small_collection, small_cache):
    from retrdistill.data.beir import open_collection

    return open_collection(small_collection, small_cache / "corpora").corpus


def _groups(corpus, n_queries: int = 3, size: int = 5) -> tuple[dict[str, str], dict[str, list[str]]]:
    ids = corpus.ids_at(np.arange(min(len(corpus), 40)))
    rng = np.random.default_rng(0)
    queries = {f"q{i}": " ".join(corpus.texts_at([i])[0].split()[:6]) for i in range(n_queries)}
    groups = {q: [ids[j] for j in rng.choice(len(ids), size, replace=False)] for q in queries}
    return queries, groups


def test_scores_are_the_models_own_sparse_dot_products(corpus, small_cache):
    from sentence_transformers import SparseEncoder

    from retrdistill.models import resolve_model

    teacher = registry.build("teacher", "sparse", {"max_seq_length": 64}, corpus=corpus, cache_dir=small_cache)
    queries, groups = _groups(corpus)
    got = teacher.score_groups(queries, groups)

    model = SparseEncoder(resolve_model("offline:tiny-bert-mlm"))
    model.max_seq_length = 64
    row = corpus.row_index()
    for qid, docs in groups.items():
        q = model.encode_query([queries[qid]], convert_to_tensor=True).to_dense()
        d = model.encode_document(corpus.texts_at([row[x] for x in docs]), convert_to_tensor=True).to_dense()
        expected = (d @ q[0]).numpy()
        assert got[qid].shape == (len(docs),)
        np.testing.assert_allclose(got[qid], expected, rtol=1e-4, atol=1e-4)
        assert np.ptp(got[qid]) > 0, "the passages must be told apart"


def test_a_group_scores_the_same_alone_as_in_a_call_with_others(corpus, small_cache):
    """Passages shared between groups are encoded once per call; a group's scores do not depend on the others."""
    teacher = registry.build("teacher", "sparse", {"max_seq_length": 64}, corpus=corpus, cache_dir=small_cache)
    queries, groups = _groups(corpus)
    together = teacher.score_groups(queries, groups)
    for qid in groups:
        alone = teacher.score_groups({qid: queries[qid]}, {qid: groups[qid]})
        np.testing.assert_allclose(alone[qid], together[qid], rtol=1e-4, atol=1e-4)


def test_retrieve_ranks_the_corpus_by_the_same_scores(corpus, small_cache):
    teacher = registry.build("teacher", "sparse", {"max_seq_length": 64}, corpus=corpus, cache_dir=small_cache)
    queries, _ = _groups(corpus)
    run = teacher.retrieve(queries, 5)
    for qid, hits in run.items():
        docs = list(hits)
        assert 0 < len(docs) <= 5
        scores = teacher.score_groups({qid: queries[qid]}, {qid: docs})[qid]
        np.testing.assert_allclose(scores, list(hits.values()), rtol=1e-3, atol=1e-3)
        assert list(hits.values()) == sorted(hits.values(), reverse=True)


def test_a_hybrid_ensemble_of_a_dense_and_a_sparse_teacher_scores_every_candidate(corpus, small_cache, minilm):
    options = {"normalise": "zscore", "members": [
        {"teacher": "bi-encoder", "options": {"model": minilm}, "weight": 1.0},
        {"teacher": "sparse", "options": {"max_seq_length": 64}, "weight": 1.0}]}
    ensemble = registry.build("teacher", "ensemble", options, corpus=corpus, cache_dir=small_cache)
    queries, groups = _groups(corpus)
    dense = registry.build("teacher", "bi-encoder", {"model": minilm}, corpus=corpus, cache_dir=small_cache)
    sparse = registry.build("teacher", "sparse", {"max_seq_length": 64}, corpus=corpus, cache_dir=small_cache)
    got = ensemble.score_groups(queries, groups)
    d, s = dense.score_groups(queries, groups), sparse.score_groups(queries, groups)
    for qid in groups:
        z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
        np.testing.assert_allclose(got[qid], (z(d[qid]) + z(s[qid])) / 2, rtol=1e-4, atol=1e-4)


def test_a_dense_model_is_refused_before_anything_is_loaded(corpus, small_cache, minilm):
    with pytest.raises(ConfigError, match=r"teacher 'sparse' needs .*'bi-encoder'"):
        registry.build("teacher", "sparse", {"model": minilm}, corpus=corpus, cache_dir=small_cache)
