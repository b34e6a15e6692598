"""Retrieval systems for evaluation rows: BM25, a dense model, a saved index, or the pipeline's teacher; beside
them in this package, a system's run re-ranked (:mod:`.rerank`) and queries translated first (:mod:`.translated`).
Lucene's systems live with the rest of Lucene (:mod:`retrdistill.lucene`).

Each system returns a run for the evaluation queries and the cost measured on this machine in the same call:
``ms_per_query`` (query encoding + search, averaged over the queries), ``encode_passages_per_s`` (a fixed sample of
passages), ``index_bytes`` and ``parameters``. Inverted indexes (sparse models, BM25) also report
``query_terms`` and ``doc_terms`` (mean non-zero terms per query and per passage) and ``flops_per_query`` (the
postings a query touches: the sum over its terms of their posting-list lengths, the SPLADE papers' measure).
Systems that encode (``dense``, ``index``, ``teacher``) take a ``backend`` (:mod:`retrdistill.encoding.backends`)
and report it beside their cost; it keys their output only where it changes the embeddings or scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.data.beir import Corpus
from retrdistill.errors import ConfigError
from retrdistill.models import models_by_content
from retrdistill.parts import EvalSystem, Run

COST_SAMPLE = 256  # passages timed for encode_passages_per_s


@dataclass
class SystemOutput:
    run: Run
    cost: dict[str, float | int | None] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] | None = None  # a trained student's recorded validation curve (the row carries it)
    negatives: dict[str, Any] | None = None  # what a trained student's negatives were (evaluation.mining)


class OptionsSystem(EvalSystem):
    """A system identified by its type and the options that change its output, models by content."""

    def input_fingerprint(self) -> str:
        from retrdistill.artefacts import fingerprint_obj

        return fingerprint_obj({"type": type(self).__name__, "options": models_by_content(self.output_options())})


def _parameters(model) -> int:
    from retrdistill.encoding.backends import parameter_count

    return parameter_count(model)


def _encode_rate(indexer, model, info: dict[str, Any], corpus: Corpus) -> float:
    """Passages per second ``indexer`` encodes with ``model``, timed on a fixed sample of ``corpus``."""
    rows = np.linspace(0, len(corpus) - 1, num=min(COST_SAMPLE, len(corpus)), dtype=np.int64)
    texts = corpus.texts_at(sorted(set(rows.tolist())))
    indexer.encode_passages(model, texts[:8], info)  # warm-up
    started = time.perf_counter()
    indexer.encode_passages(model, texts, info)
    return len(texts) / (time.perf_counter() - started)


def _search_run(indexer, model, index, info: dict[str, Any], corpus: Corpus, queries: dict[str, str],
                k: int) -> tuple[Run, dict[str, Any]]:
    """``queries`` encoded by ``indexer`` with ``model`` and searched in ``index``; the run, ms per query and the
    indexer's own search cost (sparse: terms and FLOPs per query)."""
    qids = list(queries)
    started = time.perf_counter()
    encoded = indexer.encode_queries(model, [queries[q] for q in qids], info)
    scores, rows = indexer.search(index, encoded, k)
    ms_per_query = 1000 * (time.perf_counter() - started) / max(1, len(qids))
    run = {q: dict(hits) for q, hits in zip(qids, corpus.hits(scores, rows))}
    return run, {"ms_per_query": ms_per_query, **indexer.search_cost(index, encoded)}


def _encode_and_search(indexer, model, model_ref: str, max_seq_length: int | None, corpus: Corpus,
                       queries: dict[str, str], k: int, cache_dir: Path,
                       measure_cost: bool) -> tuple[Run, dict[str, Any]]:
    """``corpus`` encoded by ``model`` as ``indexer`` encodes (cached) and searched exactly, and the cost."""
    built = indexer.exact_index(model, corpus, model_ref=model_ref, cache_dir=cache_dir, max_seq_length=max_seq_length)
    run, cost = _search_run(indexer, model, built.index, built.info, corpus, queries, k)
    cost.update({"index_bytes": built.info["index_bytes"], "parameters": _parameters(model)})
    if measure_cost:
        cost["encode_passages_per_s"] = _encode_rate(indexer, model, built.info, corpus)
    return run, cost


class BM25System(OptionsSystem):
    """bm25s BM25 (the miner's index, shared through the cache)."""

    @dataclass
    class Options:
        k1: float = field(default=1.5, metadata={"min": 0})
        b: float = field(default=0.75, metadata={"min": 0, "max": 1})

    def run(self, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        from retrdistill.miners.bm25 import BM25Miner

        miner = BM25Miner(BM25Miner.Options(k1=self.options.k1, b=self.options.b), corpus=corpus, cache_dir=cache_dir)
        miner.search(dict(list(queries.items())[:1]), 1)  # load the index outside the timing
        started = time.perf_counter()
        hits = miner.search(queries, k)
        ms = 1000 * (time.perf_counter() - started) / max(1, len(queries))
        index_bytes = sum(f.stat().st_size for f in miner.index_dir.glob("*") if f.is_file())
        cost = {"ms_per_query": ms, "index_bytes": index_bytes, **miner.postings_cost(queries)}
        return SystemOutput({q: dict(h) for q, h in hits.items()}, cost)


def _check_backend_option(backend: str) -> None:
    from retrdistill.encoding.backends import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


class DenseSystem(OptionsSystem):
    """Any SentenceTransformer model, corpus embeddings cached, exact FAISS search, on a chosen backend."""

    @dataclass
    class Options:
        model: str = "offline:all-MiniLM-L6-v2"
        batch_size: int = field(default=64, metadata={"min": 1})
        max_seq_length: int | None = field(default=None, metadata={"min": 1})
        backend: str = "torch"

        def __post_init__(self) -> None:
            _check_backend_option(self.backend)

    output_neutral: ClassVar[tuple[str, ...]] = ("batch_size",)
    example_variants: ClassVar[dict[str, Any]] = {"backend": "onnx-int8"}

    def output_options(self) -> dict[str, Any]:
        """The backend counts only where it changes the embeddings (int8, bf16), not for the fp32 ones."""
        from retrdistill.encoding.backends import keyed_options

        return keyed_options(super().output_options())

    def run(self, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        from retrdistill.families.dense.faiss_index import FlatIndexer
        from retrdistill.indexers.model_check import check_model
        from retrdistill.models import model_fingerprint

        indexer = FlatIndexer()
        check_model(indexer, self.options.model)
        model = indexer.load_model(self.options.model, max_seq_length=self.options.max_seq_length,
                                   backend=self.options.backend)
        run, cost = _encode_and_search(indexer, model, self.options.model, self.options.max_seq_length, corpus,
                                       queries, k, cache_dir, measure_cost)
        cost["backend"] = self.options.backend
        from retrdistill.validation.curve import student_validation

        from retrdistill.evaluation.mining import student_negatives

        return SystemOutput(run, cost, {"model": model_fingerprint(self.options.model)[:16]},
                            student_validation(self.options.model), student_negatives(self.options.model))


class SparseSystem(OptionsSystem):
    """Any sparse model (a ``SparseEncoder``, or a masked-LM checkpoint as SPLADE), its corpus postings cached,
    exact inverted-index search (e.g. the untrained SPLADE student)."""

    @dataclass
    class Options:
        model: str = "offline:tiny-bert-mlm"
        max_seq_length: int | None = field(default=None, metadata={"min": 1})
        max_active_dims: int | None = field(default=None, metadata={"min": 1})

    def run(self, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        from retrdistill.families.sparse.index import SparseIndexer
        from retrdistill.indexers.model_check import check_model
        from retrdistill.models import model_fingerprint

        indexer = SparseIndexer(SparseIndexer.Options(max_active_dims=self.options.max_active_dims))
        check_model(indexer, self.options.model)
        model = indexer.load_model(self.options.model, max_seq_length=self.options.max_seq_length)
        run, cost = _encode_and_search(indexer, model, self.options.model, self.options.max_seq_length, corpus,
                                       queries, k, cache_dir, measure_cost)
        return SystemOutput(run, cost, {"model": model_fingerprint(self.options.model)[:16]})


class IndexSystem(EvalSystem):
    """A saved retrdistill index folder (e.g. the pipeline's distilled student); its queries (and, on another
    corpus, its passages) encoded on ``backend`` (None: the backend the index was built with)."""

    @dataclass
    class Options:
        path: str = ""
        backend: str | None = None

        def __post_init__(self) -> None:
            if not self.path:
                raise ValueError("'path' (an index folder) is required")
            if self.backend is not None:
                _check_backend_option(self.backend)

    example_options: ClassVar[dict[str, Any]] = {"path": "{small_index}"}
    example_variants: ClassVar[dict[str, Any]] = {"path": "{small_hnsw_index}", "backend": "onnx-int8"}

    def input_fingerprint(self) -> str:
        """The fingerprint of the index folder's manifest (its config, inputs and files), and of the backend
        where one is chosen that changes the query embeddings."""
        from retrdistill.artefacts import fingerprint_obj, read_manifest
        from retrdistill.encoding.backends import output_key

        from retrdistill.retriever import index_model_fingerprints, not_an_index

        manifest = read_manifest(self.options.path)
        if manifest is None or manifest.kind != "index":
            raise ConfigError(f"eval system 'index': {not_an_index(self.options.path, manifest)}")
        changes = output_key(self.options.backend) if self.options.backend is not None else None
        built, now = index_model_fingerprints(self.options.path, manifest=manifest)
        if built == now and changes is None:
            return manifest.fingerprint
        # the model as it is now keys the evaluation too: a model changed since indexing makes the evaluation
        # stale (and the search refuses the index, naming both fingerprints)
        extra = {"model_now": now} if built != now else {}
        return fingerprint_obj({"index": manifest.fingerprint, **({"backend": changes} if changes else {}), **extra})

    def run(self, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        from retrdistill.retriever import Retriever

        retriever = Retriever.load(self.options.path, backend=self.options.backend)
        info = retriever.info
        provenance = {"index": self.input_fingerprint()[:16]}
        if info.get("corpus_fingerprint") not in (None, corpus.fingerprint):
            # another dataset than the one indexed (a many-dataset evaluation): the index's model encodes this
            # corpus (embeddings cached) and is searched exactly, as the index stage would build it here
            return self._other_corpus(retriever, corpus, queries, k, cache_dir, measure_cost, provenance)
        run, cost = _search_run(retriever.indexer, retriever.model, retriever.index, info, corpus, queries, k)
        cost.update({"index_bytes": retriever.indexer.index_bytes(retriever.folder),
                     "parameters": _parameters(retriever.model), "backend": retriever.backend})
        if measure_cost:
            cost["encode_passages_per_s"] = _encode_rate(retriever.indexer, retriever.model, info, corpus)
        return SystemOutput(run, cost, provenance, _index_validation(retriever), _index_negatives(retriever))

    def _other_corpus(self, retriever, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path,
                      measure_cost: bool, provenance: dict[str, str]) -> SystemOutput:
        import logging

        from retrdistill.retriever import resolve_reference

        model_path = resolve_reference(retriever.info["model"], retriever.folder)
        logging.getLogger(__name__).info("index %s was built on another corpus: encoding this one with its model %s",
                                         self.options.path, model_path)
        run, cost = _encode_and_search(retriever.indexer, retriever.model, model_path,
                                       retriever.info.get("max_seq_length"), corpus, queries, k, cache_dir, measure_cost)
        cost["backend"] = retriever.backend
        from retrdistill import families

        exact = families.get(retriever.indexer.model_type).exact_search
        return SystemOutput(run, cost, {**provenance, "encoded_here": exact}, _index_validation(retriever),
                            _index_negatives(retriever))


def _index_negatives(retriever) -> dict[str, Any] | None:
    """What the negatives of the student an index was built from were, when it is a student artefact's model."""
    from retrdistill.evaluation.mining import student_negatives
    from retrdistill.retriever import resolve_reference

    return student_negatives(resolve_reference(str(retriever.info.get("model", "")), retriever.folder))


def _index_validation(retriever) -> dict[str, Any] | None:
    """The validation curve of the student an index was built from, when it is a student artefact's model."""
    from retrdistill.retriever import resolve_reference
    from retrdistill.validation.curve import student_validation

    return student_validation(resolve_reference(str(retriever.info.get("model", "")), retriever.folder))


class TeacherSystem(OptionsSystem):
    """A registered teacher as a retriever: bi-encoders search the corpus, cross-encoders re-rank BM25."""

    @dataclass
    class Options:
        teacher: str = "bi-encoder"
        options: dict[str, Any] = field(default_factory=dict, metadata={"part": {"kind": "teacher", "name": "teacher"}})

    example_options: ClassVar[dict[str, Any]] = {"options": {"model": "offline:all-MiniLM-L6-v2"}}
    example_variants: ClassVar[dict[str, Any]] = {"teacher": "cross-encoder",
                                                  "options": {"model": "offline:tiny-bert-mlm"}}

    def run(self, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        from retrdistill import registry
        from retrdistill.artefacts import fingerprint_obj

        teacher = registry.build("teacher", self.options.teacher, self.options.options, corpus=corpus, cache_dir=cache_dir)
        teacher.retrieve(dict(list(queries.items())[:1]), 1)  # build/load what it needs outside the timing
        started = time.perf_counter()
        run = teacher.retrieve(queries, k)
        ms = 1000 * (time.perf_counter() - started) / max(1, len(queries))
        cost: dict[str, Any] = {"ms_per_query": ms}
        model = getattr(teacher, "model", None)
        if model is not None and hasattr(model, "parameters"):
            from retrdistill.encoding.backends import backend_of

            cost["parameters"] = _parameters(model)
            cost["backend"] = backend_of(model)
        return SystemOutput(run, cost, {"teacher": fingerprint_obj(teacher.fingerprint())[:16]})


class TrecRunSystem(EvalSystem):
    """A TREC run file made by another tool (pyserini, Anserini, trec_eval users) on the same leaderboard."""

    @dataclass
    class Options:
        path: str = ""
        on_duplicate: str = "error"  # or "keep-max": merge duplicate (query, doc) rows, counted in the log

        def __post_init__(self) -> None:
            if not self.path:
                raise ValueError("'path' (a TREC run file) is required")

    # with duplicates "error" writes nothing and "keep-max" a run; without, both the same run: neutral either way
    output_neutral: ClassVar[tuple[str, ...]] = ("on_duplicate",)
    example_options: ClassVar[dict[str, Any]] = {"path": "{small_runs}/a.trec"}
    example_variants: ClassVar[dict[str, Any]] = {"path": "{small_runs}/b.trec", "on_duplicate": "keep-max"}

    def input_fingerprint(self) -> str:
        """The run file's content hash."""
        from retrdistill.artefacts import fingerprint_path

        try:
            return fingerprint_path(self.options.path)
        except FileNotFoundError:
            raise ConfigError(f"eval system 'run': no run file {self.options.path!r}") from None

    def run(self, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        import logging

        from retrdistill.evaluation.runs import read_trec_run, truncate

        run = read_trec_run(self.options.path, on_duplicate=self.options.on_duplicate)
        unknown = sorted(set(run) - set(queries))
        if unknown:
            logging.getLogger(__name__).warning("%s: %d run queries are not evaluation queries (ignored), e.g. %s",
                                                self.options.path, len(unknown), unknown[0])
        run = truncate({q: docs for q, docs in run.items() if q in queries}, k)
        return SystemOutput(run, {}, {"run_file": self.input_fingerprint()[:16]})


class FusedSystem(OptionsSystem):
    """Other systems of the same evaluation fused with ranx (rrf, combsum, combmnz, combmax, wsum).

    ``systems`` names at least two systems listed before this one. Its cost is what serving it would cost: the
    parts' ms per query and index bytes added (plus the fusion's own time), parameters added, passages/s the
    harmonic combination of the parts' rates (every part encodes every passage) when all parts encode.
    """

    @dataclass
    class Options:
        systems: list[str] = field(default_factory=list)
        method: str = "rrf"
        weights: list[float] | None = field(default=None, metadata={"min": 0})  # wsum: one per system
        k: int = field(default=60, metadata={"min": 0})  # rrf
        norm: str | None = "default"  # the method's own normalisation; see retrdistill.evaluation.fusion

        def __post_init__(self) -> None:
            from retrdistill.evaluation.fusion import FUSION_METHODS

            if len(self.systems) < 2 or len(set(self.systems)) != len(self.systems):
                raise ValueError(f"'systems' must name at least two distinct systems, got {self.systems!r}")
            if self.method not in FUSION_METHODS:
                raise ValueError(f"unknown fusion method {self.method!r}; expected one of: {', '.join(FUSION_METHODS)}")

    example_options: ClassVar[dict[str, Any]] = {"systems": ["A", "B"]}
    example_variants: ClassVar[dict[str, Any]] = {"systems": ["A", "C"], "method": "combsum", "weights": [0.3, 0.7]}

    def combines(self) -> list[str]:
        """The names in ``systems``."""
        return list(self.options.systems)

    def run(self, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        """The fusion of the outputs in ``earlier`` of the systems named in ``systems``, truncated to ``k``."""
        from retrdistill.evaluation.fusion import fuse_runs
        from retrdistill.evaluation.runs import truncate

        earlier = earlier or {}
        missing = [name for name in self.options.systems if name not in earlier]
        if missing:
            raise ConfigError(f"eval system 'fusion': {', '.join(missing)} must be evaluated before it; "
                              f"evaluated before: {', '.join(earlier) or 'none'}")
        outputs = [earlier[name] for name in self.options.systems]
        n_queries = max(1, len({q for out in outputs for q in out.run}))
        started = time.perf_counter()
        run = fuse_runs([out.run for out in outputs], self.options.method, norm=self.options.norm, k=self.options.k,
                        weights=self.options.weights)
        fuse_ms = 1000 * (time.perf_counter() - started) / n_queries
        return SystemOutput(truncate(run, k), _fused_cost(outputs, fuse_ms), self._provenance(outputs))

    def _provenance(self, outputs: list[SystemOutput]) -> dict[str, str]:
        return {f"{name}:{key}": value for name, out in zip(self.options.systems, outputs)
                for key, value in out.provenance.items()}


def _fused_cost(outputs: list[SystemOutput], fuse_ms: float) -> dict[str, Any]:
    """Serving every part and fusing: ms and sizes added, encoding rates combined harmonically."""
    cost: dict[str, Any] = {}
    if all("ms_per_query" in out.cost for out in outputs):
        cost["ms_per_query"] = sum(out.cost["ms_per_query"] for out in outputs) + fuse_ms
    for name in ("index_bytes", "parameters"):
        values = [out.cost[name] for out in outputs if out.cost.get(name) is not None]
        if values:
            cost[name] = sum(values)
    if all(out.cost.get("flops_per_query") is not None for out in outputs):  # every part an inverted index
        cost["flops_per_query"] = sum(out.cost["flops_per_query"] for out in outputs)
    backends = sorted({out.cost["backend"] for out in outputs if out.cost.get("backend")})
    if backends:
        cost["backend"] = "+".join(backends)
    encoders = [r for r in (out.cost.get("encode_passages_per_s") for out in outputs) if r]
    if encoders:
        cost["encode_passages_per_s"] = 1.0 / sum(1.0 / r for r in encoders)
    return cost
