"""A teacher ensemble: registered teachers, each with its own options, combined per query.

Each member's scores of a query's group are normalised within the group (``minmax`` to [0, 1], ``zscore``
to mean 0 and standard deviation 1, ``rank`` to ``(n - rank) / (n - 1)`` with ties sharing their mean rank, or
``none``), then averaged with the members' weights (``combine: mean`` needs equal weights; ``weighted`` takes
each member's ``weight``). Normalising within the group makes the weights mean the same for teachers of any
scale (cosine similarities, cross-encoder logits, an LLM's log-odds, BM25).

Members are scored through the score cache each under its own fingerprint
(:class:`retrdistill.score_cache.CachedScorer`, used by the score stage and by :meth:`score_groups`), so an
ensemble over teachers scored before rescores nothing, and a member shared by two ensembles is scored once. The
ensemble's own scores are never cached: they depend on the whole group. As a retriever it pools every member's
top ``rerank_depth`` and ranks the pool by the combined score.

    teacher: ensemble
    options:
      normalise: minmax
      combine: weighted
      members:
        - {teacher: bi-encoder, options: {model: "offline:all-mpnet-base-v2"}, weight: 1.0}
        - {teacher: llm, options: {model: "offline:qwen2.5-coder-1.5b-instruct"}, weight: 2.0}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill import registry
from retrdistill.data.beir import Corpus
from retrdistill.parts import Run, Teacher

NORMALISERS = ("minmax", "zscore", "rank", "none")
COMBINERS = ("mean", "weighted")
MEMBER_KEYS = ("teacher", "options", "weight")


def normalise(scores: np.ndarray, method: str) -> np.ndarray:
    """One query group's scores normalised within the group (float64); a constant group becomes zeros."""
    x = np.asarray(scores, dtype=np.float64)
    if method not in NORMALISERS:
        raise ValueError(f"unknown normalisation {method!r}; expected one of: {', '.join(NORMALISERS)}")
    if x.size == 0 or method == "none":
        return x
    if x.max() - x.min() < 1e-12:  # nothing to tell the passages apart
        return np.zeros_like(x)
    if method == "minmax":
        return (x - x.min()) / (x.max() - x.min())
    if method == "zscore":
        return (x - x.mean()) / x.std()
    if method == "rank":
        from scipy.stats import rankdata

        return (rankdata(x, method="average") - 1.0) / (x.size - 1)  # best 1, worst 0
    raise AssertionError(method)


@dataclass
class Member:
    teacher: str
    options: dict[str, Any]
    weight: float


class EnsembleTeacher(Teacher):
    """Context: ``corpus`` and ``cache_dir``, handed on to every member (and the score cache there)."""

    @dataclass
    class Options:
        # {teacher, options, weight}
        members: list[dict[str, Any]] = field(default_factory=list, metadata={
            "part": {"kind": "teacher", "name": "teacher", "each": True}})
        normalise: str = "minmax"
        combine: str = "mean"
        rerank_depth: int = field(default=100, metadata={"min": 1})

        def __post_init__(self) -> None:
            if not self.members:
                raise ValueError("an ensemble needs members: [{teacher: NAME, options: {...}, weight: 1.0}, ...]")
            for i, m in enumerate(self.members):
                if not isinstance(m, dict) or "teacher" not in m or set(m) - set(MEMBER_KEYS):
                    raise ValueError(f"member {i + 1}: expected {{teacher, options, weight}}, got {m!r}")
                registry.entry("teacher", m["teacher"])
                if not isinstance(m.get("options", {}), dict):
                    raise ValueError(f"member {i + 1}: options must be a mapping, got {m['options']!r}")
                weight = m.get("weight", 1.0)
                if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
                    raise ValueError(f"member {i + 1}: weight must be a number >= 0, got {weight!r}")
            if self.normalise not in NORMALISERS:
                raise ValueError(f"normalise must be one of {', '.join(NORMALISERS)}, got {self.normalise!r}")
            if self.combine not in COMBINERS:
                raise ValueError(f"combine must be one of {', '.join(COMBINERS)}, got {self.combine!r}")
            weights = [float(m.get("weight", 1.0)) for m in self.members]
            if self.combine == "mean" and len(set(weights)) > 1:
                raise ValueError(f"members have weights {weights}: use combine: weighted, or drop the weights")
            if sum(weights) <= 0:
                raise ValueError("at least one member needs a weight above 0")

    output_neutral: ClassVar[tuple[str, ...]] = ("rerank_depth",)
    example_options: ClassVar[dict[str, Any]] = {"members": [
        {"teacher": "bi-encoder", "options": {"model": "offline:all-MiniLM-L6-v2"}}, {"teacher": "bm25"}]}
    example_variants: ClassVar[dict[str, Any]] = {
        "members": [{"teacher": "bi-encoder", "options": {"model": "offline:all-MiniLM-L6-v2"}},
                    {"teacher": "bm25", "options": {"k1": 0.9}}],
        "normalise": "rank", "combine": "weighted"}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        self.spec = self.member_specs()
        self.teachers = [registry.build("teacher", m.teacher, m.options, corpus=self.corpus, cache_dir=self.cache_dir)
                         for m in self.spec]
        total = sum(m.weight for m in self.spec)
        self.weights = [m.weight / total for m in self.spec]
        self.method = self.normalisation()

    def member_specs(self) -> list[Member]:
        """The members as declared: teacher name, its options, weight."""
        return [Member(m["teacher"], dict(m.get("options") or {}), float(m.get("weight", 1.0)))
                for m in self.options.members]

    def normalisation(self) -> str:
        return self.options.normalise

    def combination(self) -> str:
        return self.options.combine

    def fingerprint(self) -> dict:
        """Each member by its own fingerprint (which stands for its options), with its share of the weight."""
        return {"teacher": "ensemble", "normalise": self.method, "combine": self.combination(),
                "members": [{"fingerprint": t.fingerprint(), "weight": w} for t, w in zip(self.teachers, self.weights)]}

    def members(self) -> list[Teacher]:
        return list(self.teachers)

    def combine(self, member_scores: list[dict[str, np.ndarray]], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        out = {}
        for q, docs in groups.items():
            total = np.zeros(len(docs), dtype=np.float64)
            for w, scores in zip(self.weights, member_scores):
                total += w * normalise(scores[q], self.method)
            out[q] = total.astype(np.float32)
        return out

    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """The combined scores, each member read from (and written to) its own entries of the score cache."""
        from retrdistill.score_cache import SCORES_FILE, CachedScorer

        scorer = CachedScorer(Path(self.cache_dir) / SCORES_FILE)
        try:
            return scorer.scores(self, queries, groups)
        finally:
            scorer.close()

    def retrieve(self, queries: dict[str, str], k: int, **kwargs: object) -> Run:
        """Every member's top ``max(k, rerank_depth)`` pooled per query, ranked by the combined score."""
        depth = max(k, self.options.rerank_depth)
        pools: dict[str, dict[str, None]] = {q: {} for q in queries}
        for teacher in self.teachers:
            for q, docs in teacher.retrieve(queries, depth, **kwargs).items():
                pools.setdefault(q, {}).update(dict.fromkeys(sorted(docs, key=lambda d: -docs[d])))
        groups = {q: list(docs) for q, docs in pools.items() if docs}
        fused = self.score_groups(queries, groups)
        run: Run = {}
        for q, docs in groups.items():
            order = np.argsort(-fused[q], kind="stable")[:k]
            run[q] = {docs[i]: float(fused[q][i]) for i in order}
        return run
