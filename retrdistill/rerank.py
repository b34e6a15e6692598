"""Re-ranking: a first stage's top ``depth`` passages per query re-scored by a cross-encoder or any teacher.

Two entry points share :func:`rerank_run`:

* the Python API: ``Retriever.load(index).rerank_with(model, depth=100)`` returns a :class:`RerankingRetriever`
  with the retriever's ``search`` / ``batch_search``; ``model`` is a cross-encoder reference (a path such as a
  trained student's ``model/`` folder, ``offline:NAME``, a hub name) or a loaded ``CrossEncoder``;
* the eval system ``rerank`` (:mod:`retrdistill.systems.rerank`): the run of a system listed before it,
  re-ranked by any registered teacher (a cross-encoder student, a bi-encoder, a fusion).

The re-ranked passages come first, in the re-ranker's order and with its scores; passages the first stage
ranked below ``depth`` (when it returned more) follow in the first stage's order, below every re-ranked one, so
recall beyond the re-ranking depth is the first stage's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrdistill.parts import Run

log = logging.getLogger(__name__)

ScoreGroups = Callable[[dict[str, str], dict[str, list[str]]], dict[str, np.ndarray]]


@dataclass
class Reranked:
    """A re-ranked run and what re-ranking it took: wall seconds, pairs scored, queries re-ranked."""

    run: Run
    seconds: float
    pairs: int
    queries: int

    @property
    def ms_per_query(self) -> float:
        return 1000 * self.seconds / max(1, self.queries)


def rerank_run(score_groups: ScoreGroups, queries: dict[str, str], first_stage: Run, depth: int) -> Reranked:
    """``first_stage`` (query id -> {doc id: score}) with each query's top ``depth`` re-scored by
    ``score_groups(queries, {qid: [doc ids]})`` (a :meth:`retrdistill.parts.Teacher.score_groups`) and sorted by
    that score (ties: first-stage order); passages below ``depth`` keep their order, below the re-ranked ones."""
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    ranked = {q: sorted(docs, key=lambda d: -docs[d]) for q, docs in first_stage.items() if q in queries and docs}
    groups = {q: docs[:depth] for q, docs in ranked.items()}
    started = time.perf_counter()
    scores = score_groups({q: queries[q] for q in groups}, groups) if groups else {}
    seconds = time.perf_counter() - started
    out: Run = {}
    for q, docs in groups.items():
        values = np.asarray(scores[q], dtype=np.float64)
        order = sorted(range(len(docs)), key=lambda i: (-values[i], i))
        run = {docs[i]: float(values[i]) for i in order}
        rest = ranked[q][depth:]
        if rest:  # below every re-ranked passage, in the first stage's order
            floor = float(values.min()) - 1.0
            run.update({d: floor - rank for rank, d in enumerate(rest)})
        out[q] = run
    return Reranked(out, seconds, sum(map(len, groups.values())), len(groups))


class CrossEncoderScorer:
    """``score_groups`` of a ``CrossEncoder`` over the passages of a corpus (or any ``texts_at``/``row_index``)."""

    def __init__(self, model: Any, corpus: Any, *, batch_size: int = 32, max_length: int | None = None) -> None:
        if isinstance(model, (str, Path)):
            from retrdistill.models import load_cross_encoder

            model = load_cross_encoder(str(model), **({"max_length": max_length} if max_length else {}))
        elif max_length:
            model.max_length = max_length
        self.model = model
        self.corpus = corpus
        self.batch_size = batch_size
        self._row = None

    def texts(self, doc_ids: list[str]) -> list[str]:
        """The passages of ``doc_ids``."""
        if self._row is None:
            self._row = self.corpus.row_index()
        return self.corpus.texts_at([self._row[d] for d in doc_ids])

    def fields(self, doc_ids: list[str]) -> list[tuple[str, str]]:
        """``(title, text)`` of the passages of ``doc_ids``."""
        from retrdistill.hits import passage_fields

        if self._row is None:
            self._row = self.corpus.row_index()
        return passage_fields(self.corpus, [self._row[d] for d in doc_ids])

    def __call__(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        from retrdistill.encoding.engine import score_pairs

        pairs: list[tuple[str, str]] = []
        spans = {}
        for qid, docs in groups.items():
            texts = self.texts(docs)
            spans[qid] = (len(pairs), len(pairs) + len(docs))
            pairs.extend((queries[qid], t) for t in texts)
        scores = score_pairs(self.model, pairs, batch_size=self.batch_size)
        return {qid: scores[a:b] for qid, (a, b) in spans.items()}


class RerankingRetriever:
    """A :class:`retrdistill.retriever.Retriever` whose top ``depth`` hits are re-ranked by a cross-encoder.

    ``search`` / ``batch_search`` return :class:`retrdistill.retriever.Hit` lists like the retriever's, their
    scores the re-ranker's; ``last_timing`` holds the last call's first-stage and re-ranking milliseconds.
    """

    def __init__(self, retriever, model: Any, *, depth: int = 100, batch_size: int = 32,
                 max_length: int | None = None) -> None:
        if depth < 1:
            raise ValueError(f"depth must be positive, got {depth}")
        self.retriever = retriever
        self.depth = depth
        self.scorer = CrossEncoderScorer(model, retriever.corpus, batch_size=batch_size, max_length=max_length)
        self.last_timing: dict[str, float] = {}

    @property
    def model(self):
        return self.scorer.model

    def batch_search(self, queries: list[str], k: int = 10, *, with_text: bool = True) -> list[list[Any]]:
        from retrdistill.hits import Hit

        started = time.perf_counter()
        scores, ids = self.retriever.batch_search_ids(queries, max(k, self.depth))
        first_ms = 1000 * (time.perf_counter() - started)
        keys = [f"q{i}" for i in range(len(queries))]
        first = {key: {d: float(s) for d, s in zip(row_ids, row_scores)} for key, row_ids, row_scores
                 in zip(keys, ids, scores)}
        done = rerank_run(self.scorer, dict(zip(keys, queries)), first, self.depth)
        self.last_timing = {"first_stage_ms": first_ms, "rerank_ms": 1000 * done.seconds, "pairs": done.pairs}
        out = []
        for key in keys:
            top = list(done.run.get(key, {}).items())[:k]
            fields = self.scorer.fields([d for d, _ in top]) if with_text and top else [("", "")] * len(top)
            out.append([Hit(d, s, text, title) for (d, s), (title, text) in zip(top, fields)])
        return out

    def search(self, query: str, k: int = 10, *, with_text: bool = True) -> list[Any]:
        return self.batch_search([query], k, with_text=with_text)[0]
