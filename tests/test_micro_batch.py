"""``micro_batch_size``: a batch run as smaller forward passes with accumulated gradients trains the same model
(dropout off, so both runs draw nothing at random), and objectives with batch-level terms refuse it."""

from __future__ import annotations

import pytest
import torch

from retrdistill.errors import ConfigError

TINY = "offline:tiny-bert-mlm"
NO_DROPOUT = {"attention_probs_dropout_prob": 0.0, "hidden_dropout_prob": 0.0}


@pytest.fixture(scope="module")
def scores(small_collection, minilm, tmp_path_factory):
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    work = tmp_path_factory.mktemp("micro")
    cache = work / "cache"
    run_queries(QueriesConfig(options={"num_queries": 40, "seed": 13}), small_collection, work / "q", cache_dir=cache)
    run_mine(MineConfig(depth=20, rank_max=20, negatives=3), small_collection, work / "q", work / "c", cache_dir=cache)
    # a teacher unlike the student, so that the loss is far from zero
    run_score(ScoreConfig(teacher="bi-encoder", options={"model": minilm, "max_seq_length": 64, "encode_corpus": False}),
              small_collection, work / "c", work / "s", cache_dir=cache)
    return work / "s", cache


def _train(scores, small_collection, out, **extra):
    from retrdistill.stages.train import TrainConfig, run_train

    scores_dir, cache = scores
    cfg = TrainConfig(student="pruned", options={"model": TINY, "max_seq_length": 48, "config_overrides": NO_DROPOUT},
                      loss="listwise-kl", negatives_per_query=2, max_steps=3, batch_size=8, learning_rate=1e-3,
                      seed=13, **extra)
    return run_train(cfg, scores_dir, small_collection, out, cache_dir=cache)


def test_micro_batches_train_the_same_model(scores, small_collection, tmp_path):
    whole = _train(scores, small_collection, tmp_path / "whole", save_untrained=True)
    micro = _train(scores, small_collection, tmp_path / "micro", micro_batch_size=2)
    assert whole.manifest.counts["steps"] == micro.manifest.counts["steps"] == 3
    assert micro.manifest.config["micro_batch_size"] == 2 and "micro_batch_size" not in whole.manifest.config
    # the same mean loss over the run: the accumulated gradients are the whole batch's, step by step
    assert micro.manifest.counts["train_loss"] == pytest.approx(whole.manifest.counts["train_loss"], rel=1e-4)
    texts = ["what is the boiling point of water", "Rainforests hold half of the species on Earth."]
    before, a, b = (_embed(tmp_path / "whole" / "untrained", texts), _embed(tmp_path / "whole" / "model", texts),
                    _embed(tmp_path / "micro" / "model", texts))
    assert (a - before).abs().max() > 1e-3, "training must have moved the model for the comparison to mean anything"
    # not bitwise: Adam divides by the root of tiny squared gradients, where summation order shows
    torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)


def _embed(folder, texts):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)


def test_micro_batches_are_refused_where_the_batch_matters(scores, small_collection, tmp_path):
    from retrdistill.stages.train import TrainConfig, prepare_train

    with pytest.raises(ValueError, match="in_batch_negatives"):
        TrainConfig(batch_size=8, micro_batch_size=2, in_batch_negatives=0.5)
    with pytest.raises(ValueError, match="must divide batch_size 8"):
        TrainConfig(batch_size=8, micro_batch_size=3)
    cfg = TrainConfig(student="splade", options={"model": TINY}, batch_size=8, micro_batch_size=2)
    with pytest.raises(ConfigError, match="batch-level terms"):
        prepare_train(cfg, scores[0], small_collection, tmp_path / "splade", cache_dir=scores[1])
