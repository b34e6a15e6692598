"""Cross-encoder students, re-ranking (API and eval system) and a teacher -> cross-encoder -> bi-encoder chain,
with real checkpoints, real sample passages and real sentence-transformers losses and trainers."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from retrdistill import registry
from retrdistill.artefacts import read_manifest
from retrdistill.errors import ConfigError
from retrdistill.kinds import read_scores

# the cheap real teacher: MiniLM scores only the mined candidates (the corpus is not encoded)
TEACHER = {"model": "offline:all-MiniLM-L6-v2", "batch_size": 64, "encode_corpus": False}
TINY = {"model": "offline:tiny-bert-mlm", "max_length": 96}  # 2 layers, 128 wide: seconds per step
CE_LOSSES = ["ce-mse", "ce-margin-mse", "ce-listnet", "ce-lambda", "ce-ranknet", "ce-plistmle", "ce-adrmse"]


@pytest.fixture(scope="module")
def scored(small_collection, small_cache, tmp_path_factory):
    """The scores folder of 16 pseudo-queries over ``small_collection``, BM25-mined (6 negatives from ranks 1-30),
    scored by all-MiniLM-L6-v2."""
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    root = tmp_path_factory.mktemp("rerank-scored")
    run_queries(QueriesConfig(options={"num_queries": 16, "seed": 11}), small_collection, root / "q",
                cache_dir=small_cache)
    run_mine(MineConfig(miner="bm25", depth=30, negatives=6, rank_max=30), small_collection, root / "q",
             root / "c", cache_dir=small_cache)
    run_score(ScoreConfig(options=TEACHER), small_collection, root / "c", root / "s", cache_dir=small_cache)
    return root / "s"


def _config(**overrides):
    from retrdistill.stages.train import TrainConfig

    base = dict(student="cross-encoder", options=dict(TINY), loss="ce-listnet", negatives_per_query=4,
                max_steps=2, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, seed=7,
                teacher_scale={"mode": "standardise", "factor": 1.0})
    base.update(overrides)
    return TrainConfig(**base)


def _listnet(model, groups, corpus) -> float:
    """Mean cross-entropy between the teacher's softmax and ``model``'s over each group (standardised scores)."""
    row = corpus.row_index()
    total = 0.0
    for g in groups:
        pairs = [(g.query, t) for t in corpus.texts_at([row[d] for d in g.docids])]
        student = np.asarray(model.predict(pairs), dtype=np.float64)
        teacher = np.asarray(g.scores, dtype=np.float64)
        teacher = (teacher - teacher.mean()) / (teacher.std() or 1.0)
        p = np.exp(teacher - teacher.max()) / np.exp(teacher - teacher.max()).sum()
        log_q = student - student.max() - np.log(np.exp(student - student.max()).sum())
        total += float(-(p * log_q).sum())
    return total / len(groups)


@pytest.fixture(scope="module")
def trained(scored, small_collection, small_cache, tmp_path_factory):
    """A cross-encoder student trained with ListNet for 40 steps (and its untrained start)."""
    from retrdistill.stages.train import run_train

    out = tmp_path_factory.mktemp("ce-student") / "student"
    cfg = _config(max_steps=40, save_untrained=True)
    return run_train(cfg, scored, small_collection, out, cache_dir=small_cache)


def test_cross_encoder_student_learns_the_teacher_and_reloads_with_identical_scores(trained, scored,
                                                                                      small_collection, small_cache,
                                                                                      tmp_path):
    from sentence_transformers import CrossEncoder

    from retrdistill.data.beir import open_collection

    counts = trained.manifest.counts
    assert counts["steps"] == 40 and counts["layout"] == "list" and counts["head"] == "fresh"
    curve = [loss for _, loss in counts["loss_curve"]]
    assert len(curve) == 4 and curve[-1] < curve[0]
    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    groups = list(read_scores(scored))
    model = CrossEncoder(str(trained.out_dir / "model"))
    untrained = CrossEncoder(str(trained.out_dir / "untrained"))
    assert type(model.activation_fn).__name__ == "Identity"  # raw logits: the scale the loss taught
    # the trained student agrees with the teacher better than its start did, on every group together
    assert _listnet(model, groups, corpus) < _listnet(untrained, groups, corpus) - 0.05
    # saved, loaded, saved again and loaded: the same scores; the teacher part scores the same pairs alike
    row = corpus.row_index()
    pairs = [(g.query, t) for g in groups[:4] for t in corpus.texts_at([row[d] for d in g.docids])]
    first = model.predict(pairs)
    model.save(str(tmp_path / "again"))
    assert np.array_equal(CrossEncoder(str(tmp_path / "again")).predict(pairs), first)
    teacher = registry.build("teacher", "cross-encoder", {"model": str(trained.out_dir / "model"), "max_length": 96},
                             corpus=corpus, cache_dir=small_cache)  # the length it was trained at (default 512)
    by_teacher = teacher.score_groups({g.qid: g.query for g in groups[:4]}, {g.qid: g.docids for g in groups[:4]})
    np.testing.assert_allclose(np.concatenate([by_teacher[g.qid] for g in groups[:4]]), first, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("loss", CE_LOSSES)
def test_every_cross_encoder_loss_trains_from_its_own_row_layout(loss, scored, small_collection, small_cache,
                                                                  tmp_path):
    from retrdistill.stages.train import run_train

    result = run_train(_config(loss=loss, max_steps=2), scored, small_collection, tmp_path / "s",
                       cache_dir=small_cache)
    counts = result.manifest.counts
    layout = registry.entry("loss", loss).load().layout
    assert counts["steps"] == 2 and counts["layout"] == layout and np.isfinite(counts["train_loss"])
    groups = counts["rows"]
    assert counts["training_rows"] == (groups * 5 if layout == "pairs" else groups)  # 1 positive + 4 negatives
    assert (result.out_dir / "model" / "config.json").is_file()


def test_deep_negatives_take_the_deepest_candidates_of_each_group(scored, small_collection, small_cache):
    from retrdistill.families.cross_encoder.objective import CrossEncoderRows
    from retrdistill.training.data import TrainingInputs

    inputs = TrainingInputs(scored, small_collection, small_cache)
    rows = CrossEncoderRows(deep_negatives=2).build(inputs, negatives=4, label=list)
    groups = [g for g in read_scores(scored) if len(g.docids) - g.positives >= 4]
    assert len(rows) == len(groups) and rows.counts["deep_negatives"] == 2
    for ids, g in zip(rows.docids, groups):
        negatives = g.docids[g.positives:]
        assert ids == [g.docids[0], *negatives[:2], *negatives[-2:]]
    assert [label[1:] for label in rows.columns["label"][:1]] == [
        [groups[0].scores[groups[0].positives + i] for i in (0, 1)] + list(groups[0].scores[-2:])]


def test_a_loss_that_does_not_fit_the_student_is_refused_before_anything_runs(scored, small_collection,
                                                                              small_cache, tmp_path):
    from retrdistill.stages.train import prepare_train

    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"loss 'margin-mse' trains a bi-encoder.*ce-mse, ce-margin-mse, ce-listnet"):
        prepare_train(_config(loss="margin-mse"), scored, small_collection, out, cache_dir=small_cache)
    with pytest.raises(ConfigError, match=r"loss 'ce-listnet' trains a cross-encoder student.*margin-mse"):
        prepare_train(_config(student="dense", options={"model": "offline:tiny-bert-mlm"}), scored,
                      small_collection, out, cache_dir=small_cache)
    with pytest.raises(ConfigError, match="in_batch_negatives"):
        prepare_train(_config(in_batch_negatives=0.5), scored, small_collection, out, cache_dir=small_cache)
    with pytest.raises(ConfigError, match="truncate_dim"):
        prepare_train(_config(truncate_dim=8), scored, small_collection, out, cache_dir=small_cache)
    with pytest.raises(ConfigError, match="deep_negatives 5 is more than negatives_per_query 4"):
        prepare_train(_config(options={**TINY, "deep_negatives": 5}), scored, small_collection, out,
                      cache_dir=small_cache)
    assert not out.exists()


def test_rerank_system_reranks_an_earlier_run_to_depth(trained, small_collection, small_cache, tmp_path):
    from sentence_transformers import CrossEncoder

    from retrdistill.data.beir import open_collection
    from retrdistill.evaluation.runs import read_trec_run
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    ce = str(trained.out_dir / "model")
    systems = [{"name": "BM25", "type": "bm25"},
               {"name": "BM25 + CE", "type": "rerank",
                "options": {"system": "BM25", "options": {"model": ce, "max_length": 96}, "depth": 10}}]
    result = run_eval(EvalConfig(systems=systems, depth=15, metrics=["ndcg@10"]), small_collection,
                      tmp_path / "eval", cache_dir=small_cache)
    bm25 = read_trec_run(tmp_path / "eval" / "runs" / "BM25.trec")
    reranked = read_trec_run(tmp_path / "eval" / "runs" / "BM25-CE.trec")
    collection = open_collection(small_collection, small_cache / "corpora")
    row = collection.corpus.row_index()
    model = CrossEncoder(ce)
    assert set(reranked) == set(bm25)
    for qid, docs in bm25.items():
        first = sorted(docs, key=lambda d: -docs[d])
        mine = sorted(reranked[qid], key=lambda d: -reranked[qid][d])
        assert set(mine[:10]) == set(first[:10]) and mine[10:] == first[10:15]  # the tail keeps BM25's order
        texts = collection.corpus.texts_at([row[d] for d in mine[:10]])
        scores = model.predict([(collection.queries[qid], t) for t in texts])
        assert (np.diff(scores) <= 1e-5).all()  # in the cross-encoder's order
    data = json.loads((tmp_path / "eval" / "results.json").read_text())
    cost, first_cost = data["systems"]["BM25 + CE"]["cost"], data["systems"]["BM25"]["cost"]
    assert cost["rerank_depth"] == 10 and cost["rerank_ms_per_query"] > 0
    assert cost["ms_per_query"] == pytest.approx(first_cost["ms_per_query"] + cost["rerank_ms_per_query"])
    assert cost["queries_per_s"] == pytest.approx(1000 / cost["ms_per_query"])
    assert cost["parameters"] == sum(p.numel() for p in model.parameters())
    board = (tmp_path / "eval" / "leaderboard.md").read_text()
    assert "BM25 + CE" in board and "reranker" in board
    assert result.manifest.inputs["system:BM25 + CE"] != ""


def test_rerank_needs_its_system_listed_before_it():
    from retrdistill.stages.evaluate import EvalConfig

    with pytest.raises(ConfigError, match="'BM25', which is not a system listed before it"):
        EvalConfig(systems=[{"name": "CE", "type": "rerank", "options": {"system": "BM25"}},
                            {"name": "BM25", "type": "bm25"}])
    with pytest.raises(ConfigError, match="'system'"):
        EvalConfig(systems=[{"name": "CE", "type": "rerank", "options": {}}])


def test_retriever_rerank_with_a_trained_student(trained, small_index):
    from sentence_transformers import CrossEncoder

    from retrdistill.retriever import Retriever

    retriever = Retriever.load(small_index)  # all-MiniLM-L6-v2 over small_collection (the session's index)
    query = "what is a synapse"
    first = retriever.search(query, k=8)
    reranking = retriever.rerank_with(str(trained.out_dir / "model"), depth=8)
    hits = reranking.search(query, k=5)
    assert len(hits) == 5 and {h.doc_id for h in hits} <= {h.doc_id for h in first}
    scores = CrossEncoder(str(trained.out_dir / "model")).predict([(query, h.passage) for h in first])
    best = sorted(zip(scores, [h.doc_id for h in first]), reverse=True)[:5]
    assert [h.doc_id for h in hits] == [d for _, d in best]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in best], rtol=1e-4, atol=1e-4)
    assert reranking.last_timing["pairs"] == 8 and reranking.last_timing["rerank_ms"] > 0


def test_a_pipeline_names_a_trained_cross_encoder_as_teacher_and_reranker(tmp_path, small_collection):
    from retrdistill.pipeline import load_pipeline

    text = textwrap.dedent(f"""
        name: chain
        collection: {small_collection}
        workdir: {tmp_path / "runs"}
        steps:
          - {{id: q, stage: queries, source: inverse-cloze, options: {{num_queries: 8}}}}
          - {{id: c, stage: mine, queries: "@q", miner: bm25, depth: 20, negatives: 4, rank_max: 20}}
          - {{id: s, stage: score, candidates: "@c", teacher: bi-encoder, options: {{model: "offline:all-MiniLM-L6-v2"}}}}
          - {{id: ce, stage: train, scores: "@s", student: cross-encoder, loss: ce-margin-mse}}
          - {{id: s2, stage: score, candidates: "@c", teacher: cross-encoder, options: {{model: "@ce"}}}}
          - {{id: bi, stage: train, scores: "@s2", student: dense}}
          - id: board
            stage: eval
            systems:
              - {{name: BM25, type: bm25}}
              - {{name: BM25 + CE, type: rerank, options: {{system: BM25, options: {{model: "@ce"}}}}}}
    """)
    path = tmp_path / "chain.yaml"
    path.write_text(text, encoding="utf-8")
    pipeline = load_pipeline(path, base_dir=tmp_path)
    assert list(pipeline.steps) == ["q", "c", "s", "ce", "s2", "bi", "board"]
    assert pipeline.steps["s2"].upstream == ["c", "ce"] and pipeline.steps["board"].upstream == ["ce"]
    ref = next(r for r in pipeline.steps["s2"].refs if r.step == "ce")
    assert pipeline.resolve(ref) == tmp_path / "runs" / "ce" / "model"
    path.write_text(text.replace('options: {model: "@ce"}}', 'options: {model: "@s"}}', 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"@s is a score step, whose artefact is 'scores'; expected 'student'"):
        load_pipeline(path, base_dir=tmp_path)


@pytest.mark.slow
def test_chain_teacher_cross_encoder_bi_encoder_runs_end_to_end(tmp_path, small_collection):
    """The chain of pipelines/rerank-chain-sample.yaml on the small collection with tiny students and few steps."""
    from retrdistill.pipeline import load_pipeline, run_pipeline

    text = textwrap.dedent(f"""
        name: chain
        collection: {small_collection}
        workdir: {tmp_path / "runs"}
        cache_dir: {tmp_path / "cache"}
        steps:
          - {{id: q, stage: queries, source: inverse-cloze, options: {{num_queries: 12, seed: 3}}}}
          - {{id: c, stage: mine, queries: "@q", miner: bm25, depth: 30, negatives: 6, rank_max: 30}}
          - {{id: s, stage: score, candidates: "@c", teacher: bi-encoder,
              options: {{model: "offline:all-MiniLM-L6-v2", encode_corpus: false}}}}
          - {{id: ce, stage: train, scores: "@s", student: cross-encoder, loss: ce-margin-mse,
              options: {{model: "offline:tiny-bert-mlm", max_length: 96, deep_negatives: 2}},
              negatives_per_query: 4, max_steps: 6, batch_size: 4, learning_rate: 1.0e-3}}
          - {{id: s2, stage: score, candidates: "@c", teacher: cross-encoder, options: {{model: "@ce", max_length: 96}}}}
          - {{id: bi, stage: train, scores: "@s2", student: pruned, options: {{model: "offline:tiny-bert-mlm"}},
              loss: margin-mse, negatives_per_query: 4, max_steps: 3, batch_size: 4}}
          - {{id: idx, stage: index, model: "@bi", indexer: faiss-flat}}
          - id: board
            stage: eval
            metrics: [ndcg@10]
            systems:
              - {{name: BM25, type: bm25}}
              - {{name: BM25 + CE, type: rerank, options: {{system: BM25, options: {{model: "@ce", max_length: 96}},
                  depth: 20}}}}
              - {{name: bi-encoder taught by CE, type: index, options: {{path: "@idx"}}}}
    """)
    path = tmp_path / "chain.yaml"
    path.write_text(text, encoding="utf-8")
    runs = run_pipeline(load_pipeline(path, base_dir=tmp_path))
    assert [r.id for r in runs] == ["q", "c", "s", "ce", "s2", "bi", "idx", "board"]
    s2 = read_manifest(tmp_path / "runs" / "s2")
    assert s2.config["teacher"] == "cross-encoder" and s2.counts["pairs_scored"] > 0
    assert read_manifest(tmp_path / "runs" / "bi").counts["steps"] == 3
    board = json.loads((tmp_path / "runs" / "board" / "leaderboard.json").read_text())
    assert {r["system"] for r in board["rows"]} == {"BM25", "BM25 + CE", "bi-encoder taught by CE"}
    again = run_pipeline(load_pipeline(path, base_dir=tmp_path))
    assert all(r.skipped for r in again)
