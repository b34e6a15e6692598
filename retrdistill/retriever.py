"""The Python API for RAG stacks: load a saved index and search it.

    from retrdistill import Retriever
    retriever = Retriever.load("indexes/msmarco-sample")
    hits = retriever.search("what is a synapse", k=5)   # [Hit(doc_id, score, text), ...]

Dense (FAISS) and sparse (inverted) index folders load the same way: the indexer named in ``index.json`` loads
its model (a ``SentenceTransformer`` or a ``SparseEncoder``), encodes the queries and searches its index; a
sharded index (the merge of an index step's shards) searches every shard and merges their top-k
(:mod:`retrdistill.indexers.sharded`).
``Retriever.load(folder, backend="onnx")`` encodes the queries on a CPU fast path of
:mod:`retrdistill.encoding.backends` (by default: the backend the index was built with).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrdistill.artefacts import read_manifest
from retrdistill.errors import ManifestError

log = logging.getLogger(__name__)


@dataclass
class Hit:
    doc_id: str
    score: float
    text: str


class Retriever:
    """A saved index folder, ready to search: its encoder, its index and the indexer that wrote it."""

    def __init__(self, folder: Path, index, doc_ids: list[str], model, info: dict, corpus=None, *,
                 indexer=None) -> None:
        from retrdistill.indexers.faiss_index import FlatIndexer

        self.folder = folder
        self.index = index
        self.doc_ids = doc_ids
        self.model = model
        self.info = info
        self._corpus = corpus
        self.indexer = indexer if indexer is not None else FlatIndexer()

    @classmethod
    def load(cls, folder: str | Path, *, device: str | None = None, backend: str | None = None) -> "Retriever":
        """The index in ``folder`` loaded through the registered indexer named in its ``index.json`` (with the
        options it was built with), and its encoder on ``device`` (None: the default device) and ``backend``
        (None: the one the index was built with, where it runs here; see :func:`query_backend`)."""
        from retrdistill import registry

        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest is None or manifest.kind != "index":
            raise ManifestError(f"{folder}: not a finished retrdistill index (no index manifest); run `retrdistill index`")
        info = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        indexer = registry.build("indexer", info["indexer"], info.get("options") or {})
        if info.get("shards"):  # the merged shards of a sharded index step, searched as one index
            from retrdistill.indexers.sharded import ShardedIndexer

            indexer = ShardedIndexer(indexer)
        index = indexer.load(folder)
        doc_ids = (folder / "docids.txt").read_text(encoding="utf-8").splitlines()
        model = indexer.load_model(resolve_reference(info["model"], folder), max_seq_length=info.get("max_seq_length"),
                                   device=device, backend=query_backend(info, device, backend))
        return cls(folder, index, doc_ids, model, info, indexer=indexer)

    @property
    def backend(self) -> str:
        """The backend the queries are encoded on."""
        from retrdistill.encoding.backends import backend_of

        return backend_of(self.model)

    @property
    def corpus(self):
        if self._corpus is None:
            from retrdistill.data.beir import load_corpus

            self._corpus = load_corpus(resolve_reference(self.info["corpus"], self.folder))
        return self._corpus

    def encode_queries(self, queries: list[str]):
        """The queries as the index searches them: dense embeddings (float32 ``(m, dim)``) or sparse vectors
        (a ``scipy.sparse.csr_matrix`` over the vocabulary)."""
        return self.indexer.encode_queries(self.model, queries, self.info)

    def search_rows(self, query_embeddings, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, corpus rows)`` of the top ``k`` for each encoded query; rows of -1 where fewer exist."""
        return self.indexer.search(self.index, query_embeddings, k)

    def batch_search_ids(self, queries: list[str], k: int = 10) -> tuple[np.ndarray, list[list[str]]]:
        scores, rows = self.search_rows(self.encode_queries(queries), k)
        return scores, [[self.doc_ids[r] for r in row if r >= 0] for row in rows]

    def batch_search(self, queries: list[str], k: int = 10, *, with_text: bool = True) -> list[list[Hit]]:
        scores, rows = self.search_rows(self.encode_queries(queries), k)
        wanted = sorted({int(r) for row in rows for r in row if r >= 0}) if with_text else []
        texts = dict(zip(wanted, self.corpus.texts_at(wanted))) if wanted else {}
        return [
            [Hit(self.doc_ids[r], float(s), texts.get(int(r), "")) for s, r in zip(srow, rrow) if r >= 0]
            for srow, rrow in zip(scores, rows)
        ]

    def search(self, query: str, k: int = 10, *, with_text: bool = True) -> list[Hit]:
        return self.batch_search([query], k, with_text=with_text)[0]

    def rerank_with(self, model, depth: int = 100, *, batch_size: int = 32, max_length: int | None = None):
        """This retriever with its top ``depth`` hits re-ranked by a cross-encoder (a reference such as a trained
        student's ``model/`` folder, or a loaded ``CrossEncoder``): a
        :class:`retrdistill.rerank.RerankingRetriever` with the same ``search`` / ``batch_search``."""
        from retrdistill.rerank import RerankingRetriever

        return RerankingRetriever(self, model, depth=depth, batch_size=batch_size, max_length=max_length)


def query_backend(info: dict, device: str | None, backend: str | None) -> str:
    """The backend to encode queries on: ``backend`` when given (checked), else the index's own (``index.json``)
    where it runs here (a CPU fast path on the CPU, its runtime installed), else torch, with a warning when the
    index's backend changes embeddings (its passages and the queries then differ by that backend's rounding)."""
    from retrdistill.encoding.backends import LOSSLESS, available_backends, check_backend

    if backend is not None:
        check_backend(backend, device)
        return backend
    built = str(info.get("backend") or "torch")
    on_cpu = device is None or str(device).startswith("cpu")
    if built == "torch" or (on_cpu and available_backends().get(built)):
        return built
    if built not in LOSSLESS:
        log.warning("index built with backend %r, which %s: queries are encoded with torch", built,
                    "is a CPU fast path" if not on_cpu else "is not installed here")
    return "torch"


def resolve_reference(ref: str, folder: Path) -> str:
    """A model or corpus reference stored in index.json (relative to the index folder, or offline:NAME)."""
    if ref.startswith("offline:"):
        return ref
    candidate = (folder / ref)
    return str(candidate.resolve()) if candidate.exists() else ref
