"""In-batch distillation (every query of a batch against every passage of it, priced by the teacher's
embeddings), the teacher-retrieval validation metric, whole-sentence inverse-cloze queries and the chosen
teacher's embeddings: against hand computations and through the real stages, with small real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrdistill import registry
from retrdistill.artefacts import read_manifest
from retrdistill.data.beir import open_collection
from retrdistill.kinds import ScoredGroup
from retrdistill.validation.metrics import TeacherRetrieval, ValidationView

TEACHER = {"model": "offline:tiny-bert-mlm", "max_seq_length": 48}
STUDENT = {"model": "offline:tiny-bert-mlm", "max_seq_length": 48}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _tables(queries: np.ndarray, passages: np.ndarray):
    from retrdistill.losses.embedding import TeacherTables

    return TeacherTables(queries.astype(np.float32), passages.astype(np.float32),
                         {f"q{i}": i for i in range(len(queries))}, {f"d{i}": i for i in range(len(passages))})


def test_in_batch_kl_equals_a_hand_computation():
    """Three queries, two passage columns: each query against all six passages, column-major, as the teacher's
    table rows price them; KL(teacher || student) per query, mean, times T^2."""
    from retrdistill.losses.embedding import DistillationObjective

    rng = np.random.default_rng(4)
    student = registry.build("student", "pruned", STUDENT).load()
    t = 0.1
    tq = rng.normal(size=(3, 5))
    tp = rng.normal(size=(7, 5))
    objective = DistillationObjective(student, [], 0, tables=_tables(tq, tp), in_batch_weight=1.0,
                                      in_batch_temperature=t)
    emb = [torch.nn.functional.normalize(torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32), dim=-1)
           for _ in range(3)]  # query, positive, negative_1 (the student is cosine: normalised rows)
    rows = torch.tensor([[2, 6, 0], [0, 1, 3], [1, 4, 5]])  # query row, positive row, negative row
    got = float(objective.in_batch_kl(emb, rows))

    q = emb[0].numpy()
    p = np.concatenate([emb[1].numpy(), emb[2].numpy()])  # positives of rows 0..2, then negatives of rows 0..2
    prow = [6, 1, 4, 0, 3, 5]
    student_logp = np.log(_softmax(q @ p.T / t))
    teacher_p = _softmax(tq[[2, 0, 1]] @ tp[prow].T / t)
    expected = float(np.mean(np.sum(teacher_p * (np.log(teacher_p) - student_logp), axis=1))) * t * t
    assert got == pytest.approx(expected, rel=1e-4)
    assert got > 0
    # a teacher whose tables are the student's own embeddings agrees: the KL is zero
    same = DistillationObjective(student, [], 0, tables=_tables(q, np.concatenate([p, p[:1]])), in_batch_weight=1.0,
                                 in_batch_temperature=t)
    assert float(same.in_batch_kl(emb, torch.tensor([[0, 0, 3], [1, 1, 4], [2, 2, 5]]))) == pytest.approx(0, abs=1e-6)


def test_teacher_retrieval_equals_a_hand_computation():
    ids = ["a", "b", "c", "d", "e"]
    passages = np.asarray([[1.0], [0.9], [0.5], [0.2], [-1.0]], np.float32)  # the student's score: query * value
    groups = [ScoredGroup("q1", "x", ["a"], [1.0], 1), ScoredGroup("q2", "y", ["e"], [1.0], 1),
              ScoredGroup("q3", "z", ["a"], [1.0], 1)]
    view = ValidationView(groups, np.asarray([[1.0], [-1.0], [1.0]], np.float32), passages,
                          {d: i for i, d in enumerate(ids)}, None, lambda r: [ids[i] for i in r],
                          teacher_top=[["b", "d"], ["e", "a"], []])
    # q1: student top 2 = a, b; the teacher's b, d -> 1/2.  q2: student top 2 = e, d; teacher's e, a -> 1/2.
    # q3: the teacher returned nothing: left out
    metric = registry.build("validation_metric", "teacher-retrieval", {"k": 2})
    assert metric.names() == ["teacher-overlap@2"] and metric.teacher_depth() == 2 == metric.search_depth()
    assert metric.compute(view) == {"teacher-overlap@2": pytest.approx(0.5)}
    view.teacher_top = [["a", "b"], ["e", "d"], ["a"]]
    assert TeacherRetrieval(TeacherRetrieval.Options(k=2)).compute(view)["teacher-overlap@2"] == pytest.approx(1.0)
    view.teacher_top = None
    with pytest.raises(ValueError, match="teacher's ranking"):
        metric.compute(view)


@pytest.fixture(scope="module")
def scored(small_collection, small_cache, tmp_path_factory):
    """24 whole-sentence inverse-cloze queries over ``small_collection``, BM25-mined, scored by the tiny BERT."""
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    root = tmp_path_factory.mktemp("in-batch-scored")
    run_queries(QueriesConfig(options={"num_queries": 24, "seed": 5, "span": "sentence", "min_words": 5,
                                       "max_words": 40}), small_collection, root / "q", cache_dir=small_cache)
    run_mine(MineConfig(miner="bm25", depth=20, negatives=3, rank_max=20), small_collection, root / "q", root / "c",
             cache_dir=small_cache)
    run_score(ScoreConfig(options=TEACHER), small_collection, root / "c", root / "s", cache_dir=small_cache)
    return root


def test_whole_sentence_queries_are_sentences_of_their_passage(scored, small_collection, small_cache):
    from retrdistill.pseudo_queries import InverseClozeGenerator
    from retrdistill.kinds import read_queries

    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    row = corpus.row_index()
    training = read_queries(scored / "q")
    queries, positives = training.queries, training.positives
    assert len(queries) == 24
    for qid, text in queries.items():
        (doc,) = positives[qid]
        passage = corpus.texts_at([row[doc]])[0]
        assert text in passage and 5 <= len(text.split()) <= 40
        # a whole sentence: it starts where a sentence starts (the passage's start or after an end mark)
        at = passage.index(text)
        assert at == 0 or passage[:at].rstrip()[-1] in ".!?" or passage[:at].endswith("\n"), (text, passage)
    words = InverseClozeGenerator(InverseClozeGenerator.Options(num_queries=5))
    sentence = InverseClozeGenerator(InverseClozeGenerator.Options(num_queries=5, span="sentence"))
    assert "span" not in words.fingerprint()["options"]  # the original source keeps its key
    assert sentence.fingerprint()["options"]["span"] == "sentence"
    with pytest.raises(ValueError, match="span must be one of"):
        InverseClozeGenerator.Options(span="paragraph")


def test_train_stage_distils_in_batch_and_keeps_on_the_teachers_own_ranking(scored, small_collection, small_cache,
                                                                             tmp_path):
    """Listwise KL on the groups plus in-batch distillation through the real train stage; validation reads the
    teacher's own top 10 of the corpus (teacher-overlap@10) and keeps the best checkpoint on it."""
    from retrdistill.stages.base import config_dict
    from retrdistill.stages.train import TrainConfig, run_train

    cfg = TrainConfig(student="pruned", options=STUDENT, loss="listwise-kl", in_batch_distill=1.0,
                      negatives_per_query=2, max_steps=4, batch_size=6, learning_rate=1e-4,
                      validation={"fraction": 0.25, "metrics": ["teacher-retrieval", "teacher-agreement"],
                                  "metric": "teacher-overlap@10", "every": 2, "at_start": True})
    result = run_train(cfg, scored / "s", small_collection, tmp_path / "student", cache_dir=small_cache)
    counts = result.manifest.counts
    assert set(counts["last_batch_parts"]) == {"DistillKLDivLoss", "in_batch_distill"}
    assert counts["last_batch_parts"]["in_batch_distill"] > 0
    assert "embedding_teacher" in result.manifest.inputs
    curve = counts["validation"]["curve"]
    assert [p["step"] for p in curve] == [0, 2, 4]
    assert all(0 <= p["metrics"]["teacher-overlap@10"] <= 1 for p in curve)
    best = max(curve[1:], key=lambda p: p["metrics"]["teacher-overlap@10"])
    assert counts["validation"]["best"]["value"] == pytest.approx(best["metrics"]["teacher-overlap@10"])
    # the teacher's own top 10 of a held-out query is what its retrieve returns: a student equal to the teacher
    # finds all of it (the same tiny BERT, untrained, is the teacher here)
    assert curve[0]["metrics"]["teacher-overlap@10"] == pytest.approx(1.0)
    # off by default, the weight and temperature are not in the key (existing artefacts stay current)
    plain = config_dict(TrainConfig())
    assert "in_batch_distill" not in plain and "in_batch_temperature" not in plain
    assert config_dict(cfg)["in_batch_distill"] == 1.0


def test_in_batch_distill_refuses_micro_batches_and_bad_settings():
    from retrdistill.stages.train import TrainConfig

    with pytest.raises(ValueError, match="micro_batch_size cannot be combined"):
        TrainConfig(in_batch_distill=1.0, batch_size=8, micro_batch_size=4)
    with pytest.raises(ValueError, match="in_batch_temperature must be positive"):
        TrainConfig(in_batch_distill=1.0, in_batch_temperature=0.0)
    assert TrainConfig(loss_weight=0.0, in_batch_distill=1.0).in_batch_distill == 1.0  # a weight on its own


def test_the_chosen_teacher_lends_its_picks_embeddings(small_teacher_pick, small_collection, small_cache, tmp_path):
    """Embedding and in-batch distillation from ``teacher: chosen``: the pick's own embeddings and cache; a
    pick without embeddings (BM25) is refused with the reason."""
    from retrdistill.errors import ConfigError
    from retrdistill.losses.embedding import EmbeddingOptions, teacher_for_embeddings
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.kinds import read_choice
    from retrdistill.stages.rate_teachers import RateTeachersConfig, run_rate_teachers

    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    assert read_choice(small_teacher_pick)["picked"] == "bm25"
    with pytest.raises(ConfigError, match="needs a bi-encoder teacher"):
        teacher_for_embeddings({"teacher": "chosen", "options": {"choice": small_teacher_pick}}, EmbeddingOptions(),
                               corpus, small_cache)

    run_queries(QueriesConfig(options={"num_queries": 8, "seed": 29}), small_collection, tmp_path / "probe",
                cache_dir=small_cache)
    candidates = [{"name": f"tiny-{n}", "teacher": "bi-encoder",
                   "options": {"model": "offline:tiny-bert-mlm", "max_seq_length": n}} for n in (32, 48)]
    run_rate_teachers(RateTeachersConfig(candidates=candidates, select="pick"), small_collection, tmp_path / "probe",
                      tmp_path / "rate", cache_dir=small_cache)
    choice = read_choice(tmp_path / "rate")
    picked = choice["candidates"][choice["picked"]]
    teacher = teacher_for_embeddings({"teacher": "chosen", "options": {"choice": str(tmp_path / "rate")}},
                                     EmbeddingOptions(), corpus, small_cache)
    own = registry.build("teacher", "bi-encoder", picked["options"], corpus=corpus, cache_dir=small_cache)
    assert teacher.fingerprint() == own.fingerprint()
    np.testing.assert_allclose(teacher.encode_queries(["a query"]), own.encode_queries(["a query"]), atol=1e-6)
    assert read_manifest(tmp_path / "rate").counts
    # the scores were given by the pick; a choice that now names another teacher (the rate step rerun, or a copied
    # workdir whose manifests name the old folder) is refused instead of mixing its embeddings with those scores
    from retrdistill.artefacts import fingerprint_obj

    same = teacher_for_embeddings({"teacher": "chosen", "options": {"choice": str(tmp_path / "rate")}},
                                  EmbeddingOptions(), corpus, small_cache, scored_by=fingerprint_obj(own.fingerprint()))
    assert same.fingerprint() == own.fingerprint()
    other = next(c for n, c in choice["candidates"].items() if n != choice["picked"])
    gave = registry.build("teacher", "bi-encoder", other["options"], corpus=corpus, cache_dir=small_cache)
    with pytest.raises(ConfigError, match="now give another teacher than the one that scored them"):
        teacher_for_embeddings({"teacher": "chosen", "options": {"choice": str(tmp_path / "rate")}},
                               EmbeddingOptions(), corpus, small_cache, scored_by=fingerprint_obj(gave.fingerprint()))
