"""Every stage on real data (a sub-collection of the MS MARCO sample) with real models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrdistill import registry
from retrdistill.artefacts import read_manifest
from retrdistill.data.beir import open_collection
from retrdistill.errors import ConfigError
from retrdistill.stages.evaluate import EvalConfig, run_eval
from retrdistill.stages.index import IndexConfig, run_index
from retrdistill.kinds import read_candidates, read_queries, read_scores
from retrdistill.stages.mine import MineConfig, run_mine
from retrdistill.stages.queries import QueriesConfig, run_queries
from retrdistill.stages.score import ScoreConfig, run_score
from retrdistill.stages.train import TrainConfig, run_train


@pytest.fixture(scope="module")
def work(tmp_path_factory, small_collection):
    root = tmp_path_factory.mktemp("work")
    return {"root": root, "collection": small_collection, "cache": root / "cache"}


@pytest.fixture(scope="module")
def queries_dir(work):
    out = work["root"] / "queries"
    run_queries(QueriesConfig(options={"num_queries": 24, "seed": 5}), work["collection"], out, cache_dir=work["cache"])
    return out


def test_inverse_cloze_queries_are_spans_of_their_positive(work, queries_dir):
    train = read_queries(queries_dir)
    assert len(train.queries) == 24
    corpus = open_collection(work["collection"], work["cache"] / "corpora").corpus
    row = corpus.row_index()
    for qid, query in train.queries.items():
        (pos,) = train.positives[qid]
        words = query.split()
        assert 4 <= len(words) <= 12
        assert words[0] in corpus.texts_at([row[pos]])[0]
    again = registry.build("query_generator", "inverse-cloze", {"num_queries": 24, "seed": 5}).generate(
        open_collection(work["collection"], work["cache"] / "corpora"))
    assert again.queries == train.queries  # seeded and deterministic


def test_test_queries_are_refused_for_training_unless_forced(work, tmp_path):
    cfg = QueriesConfig(source="split", options={"split": "test"})
    with pytest.raises(ConfigError, match="evaluation queries"):
        run_queries(cfg, work["collection"], tmp_path / "q", cache_dir=work["cache"])
    assert not (tmp_path / "q").exists()
    forced = run_queries(QueriesConfig(source="split", options={"split": "test"}, allow_eval_queries=True),
                         work["collection"], tmp_path / "q", cache_dir=work["cache"])
    assert forced.manifest.counts["eval_queries_used"] == 6


@pytest.fixture(scope="module")
def bm25_candidates(work, queries_dir):
    out = work["root"] / "cand-bm25"
    run_mine(MineConfig(miner="bm25", depth=30, negatives=5, rank_max=30), work["collection"], queries_dir, out,
             cache_dir=work["cache"])
    return out


def test_mine_bm25_excludes_positives_and_samples_in_range(work, queries_dir, bm25_candidates):
    groups = list(read_candidates(bm25_candidates))
    assert len(groups) == 24
    miner = registry.build("miner", "bm25", {}, corpus=open_collection(work["collection"], work["cache"] / "corpora").corpus,
                           cache_dir=work["cache"])
    for g in groups:
        assert not set(g.positives) & set(g.negatives)
        ranked = [d for d, _ in miner.search({g.qid: g.query}, 30)[g.qid] if d not in g.positives]
        assert set(g.negatives) <= set(ranked)
        assert len(g.negatives) == min(5, len(ranked))
    counts = read_manifest(bm25_candidates).counts
    assert counts["queries"] == 24


def test_mine_dense_with_a_sentence_transformer(work, queries_dir):
    out = work["root"] / "cand-dense"
    run_mine(MineConfig(miner="dense", options={"model": "offline:all-MiniLM-L6-v2"}, depth=20, negatives=3,
                        sampling="top"), work["collection"], queries_dir, out, cache_dir=work["cache"])
    groups = list(read_candidates(out))
    assert all(len(g.negatives) == 3 for g in groups)
    # 'top' sampling takes the best-ranked non-positives: the first must score at least as high as the third
    from retrdistill.models import load_sentence_transformer

    model = load_sentence_transformer("offline:all-MiniLM-L6-v2")
    corpus = open_collection(work["collection"], work["cache"] / "corpora").corpus
    row = corpus.row_index()
    g = groups[0]
    q = model.encode([g.query], normalize_embeddings=True)
    d = model.encode(corpus.texts_at([row[x] for x in g.negatives]), normalize_embeddings=True)
    sims = (d @ q.T).ravel()
    assert sims[0] >= sims[2] - 1e-5


@pytest.fixture(scope="module")
def bi_scores(work, bm25_candidates):
    out = work["root"] / "scores-bi"
    result = run_score(ScoreConfig(teacher="bi-encoder", options={"model": "offline:all-MiniLM-L6-v2"}),
                       work["collection"], bm25_candidates, out, cache_dir=work["cache"])
    return out, result


def test_score_bi_encoder_matches_sentence_transformers(work, bi_scores):
    out, result = bi_scores
    from retrdistill.models import load_sentence_transformer

    model = load_sentence_transformer("offline:all-MiniLM-L6-v2")
    corpus = open_collection(work["collection"], work["cache"] / "corpora").corpus
    row = corpus.row_index()
    groups = list(read_scores(out))
    assert result.manifest.counts["pairs_scored"] == sum(len(g.docids) for g in groups)
    for g in groups[:3]:
        q = model.encode([g.query], normalize_embeddings=True)
        d = model.encode(corpus.texts_at([row[x] for x in g.docids]), normalize_embeddings=True)
        np.testing.assert_allclose(np.asarray(g.scores), (d @ q.T).ravel(), atol=1e-5)


def test_score_cache_rescoring_only_what_is_missing(work, bi_scores, bm25_candidates):
    out, first = bi_scores
    again = run_score(ScoreConfig(teacher="bi-encoder", options={"model": "offline:all-MiniLM-L6-v2"}),
                      work["collection"], bm25_candidates, work["root"] / "scores-bi-2", cache_dir=work["cache"])
    assert again.manifest.counts["pairs_scored"] == 0
    assert again.manifest.counts["pairs_from_cache"] == first.manifest.counts["pairs_scored"]
    assert (out / "scores.jsonl").read_bytes() == (work["root"] / "scores-bi-2" / "scores.jsonl").read_bytes()
    assert run_score(ScoreConfig(teacher="bi-encoder", options={"model": "offline:all-MiniLM-L6-v2"}),
                     work["collection"], bm25_candidates, out, cache_dir=work["cache"]).skipped


def test_score_cross_encoder_teacher(work, bm25_candidates, tiny_cross_encoder):
    out = work["root"] / "scores-ce"
    run_score(ScoreConfig(teacher="cross-encoder", options={"model": tiny_cross_encoder, "max_length": 128}),
              work["collection"], bm25_candidates, out, cache_dir=work["cache"])
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(tiny_cross_encoder, max_length=128)
    corpus = open_collection(work["collection"], work["cache"] / "corpora").corpus
    row = corpus.row_index()
    g = next(read_scores(out))
    expected = model.predict([(g.query, t) for t in corpus.texts_at([row[d] for d in g.docids])])
    np.testing.assert_allclose(np.asarray(g.scores), expected, atol=1e-4)


def test_score_fusion_teacher_is_normalised_per_query(work, bm25_candidates):
    out = work["root"] / "scores-fusion"
    run_score(ScoreConfig(teacher="fusion", options={"teacher_options": {"model": "offline:all-MiniLM-L6-v2"}}),
              work["collection"], bm25_candidates, out, cache_dir=work["cache"])
    for g in read_scores(out):
        assert 0.0 <= min(g.scores) and max(g.scores) <= 1.0 + 1e-6


@pytest.mark.parametrize("loss, options", [("margin-mse", {}), ("listwise-kl", {"temperature": 0.05})])
def test_train_student_saves_checkpoint_with_manifest(work, bi_scores, loss, options):
    scores_dir, _ = bi_scores
    out = work["root"] / f"student-{loss}"
    result = run_train(TrainConfig(loss=loss, loss_options=options, negatives_per_query=3, max_steps=3, batch_size=8,
                                   in_batch_negatives=0.2 if loss == "margin-mse" else 0.0, learning_rate=5e-5),
                       scores_dir, work["collection"], out, cache_dir=work["cache"])
    counts = result.manifest.counts
    assert counts["steps"] == 3 and counts["rows"] == 24
    window = counts["passage_window"]  # MS MARCO passages fit MiniLM's 256 tokens
    assert window["max_seq_length"] == 256 and window["share_longer"] < 0.05 and window["median_tokens"] < 256
    assert np.isfinite(counts["train_loss"])
    assert {"torch", "sentence-transformers"} <= set(result.manifest.versions)
    from sentence_transformers import SentenceTransformer

    from retrdistill.models import load_sentence_transformer

    trained = SentenceTransformer(str(out / "model"))
    base = load_sentence_transformer("offline:all-MiniLM-L6-v2")
    text = ["what is a synapse"]
    assert not np.allclose(trained.encode(text), base.encode(text)), "training must change the weights"


@pytest.fixture(scope="module")
def index_dir(work, bi_scores):
    scores_dir, _ = bi_scores
    student = work["root"] / "student-idx"
    run_train(TrainConfig(max_steps=2, batch_size=8, negatives_per_query=3), scores_dir, work["collection"], student,
              cache_dir=work["cache"])
    out = work["root"] / "indexes" / "small"
    run_index(IndexConfig(), work["collection"], str(student / "model"), out, cache_dir=work["cache"])
    return out


@pytest.mark.parametrize("indexer, options", [("faiss-ivf", {"nlist": 8, "nprobe": 8}), ("faiss-hnsw", {"m": 16})])
def test_approximate_indexes_agree_with_flat(work, index_dir, indexer, options):
    from retrdistill import Retriever

    out = work["root"] / "indexes" / indexer
    run_index(IndexConfig(indexer=indexer, options=options), work["collection"],
              str(work["root"] / "student-idx" / "model"), out, cache_dir=work["cache"])
    exact, approx = Retriever.load(index_dir), Retriever.load(out)
    queries = ["what is a synapse", "causes of left ventricular hypertrophy", "definition of environment"]
    _, exact_ids = exact.batch_search_ids(queries, 10)
    _, approx_ids = approx.batch_search_ids(queries, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, approx_ids)])
    assert overlap >= 0.8


def test_retriever_api_returns_ids_scores_texts(work, index_dir):
    from retrdistill import Retriever

    retriever = Retriever.load(index_dir)
    hits = retriever.search("axon terminals or synaptic knob definition", k=5)
    assert len(hits) == 5
    assert all(h.text for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    corpus = open_collection(work["collection"], work["cache"] / "corpora").corpus
    row = corpus.row_index()
    assert hits[0].passage == corpus.texts_at([row[hits[0].doc_id]])[0]
    batch = retriever.batch_search(["a", "axon terminals or synaptic knob definition"], k=3)
    assert [h.doc_id for h in batch[1]] == [h.doc_id for h in hits[:3]]


def test_eval_writes_runs_metrics_and_leaderboard(work, index_dir, tiny_cross_encoder):
    out = work["root"] / "eval"
    cfg = EvalConfig(
        systems=[
            {"name": "BM25", "type": "bm25"},
            {"name": "base", "type": "dense", "options": {"model": "offline:all-MiniLM-L6-v2"}},
            {"name": "student", "type": "index", "options": {"path": str(index_dir)}},
            {"name": "ce-rerank", "type": "teacher",
             "options": {"teacher": "cross-encoder", "options": {"model": tiny_cross_encoder, "max_length": 128}}},
        ],
        baseline="base", measure_cost=False,
    )
    result = run_eval(cfg, work["collection"], out, cache_dir=work["cache"])
    results = json.loads((out / "results.json").read_text())
    assert results["judged_queries"] == 6
    names = ("BM25", "base", "student", "ce-rerank")
    assert sorted(p.name for p in (out / "runs").glob("*.trec")) == sorted(f"{n}.trec" for n in names)
    for name in names:
        run = (out / "runs" / f"{name}.trec").read_text().splitlines()
        assert run and all(len(line.split()) == 6 for line in run)  # a non-empty TREC run per system
        mean = results["systems"][name]["mean"]
        assert set(mean) == {"ndcg@10", "recall@100", "mrr@10", "map"}
        assert 0.0 < mean["ndcg@10"] <= 1.0
        assert len(results["systems"][name]["per_query"]) == 6
    assert results["systems"]["base"]["mean"]["ndcg@10"] > 0.5  # a real retriever on a real collection
    board = (out / "leaderboard.md").read_text()
    assert "BM25" in board and "student" in board
    assert (out / "leaderboard.html").read_text().startswith("<!DOCTYPE html>")
    assert run_eval(cfg, work["collection"], out, cache_dir=work["cache"]).skipped
    assert result.manifest.counts["judged_queries"] == 6


def test_external_trec_run_sits_on_the_leaderboard(work, tmp_path):
    """A run file written by another tool is evaluated exactly like the system that made it."""
    first = run_eval(EvalConfig(systems=[{"name": "BM25", "type": "bm25"}], measure_cost=False), work["collection"],
                     tmp_path / "eval-bm25", cache_dir=work["cache"])
    external = tmp_path / "pyserini.trec"
    external.write_text((first.out_dir / "runs" / "BM25.trec").read_text().replace(" BM25", " pyserini-bm25"))
    second = run_eval(EvalConfig(systems=[{"name": "BM25", "type": "bm25"},
                                          {"name": "imported", "type": "run", "options": {"path": str(external)}}],
                                 baseline="BM25", measure_cost=False),
                      work["collection"], tmp_path / "eval-imported", cache_dir=work["cache"])
    systems = second.manifest.counts["systems"]
    assert systems["imported"] == pytest.approx(systems["BM25"], abs=1e-9)
    external.write_text("q1 Q0 d1 one 1.0 tag\n")
    with pytest.raises(Exception, match="line 1"):
        run_eval(EvalConfig(systems=[{"name": "imported", "type": "run", "options": {"path": str(external)}}],
                            measure_cost=False), work["collection"], tmp_path / "eval-bad", cache_dir=work["cache"])
