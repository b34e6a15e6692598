"""Build a bm25s index folder in two streamed passes, so memory stays bounded as the corpus grows.

bm25s's own ``BM25.index`` takes every passage's token ids at once and builds the score matrix from
corpus-sized Python lists and arrays (about 1.4 GB above the index itself at 1M passages, measured in
benchmarks/results/memory.json). This builder writes the same files, byte for byte (tested against bm25s), with
bm25s's own tokenizer and scoring functions, holding one chunk of passages at a time:

1. tokenise ``chunk`` passages at a time (the tokenizer's vocabulary grows as it goes); per chunk, write each
   passage's distinct term ids and term frequencies to disk; count document frequencies and total length;
2. compute the idf of every term (bm25s's formula for the method), then for each chunk compute the BM25 weight
   of every (passage, term) and scatter it into the term-major (CSC) arrays ``data`` / ``indices``, which are
   memory-mapped ``.npy`` files in the output folder: they *are* the index (the scatter is
   :func:`retrdistill.encoding.postings.write_term_major`, shared with the sparse index).

Memory above the index: the vocabulary (grows with distinct terms, not passages), a few arrays of vocabulary
size, and one chunk. Temporary chunk files (12 bytes per (passage, term) pair) are deleted at the end.
Methods whose scores need a non-occurrence array (``bm25l``, ``bm25+``) are built by bm25s itself.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from retrdistill import progress
from retrdistill.encoding.postings import write_term_major

log = logging.getLogger(__name__)
STREAMED_METHODS = ("robertson", "lucene", "atire")
DATA, INDICES, INDPTR = "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"


def build_bm25_streamed(corpus, tokenizer, out: Path, *, k1: float, b: float, method: str, delta: float = 0.5,
                        chunk: int = 20_000) -> int:
    """Write a bm25s index of ``corpus`` (a :class:`retrdistill.data.beir.Corpus`) into the folder ``out``.

    ``tokenizer`` is a ``bm25s.tokenization.Tokenizer``; its vocabulary is filled and is the index's vocabulary
    (save it beside the index as usual). Returns the number of (passage, term) pairs.
    """
    import bm25s
    from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

    if method not in STREAMED_METHODS:
        raise ValueError(f"streamed BM25 build supports {', '.join(STREAMED_METHODS)}, not {method!r}")
    work = out / ".chunks"
    work.mkdir(parents=True, exist_ok=True)
    n_docs = len(corpus)
    doc_freq = np.zeros(0, dtype=np.int64)
    total_length = 0
    chunks: list[tuple[int, int]] = []  # (first row, rows)
    bar = progress.bar(n_docs, "BM25 tokenise", "psg")
    for start, _, texts in corpus.iter_batches(chunk):
        ids = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
        lengths = np.fromiter((len(d) for d in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for d in ids for t in d), dtype=np.int64, count=int(lengths.sum()))
        vocab_now = max(len(tokenizer.get_vocab_dict()), int(flat.max(initial=-1)) + 1)
        local_doc = np.repeat(np.arange(len(ids), dtype=np.int64), lengths)
        keys, tf = np.unique(local_doc * vocab_now + flat, return_counts=True)  # sorted by (passage, term)
        terms = (keys % vocab_now).astype(np.int32)
        docs = (keys // vocab_now + start).astype(np.int32)
        if len(doc_freq) < vocab_now:
            doc_freq = np.concatenate([doc_freq, np.zeros(vocab_now - len(doc_freq), dtype=np.int64)])
        doc_freq += np.bincount(terms, minlength=len(doc_freq))
        total_length += int(lengths.sum())
        for name, array in (("terms", terms), ("docs", docs), ("tf", tf.astype(np.float32)), ("len", lengths)):
            np.save(work / f"{start:012d}.{name}.npy", array)
        chunks.append((start, len(ids)))
        bar.update(len(ids))
    bar.close()

    vocab = tokenizer.get_vocab_dict()
    n_vocab = len(vocab)
    if len(doc_freq) < n_vocab:
        doc_freq = np.concatenate([doc_freq, np.zeros(n_vocab - len(doc_freq), dtype=np.int64)])
    # bm25s: avg_doc_len = np.array(lengths).mean(); a sum of integers is exact in float64, so this is equal
    avg_doc_len = np.float64(total_length) / n_docs if n_docs else np.float64(0)
    idf_fn = _select_idf_scorer(method)
    idf = np.zeros(n_vocab, dtype=np.float32)
    for term in np.flatnonzero(doc_freq[:n_vocab]).tolist():
        idf[term] = idf_fn(int(doc_freq[term]), N=n_docs)
    tfc_fn = _select_tfc_scorer(method)
    bar = progress.bar(n_docs, "BM25 weights", "psg")

    def weighted_chunks():
        for start, rows in chunks:
            terms = np.load(work / f"{start:012d}.terms.npy")
            docs = np.load(work / f"{start:012d}.docs.npy")
            tf = np.load(work / f"{start:012d}.tf.npy")
            lengths = np.load(work / f"{start:012d}.len.npy")
            # the same expressions as bm25s's per-passage loop, evaluated for the whole chunk
            tfc = tfc_fn(tf_array=tf, l_d=lengths[docs - start], l_avg=avg_doc_len, k1=k1, b=b, delta=delta)
            yield terms, docs, (idf[terms] * tfc).astype(np.float32)
            bar.update(rows)

    nnz = write_term_major(out, doc_freq[:n_vocab], weighted_chunks(), names=(DATA, INDICES, INDPTR))
    bar.close()
    from bm25s.utils import json_functions  # bm25s's own writer (orjson when installed), for identical files

    with open(out / "vocab.index.json", "wt", encoding="utf-8") as fh:
        fh.write(json_functions.dumps(vocab, ensure_ascii=False))
    params = {"k1": k1, "b": b, "delta": delta, "method": method, "idf_method": method, "dtype": "float32",
              "int_dtype": "int32", "num_docs": n_docs, "version": bm25s.__version__, "backend": "numpy"}
    with open(out / "params.index.json", "w") as fh:
        json.dump(params, fh, indent=4)
    shutil.rmtree(work)
    log.info("BM25: %d passages, %d terms, %d postings", n_docs, n_vocab, nnz)
    return nnz
