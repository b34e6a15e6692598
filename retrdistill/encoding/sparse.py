"""Sparse (SPLADE-style) encoding: loading a ``SparseEncoder``, and the corpus's document vectors as a cached,
resumable inverted index (which models are sparse: :mod:`retrdistill.families.sparse.family`).

A corpus is encoded once per (model, corpus, settings) into ``cache_dir/sparse/<key>/``, as
:func:`retrdistill.encoding.corpus.corpus_embeddings` does for dense models:

1. shards of ``shard_size`` passages are encoded with the model's own ``encode_document`` (its prompts and
   routers apply) and each written atomically as a row-major ``.npz`` (per-passage term ids and weights), so a
   killed build resumes at the first missing shard and memory holds one shard at a time;
2. when every shard exists, the term-major posting lists (term -> passage rows and weights, the CSC layout of
   the BM25 index) are scattered into memory-mapped ``.npy`` files by
   :func:`retrdistill.encoding.postings.write_term_major` in a per-writer temporary folder, then renamed into
   place; ``meta.json`` is written last and the shards removed.

Concurrent writers of one folder are safe as they are for dense embeddings (a
:class:`~retrdistill.encoding.corpus.WriterClaim` each; shards shared, finished ones skipped; the first to
finish wins and the others reuse its postings; only the last writer out removes the shards).

The postings folder is what the ``sparse`` indexer saves in an index folder (hard-linked when it can) and what
evaluation searches when it indexes a corpus itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrdistill import progress
from retrdistill.artefacts import atomic_path, fingerprint_obj, remove_stale_temps, write_json_atomic
from retrdistill.encoding.corpus import WriterClaim, shard_plan, temp_prefix
from retrdistill.errors import ConfigError
from retrdistill.models import model_fingerprint, resolve_model

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ loading and encoding
def load_sparse_encoder(ref: str, *, max_seq_length: int | None = None, device: str | None = None):
    """A ``SparseEncoder`` from a saved sparse model or a masked-LM checkpoint (which sentence-transformers
    turns into ``Transformer(fill-mask) + SpladePooling("max")``)."""
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(resolve_model(ref), device=device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


LOGITS_BUDGET_BYTES = 512 << 20  # most float32 (rows x tokens x vocabulary) term logits one forward pass may hold


def encode_sparse(model, texts: list[str], *, role: str, batch_size: int = 32, max_active_dims: int | None = None,
                  on_progress=None, logits_budget_bytes: int = LOGITS_BUDGET_BYTES):
    """``texts`` as a ``scipy.sparse.csr_matrix`` (float32, one row per text, sorted term ids), through the
    model's own ``encode_query`` (``role`` "query") or ``encode_document`` (``role`` "document"); ``on_progress(n)``
    after each batch.

    A masked-LM term-weight model holds a (rows x tokens x vocabulary) float32 logits tensor per forward pass
    (64 passages x 512 tokens x 30,522 terms is 4 GB), so batches are at most ``batch_size`` texts AND at most
    ``logits_budget_bytes`` of logits: texts are taken in order of token length (similar lengths pad little)
    and the rows come back in the input order."""
    import scipy.sparse as sp

    if role not in ("query", "document"):
        raise ValueError(f"role must be 'query' or 'document', got {role!r}")
    encode = model.encode_query if role == "query" else model.encode_document
    dim = sparse_dim(model)
    if not texts:
        return sp.csr_matrix((0, dim), dtype=np.float32)
    lengths = _token_lengths(model, texts)
    order = np.argsort(lengths, kind="stable")
    parts, rows = [], []
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < batch_size and \
                (end + 1 - start) * int(lengths[order[end]]) * dim * 4 <= logits_budget_bytes:
            end += 1
        picked = order[start:end]
        batch = [texts[i] for i in picked]
        out = encode(batch, batch_size=len(batch), convert_to_tensor=True, convert_to_sparse_tensor=True,
                     save_to_cpu=True, show_progress_bar=False, max_active_dims=max_active_dims)
        if out.shape[-1] != dim:
            raise RuntimeError(f"sparse encoding: the model returned vectors of width {out.shape[-1]}, not {dim}")
        parts.append(_to_csr(out, len(batch), dim))
        rows.append(picked)
        if on_progress is not None:
            on_progress(len(batch))
        start = end
    matrix = sp.vstack(parts, format="csr", dtype=np.float32)
    inverse = np.empty(len(texts), dtype=np.int64)
    inverse[np.concatenate(rows)] = np.arange(len(texts))
    return matrix[inverse]


def _token_lengths(model, texts: list[str]) -> np.ndarray:
    """Each text's token count as the model will see it (truncated to its max length)."""
    tokenizer = getattr(model, "tokenizer", None)
    limit = int(getattr(model, "max_seq_length", None) or 512)
    if tokenizer is None:
        return np.array([min(limit, len(t.split()) * 2 + 2) for t in texts], dtype=np.int64)
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64)


def sparse_dim(model) -> int:
    """The width of the model's sparse vectors (the vocabulary, for SPLADE), read from one encoded probe text:
    ``get_embedding_dimension`` reports the transformer's hidden size for some module chains."""
    dim = getattr(model, "_retrdistill_sparse_dim", None)
    if dim is None:
        probe = model.encode_document(["a"], convert_to_tensor=True, convert_to_sparse_tensor=True, save_to_cpu=True,
                                      show_progress_bar=False)
        dim = int(probe.shape[-1])
        model._retrdistill_sparse_dim = dim
    return dim


def _to_csr(tensor, rows: int, dim: int):
    import scipy.sparse as sp

    coo = tensor.coalesce() if tensor.is_sparse else tensor.to_sparse().coalesce()
    idx = coo.indices().numpy()
    values = coo.values().float().numpy()
    keep = values != 0
    matrix = sp.csr_matrix((values[keep], (idx[0][keep], idx[1][keep])), shape=(rows, dim), dtype=np.float32)
    matrix.sort_indices()
    return matrix


# ------------------------------------------------------------------ the corpus's postings, cached
@dataclass(frozen=True)
class SparseSettings:
    batch_size: int = 32  # texts per encode call (output-neutral)
    max_seq_length: int | None = None  # None: the model's own
    shard_size: int = 2048  # passages encoded and held at once; each shard is checkpointed
    max_active_dims: int | None = None  # keep only the top terms of each document vector


@dataclass
class SparsePostings:
    folder: Path  # holds the POSTING_FILES and meta.json
    meta: dict[str, Any]


POSTING_FILES = ("postings.data.npy", "postings.indices.npy", "postings.indptr.npy")


def postings_key(model_ref: str, corpus, settings: SparseSettings) -> str:
    return fingerprint_obj({"model": model_fingerprint(model_ref), "corpus": corpus.fingerprint,
                            "max_seq_length": settings.max_seq_length, "max_active_dims": settings.max_active_dims,
                            "kind": "sparse-document-postings-v1"})


def corpus_postings(model_ref: str, corpus, cache_dir: str | Path, settings: SparseSettings = SparseSettings(), *,
                    model=None) -> SparsePostings:
    """The term-major postings of every passage under ``model_ref``; built (resumably) on the first call."""
    folder = Path(cache_dir) / "sparse" / postings_key(model_ref, corpus, settings)[:24]
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        return SparsePostings(folder, json.loads(meta_path.read_text()))
    if settings.shard_size < 1 or settings.batch_size < 1:
        raise ConfigError(f"sparse encoding: shard_size and batch_size must be positive, got {settings}")
    model = model or load_sparse_encoder(model_ref, max_seq_length=settings.max_seq_length)
    vocab = sparse_dim(model)
    claim = WriterClaim(folder, leftovers=("shards-*", ".postings.tmp"))  # the latter: older versions' scatter
    finished = False
    try:
        if not meta_path.is_file():  # else another writer finished while this one loaded its model
            _build_postings(model, model_ref, corpus, folder, settings, vocab)
        finished = True
    finally:
        claim.release(finished)
    meta = json.loads(meta_path.read_text())
    return SparsePostings(folder, meta)


def _build_postings(model, model_ref: str, corpus, folder: Path, settings: SparseSettings, vocab: int) -> None:
    """Encode the missing shards, then scatter them into postings in this writer's own temporary folder and
    rename the files into place and write ``meta.json``, unless another writer finished first (then its
    postings stand and this one's work is dropped)."""
    from retrdistill.encoding.postings import write_term_major

    meta_path = folder / "meta.json"
    shards = folder / f"shards-{settings.shard_size}"
    n = len(corpus)
    starts, todo, done = shard_plan(shards, n, settings.shard_size, ".npz")
    log.info("sparse-encoding %d passages with %s: %d of %d shards to do", n, model_ref, len(todo), len(starts))
    bar = progress.bar(n, f"sparse-encode {Path(model_ref).name}", "psg", initial=done)
    for start in todo:
        if meta_path.is_file():
            break
        path = shards / f"{start:012d}.npz"
        if path.is_file():  # finished by another writer meanwhile
            bar.update(min(settings.shard_size, n - start))
            continue
        texts = corpus.texts(start, start + settings.shard_size)
        matrix = encode_sparse(model, texts, role="document", batch_size=settings.batch_size,
                               max_active_dims=settings.max_active_dims, on_progress=bar.update)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, indptr=matrix.indptr.astype(np.int64), terms=matrix.indices.astype(np.int32),
                     weights=matrix.data.astype(np.float32))
    bar.close()
    if meta_path.is_file():
        log.info("sparse-encoding %s: another writer finished it; using its postings", model_ref)
        return

    def shard_rows(start: int):
        with np.load(shards / f"{start:012d}.npz") as z:
            indptr, terms, weights = z["indptr"], z["terms"], z["weights"]
        docs = np.repeat(np.arange(start, start + len(indptr) - 1, dtype=np.int32), np.diff(indptr))
        return terms, docs, weights

    doc_freq = np.zeros(vocab, dtype=np.int64)
    for start in starts:
        doc_freq += np.bincount(shard_rows(start)[0], minlength=vocab)[:vocab]
    remove_stale_temps(folder / "postings")  # a killed writer's scatter
    build = Path(tempfile.mkdtemp(prefix=temp_prefix("postings"), suffix=".tmp", dir=folder))
    try:
        bar = progress.bar(len(starts), "sparse postings", "shard")
        nnz = write_term_major(build, doc_freq, (shard_rows(s) for s in starts), names=POSTING_FILES,
                               on_chunk=lambda: bar.update())
        bar.close()
        if meta_path.is_file():
            log.info("sparse-encoding %s: another writer finished it first; using its postings", model_ref)
            return
        for name in POSTING_FILES:
            os.replace(build / name, folder / name)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    meta = {"model": model_ref, "documents": n, "vocab_size": vocab, "postings": nnz,
            "doc_terms": nnz / n if n else 0.0, "corpus": corpus.fingerprint, "settings": asdict(settings),
            "format": "retrdistill-sparse-postings-v1"}
    write_json_atomic(meta_path, meta)
    log.info("sparse postings: %d passages, %d postings (%.1f terms a passage)", n, nnz, meta["doc_terms"])
