"""A BM25 teacher: bm25s's score of each (query, passage) pair, through the BM25 miner's cached index.

Weak alone, it is mostly an ensemble member (lexical evidence beside a neural teacher; ``fusion`` is an
ensemble of one teacher and this one). As a retriever it is BM25's own search.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill import registry
from retrdistill.data.beir import Corpus
from retrdistill.miners.bm25 import BM25Miner
from retrdistill.parts import Run, Teacher


class BM25Teacher(Teacher):
    """Context: ``corpus`` (scored and searched) and ``cache_dir`` (the BM25 index, shared with the miner)."""

    Options = BM25Miner.Options
    example_variants: ClassVar[dict[str, Any]] = BM25Miner.example_variants
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        self.bm25 = registry.build("miner", "bm25", asdict(self.options), corpus=self.corpus,
                                   cache_dir=self.cache_dir)

    def fingerprint(self) -> dict:
        return {"teacher": "bm25", "bm25": self.bm25.fingerprint()}

    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        return self.bm25.score_pairs(queries, groups)

    def retrieve(self, queries: dict[str, str], k: int, **_: object) -> Run:
        return {q: dict(hits) for q, hits in self.bm25.search(queries, k).items()}
