"""A fused teacher: per-query min-max normalised, weighted sum of another teacher's scores and BM25's.

Normalisation is within each query's candidate list, so the weights mean the same on any collection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill import registry
from retrdistill.data.beir import Corpus
from retrdistill.miners.bm25 import BM25Miner
from retrdistill.parts import Run, Teacher


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = x.min(), x.max()
    return np.zeros_like(x) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


class FusionTeacher(Teacher):
    """Context: ``corpus`` and ``cache_dir``, handed on to the inner teacher and to BM25."""

    @dataclass
    class Options:
        teacher: str = "bi-encoder"
        teacher_options: dict[str, Any] = field(default_factory=dict)
        teacher_weight: float = 0.7
        bm25_weight: float = 0.3
        rerank_depth: int = 100

        def __post_init__(self) -> None:
            if self.teacher == "fusion":
                raise ValueError("a fusion teacher cannot fuse another fusion teacher")

    example_options: ClassVar[dict[str, Any]] = {"teacher_options": {"model": "offline:all-MiniLM-L6-v2"}}
    example_variants: ClassVar[dict[str, Any]] = {
        "teacher": "cross-encoder", "teacher_options": {"model": "offline:all-MiniLM-L6-v2", "max_seq_length": 64}}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        self.inner = registry.build("teacher", self.options.teacher, self.options.teacher_options, corpus=self.corpus,
                                    cache_dir=self.cache_dir)
        self.bm25 = BM25Miner(corpus=self.corpus, cache_dir=self.cache_dir)

    def fingerprint(self) -> dict:
        """The inner teacher's and BM25's fingerprints stand for ``teacher_options``."""
        opts = asdict(self.options)
        opts.pop("teacher_options")
        return {"teacher": "fusion", "inner": self.inner.fingerprint(), "bm25": self.bm25.fingerprint(), "options": opts}

    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        inner = self.inner.score_groups(queries, groups)
        lexical = self.bm25.score_pairs(queries, groups)
        w_t, w_b = self.options.teacher_weight, self.options.bm25_weight
        return {q: (w_t * minmax(inner[q]) + w_b * minmax(lexical[q])).astype(np.float32) for q in groups}

    def retrieve(self, queries: dict[str, str], k: int, **_: object) -> Run:
        depth = max(k, self.options.rerank_depth)
        dense = self.inner.retrieve(queries, depth)
        lexical = {q: dict(h) for q, h in self.bm25.search(queries, depth).items()}
        groups = {q: sorted(set(dense.get(q, {})) | set(lexical.get(q, {}))) for q in queries}
        groups = {q: docs for q, docs in groups.items() if docs}
        fused = self.score_groups(queries, groups)
        run: Run = {}
        for q, docs in groups.items():
            order = np.argsort(-fused[q], kind="stable")[:k]
            run[q] = {docs[i]: float(fused[q][i]) for i in order}
        return run
