"""Encoding and pair scoring. Every stage goes through these two functions.

Initial version: delegates to sentence-transformers with length-sorted batches. See issue 7 for the fast engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def encode_texts(
    model: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    normalize: bool = False,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` with a SentenceTransformer; float32 array of shape (len(texts), dim), input order."""
    if len(texts) == 0:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    emb = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    return np.asarray(emb, dtype=np.float32)


def score_pairs(
    model: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 64,
    show_progress: bool = False,
) -> np.ndarray:
    """Score (query, passage) pairs with a sentence-transformers CrossEncoder; float32 array, input order."""
    if len(pairs) == 0:
        return np.zeros((0,), dtype=np.float32)
    scores = model.predict(
        [list(p) for p in pairs], batch_size=batch_size, convert_to_numpy=True, show_progress_bar=show_progress
    )
    return np.asarray(scores, dtype=np.float32).reshape(len(pairs), -1)[:, 0]
