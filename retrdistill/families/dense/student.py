"""A dense bi-encoder student: any SentenceTransformer checkpoint (hub name, local path or ``offline:NAME``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from retrdistill.models import load_sentence_transformer, model_fingerprint
from retrdistill.families.dense.bi_encoder import BiEncoderStudent



class DenseStudent(BiEncoderStudent):
    example_variants: ClassVar[dict[str, Any]] = {"config_overrides": {"attention_probs_dropout_prob": 0.0}}

    @dataclass
    class Options:
        model: str = "offline:all-MiniLM-L6-v2"
        max_seq_length: int | None = field(default=256, metadata={"min": 1})
        # Hugging Face config values set when the checkpoint is loaded for training, e.g.
        # {attention_probs_dropout_prob: 0.0}: without attention dropout, torch's fused CPU attention kernel
        # applies (it has no dropout), which keeps no attention matrices for the backward pass
        config_overrides: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> dict:
        out = {"student": "dense", "model": model_fingerprint(self.options.model),
               "max_seq_length": self.options.max_seq_length}
        if self.options.config_overrides:
            out["config_overrides"] = dict(self.options.config_overrides)
        return out

    def load(self):
        overrides = self.options.config_overrides
        model = load_sentence_transformer(self.options.model, **({"config_kwargs": dict(overrides)} if overrides else {}))
        if self.options.max_seq_length:
            model.max_seq_length = self.options.max_seq_length
        return model
