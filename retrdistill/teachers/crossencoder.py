"""A cross-encoder teacher: sentence-transformers ``CrossEncoder`` scores each (query, passage) pair.

As a retriever (its leaderboard row) it re-ranks BM25's top ``rerank_depth`` passages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.data.beir import Corpus
from retrdistill.encoding.engine import score_pairs as score_with_model
from retrdistill.models import load_cross_encoder, model_fingerprint
from retrdistill.parts import PairTeacher, Run
from retrdistill.teachers.first_stage import rerank_first_stage


class CrossEncoderTeacher(PairTeacher):
    """Context: ``corpus`` (the passages scored) and ``cache_dir`` (the BM25 index it re-ranks as a retriever)."""

    @dataclass
    class Options:
        model: str = "cross-encoder/ms-marco-MiniLM-L6-v2"
        batch_size: int = field(default=32, metadata={"min": 1})
        max_length: int | None = field(default=512, metadata={"min": 1})
        rerank_depth: int = field(default=100, metadata={"min": 1})
        backend: str = "torch"  # retrdistill.encoding.backends: a CPU fast path for scoring

        def __post_init__(self) -> None:
            from retrdistill.encoding.backends import BACKENDS

            if self.backend not in BACKENDS:
                raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    # rerank_depth changes only retrieve(), not the scores the fingerprint covers (the eval system keys on it)
    output_neutral: ClassVar[tuple[str, ...]] = ("batch_size", "rerank_depth")
    example_options: ClassVar[dict[str, Any]] = {"model": "{tiny_cross_encoder}"}
    example_variants: ClassVar[dict[str, Any]] = {"backend": "onnx-int8"}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        self._model = None

    def fingerprint(self) -> dict:
        """Model, max length and corpus; the backend only where it changes the scores (int8, bf16)."""
        from retrdistill.encoding.backends import output_key

        out = {"teacher": "cross-encoder", "model": model_fingerprint(self.options.model),
               "max_length": self.options.max_length, "corpus": self.corpus.fingerprint}
        changes = output_key(self.options.backend)
        if changes is not None:
            out["backend"] = changes
        return out

    @property
    def model(self):
        if self._model is None:
            kwargs = {"max_length": self.options.max_length} if self.options.max_length else {}
            if self.options.backend != "torch":
                from retrdistill.encoding.backends import load_reranker

                self._model = load_reranker(self.options.model, self.options.backend, **kwargs)
            else:
                self._model = load_cross_encoder(self.options.model, **kwargs)
        return self._model

    def score_pairs(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return score_with_model(self.model, pairs, batch_size=self.options.batch_size)

    def retrieve(self, queries: dict[str, str], k: int, *, first_stage: Run | None = None, **_: object) -> Run:
        """BM25's top ``rerank_depth`` (or ``first_stage``'s) re-ranked by the cross-encoder."""
        return rerank_first_stage(self, queries, self.options.rerank_depth, first_stage)
