"""``indexer: sparse``: an embedded inverted index of a sparse (SPLADE-style) model's document vectors.

The corpus is encoded with a ``SparseEncoder``'s own ``encode_document`` in checkpointed shards (bounded memory,
resumable; :func:`retrdistill.encoding.sparse.corpus_postings`), and its term-major posting lists are saved in
the index folder as memory-mapped ``.npy`` arrays in the BM25 index's CSC layout:

* ``postings.indptr.npy`` (int64, vocabulary + 1): term t's postings are ``[indptr[t], indptr[t + 1])``;
* ``postings.indices.npy`` (int32): the passage row of each posting, ascending within a term;
* ``postings.data.npy`` (float32): the term's weight in that passage;
* ``sparse.json``: vocabulary size, passages, postings, the model's encoding settings.

A query is encoded with ``encode_query`` and scored exactly: the dot product of its sparse vector with every
passage's, computed from the posting lists of the query's terms only (float64 accumulation), best first, ties
by passage row. Its cost is reported as terms per query and per passage and FLOPs per query (the postings
touched: the sum over the query's terms of their posting-list lengths, the SPLADE papers' measure).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.artefacts import atomic_path, write_json_atomic
from retrdistill.encoding.sparse import POSTING_FILES, SparseSettings, corpus_postings, encode_sparse
from retrdistill.errors import ConfigError
from retrdistill.parts import BuiltIndex, Indexer

PARAMS = "sparse.json"
FORMAT = "retrdistill-sparse-index"


DENSE_ACCUMULATOR_RATIO = 4  # a query touching at least a quarter as many postings as there are passages sums
                             # into a passage-sized array; fewer, and its postings are sorted (np.unique)


@dataclass
class SparseIndex:
    """Posting lists, memory-mapped: ``indptr`` (terms + 1), ``indices`` (passage rows), ``data`` (weights)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    num_docs: int
    params: dict[str, Any]

    @classmethod
    def open(cls, folder: Path, params: dict[str, Any]) -> "SparseIndex":
        data, indices, indptr = (np.load(folder / name, mmap_mode="r") for name in POSTING_FILES)
        return cls(indptr, indices, data, int(params["documents"]), params)

    @property
    def vocab_size(self) -> int:
        return len(self.indptr) - 1

    def posting_lengths(self, terms: np.ndarray) -> np.ndarray:
        terms = np.asarray(terms, dtype=np.int64)
        return np.asarray(self.indptr[terms + 1] - self.indptr[terms], dtype=np.int64)

    def score(self, terms: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)`` of every passage sharing a term with the query, rows ascending (float64 sums)."""
        spans = [(int(self.indptr[t]), int(self.indptr[t + 1])) for t in np.asarray(terms, dtype=np.int64).tolist()]
        spans = [(a, b, float(w)) for (a, b), w in zip(spans, np.asarray(weights).tolist()) if b > a]
        if not spans:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        rows = np.concatenate([self.indices[a:b] for a, b, _ in spans])
        products = np.concatenate([np.asarray(self.data[a:b], dtype=np.float64) * w for a, b, w in spans])
        if len(rows) * DENSE_ACCUMULATOR_RATIO >= self.num_docs:
            # many postings for the corpus (a query with thousands of terms): one pass into a per-passage array,
            # O(postings + passages), instead of sorting the postings; the same sums in the same order
            sums = np.bincount(rows, weights=products, minlength=self.num_docs)
            seen = np.zeros(self.num_docs, dtype=bool)
            seen[rows] = True
            touched = np.flatnonzero(seen)
            return touched, sums[touched]
        unique, inverse = np.unique(rows, return_inverse=True)
        return unique.astype(np.int64), np.bincount(inverse, weights=products, minlength=len(unique))


class SparseIndexer(Indexer):
    """An inverted index of a ``SparseEncoder``'s document vectors; exact dot-product top-k.

    ``shard_size``: passages encoded and held in memory at once (each shard checkpointed; output-neutral).
    ``max_active_dims``: keep only the top terms of every document and query vector (None: all).
    """

    @dataclass
    class Options:
        shard_size: int = field(default=2048, metadata={"min": 1})
        max_active_dims: int | None = field(default=None, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.shard_size < 1:
                raise ValueError(f"shard_size must be a positive number of passages, got {self.shard_size}")
            if self.max_active_dims is not None and self.max_active_dims < 1:
                raise ValueError(f"max_active_dims must be a positive integer or null, got {self.max_active_dims}")

    model_type: ClassVar[str] = "sparse"
    index_file: ClassVar[str] = PARAMS
    output_neutral: ClassVar[tuple[str, ...]] = ("shard_size",)
    example_model: ClassVar[str] = "offline:tiny-bert-mlm"
    # 32 tokens a passage: the MLM head scores the whole vocabulary per token, the cost of every SPLADE encoding
    example_build: ClassVar[dict[str, Any]] = {"max_seq_length": 32}

    # ---------------------------------------------------------------- encoding (SparseEncoder)
    def load_model(self, model_ref: str, *, max_seq_length: int | None = None, device: str | None = None,
                   backend: str = "torch"):
        from retrdistill.encoding.sparse import load_sparse_encoder

        if backend != "torch":
            raise ConfigError(f"backend {backend!r}: sparse models encode with torch only (the compiled backends "
                              f"cover dense SentenceTransformer and CrossEncoder models); use backend: torch")
        return load_sparse_encoder(model_ref, max_seq_length=max_seq_length, device=device)

    def _settings(self, batch_size: int, max_seq_length: int | None) -> SparseSettings:
        return SparseSettings(batch_size=batch_size, max_seq_length=max_seq_length,
                              shard_size=self.options.shard_size, max_active_dims=self.options.max_active_dims)

    def exact_index(self, model, corpus, *, model_ref: str, cache_dir: Path,
                    max_seq_length: int | None = None) -> BuiltIndex:
        """The corpus's cached postings (encoded on the first call, resumably), searched in place."""
        postings = corpus_postings(model_ref, corpus, cache_dir, self._settings(32, max_seq_length), model=model)
        params = self._params(postings.meta)
        index = SparseIndex.open(postings.folder, params)
        return BuiltIndex(index, {**self._facts(params), "index_bytes": _bytes(postings.folder, POSTING_FILES)})

    def index_corpus(self, model, corpus, folder: Path, *, model_ref: str, cache_dir: Path, batch_size: int = 64,
                     max_seq_length: int | None = None) -> BuiltIndex:
        postings = corpus_postings(model_ref, corpus, cache_dir, self._settings(batch_size, max_seq_length),
                                   model=model)
        params = self._params(postings.meta)
        self.save(SparseIndex.open(postings.folder, params), folder)
        return BuiltIndex(self.load(folder), self._facts(params))

    def _params(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "documents": meta["documents"], "vocab_size": meta["vocab_size"],
                "postings": meta["postings"], "doc_terms": meta["doc_terms"],
                "max_seq_length": meta["settings"]["max_seq_length"],
                "max_active_dims": meta["settings"]["max_active_dims"], "files": list(POSTING_FILES)}

    @staticmethod
    def _facts(params: dict[str, Any]) -> dict[str, Any]:
        return {"vocab_size": params["vocab_size"], "postings": params["postings"],
                "doc_terms": round(float(params["doc_terms"]), 3)}

    def encoding_block(self) -> int:
        """Passages encoded in one call: a sharded index step cuts the corpus in whole blocks of this many."""
        return self.options.shard_size

    def encode_queries(self, model, texts: list[str], info: dict[str, Any]):
        """A ``scipy.sparse.csr_matrix`` (queries x vocabulary) through the model's ``encode_query``."""
        return encode_sparse(model, texts, role="query", batch_size=1 if len(texts) <= 1 else 32,
                             max_active_dims=self.options.max_active_dims)

    def encode_passages(self, model, texts: list[str], info: dict[str, Any]):
        return encode_sparse(model, texts, role="document", batch_size=32,
                             max_active_dims=self.options.max_active_dims)

    # ---------------------------------------------------------------- the index
    def save(self, index: SparseIndex, folder: Path) -> None:
        """The posting arrays hard-linked (copied where links fail) into ``folder``, each atomically, and
        ``sparse.json`` last."""
        folder = Path(folder)
        for name, array in zip(POSTING_FILES, (index.data, index.indices, index.indptr)):
            source = getattr(array, "filename", None)
            with atomic_path(folder / name) as tmp:
                if source and Path(source).name == name:
                    tmp.unlink()
                    try:
                        os.link(source, tmp)
                    except OSError:
                        shutil.copyfile(source, tmp)
                else:
                    with open(tmp, "wb") as fh:
                        np.save(fh, np.asarray(array))
        write_json_atomic(folder / PARAMS, index.params)

    def load(self, folder: Path) -> SparseIndex:
        from retrdistill.errors import ManifestError

        folder = Path(folder)
        try:
            params = json.loads((folder / PARAMS).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{folder}: no readable sparse index ({PARAMS}: {exc})") from None
        if params.get("format") != FORMAT:
            raise ManifestError(f"{folder}/{PARAMS}: expected format {FORMAT!r}, found {params.get('format')!r}")
        return SparseIndex.open(folder, params)

    def search(self, index: SparseIndex, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` ``(scores, rows)`` per query row of ``queries`` (a CSR matrix, or anything
        ``scipy.sparse.csr_matrix`` takes); only passages sharing a term with the query are returned, rows of
        -1 (score 0) fill the rest."""
        scores, rows = self.search_for_merge(index, queries, k)
        return scores.astype(np.float32), rows

    def search_for_merge(self, index: SparseIndex, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with the float64 scores the order was decided on (best first, ties by row), so that a
        sharded index merges its shards' lists in exactly this order (float32 scores can tie where these differ)."""
        queries = _as_csr(queries, index.vocab_size)
        k = min(k, index.num_docs)
        scores = np.zeros((queries.shape[0], k), dtype=np.float64)
        rows = np.full((queries.shape[0], k), -1, dtype=np.int64)
        for i in range(queries.shape[0]):
            lo, hi = queries.indptr[i], queries.indptr[i + 1]
            found, values = index.score(queries.indices[lo:hi], queries.data[lo:hi])
            top = np.lexsort((found, -values))[:k]
            scores[i, :len(top)] = values[top]
            rows[i, :len(top)] = found[top]
        return scores, rows

    def search_cost(self, index: SparseIndex, queries) -> dict[str, float]:
        """Mean non-zero terms per query, per passage, and FLOPs per query (postings touched)."""
        queries = _as_csr(queries, index.vocab_size)
        m = max(1, queries.shape[0])
        flops = float(index.posting_lengths(queries.indices).sum()) if queries.nnz else 0.0
        return {"query_terms": queries.nnz / m, "doc_terms": float(index.params["doc_terms"]),
                "flops_per_query": flops / m}

    def index_bytes(self, folder: Path) -> int:
        return _bytes(Path(folder), (*POSTING_FILES, PARAMS))


def _bytes(folder: Path, names) -> int:
    return int(sum((folder / name).stat().st_size for name in names if (folder / name).is_file()))


def _as_csr(queries, vocab_size: int):
    import scipy.sparse as sp

    from retrdistill.errors import ConfigError

    matrix = queries if sp.issparse(queries) else sp.csr_matrix(queries)
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != vocab_size:
        raise ConfigError(f"sparse search: expected query vectors of width {vocab_size} (the index's vocabulary), "
                          f"got shape {matrix.shape}")
    matrix.sort_indices()
    return matrix
