"""Compressed students and embedding-level distillation, with real checkpoints and real sample passages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj, read_manifest
from retrdistill.data.beir import open_collection
from retrdistill.errors import ConfigError
from retrdistill.families.dense.student import DenseStudent
from retrdistill.families.dense.pruned import PrunedStudent, resolve_layers

TEXTS = ["what is a synapse", "A synapse is the junction where a nerve impulse passes from one neuron to another."]
TEACHER = {"model": "offline:all-MiniLM-L6-v2", "batch_size": 64}


@pytest.fixture(scope="module")
def passages(tmp_path_factory, sample_dir):
    """A corpus-only BEIR folder: the sample's first 64 real passages (small enough to encode in seconds)."""
    root = tmp_path_factory.mktemp("passages")
    lines = (sample_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:64]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text("", encoding="utf-8")
    return root


@pytest.mark.parametrize("spec, expected", [
    (None, [0, 1, 2, 3, 4, 5]), (3, [0, 1, 2]), ("first-2", [0, 1]), ("last-2", [4, 5]),
    ("every-other", [1, 3, 5]), ("every-3", [2, 5]), ([0, 2, -1], [0, 2, 5]),
])
def test_layer_rules(spec, expected):
    assert resolve_layers(spec, 6) == expected


@pytest.mark.parametrize("spec", ["first-7", "some-3", [0, 0], [6], [], True])
def test_bad_layer_rules_are_config_errors(spec):
    with pytest.raises(ConfigError, match="layers"):
        resolve_layers(spec, 6)


def test_pruned_student_keeps_the_declared_layers_and_width(minilm):
    from sentence_transformers import SentenceTransformer

    original = SentenceTransformer(minilm)
    student = registry.build("student", "pruned", {"model": "offline:all-MiniLM-L6-v2", "layers": [0, 2, 5],
                                                   "output_dim": 96})
    model = student.load()
    encoder = model[0].auto_model
    assert encoder.config.num_hidden_layers == 3 and len(encoder.encoder.layer) == 3
    kept, source = encoder.encoder.layer, original[0].auto_model.encoder.layer
    for new, old in zip(kept, [0, 2, 5]):
        assert torch.equal(new.output.dense.weight, source[old].output.dense.weight)
    assert model.get_embedding_dimension() == 96
    emb = model.encode(TEXTS)
    assert emb.shape == (2, 96)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert student.fingerprint() != registry.build("student", "pruned", {"layers": "first-3"}).fingerprint()


def test_tiny_checkpoint_is_a_mean_pooled_dense_student():
    model = registry.build("student", "pruned", {"model": "offline:tiny-bert-mlm"}).load()
    assert model[0].auto_model.config.num_hidden_layers == 2
    assert model[1].pooling_mode == "mean"
    assert model.get_embedding_dimension() == 128
    assert model.encode(TEXTS).shape == (2, 128)


def test_saved_student_reloads_with_identical_embeddings(tmp_path):
    from sentence_transformers import SentenceTransformer

    from retrdistill.stages.save_student import save_student

    options = {"model": "offline:all-MiniLM-L6-v2", "layers": "every-other", "output_dim": 64}
    first = save_student("pruned", options, tmp_path / "student")
    assert first.manifest.counts == {"parameters": first.manifest.counts["parameters"], "dim": 64}
    again = save_student("pruned", options, tmp_path / "student")
    assert again.skipped  # declared once, materialised once
    reloaded = SentenceTransformer(str(tmp_path / "student"))
    assert reloaded[0].auto_model.config.num_hidden_layers == 3
    fresh = registry.build("student", "pruned", options).load()  # seeded: the same initial weights again
    np.testing.assert_allclose(reloaded.encode(TEXTS), fresh.encode(TEXTS), atol=1e-6)


def test_truncated_model_equals_matryoshka_truncation():
    from sentence_transformers.sentence_transformer.losses.matryoshka import shrink

    from retrdistill.training.fit import truncated

    model = registry.build("student", "pruned", {"model": "offline:tiny-bert-mlm"}).load()
    full = model.encode(TEXTS, convert_to_tensor=True)
    cut = truncated(model, 32).encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(cut, shrink(full, 32), atol=1e-5, rtol=1e-5)


def test_embedding_distillation_loss_falls_on_real_passages(passages, tmp_path):
    """A 2-layer student learns all-MiniLM-L6-v2's embeddings of real sample passages (projection 128 -> 384)."""
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss

    from retrdistill.losses.embedding import DistillationObjective, build_teacher_tables, index_label

    cache = tmp_path / "cache"
    corpus = open_collection(passages, cache / "corpora").corpus
    teacher = registry.build("teacher", "bi-encoder", TEACHER, corpus=corpus, cache_dir=cache)
    ids = corpus.id_list()[:48]
    queries = [" ".join(t.split()[:8]) for t in corpus.texts_at(list(range(16)))]
    groups = [ids[i * 3:(i + 1) * 3] for i in range(16)]  # query i: its own passage + 2 others
    tables = build_teacher_tables(teacher, queries, ids, corpus, cache)
    assert tables.dim == 384 and tables.passages.shape == (48, 384)
    row = corpus.row_index()
    np.testing.assert_allclose(tables.passages[tables.passage_row[ids[5]]],
                               teacher.corpus_embeddings().embeddings[row[ids[5]]])

    torch.manual_seed(0)
    student = registry.build("student", "pruned", {"model": "offline:tiny-bert-mlm", "max_seq_length": 96}).load()
    objective = DistillationObjective(student, [(0.0, MarginMSELoss(student))], 2, embedding_weight=1.0,
                                      tables=tables, distance="mse")
    columns = [queries] + [[corpus.texts_at([row[g[j]]])[0] for g in groups] for j in range(3)]
    features = [student.preprocess(col) for col in columns]
    scores = torch.zeros(16, 2)
    labels = torch.cat([scores, torch.tensor([index_label(tables, q, g) for q, g in zip(queries, groups)])], dim=1)

    def loss_now() -> float:
        objective.eval()
        with torch.no_grad():
            return float(objective(features, labels))

    before = loss_now()
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    objective.train()
    for _ in range(8):
        optimizer.zero_grad()
        objective(features, labels).backward()
        optimizer.step()
    after = loss_now()
    assert set(objective.last_parts) == {"embedding"}
    assert after < 0.7 * before, (before, after)
    # the cached query embeddings are reused (no second encode) and equal a fresh teacher encoding
    again = build_teacher_tables(teacher, queries, ids, corpus, cache)
    np.testing.assert_allclose(again.queries, teacher.encode_queries(list(dict.fromkeys(queries))), atol=1e-5)


def test_train_config_validates_its_weights_and_embedding_options():
    from retrdistill.stages.train import TrainConfig

    with pytest.raises(ConfigError, match="unknown option.* metric .*expected: distance"):
        TrainConfig(embedding_options={"metric": "mse"})
    with pytest.raises(ValueError, match="every loss weight is 0"):
        TrainConfig(loss_weight=0.0)
    with pytest.raises(ValueError, match="warmup_ratio is a fraction"):
        TrainConfig(warmup_ratio=1.5)
    with pytest.raises(ValueError, match="matryoshka_dims"):
        TrainConfig(matryoshka_dims=[128, 0])


@pytest.fixture(scope="module")
def scored(passages, tmp_path_factory):
    """(cache folder, scores folder): 8 pseudo-queries over the passages, BM25-mined, scored by TEACHER."""
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    root = tmp_path_factory.mktemp("scored")
    cache = root / "cache"
    run_queries(QueriesConfig(options={"num_queries": 8, "seed": 3}), passages, root / "q", cache_dir=cache)
    run_mine(MineConfig(miner="bm25", depth=20, negatives=3, rank_max=20), passages, root / "q", root / "c",
             cache_dir=cache)
    run_score(ScoreConfig(options=TEACHER), passages, root / "c", root / "s", cache_dir=cache)
    return cache, root / "s"


def test_train_stage_distils_embeddings_into_a_truncated_pruned_student(passages, scored, tmp_path):
    """Score + embedding distillation, Matryoshka widths and a truncated output, through the real stages."""
    from sentence_transformers import SentenceTransformer

    from retrdistill.stages.base import config_dict
    from retrdistill.stages.train import TrainConfig, run_train

    cache, scores = scored
    assert read_manifest(scores).settings["options"]["model"] == TEACHER["model"]
    cfg = TrainConfig(student="pruned", options={"model": "offline:tiny-bert-mlm", "max_seq_length": 64},
                      negatives_per_query=3, max_steps=2, batch_size=4, learning_rate=1e-4,
                      embedding_distill=2.0, matryoshka_dims=[128, 32], truncate_dim=32, save_untrained=True)
    result = run_train(cfg, scores, passages, tmp_path / "student", cache_dir=cache)
    counts = result.manifest.counts
    assert counts["steps"] == 2 and counts["teacher_dim"] == 384 and counts["dim"] == 32
    assert set(counts["last_batch_parts"]) == {"MarginMSELoss", "embedding", "MarginMSELoss@32"}
    assert "embedding_teacher" in result.manifest.inputs
    assert counts["projection_fit_cosine"] > 0.5  # the 128 -> 384 projection starts at the least-squares fit
    trained = SentenceTransformer(str(tmp_path / "student" / "model"))
    assert trained.encode(TEXTS).shape == (2, 32)
    baseline = SentenceTransformer(str(tmp_path / "student" / "untrained"))
    assert baseline.get_embedding_dimension() == 128  # as declared: no truncation, no training
    declared = registry.build("student", "pruned", cfg.options).load()
    np.testing.assert_allclose(baseline.encode(TEXTS), declared.encode(TEXTS), atol=1e-6)
    # the config keys the artefact, the student's options through its fingerprint; all of it is recorded
    assert result.manifest.config == {k: v for k, v in config_dict(cfg).items() if k not in ("options", "checkpoint_steps")}
    assert result.manifest.settings == json.loads(json.dumps(config_dict(cfg)))
    assert run_train(cfg, scores, passages, tmp_path / "student", cache_dir=cache).skipped


def test_embedding_teacher_other_than_the_scoring_teacher(passages, scored, tmp_path):
    """Scores from one teacher, embeddings from another (e.g. a 6-layer assistant for a 3-layer student)."""
    from retrdistill.stages.train import TrainConfig, run_train

    cache, scores = scored
    other = {"model": "offline:tiny-bert-mlm", "max_seq_length": 64}
    cfg = TrainConfig(student="pruned", options={"model": "offline:all-MiniLM-L6-v2", "layers": [0, 5],
                                                 "max_seq_length": 64},
                      negatives_per_query=3, max_steps=2, batch_size=4, learning_rate=1e-4, embedding_distill=1.0,
                      embedding_options={"distance": "cosine", "teacher": "bi-encoder", "teacher_options": other})
    result = run_train(cfg, scores, passages, tmp_path / "student", cache_dir=cache)
    counts = result.manifest.counts
    assert counts["teacher_dim"] == 128 and counts["dim"] == 384  # the tiny BERT's width, through a projection
    assert set(counts["last_batch_parts"]) == {"MarginMSELoss", "embedding"}
    tiny = registry.build("teacher", "bi-encoder", other, corpus=open_collection(passages, cache / "corpora").corpus,
                          cache_dir=cache)
    assert result.manifest.inputs["embedding_teacher"] == fingerprint_obj(tiny.fingerprint())
    assert result.manifest.inputs["embedding_teacher"] != read_manifest(scores).inputs.get("teacher")


class RecordingStudent(DenseStudent):
    """A student part of the test's own: the dense student, trained by its own trainer subclass, saved with a
    marker file beside the model, and recording which of its hooks the train stage called."""

    calls: list[str] = []

    def trainer_classes(self):
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        calls = self.calls

        class CountingTrainer(SentenceTransformerTrainer):
            def training_step(self, *args, **kwargs):
                calls.append("step")
                return super().training_step(*args, **kwargs)

        self.calls.append("trainer_classes")
        return CountingTrainer, SentenceTransformerTrainingArguments

    def save(self, model, folder):
        super().save(model, folder)
        (folder / "saved-by.txt").write_text(type(self).__name__, encoding="utf-8")
        self.calls.append(f"save:{folder.name}")


def test_a_student_part_of_ones_own_trains_through_the_unchanged_stage(passages, scored, tmp_path, request):
    from sentence_transformers import SentenceTransformer

    from retrdistill.stages.train import TrainConfig, run_train

    registry.add("student", "recording", f"{__name__}:RecordingStudent", "the dense student, recording its hooks")
    request.addfinalizer(lambda: registry.REGISTRY["student"].pop("recording", None))
    RecordingStudent.calls.clear()
    cache, scores = scored
    options = {"model": "offline:all-MiniLM-L6-v2", "max_seq_length": 64}
    cfg = TrainConfig(student="recording", options=options, negatives_per_query=3, max_steps=2, batch_size=4,
                      learning_rate=1e-4, save_untrained=True)
    result = run_train(cfg, scores, passages, tmp_path / "student", cache_dir=cache)
    assert RecordingStudent.calls == ["save:untrained", "trainer_classes", "step", "step", "save:model"]
    counts = result.manifest.counts
    assert counts["steps"] == 2 and counts["rows"] > 0 and counts["rows"] + counts["groups_skipped"] == 8
    student = registry.build("student", "recording", options)
    assert isinstance(student, RecordingStudent)
    assert result.manifest.inputs["student"] == fingerprint_obj(student.fingerprint())
    for name in ("model", "untrained"):
        assert (tmp_path / "student" / name / "saved-by.txt").read_text(encoding="utf-8") == "RecordingStudent"
    trained = SentenceTransformer(str(tmp_path / "student" / "model"))
    untrained = SentenceTransformer(str(tmp_path / "student" / "untrained"))
    assert trained.max_seq_length == 64
    assert not np.allclose(trained.encode(TEXTS), untrained.encode(TEXTS), atol=1e-4), "training must change it"


@pytest.mark.parametrize("bars", [False, True])
def test_training_prints_nothing_to_stdout(bars, passages, scored, tmp_path, capfd, caplog, monkeypatch):
    """transformers' PrinterCallback (its choice when progress bars are off) would print each log dict, and its
    ProgressCallback (when they are on) writes each log dict to stdout under the bar."""
    import logging

    from retrdistill import progress
    from retrdistill.stages.train import TrainConfig, run_train

    monkeypatch.setattr(progress, "_enabled", bars)
    cache, scores = scored
    cfg = TrainConfig(options={"model": "offline:all-MiniLM-L6-v2", "max_seq_length": 64}, negatives_per_query=3,
                      max_steps=2, batch_size=4, seed=21)
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="retrdistill"):
        result = run_train(cfg, scores, passages, tmp_path / "student", cache_dir=cache)
    assert result.manifest.counts["steps"] == 2
    assert capfd.readouterr().out == ""
    assert any("train_runtime" in record.getMessage() for record in caplog.records)  # logged, not printed
