"""Corpus embeddings, computed once per (model, corpus, settings) and cached as a memory-mapped ``.npy``.

Encoding is checkpointed in shards: each shard of ``shard_size`` passages is written atomically as it
finishes, so a killed run resumes at the first missing shard. When every shard exists they are joined into
``embeddings.npy`` (written through a memory map, never all in RAM) and ``meta.json`` is written last.
Teachers, miners, indexers and eval all ask for embeddings here, so a model encodes a corpus at most once.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from retrdistill import progress
from retrdistill.artefacts import atomic_path, fingerprint_obj, write_json_atomic
from retrdistill.data.beir import Corpus
from retrdistill.encoding.engine import encode_texts
from retrdistill.encoding.prompts import prompted
from retrdistill.models import load_sentence_transformer, model_fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeSettings:
    batch_size: int = 64
    max_seq_length: int | None = None  # None: the model's own
    shard_size: int = 4096
    backend: str = "torch"  # retrdistill.encoding.backends; keys the cache only where it changes embeddings


@dataclass
class CorpusEmbeddings:
    folder: Path
    embeddings: np.ndarray  # memory-mapped float32 (n, dim), corpus row order
    normalized: bool
    model_ref: str


def should_normalize(model) -> bool:
    """Normalise when the model scores by cosine (then inner product search equals cosine search)."""
    return getattr(model, "similarity_fn_name", None) in (None, "cosine")


def embeddings_key(model_ref: str, corpus: Corpus, settings: EncodeSettings) -> str:
    from retrdistill.encoding.backends import output_key

    key = {
        "model": model_fingerprint(model_ref),
        "corpus": corpus.fingerprint,
        "max_seq_length": settings.max_seq_length,
        "kind": "passage-embeddings-v1",
    }
    backend = output_key(settings.backend)  # None for torch and the fp32 backends: they share torch's cache
    if backend is not None:
        key["backend"] = backend
    return fingerprint_obj(key)


def embedding_dim(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def load_encoder(model_ref: str, settings: EncodeSettings, *, device: str | None = None):
    """The SentenceTransformer for ``model_ref`` at the settings' max length, on the settings' backend."""
    if settings.backend != "torch":
        from retrdistill.encoding.backends import load_encoder as load_compiled

        return load_compiled(model_ref, settings.backend, device=device,
                             max_seq_length=settings.max_seq_length or None)
    model = load_sentence_transformer(model_ref, device=device)
    if settings.max_seq_length:
        model.max_seq_length = settings.max_seq_length
    return model


def shard_plan(shards: Path, n: int, shard_size: int, suffix: str) -> tuple[list[int], list[int], int]:
    """A resumable encoding of ``n`` passages in shards of ``shard_size``, one file ``START.suffix`` each in
    ``shards`` (created): every shard's start row, the starts still to encode, and the passages already done."""
    shards.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n, shard_size))
    todo = [s for s in starts if not (shards / f"{s:012d}{suffix}").is_file()]
    done = sum(min(shard_size, n - s) for s in starts if s not in todo)
    return starts, todo, done


def corpus_embeddings(
    model_ref: str,
    corpus: Corpus,
    cache_dir: str | Path,
    settings: EncodeSettings = EncodeSettings(),
    *,
    model=None,
) -> CorpusEmbeddings:
    """Embeddings of every passage under ``model_ref``; computed (resumably) on the first call, then cached.

    A ``model`` given already loaded encodes on its own backend, whatever ``settings.backend`` says."""
    if model is not None:
        from retrdistill.encoding.backends import backend_of

        settings = replace(settings, backend=backend_of(model))
    folder = Path(cache_dir) / "embeddings" / embeddings_key(model_ref, corpus, settings)[:24]
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return CorpusEmbeddings(folder, np.load(folder / "embeddings.npy", mmap_mode="r"), meta["normalized"], model_ref)
    model = model or load_encoder(model_ref, settings)
    normalized = should_normalize(model)
    shards = folder / f"shards-{settings.shard_size}"
    n = len(corpus)
    starts, todo, done = shard_plan(shards, n, settings.shard_size, ".npy")
    log.info("encoding %d passages with %s: %d of %d shards to do", n, model_ref, len(todo), len(starts))
    bar = progress.bar(n, f"encode {Path(model_ref).name}", "psg", initial=done)
    for start in todo:
        texts = prompted(model, corpus.texts(start, start + settings.shard_size), "document")
        emb = encode_texts(model, texts, batch_size=settings.batch_size, normalize=normalized, on_progress=bar.update)
        with atomic_path(shards / f"{start:012d}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
    bar.close()
    dim = embedding_dim(model)
    with atomic_path(folder / "embeddings.npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        for start in starts:
            part = np.load(shards / f"{start:012d}.npy", mmap_mode="r")
            out[start:start + len(part)] = part
        out.flush()
        del out
    write_json_atomic(meta_path, {
        "model": model_ref, "documents": n, "dim": dim, "normalized": normalized, "corpus": corpus.fingerprint,
        "settings": asdict(settings),
    })
    # only this run's shards: another process may be encoding the same corpus with another shard size
    shutil.rmtree(shards, ignore_errors=True)
    return CorpusEmbeddings(folder, np.load(folder / "embeddings.npy", mmap_mode="r"), normalized, model_ref)

