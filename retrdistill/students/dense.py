"""A dense bi-encoder student: any SentenceTransformer checkpoint (hub name, local path or ``offline:NAME``)."""

from __future__ import annotations

from dataclasses import dataclass

from retrdistill.models import load_sentence_transformer, model_fingerprint
from retrdistill.parts import Student


class DenseStudent(Student):
    @dataclass
    class Options:
        model: str = "offline:all-MiniLM-L6-v2"
        max_seq_length: int | None = 256

    def fingerprint(self) -> dict:
        return {"student": "dense", "model": model_fingerprint(self.options.model), "max_seq_length": self.options.max_seq_length}

    def load(self):
        model = load_sentence_transformer(self.options.model)
        if self.options.max_seq_length:
            model.max_seq_length = self.options.max_seq_length
        return model
