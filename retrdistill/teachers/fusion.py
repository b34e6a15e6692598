"""A fused teacher: per-query min-max normalised, weighted sum of another teacher's scores and BM25's.

Normalisation is within each query's candidate list, so the weights mean the same on any collection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrdistill import registry
from retrdistill.data.beir import Corpus
from retrdistill.miners.bm25 import BM25Miner

Run = dict[str, dict[str, float]]


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = x.min(), x.max()
    return np.zeros_like(x) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


class FusionTeacher:
    @dataclass
    class Options:
        teacher: str = "bi-encoder"
        teacher_options: dict[str, Any] = field(default_factory=dict)
        teacher_weight: float = 0.7
        bm25_weight: float = 0.3
        rerank_depth: int = 100

    def __init__(self, options: Options, corpus: Corpus, cache_dir: Path) -> None:
        if options.teacher == "fusion":
            raise ValueError("a fusion teacher cannot fuse another fusion teacher")
        self.options = options
        self.corpus = corpus
        self.inner = registry.build("teacher", options.teacher, options.teacher_options, corpus=corpus, cache_dir=cache_dir)
        self.bm25 = BM25Miner(BM25Miner.Options(), corpus, cache_dir)

    @classmethod
    def from_options(cls, options: Options, *, corpus: Corpus, cache_dir: Path, **_: object) -> "FusionTeacher":
        return cls(options, corpus, cache_dir)

    def fingerprint(self) -> dict:
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
