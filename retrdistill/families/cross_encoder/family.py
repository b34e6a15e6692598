"""The cross-encoder family: a sentence-transformers ``CrossEncoder`` scores (query, passage) pairs; it has no
encoding of its own to index or search, so it re-ranks (the ``rerank`` system, the ``cross-encoder`` teacher)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.errors import ConfigError
from retrdistill.families import st_model_type
from retrdistill.parts import Family

NO_ENCODING = ("a cross-encoder scores (query, passage) pairs and has no text encoding to search: re-rank with "
               "it (the 'rerank' system, the 'cross-encoder' teacher) instead")


class CrossEncoderFamily(Family):
    description: ClassVar[str] = "a CrossEncoder (pair scorer)"
    trains_with: ClassVar[str] = "cross-encoder"
    exact_search: ClassVar[str] = "pairs"

    def detect(self, folder: Path) -> str | None:
        model_type = st_model_type(folder)
        return f"config_sentence_transformers.json: model_type {model_type}" if model_type == "CrossEncoder" else None

    def load(self, ref: str, *, max_seq_length: int | None = None, device: str | None = None) -> Any:
        from retrdistill.models import load_cross_encoder

        model = load_cross_encoder(ref, device=device)
        if max_seq_length:
            model.max_length = max_seq_length
        return model

    def encode(self, model: Any, texts: list[str], *, role: str, batch_size: int = 64, on_progress=None) -> Any:
        raise ConfigError(NO_ENCODING)

    def top_k(self, queries: Any, passages: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise ConfigError(NO_ENCODING)

    def scores(self, queries: Any, passages: Any) -> np.ndarray:
        raise ConfigError(NO_ENCODING)
