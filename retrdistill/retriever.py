"""The Python API for RAG stacks: load a saved index and search it.

    from retrdistill import Retriever
    retriever = Retriever.load("indexes/msmarco-sample")
    hits = retriever.search("what is a synapse", k=5)   # [Hit(doc_id, score, text, title), ...]

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
from pathlib import Path

import numpy as np

from retrdistill.artefacts import read_manifest
from retrdistill.errors import ManifestError
from retrdistill.hits import Hit, passage_fields
from retrdistill.indexers.references import resolve_reference

__all__ = ["Hit", "Retriever", "passage_fields", "resolve_reference"]

log = logging.getLogger(__name__)


class Retriever:
    """A saved index folder, ready to search: its encoder, its index and the indexer that wrote it.

    Load one with :meth:`Retriever.load` (the folder of an index step, or of ``retrdistill index --out``), then
    :meth:`search` one query or :meth:`batch_search` many; each returns :class:`Hit` lists, best first::

        retriever = Retriever.load("runs/msmarco-sample/index")
        for hit in retriever.search("what is a synapse", k=5):
            print(hit.doc_id, round(hit.score, 3), hit.text[:80])
    """

    def __init__(self, folder: Path, index, doc_ids: list[str], model, info: dict, corpus=None, *,
                 indexer=None) -> None:
        from retrdistill.families.dense.faiss_index import FlatIndexer

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
            raise ManifestError(not_an_index(folder, manifest))
        info = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        check_index_model(folder, info, manifest)
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
        """Search several queries at once (encoded in batches: faster than one :meth:`search` each).

        Args:
            queries: the query texts.
            k: how many hits to return per query (fewer when the corpus is smaller).
            with_text: read each hit's ``title`` and ``text`` from the corpus (False: ids and scores only,
                ``text`` and ``title`` left "").

        Returns:
            One list of :class:`Hit` per query, in the order of ``queries``, each best first.

        Example::

            retriever = Retriever.load("runs/msmarco-sample/index")
            first, second = retriever.batch_search(["what is a synapse", "define axon"], k=10)
            print([hit.doc_id for hit in first[:3]])
        """
        scores, rows = self.search_rows(self.encode_queries(queries), k)
        wanted = sorted({int(r) for row in rows for r in row if r >= 0}) if with_text else []
        fields = dict(zip(wanted, passage_fields(self.corpus, wanted))) if wanted else {}

        def hit(score: float, row: int) -> Hit:
            title, text = fields.get(int(row), ("", ""))
            return Hit(self.doc_ids[row], float(score), text, title)

        return [[hit(s, r) for s, r in zip(srow, rrow) if r >= 0] for srow, rrow in zip(scores, rows)]

    def search(self, query: str, k: int = 10, *, with_text: bool = True) -> list[Hit]:
        """Search one query: its top ``k`` passages as :class:`Hit` objects, best first.

        Args:
            query: the query text.
            k: how many hits to return (fewer when the corpus is smaller).
            with_text: read each hit's ``title`` and ``text`` from the corpus (False: ids and scores only).

        Returns:
            A list of :class:`Hit` (``doc_id``, ``score``, ``text``, ``title``), the highest score first.

        Example::

            retriever = Retriever.load("runs/msmarco-sample/index")
            for hit in retriever.search("what is a synapse", k=5):
                print(hit.doc_id, round(hit.score, 3), hit.text[:80])
        """
        return self.batch_search([query], k, with_text=with_text)[0]

    def rerank_with(self, model, depth: int = 100, *, batch_size: int = 32, max_length: int | None = None):
        """This retriever with its top ``depth`` hits re-ranked by a cross-encoder (a reference such as a trained
        student's ``model/`` folder, or a loaded ``CrossEncoder``): a
        :class:`retrdistill.rerank.RerankingRetriever` with the same ``search`` / ``batch_search``."""
        from retrdistill.rerank import RerankingRetriever

        return RerankingRetriever(self, model, depth=depth, batch_size=batch_size, max_length=max_length)


def not_an_index(folder: str | Path, manifest=None) -> str:
    """Why ``folder`` cannot be searched as an index, and what to do: a trained student (a train or pick step's
    folder) is told how to index it; anything else, that it holds no finished index."""
    folder = Path(folder)
    if manifest is not None and manifest.kind == "student":
        model = folder / "model" if (folder / "model").is_dir() else folder
        return (f"{folder} is a trained student (the folder of a {manifest.stage or 'train'} step), not an index: "
                f"index it first, with `retrdistill index --model {model} --collection COLLECTION --out "
                f"indexes/NAME` or a pipeline step {{id: index, stage: index, model: \"@{manifest.step or 'STEP'}\"}}, "
                f"then search the index folder (or evaluate the student unindexed: eval system type dense, "
                f"options {{model: {model}}})")
    if manifest is not None:
        return (f"{folder} holds a {manifest.kind!r} artefact, not an index; an index is the folder of an index step "
                f"or of `retrdistill index --out`")
    return f"{folder}: not a finished retrdistill index (no index manifest); run `retrdistill index`"


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


def index_model_fingerprints(folder: str | Path, info: dict | None = None, manifest=None) -> tuple[str, str]:
    """``(built with, now)``: the fingerprint of the model an index was built with (recorded in its ``index.json``,
    or its manifest's ``model`` input) and of the model its ``index.json`` names as it is now (by content)."""
    from retrdistill.models import model_fingerprint

    folder = Path(folder)
    info = info if info is not None else json.loads((folder / "index.json").read_text(encoding="utf-8"))
    manifest = manifest if manifest is not None else read_manifest(folder)
    built = info.get("model_fingerprint") or (manifest.inputs.get("model", "") if manifest is not None else "")
    return built, model_fingerprint(resolve_reference(str(info["model"]), folder))


def check_index_model(folder: str | Path, info: dict | None = None, manifest=None) -> None:
    """Refuse an index whose model changed since it was built (e.g. a student retrained in place): its passage
    vectors and the model's query vectors would no longer belong together."""
    built, now = index_model_fingerprints(folder, info, manifest)
    if built and built != now:
        info = info if info is not None else json.loads((Path(folder) / "index.json").read_text(encoding="utf-8"))
        raise ManifestError(
            f"{folder}: the index was built with model fingerprint {built[:16]}, but its model "
            f"{resolve_reference(str(info['model']), Path(folder))} now has fingerprint {now[:16]} (changed since, "
            f"e.g. retrained in place); rebuild the index (rerun its index step, or `retrdistill index`) before "
            f"searching it")
