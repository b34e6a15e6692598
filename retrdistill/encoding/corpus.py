"""Corpus embeddings, computed once per (model, corpus, settings) and cached as a memory-mapped ``.npy``.

Encoding is checkpointed in shards: each shard of ``shard_size`` passages is written atomically as it
finishes, so a killed run resumes at the first missing shard. When every shard exists they are joined into
``embeddings.npy`` (written through a memory map, never all in RAM) and ``meta.json`` is written last.
Teachers, miners, indexers and eval all ask for embeddings here, so a model encodes a corpus at most once.

Several processes may encode the same corpus into one cache at once (two pipelines sharing a cache folder):
each holds a :class:`WriterClaim` on the folder while it works, shard files are written under per-writer
temporary names and renamed into place, a writer skips the shards another one has finished meanwhile and
stops, reusing the result, once another has written ``meta.json``. The shards are removed only by the last
writer out, so none removes what another is still reading.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from retrdistill import progress
from retrdistill.artefacts import atomic_path, fingerprint_obj, host_tag, remove_stale_temps, write_json_atomic
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


def temp_prefix(name: str) -> str:
    """The start of a per-writer temporary name for ``name``, as :mod:`retrdistill.artefacts` names them
    (``.NAME.@HOST.PID-`` then a random token and ``.tmp``), so :func:`remove_stale_temps` knows its owner."""
    return f".{name}.@{host_tag()}.{os.getpid()}-"


class WriterClaim:
    """This process's claim on a cache folder it is building: an empty file ``.writer.@HOST.PID-TOKEN.tmp``
    in it, removed by :meth:`release`. A claim whose process died on this host is abandoned (and removed when
    claims are counted); one of a live process here, or of any process on another host (which cannot be seen
    from here), is another writer that may still be reading the folder's shared work files.

    ``leftovers``: glob patterns of the work files (shards) that only the last writer out removes, once the
    folder is finished."""

    NAME = "writer"

    def __init__(self, folder: Path, leftovers: tuple[str, ...] = ("shards-*",)) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(self.NAME), suffix=".tmp", dir=folder)
        os.close(fd)
        self.folder, self.path, self.leftovers = folder, Path(name), leftovers

    def others(self) -> list[Path]:
        """The claims of other writers that may still be at work here."""
        remove_stale_temps(self.folder / self.NAME)
        return [p for p in self.folder.glob(f".{self.NAME}.@*.tmp") if p != self.path]

    def release(self, finished: bool) -> None:
        """Give up the claim; when the folder is ``finished`` and no other writer holds one, remove the work
        files. (A writer that claims after this check finds the folder finished and never reads them.)"""
        self.path.unlink(missing_ok=True)
        if not finished:
            return
        others = self.others()
        if others:
            log.debug("%s: %d other writer(s) still at work; their shards are left to them", self.folder,
                      len(others))
            return
        for pattern in self.leftovers:
            for old in self.folder.glob(pattern):
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)


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
        return _finished(folder, model_ref)
    model = model or load_encoder(model_ref, settings)
    normalized = should_normalize(model)
    shards = folder / f"shards-{settings.shard_size}"
    n = len(corpus)
    claim = WriterClaim(folder)
    finished = False
    try:
        if not meta_path.is_file():  # else another writer finished while this one loaded its model
            _encode_shards(model, model_ref, corpus, shards, settings, normalized, meta_path)
        if not meta_path.is_file():
            dim = embedding_dim(model)
            with atomic_path(folder / "embeddings.npy") as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
                for start in range(0, n, settings.shard_size):
                    part = np.load(shards / f"{start:012d}.npy", mmap_mode="r")
                    out[start:start + len(part)] = part
                out.flush()
                del out
            write_json_atomic(meta_path, {
                "model": model_ref, "documents": n, "dim": dim, "normalized": normalized,
                "corpus": corpus.fingerprint, "settings": asdict(settings),
            })
        finished = True
    finally:
        claim.release(finished)
    return _finished(folder, model_ref)


def _finished(folder: Path, model_ref: str) -> CorpusEmbeddings:
    meta = json.loads((folder / "meta.json").read_text())
    return CorpusEmbeddings(folder, np.load(folder / "embeddings.npy", mmap_mode="r"), meta["normalized"], model_ref)


def _encode_shards(model, model_ref: str, corpus: Corpus, shards: Path, settings: EncodeSettings, normalized: bool,
                   meta_path: Path) -> None:
    """Encode the shards not yet written, each written atomically; skips those another writer finishes
    meanwhile, and stops once another writer has finished the whole folder (``meta_path`` exists)."""
    n = len(corpus)
    starts, todo, done = shard_plan(shards, n, settings.shard_size, ".npy")
    log.info("encoding %d passages with %s: %d of %d shards to do", n, model_ref, len(todo), len(starts))
    bar = progress.bar(n, f"encode {Path(model_ref).name}", "psg", initial=done)
    for start in todo:
        if meta_path.is_file():
            log.info("encoding %s: another writer finished it; using its embeddings", model_ref)
            break
        path = shards / f"{start:012d}.npy"
        if path.is_file():
            bar.update(min(settings.shard_size, n - start))
            continue
        texts = prompted(model, corpus.texts(start, start + settings.shard_size), "document")
        emb = encode_texts(model, texts, batch_size=settings.batch_size, normalize=normalized, on_progress=bar.update)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
    bar.close()
