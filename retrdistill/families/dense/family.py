"""The dense family: a sentence-transformers ``SentenceTransformer`` (one embedding per text, inner-product or
cosine search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.families import module_types, st_model_type
from retrdistill.parts import Family


class DenseFamily(Family):
    description: ClassVar[str] = "a dense SentenceTransformer model"
    also_loads: ClassVar[tuple[str, ...]] = ("masked-lm", "transformer", "unknown")

    def detect(self, folder: Path) -> str | None:
        model_type = st_model_type(folder)
        if model_type is not None:
            return (f"config_sentence_transformers.json: model_type {model_type}"
                    if model_type == "SentenceTransformer" else None)
        types = module_types(folder)
        return f"modules.json: {', '.join(types)}" if types is not None else None

    def load(self, ref: str, *, max_seq_length: int | None = None, device: str | None = None) -> Any:
        from retrdistill.models import load_sentence_transformer

        model = load_sentence_transformer(ref, device=device)
        if max_seq_length:
            model.max_seq_length = max_seq_length
        return model

    def encode(self, model: Any, texts: list[str], *, role: str, batch_size: int = 64, on_progress=None) -> Any:
        from retrdistill.encoding.corpus import should_normalize
        from retrdistill.encoding.engine import encode_texts

        return encode_texts(model, texts, batch_size=batch_size, normalize=should_normalize(model),
                            on_progress=on_progress)

    def top_k(self, queries: Any, passages: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        from retrdistill.encoding.search import exact_search

        return exact_search(queries, passages, k)

    def scores(self, queries: Any, passages: Any) -> np.ndarray:
        return np.stack([passages @ query for query in queries])
