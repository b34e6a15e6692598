"""FAISS indexes over corpus embeddings: flat (exact), IVF and HNSW; moved to the GPU when a GPU build of faiss
and a GPU are present (flat search gives the same results on either).

The corpus is encoded through the shared, resumable embedding cache (:func:`retrdistill.encoding.corpus.
corpus_embeddings`), so a model encodes a corpus once for mining, scoring, indexing and evaluation. Embeddings
are added in chunks from a memory map, so building never copies the whole matrix into Python lists. Inner
product is the metric: embeddings of cosine models are normalised before they get here.

Search results are in a canonical order: best score first, equal scores by corpus row (faiss itself returns a
tie group in heap order and, at the k-th place, keeps an arbitrary part of it); so the top-k of an exact index is
one well-defined list, which a sharded index (:mod:`retrdistill.indexers.sharded`) reproduces exactly.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.parts import BuiltIndex, Indexer

log = logging.getLogger(__name__)
_ADD_CHUNK = 65_536
_SEARCH_BATCH = 1024
_GPU_MAX_K = 2048  # the most results faiss's GPU indexes return per query


def gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a broken faiss GPU runtime means: use the CPU
        return False


class FaissIndexer(Indexer):
    """Common build / save / load / search for the FAISS index families; the index is ``index.faiss``.

    ``use_gpu`` decides only where a loaded index is searched (the saved file is the same), so it is output-neutral.
    ``shard_size``: passages encoded per call and checkpointed at once (the embedding cache's encoding shard); a
    sharded index step (``shard: I/N``) splits the corpus in whole blocks of it, so every passage is encoded in the
    same call, hence to the same bits, as in the unsharded run.
    """

    @dataclass
    class Options:
        use_gpu: str = "auto"  # auto | always | never
        shard_size: int = field(default=4096, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.use_gpu not in ("auto", "always", "never"):
                raise ValueError("use_gpu must be one of: auto, always, never")
            if self.shard_size < 1:
                raise ValueError(f"shard_size must be a positive number of passages, got {self.shard_size}")

    output_neutral: ClassVar[tuple[str, ...]] = ("use_gpu", "shard_size")
    example_variants: ClassVar[dict[str, str]] = {"use_gpu": "never"}

    @abstractmethod
    def make(self, dim: int, n: int):
        """An empty faiss index for ``n`` vectors of width ``dim``."""

    # ---------------------------------------------------------------- encoding (dense SentenceTransformer)
    def load_model(self, model_ref: str, *, max_seq_length: int | None = None, device: str | None = None,
                   backend: str = "torch"):
        from retrdistill.encoding.corpus import EncodeSettings, load_encoder

        return load_encoder(model_ref, EncodeSettings(max_seq_length=max_seq_length, backend=backend), device=device)

    def index_corpus(self, model, corpus, folder: Path, *, model_ref: str, cache_dir: Path, batch_size: int = 64,
                     max_seq_length: int | None = None) -> BuiltIndex:
        """The corpus's cached embeddings (encoded on the first call, resumably) indexed and saved."""
        store = self._embeddings(model, corpus, model_ref, cache_dir, batch_size, max_seq_length)
        index = self.build(store.embeddings)
        self.save(index, folder)
        return BuiltIndex(index, {"normalized": store.normalized, "dim": int(store.embeddings.shape[1])})

    def exact_index(self, model, corpus, *, model_ref: str, cache_dir: Path,
                    max_seq_length: int | None = None) -> BuiltIndex:
        """A flat (exact) index of ``corpus``'s cached embeddings, on the device :meth:`to_device` picks."""
        store = self._embeddings(model, corpus, model_ref, cache_dir, 64, max_seq_length)
        flat = FlatIndexer(FaissIndexer.Options(use_gpu=self.options.use_gpu, shard_size=self.options.shard_size))
        return BuiltIndex(flat.to_device(flat.build(store.embeddings)),
                          {"normalized": store.normalized, "dim": int(store.embeddings.shape[1]),
                           "index_bytes": int(store.embeddings.nbytes)})

    def _embeddings(self, model, corpus, model_ref: str, cache_dir: Path, batch_size: int,
                    max_seq_length: int | None):
        """The corpus's embeddings by ``model``, on its backend (the cache keys on it where it changes output)."""
        from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings

        settings = EncodeSettings(batch_size=batch_size, max_seq_length=max_seq_length,
                                  shard_size=self.options.shard_size)
        return corpus_embeddings(model_ref, corpus, cache_dir, settings, model=model)

    def encoding_block(self) -> int:
        """Passages encoded in one call: a sharded index step cuts the corpus in whole blocks of this many."""
        return self.options.shard_size

    def encode_queries(self, model, texts: list[str], info: dict[str, Any]) -> np.ndarray:
        from retrdistill.encoding.engine import encode_texts
        from retrdistill.encoding.prompts import prompted

        return encode_texts(model, prompted(model, texts, "query"), batch_size=1 if len(texts) <= 1 else 32,
                            normalize=info["normalized"])

    def encode_passages(self, model, texts: list[str], info: dict[str, Any]) -> np.ndarray:
        from retrdistill.encoding.engine import encode_texts
        from retrdistill.encoding.prompts import prompted

        return encode_texts(model, prompted(model, texts, "document"), normalize=info["normalized"])

    # ---------------------------------------------------------------- the index

    def build(self, embeddings: np.ndarray):
        n, dim = embeddings.shape
        index = self.make(dim, n)
        if not index.is_trained:
            sample = self._training_sample(embeddings)
            log.info("training %s on %d vectors", type(index).__name__, len(sample))
            index.train(sample)
        for start in range(0, n, _ADD_CHUNK):
            index.add(np.ascontiguousarray(embeddings[start:start + _ADD_CHUNK], dtype=np.float32))
        self.configure_search(index)
        return index

    def _training_sample(self, embeddings: np.ndarray) -> np.ndarray:
        n = len(embeddings)
        size = min(n, getattr(self.options, "train_size", n))
        rows = np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))
        return np.ascontiguousarray(embeddings[rows], dtype=np.float32)

    def configure_search(self, index) -> None:
        """Set the index's search-time parameters from the options (none for a flat index)."""

    def save(self, index, folder: Path) -> None:
        """Write ``index`` (on the CPU or a GPU) to ``folder/index.faiss``, atomically."""
        save_index(index, Path(folder) / self.index_file)

    def load(self, folder: Path):
        """The index saved in ``folder``, memory-mapped where faiss can, on the GPU where :meth:`to_device` puts it."""
        index = _read_index(Path(folder) / self.index_file)
        self.configure_search(index)
        return self.to_device(index)

    def search(self, index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, rows)`` for each query row (float32 ``(m, dim)``), ``_SEARCH_BATCH`` rows at a
        time, best first and equal scores by row; rows of -1 where fewer than ``k`` exist."""
        k = min(k, index.ntotal)
        scores = np.empty((len(queries), k), dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), _SEARCH_BATCH):
            block = np.ascontiguousarray(queries[start:start + _SEARCH_BATCH], dtype=np.float32)
            s, i = _top_k_by_row(index, block, k)
            scores[start:start + len(s)] = s
            rows[start:start + len(i)] = i
        return scores, rows

    def to_device(self, index):
        """The index on the GPU when asked or available, else unchanged."""
        want = self.options.use_gpu
        if want == "never" or (want == "auto" and not gpu_available()):
            return index
        import faiss

        if not gpu_available():
            from retrdistill.errors import ConfigError

            raise ConfigError("use_gpu: always, but faiss has no GPU support or no GPU is visible (install retrdistill[gpu])")
        res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(res, 0, index)


class FlatIndexer(FaissIndexer):
    """Exact inner-product search (IndexFlatIP)."""

    def make(self, dim: int, n: int):
        import faiss

        return faiss.IndexFlatIP(dim)


class IVFIndexer(FaissIndexer):
    """Inverted lists over k-means cells (IndexIVFFlat, inner product); ``nlist`` 0 means 4·sqrt(n)."""

    @dataclass
    class Options(FaissIndexer.Options):
        nlist: int = field(default=0, metadata={"min": 0})
        nprobe: int = field(default=16, metadata={"min": 1})
        train_size: int = field(default=200_000, metadata={"min": 1})

    def make(self, dim: int, n: int):
        import faiss

        nlist = self.options.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        return index

    def configure_search(self, index) -> None:
        index.nprobe = self.options.nprobe


class HNSWIndexer(FaissIndexer):
    """Hierarchical navigable small-world graph (IndexHNSWFlat, inner product). CPU only in faiss."""

    @dataclass
    class Options(FaissIndexer.Options):
        m: int = field(default=32, metadata={"min": 2})
        ef_construction: int = field(default=200, metadata={"min": 1})
        ef_search: int = field(default=128, metadata={"min": 1})

    def make(self, dim: int, n: int):
        import faiss

        index = faiss.IndexHNSWFlat(dim, self.options.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.options.ef_construction
        return index

    def configure_search(self, index) -> None:
        index.hnsw.efSearch = self.options.ef_search

    def to_device(self, index):
        return index


def _on_gpu(index) -> bool:
    """Whether ``index`` is one of faiss's GPU indexes (``GpuIndexFlatIP``, ...: what ``index_cpu_to_gpu`` makes)."""
    return "Gpu" in type(index).__name__


def _top_k_by_row(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's top ``k``, with ties broken by row: asked for more than ``k`` while the score at the k-th place
    continues to the end of the list faiss returned (so the whole tie group is in hand), then sorted by
    (found first, score descending, row ascending). The same queries in every call, so faiss computes every
    score along the same path (its BLAS path depends on the number of queries), whatever the k."""
    if k == 0:
        return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
    most = min(index.ntotal, _GPU_MAX_K) if _on_gpu(index) else index.ntotal
    wanted = min(k + 1, most)
    while True:
        scores, rows = index.search(queries, wanted)
        if wanted >= most:
            break
        open_end = (scores[:, -1] == scores[:, k - 1]) & (rows[:, -1] >= 0)
        if not open_end.any():
            break
        wanted = min(2 * wanted, most)
    order = np.lexsort((rows, -scores, rows < 0), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(rows, order, axis=-1)


def save_index(index, path: str | Path) -> None:
    """``index`` written to the file ``path`` (a GPU index is copied to the CPU first), atomically.

    Kept for callers outside the indexers; prefer :meth:`FaissIndexer.save`."""
    import faiss

    from retrdistill.artefacts import atomic_path

    if hasattr(faiss, "index_gpu_to_cpu") and _on_gpu(index):
        index = faiss.index_gpu_to_cpu(index)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def _read_index(path: Path):
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:  # index types faiss cannot memory-map
        return faiss.read_index(str(path))
