"""Student options that change how the checkpoint is loaded for training."""

from __future__ import annotations

import pytest

from retrdistill import registry


@pytest.mark.parametrize("student, extra", [("dense", {}), ("pruned", {"layers": [0, 5]})])
def test_config_overrides_reach_the_loaded_checkpoint_and_its_fingerprint(student, extra):
    plain = registry.build("student", student, {"model": "offline:all-MiniLM-L6-v2", **extra})
    override = registry.build("student", student, {"model": "offline:all-MiniLM-L6-v2", **extra,
                                                   "config_overrides": {"attention_probs_dropout_prob": 0.0}})
    assert plain.fingerprint() != override.fingerprint()
    hf_plain, hf_override = plain.load()[0].auto_model, override.load()[0].auto_model
    assert hf_plain.config.attention_probs_dropout_prob == pytest.approx(0.1)
    assert hf_override.config.attention_probs_dropout_prob == 0.0
    attention = [m for m in hf_override.modules() if type(m).__name__ == "BertSelfAttention"]
    assert attention and all(m.dropout.p == 0.0 for m in attention)
    assert all(m.dropout.p == pytest.approx(0.1) for m in hf_plain.modules() if type(m).__name__ == "BertSelfAttention")
