"""The sparse family: a sentence-transformers ``SparseEncoder`` (SPLADE-style term weights over the vocabulary,
searched through an inverted index); a masked-LM checkpoint loads as one (``MLMTransformer`` +
``SpladePooling``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.families import module_types, st_model_type
from retrdistill.parts import Family

SPARSE_MODULES = ("SpladePooling", "SparseStaticEmbedding", "SparseAutoEncoder", "MLMTransformer")


class SparseFamily(Family):
    description: ClassVar[str] = "a sparse SparseEncoder model"
    also_loads: ClassVar[tuple[str, ...]] = ("masked-lm", "unknown")
    exact_search: ClassVar[str] = "inverted"

    def detect(self, folder: Path) -> str | None:
        model_type = st_model_type(folder)
        if model_type is not None:
            return f"config_sentence_transformers.json: model_type {model_type}" if model_type == "SparseEncoder" else None
        found = [t for t in module_types(folder) or [] if t in SPARSE_MODULES]
        return f"modules.json: {found[0]}" if found else None

    def load(self, ref: str, *, max_seq_length: int | None = None, device: str | None = None) -> Any:
        from retrdistill.encoding.sparse import load_sparse_encoder

        return load_sparse_encoder(ref, max_seq_length=max_seq_length, device=device)

    def encode(self, model: Any, texts: list[str], *, role: str, batch_size: int = 64, on_progress=None) -> Any:
        from retrdistill.encoding.sparse import encode_sparse

        return encode_sparse(model, texts, role=role, batch_size=batch_size, on_progress=on_progress)

    def stack(self, parts: list[Any]) -> Any:
        import scipy.sparse as sp

        return sp.vstack(parts, format="csr")

    def top_k(self, queries: Any, passages: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        return sparse_top_k(queries, passages, k)

    def scores(self, queries: Any, passages: Any) -> np.ndarray:
        return np.asarray((passages @ queries.T).toarray(), dtype=np.float32).T


SCORE_BLOCK_FLOATS = 1 << 24  # dense query x passage scores held at once by sparse_top_k (128 MB of float64)


def sparse_top_k(queries, passages, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` ``(scores, rows)`` by sparse dot product (CSR ``queries`` x CSR ``passages``), best first,
    ties by row, -1 where the corpus has fewer than ``k`` passages. The queries' dense score rows are made a
    block at a time, at most ``SCORE_BLOCK_FLOATS`` scores, so memory stays bounded as the corpus grows."""
    n, docs = queries.shape[0], passages.shape[0]
    k_eff = min(k, docs)
    scores = np.zeros((n, k), dtype=np.float32)
    rows = np.full((n, k), -1, dtype=np.int64)
    if k_eff == 0:
        return scores, rows
    by_term = passages.T.tocsr()
    block = max(1, SCORE_BLOCK_FLOATS // max(1, docs))
    for start in range(0, n, block):
        dense = np.asarray((queries[start:start + block] @ by_term).toarray(), dtype=np.float64)
        for j, row in enumerate(dense):
            head = np.argpartition(-row, k_eff - 1)[:k_eff] if k_eff < docs else np.arange(docs)
            cut = row[head].min()
            head = np.flatnonzero(row >= cut)  # every passage tied with the k-th, so ties go by row
            top = head[np.lexsort((head, -row[head]))][:k_eff]
            scores[start + j, :k_eff] = row[top]
            rows[start + j, :k_eff] = top
    return scores, rows
