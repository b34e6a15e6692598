"""Term-major (CSC) posting lists written chunk by chunk into memory-mapped ``.npy`` files.

Shared by the streamed BM25 build (:mod:`retrdistill.miners.bm25_build`) and the sparse index
(:mod:`retrdistill.encoding.sparse`): once the document frequency of every term is known, each chunk of
(term, passage, weight) triples is scattered into its place in ``data`` (weights) and ``indices`` (passage rows),
and ``indptr`` (term -> first posting) is saved beside them. Memory above the files: two arrays of vocabulary
size and one chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def write_term_major(out: Path, doc_freq: np.ndarray, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     *, names: tuple[str, str, str], on_chunk: Callable[[], None] | None = None) -> int:
    """Write the posting lists of ``chunks`` into ``out/names[0]`` (float32 weights), ``out/names[1]`` (int32
    passage rows) and ``out/names[2]`` (int64 ``indptr``, ``len(doc_freq) + 1``); returns the number of postings.

    ``doc_freq[t]``: how many postings term ``t`` has over all chunks. Each chunk is ``(terms, rows, weights)``,
    one entry per (passage, term); passages ascend through the chunks and within each, so every posting list
    comes out in ascending passage order. A chunk whose counts disagree with ``doc_freq`` is a RuntimeError.
    """
    data_name, indices_name, indptr_name = names
    n_terms = len(doc_freq)
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(doc_freq, out=indptr[1:])
    nnz = int(indptr[-1])
    data = np.lib.format.open_memmap(out / data_name, mode="w+", dtype=np.float32, shape=(nnz,))
    indices = np.lib.format.open_memmap(out / indices_name, mode="w+", dtype=np.int32, shape=(nnz,))
    cursor = indptr[:-1].copy()
    for terms, rows, weights in chunks:
        order = np.argsort(terms, kind="stable")  # by term; passages stay ascending within a term
        sorted_terms = terms[order]
        if len(sorted_terms) and (sorted_terms[0] < 0 or sorted_terms[-1] >= n_terms):
            raise RuntimeError(f"postings: term id outside the vocabulary of {n_terms}")
        first = np.flatnonzero(np.r_[True, sorted_terms[1:] != sorted_terms[:-1]]) if len(sorted_terms) else \
            np.zeros(0, dtype=np.int64)
        counts = np.diff(np.r_[first, len(sorted_terms)])
        rank = np.arange(len(sorted_terms)) - np.repeat(first, counts)
        positions = cursor[sorted_terms] + rank
        if len(positions) and np.any(positions >= indptr[1:][sorted_terms]):
            raise RuntimeError("postings: a chunk holds more postings of a term than its document frequency")
        data[positions] = weights[order]
        indices[positions] = rows[order]
        cursor[sorted_terms[first]] += counts
        if on_chunk is not None:
            on_chunk()
    if not np.array_equal(cursor, indptr[1:]):
        raise RuntimeError("postings: term counts changed between counting and writing")
    data.flush()
    indices.flush()
    del data, indices
    np.save(out / indptr_name, indptr)
    return nnz
