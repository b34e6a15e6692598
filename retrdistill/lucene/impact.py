"""``system: lucene-impact``: a sparse (SPLADE) model's passages searched by Lucene impact search (Anserini).

For a leaderboard row beside the embedded ``sparse`` index: the same document vectors, quantised to integers
(``round(w * factor)``), indexed by Anserini's ``IndexCollection -collection JsonVectorCollection -impact
-pretokenized`` and searched by ``SearchCollection -impact -pretokenized`` with the queries quantised the same
way (``query_factor``) and written as pretokenized topics (each term repeated its weight times; see
:mod:`retrdistill.lucene.export`). Anserini runs from pyserini's jar in a Java subprocess, found as
the ``lucene-bm25`` system finds it (:mod:`retrdistill.lucene.runtime`; the ``[lucene]`` extra).

``path`` is a sparse index folder (the index stage's; on another corpus than the evaluated one, its model
encodes that corpus) or a sparse model (a SparseEncoder folder, a masked-LM checkpoint, ``offline:NAME``),
whose corpus postings are encoded and cached as the ``sparse`` system does. The Lucene index is built once
into ``cache_dir/lucene-impact/<key>/``, keyed on the source's fingerprint, the factor, the term naming and the
jar, in a temporary folder swapped in whole (a killed build leaves nothing half-written).

Scores are exact integers: ``ImpactSimilarity`` scores a passage as the sum over shared terms of query weight x
document weight (float32 sums of integers, exact below 2^24). Ties: Anserini sorts equal scores by the id
string; the passages are indexed under zero-padded row numbers, so ties fall by passage row as in the embedded
index. Anserini's final ``ScoreTiesAdjusterReranker`` rounds scores to 1e-4 through a Java ``int``, so a score
above 214,748 comes back clamped; Lucene ranked on the true scores before that, so the order stands and those
scores are recomputed exactly from the quantised postings (logged; a smaller ``query_factor`` avoids it).
Lucene refuses a query of more than 1024 distinct terms (``max_active_dims`` caps them).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.artefacts import atomic_dir, atomic_path, fingerprint_obj, write_json_atomic
from retrdistill.errors import ConfigError
from retrdistill.lucene.export import (TERM_MODES, ExportSettings, check_factor, exact_scores,
                                                 index_source, model_postings, quantise_query, query_topic,
                                                 term_names, vocabulary_tokens, write_vectors)
from retrdistill.lucene.runtime import anserini_jar, anserini_version, run_java
from retrdistill.parts import EvalSystem

log = logging.getLogger(__name__)
MAX_CLAUSES = 1024  # Lucene's default limit on the clauses of one BooleanQuery
CLAMPED = 214748.0  # Math.round(score * 1e4f) / 1e4f saturates at Integer.MAX_VALUE / 1e4


@dataclass
class SparseSource:
    """What is exported: the postings, the model that encodes queries, and what identifies them."""

    index: Any  # retrdistill.families.sparse.index.SparseIndex
    model_ref: str
    max_seq_length: int | None
    max_active_dims: int | None
    fingerprint: str
    model: Any = None  # the loaded SparseEncoder where encoding the corpus loaded it already


class LuceneImpactSystem(EvalSystem):
    """Anserini's Lucene impact search over a sparse model's quantised vectors. ``ms_per_query`` covers query
    encoding and one JVM start per evaluation (~1-2 s, spread over the queries)."""

    @dataclass
    class Options:
        path: str = ""  # a sparse index folder, or a sparse model
        # document weights -> round(w * factor)
        factor: float = field(default=100.0, metadata={"min": 0, "exclusive_min": True})
        # query weights -> round(w * query_factor)
        query_factor: float = field(default=100.0, metadata={"min": 0, "exclusive_min": True})
        terms: str = "tokens"  # Lucene terms: vocabulary tokens, or term ids ("ids")
        # a model's token limit (an index folder keeps its own)
        max_seq_length: int | None = field(default=None, metadata={"min": 1})
        # a model's top terms per vector (an index folder keeps its own)
        max_active_dims: int | None = field(default=None, metadata={"min": 1})
        threads: int = field(default=1, metadata={"min": 1})

        def __post_init__(self) -> None:
            if not self.path:
                raise ValueError("'path' (a sparse index folder or a sparse model) is required")
            check_factor(self.factor, "factor")
            check_factor(self.query_factor, "query_factor")
            if self.terms not in TERM_MODES:
                raise ValueError(f"terms must be one of {', '.join(TERM_MODES)}, got {self.terms!r}")
            if self.max_active_dims is not None and self.max_active_dims < 1:
                raise ValueError(f"max_active_dims must be a positive integer or null, got {self.max_active_dims}")
            if self.threads < 1:
                raise ValueError("threads must be at least 1")

    output_neutral: ClassVar[tuple[str, ...]] = ("threads",)
    unclamped: int = 0  # scores recomputed because Anserini clamped them (see the module docstring)
    example_options: ClassVar[dict[str, Any]] = {"path": "offline:tiny-bert-mlm", "max_seq_length": 32}
    example_variants: ClassVar[dict[str, Any]] = {"path": "{small_index}", "terms": "ids"}

    # ---------------------------------------------------------------- identity
    def _is_index(self) -> bool:
        return Path(self.options.path, "index.json").is_file()

    def input_fingerprint(self) -> str:
        """The index folder's manifest fingerprint, or the model's content; the quantisation options; the jar."""
        from retrdistill.artefacts import read_manifest
        from retrdistill.models import model_fingerprint

        if self._is_index():
            manifest = read_manifest(self.options.path)
            if manifest is None:
                raise ConfigError(f"eval system 'lucene-impact': {self.options.path!r} is not a finished index")
            source = manifest.fingerprint
        else:
            source = model_fingerprint(self.options.path)
        options = {**self.output_options(), "path": source}
        return fingerprint_obj({"type": type(self).__name__, "options": options, "anserini": anserini_version()})

    # ---------------------------------------------------------------- the source and its Lucene index
    def source(self, corpus, cache_dir: Path) -> SparseSource:
        """The postings to export: the index folder's own (same corpus), else ``corpus`` encoded by the model."""
        from retrdistill.indexers.model_check import check_model
        from retrdistill.families.sparse.index import SparseIndexer
        from retrdistill.models import model_fingerprint
        from retrdistill.indexers.references import resolve_reference

        opts = self.options
        if self._is_index():
            if opts.max_seq_length is not None or opts.max_active_dims is not None:
                raise ConfigError(f"eval system 'lucene-impact': {opts.path} is an index folder, which keeps its "
                                  f"own max_seq_length and max_active_dims; set them only with a model path")
            index, info, manifest = index_source(Path(opts.path))
            model_ref = resolve_reference(str(info["model"]), Path(opts.path))
            seq, dims = info.get("max_seq_length"), (info.get("options") or {}).get("max_active_dims")
            if info.get("corpus_fingerprint") == corpus.fingerprint and "rows" not in info:
                return SparseSource(index, model_ref, seq, dims, manifest.fingerprint)
            log.info("index %s was built on another corpus or a shard of it: encoding this corpus with its model "
                     "%s", opts.path, model_ref)
        else:
            check_model(SparseIndexer(), opts.path)
            model_ref, seq, dims = opts.path, opts.max_seq_length, opts.max_active_dims
        index, model = model_postings(model_ref, corpus, cache_dir, seq, dims)
        key = fingerprint_obj({"model": model_fingerprint(model_ref), "corpus": corpus.fingerprint,
                               "max_seq_length": seq, "max_active_dims": dims})
        return SparseSource(index, model_ref, seq, dims, key, model)

    def lucene_dir(self, source: SparseSource, cache_dir: Path) -> Path:
        key = {"source": source.fingerprint, "factor": float(self.options.factor), "terms": self.options.terms,
               "anserini": anserini_jar().name, "format": "lucene-impact-v1"}
        return Path(cache_dir) / "lucene-impact" / fingerprint_obj(key)[:20]

    def ensure_index(self, source: SparseSource, cache_dir: Path) -> Path:
        """The Lucene impact index of ``source``'s quantised vectors, built once (atomically)."""
        folder = self.lucene_dir(source, cache_dir)
        if (folder / "done.json").is_file():
            return folder
        started = time.perf_counter()
        index = source.index
        used = np.diff(np.asarray(index.indptr)) > 0
        tokens = vocabulary_tokens(source.model_ref, index.vocab_size, source.model)
        names = term_names(tokens, self.options.terms, used)
        settings = ExportSettings(factor=float(self.options.factor), terms=self.options.terms, doc_ids="rows")
        with atomic_dir(folder) as tmp:
            counts = write_vectors(index, None, names, tmp / "vectors", settings)
            np.save(tmp / "doc_freq.npy", counts.pop("doc_freq"))
            log.info("lucene-impact: indexing %d passages with Anserini (%s)", index.num_docs, anserini_jar().name)
            run_java("io.anserini.index.IndexCollection",
                     ["-collection", "JsonVectorCollection", "-input", str(tmp / "vectors"), "-index",
                      str(tmp / "index"), "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
                      "-threads", str(self.options.threads)], "impact indexing")
            shutil.rmtree(tmp / "vectors")
            write_json_atomic(tmp / "done.json", {**counts, "factor": settings.factor, "terms": settings.terms,
                                                  "anserini": anserini_jar().name, "source": source.fingerprint,
                                                  "seconds": round(time.perf_counter() - started, 2)})
        return folder

    # ---------------------------------------------------------------- search
    def search(self, source: SparseSource, folder: Path, model, texts: list[str], k: int,
               cache_dir: Path) -> tuple[list[list[tuple[int, float]]], dict[str, float]]:
        """Per query text, ``[(passage row, score)]`` best first as Lucene ranked them, and the query cost
        (quantised terms per query, FLOPs per query over the quantised postings)."""
        from retrdistill.families.sparse.index import SparseIndexer

        doc_freq = np.load(folder / "doc_freq.npy")
        tokens = vocabulary_tokens(source.model_ref, source.index.vocab_size, model)
        names = term_names(tokens, self.options.terms, doc_freq > 0)
        indexer = SparseIndexer(SparseIndexer.Options(max_active_dims=source.max_active_dims))
        encoded = indexer.encode_queries(model, texts, {})
        lines, queries, terms_total, flops = [], [], 0, 0
        for i in range(encoded.shape[0]):
            lo, hi = encoded.indptr[i], encoded.indptr[i + 1]
            terms, impacts = quantise_query(encoded.indices[lo:hi], encoded.data[lo:hi], names,
                                            self.options.query_factor)
            if len(terms) > MAX_CLAUSES:
                raise ConfigError(f"lucene-impact: query {i} has {len(terms)} distinct terms; Lucene allows "
                                  f"{MAX_CLAUSES} clauses: cap them with max_active_dims")
            queries.append((terms, impacts))
            terms_total += len(terms)
            flops += int(doc_freq[terms].sum())
            if len(terms):
                lines.append(f"{i}\t{query_topic(terms, impacts, names)}\n")
        ranked: list[list[tuple[int, float]]] = [[] for _ in texts]
        if lines:
            for i, hits in self._run_search(folder, lines, k, cache_dir).items():
                ranked[i] = self._unclamp(source, queries[i], hits)
        m = max(1, len(texts))
        return ranked, {"query_terms": terms_total / m, "flops_per_query": flops / m}

    def _unclamp(self, source: SparseSource, query: tuple[np.ndarray, np.ndarray],
                 hits: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """``hits`` with every score Anserini clamped recomputed exactly from the quantised postings (Lucene
        ranked them on their true scores before the clamp, so the order stands)."""
        clamped = [i for i, (_, s) in enumerate(hits) if s >= CLAMPED]
        if not clamped:
            return hits
        rows = np.array([hits[i][0] for i in clamped], dtype=np.int64)
        exact = exact_scores(source.index, query[0], query[1], rows, self.options.factor).tolist()
        fixed = list(hits)
        for i, value in zip(clamped, exact):
            fixed[i] = (hits[i][0], float(value))
        self.unclamped += len(clamped)
        return fixed

    def _run_search(self, folder: Path, lines: list[str], k: int,
                    cache_dir: Path) -> dict[int, list[tuple[int, float]]]:
        work = Path(cache_dir) / "lucene-impact" / "searches"
        work.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}-{secrets.token_hex(4)}"  # concurrent searches never share files
        topics, run = work / f"{tag}-topics.tsv", work / f"{tag}-run.trec"
        rows: dict[int, list[tuple[int, float]]] = {}
        try:
            with atomic_path(topics) as tmp:
                tmp.write_text("".join(lines), encoding="utf-8")
            run_java("io.anserini.search.SearchCollection",
                     ["-index", str(folder / "index"), "-topics", str(topics), "-topicReader", "TsvInt",
                      "-output", str(run), "-impact", "-pretokenized", "-hits", str(k),
                      "-threads", str(self.options.threads)], "impact search")
            with open(run, encoding="utf-8") as fh:
                for line in fh:  # qid Q0 docid rank score tag, in Lucene's order
                    q, _, doc, _rank, score, *_ = line.split()
                    # integer weights give integer scores; Anserini's tie adjuster took off dup * 1e-6
                    rows.setdefault(int(q), []).append((int(doc), float(round(float(score)))))
        finally:
            topics.unlink(missing_ok=True)
            run.unlink(missing_ok=True)
        return rows

    def run(self, corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, Any] | None = None):
        from retrdistill.families.sparse.index import SparseIndexer
        from retrdistill.systems import SystemOutput, _parameters

        cache_dir = Path(cache_dir)
        self.unclamped = 0
        source = self.source(corpus, cache_dir)
        folder = self.ensure_index(source, cache_dir)  # built outside the timing
        model = source.model or SparseIndexer().load_model(source.model_ref, max_seq_length=source.max_seq_length)
        qids = list(queries)
        started = time.perf_counter()
        ranked, cost = self.search(source, folder, model, [queries[q] for q in qids], k, cache_dir)
        ms = 1000 * (time.perf_counter() - started) / max(1, len(qids))
        if self.unclamped:
            log.info("lucene-impact: %d scores above %.0f, which Anserini's ScoreTiesAdjusterReranker clamps, "
                     "recomputed from the quantised postings (Lucene's order kept); a smaller query_factor "
                     "avoids it", self.unclamped, CLAMPED)
        done = json.loads((folder / "done.json").read_text(encoding="utf-8"))
        run = {}
        for q, hits in zip(qids, ranked):
            ids = corpus.ids_at([r for r, _ in hits]) if hits else []
            run[q] = {d: s for d, (_, s) in zip(ids, hits)}
        index_bytes = sum(f.stat().st_size for f in (folder / "index").rglob("*") if f.is_file())
        cost = {"ms_per_query": ms, "index_bytes": index_bytes, "doc_terms": float(done["doc_terms"]), **cost,
                "parameters": _parameters(model)}
        provenance = {"lucene": anserini_jar().name, "factor": f"{self.options.factor:g}/{self.options.query_factor:g}",
                      "source": source.fingerprint[:16]}
        return SystemOutput(run, cost, provenance)
