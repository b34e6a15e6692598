"""BM25 with bm25s: an embedded lexical retriever (no Java), its index cached as bm25s's folder of arrays."""

from __future__ import annotations

import logging
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill.artefacts import atomic_dir, fingerprint_obj, write_json_atomic
from retrdistill.data.beir import Corpus
from retrdistill.errors import ConfigError
from retrdistill.parts import Hits, Miner

log = logging.getLogger(__name__)


class BM25Miner(Miner):
    """bm25s BM25 over title + text, English stopwords and Snowball stemming by default.

    Context: ``corpus`` (searched) and ``cache_dir`` (its index is cached under ``bm25/``).
    """

    @dataclass
    class Options:
        k1: float = field(default=1.5, metadata={"min": 0})
        b: float = field(default=0.75, metadata={"min": 0, "max": 1})
        method: str = "lucene"
        stopwords: str | None = "en"
        stemmer: str | None = "english"

    example_variants: ClassVar[dict[str, Any]] = {"method": "robertson"}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        self._retriever = None
        self._tokenizer = None
        self._doc_ids: list[str] | None = None

    def fingerprint(self) -> dict:
        return {"miner": "bm25", "options": asdict(self.options), "corpus": self.corpus.fingerprint}

    @property
    def index_dir(self) -> Path:
        return self.cache_dir / "bm25" / fingerprint_obj(self.fingerprint())[:20]

    def _make_tokenizer(self):
        import bm25s

        stemmer = None
        if self.options.stemmer:
            import Stemmer

            stemmer = Stemmer.Stemmer(self.options.stemmer)
        return bm25s.tokenization.Tokenizer(stopwords=self.options.stopwords or None, stemmer=stemmer)

    def _load(self) -> None:
        import bm25s

        if self._retriever is not None:
            return
        folder = self.index_dir
        if not (folder / "done.json").is_file():
            self._build(folder)
        self._retriever = bm25s.BM25.load(str(folder), mmap=True, show_progress=False)
        self._tokenizer = self._make_tokenizer()
        self._tokenizer.load_vocab(str(folder))
        self._tokenizer.load_stopwords(str(folder))
        self._doc_ids = self.corpus.dataset.data.column("_id")  # the memory-mapped Arrow column, not a list of str

    def _build(self, folder: Path) -> None:
        from retrdistill.miners.bm25_build import STREAMED_METHODS, build_bm25_streamed

        log.info("building BM25 index of %d passages in %s", len(self.corpus), folder)
        tokenizer = self._make_tokenizer()
        with atomic_dir(folder) as tmp:
            if self.options.method in STREAMED_METHODS:  # bounded memory, the same files as bm25s's own build
                build_bm25_streamed(self.corpus, tokenizer, tmp, k1=self.options.k1, b=self.options.b,
                                    method=self.options.method)
            else:  # bm25l / bm25+ need bm25s's non-occurrence array: its in-memory build
                self._build_in_memory(tokenizer, tmp)
            tokenizer.save_vocab(str(tmp))
            tokenizer.save_stopwords(str(tmp))
            write_json_atomic(tmp / "done.json", {"documents": len(self.corpus), **self.fingerprint()})

    def _build_in_memory(self, tokenizer, out: Path) -> None:
        import bm25s

        token_ids = _PackedIds()
        for _, _, texts in self.corpus.iter_batches(20_000):
            token_ids.extend(tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False))
        retriever = bm25s.BM25(k1=self.options.k1, b=self.options.b, method=self.options.method)
        retriever.index(bm25s.tokenization.Tokenized(ids=token_ids, vocab=tokenizer.get_vocab_dict()), show_progress=False)
        retriever.save(str(out))

    def _query_ids(self, texts: list[str]) -> list[list[int]]:
        return self._tokenizer.tokenize(texts, update_vocab=False, return_as="ids", show_progress=False)

    def search(self, queries: dict[str, str], depth: int) -> Hits:
        """Top ``depth`` passages per query as (doc id, score), best first; ties broken by doc id."""
        self._load()
        qids = list(queries)
        k = min(depth, len(self._doc_ids))
        hits: Hits = {}
        for qid, tokens in zip(qids, self._query_ids([queries[q] for q in qids])):
            if not tokens:
                hits[qid] = []
                continue
            scores = self._retriever.get_scores(tokens)
            hits[qid] = _top_k(scores, k, self._doc_ids)
        return hits

    def postings_cost(self, queries: dict[str, str]) -> dict[str, float]:
        """What searching ``queries`` touches, in the sparse indexes' measures: mean distinct terms per query,
        mean terms per passage, and FLOPs per query (the postings scored: the posting-list lengths of the query's
        tokens as bm25s scores them, a repeated token once per occurrence)."""
        self._load()
        indptr = np.asarray(self._retriever.scores["indptr"], dtype=np.int64)
        lengths = np.diff(indptr)
        tokens = self._query_ids(list(queries.values()))
        m = max(1, len(tokens))
        flops = sum(int(lengths[np.asarray(t, dtype=np.int64)].sum()) for t in tokens if len(t))
        docs = max(1, int(self._retriever.scores.get("num_docs", len(self._doc_ids))))
        return {"query_terms": sum(len(set(t)) for t in tokens) / m, "doc_terms": int(indptr[-1]) / docs,
                "flops_per_query": flops / m}

    def score_pairs(self, queries: dict[str, str], pairs: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """BM25 score of given passages for each query (for fusion teachers)."""
        self._load()
        row = self.corpus.row_index()
        outside = next((d for docs in pairs.values() for d in docs if row[d] >= len(self._doc_ids)), None)
        if outside is not None:
            raise ConfigError(f"BM25 cannot score generated passage {outside!r}: it is not in the corpus's index; "
                              f"score candidates with LLM-written negatives with a teacher that reads texts")
        out = {}
        qids = list(pairs)
        for qid, tokens in zip(qids, self._query_ids([queries[q] for q in qids])):
            rows = np.array([row[d] for d in pairs[qid]], dtype=np.int64)
            scores = self._retriever.get_scores(tokens) if tokens else np.zeros(len(self._doc_ids), np.float32)
            out[qid] = np.asarray(scores, dtype=np.float32)[rows]
        return out


class _PackedIds:
    """Every passage's token ids in one int32 array (4 bytes a token instead of a Python list per passage);
    bm25s reads it as a sequence of lists."""

    def __init__(self) -> None:
        self.flat = array("i")
        self.ends = array("q")

    def extend(self, docs) -> None:
        for ids in docs:
            self.flat.extend(ids)
            self.ends.append(len(self.flat))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> list[int]:
        if i < 0:
            i += len(self.ends)
        return self.flat[self.ends[i - 1] if i else 0:self.ends[i]].tolist()

    def __iter__(self):
        start = 0
        for end in self.ends:
            yield self.flat[start:end].tolist()
            start = end


def _top_k(scores: np.ndarray, k: int, doc_ids) -> list[tuple[str, float]]:
    """``doc_ids``: a list of ids or an Arrow column of them (only the ``k`` picked rows are converted)."""
    scores = np.asarray(scores, dtype=np.float32)
    nonzero = int(np.count_nonzero(scores))
    k = min(k, nonzero)
    if k == 0:
        return []
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    names = doc_ids.take(idx).to_pylist() if hasattr(doc_ids, "take") else [doc_ids[i] for i in idx]
    ranked = sorted(((float(scores[i]), d) for i, d in zip(idx, names)), key=lambda t: (-t[0], t[1]))
    return [(d, s) for s, d in ranked[:k]]
