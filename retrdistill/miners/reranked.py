"""Miner ``reranked``: a first-stage miner's candidates re-ranked by any registered teacher (cross-encoder mining).

The first stage (BM25, dense) retrieves ``first_depth`` passages per query; the teacher scores each pair through
the shared score cache (``cache_dir/scores.sqlite``, keyed on the teacher's fingerprint, so a re-run or a later
score step with the same teacher rescores nothing); the hits come back in the teacher's order with the teacher's
scores. The mine step's ``rank_min``/``rank_max`` then pick negatives from a rank range of the re-ranked list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from retrdistill import registry
from retrdistill.parts import Hits, Miner
from retrdistill.score_cache import SCORES_FILE, CachedScorer

log = logging.getLogger(__name__)


class RerankedMiner(Miner):
    """Options: ``first_stage`` / ``first_stage_options`` (a registered miner), ``teacher`` / ``teacher_options``
    (a registered teacher), ``first_depth`` (passages the first stage retrieves per query; at least the mine
    step's ``depth``)."""

    @dataclass
    class Options:
        teacher: str = ""
        teacher_options: dict[str, Any] = field(default_factory=dict, metadata={
            "part": {"kind": "teacher", "name": "teacher"}})
        first_stage: str = "bm25"
        first_stage_options: dict[str, Any] = field(default_factory=dict, metadata={
            "part": {"kind": "miner", "name": "first_stage"}})
        first_depth: int = field(default=100, metadata={"min": 1})

        def __post_init__(self) -> None:
            if not self.teacher:
                raise ValueError("'teacher' (a registered teacher that re-ranks the first stage) is required")
            registry.entry("teacher", self.teacher)
            registry.entry("miner", self.first_stage)
            if self.first_stage == "reranked":
                raise ValueError("first_stage cannot itself be 'reranked'")
            if self.first_depth < 1:
                raise ValueError("first_depth must be positive")

    example_options: ClassVar[dict[str, Any]] = {"teacher": "bi-encoder", "teacher_options": {"model": "{minilm}"}}
    example_variants: ClassVar[dict[str, Any]] = {
        "first_depth": 50, "teacher": "cross-encoder", "first_stage": "dense", "first_stage_options": {"k1": 1.2},
        "teacher_options": {"model": "{minilm}", "max_seq_length": 64}}

    def setup(self) -> None:
        o = self.options
        self.first = registry.build("miner", o.first_stage, o.first_stage_options, corpus=self.corpus,
                                    cache_dir=self.cache_dir)
        self.teacher = registry.build("teacher", o.teacher, o.teacher_options, corpus=self.corpus,
                                      cache_dir=self.cache_dir)
        self.pairs_scored = self.pairs_from_cache = 0

    def fingerprint(self) -> dict[str, Any]:
        return {"miner": "reranked", "first_stage": self.first.fingerprint(), "teacher": self.teacher.fingerprint(),
                "first_depth": self.options.first_depth}

    def stats(self) -> dict[str, Any]:
        return {"pairs_scored": self.pairs_scored, "pairs_from_cache": self.pairs_from_cache}

    def search(self, queries: dict[str, str], depth: int) -> Hits:
        first = self.first.search(queries, max(depth, self.options.first_depth))
        groups = {q: [d for d, _ in first.get(q, [])] for q in queries}
        scorer = CachedScorer(Path(self.cache_dir) / SCORES_FILE)  # an ensemble: each member its own entries
        try:
            scores = scorer.scores(self.teacher, queries, groups)
        finally:
            scorer.close()
        self.pairs_scored += scorer.scored
        self.pairs_from_cache += scorer.from_cache
        log.debug("reranked miner: %d pairs scored by the teacher, %d from cache", scorer.scored, scorer.from_cache)
        out: Hits = {}
        for q, docs in groups.items():
            ranked = sorted(range(len(docs)), key=lambda i: (-scores[q][i], i))  # ties: first stage order
            out[q] = [(docs[i], float(scores[q][i])) for i in ranked[:depth]]
        return out
