"""The teacher a ``rate-teachers`` step chose for this corpus: its pick, or its weighted ensemble.

    - {id: scores, stage: score, candidates: "@neg", teacher: chosen, options: {choice: "@rate"}}

With the choice's ``select: pick`` this is the picked candidate itself (same fingerprint, so its cached scores and
corpus embeddings are shared with every other use of that teacher); with ``select: weights`` it is an ``ensemble``
of the weighted candidates, each normalised within the group (``normalise``, z-scores by default) and cached on its
own. The choice is read when the part is built, so a pipeline's score step keys on the chosen teacher's own
fingerprint: a new choice (another corpus, other probes) makes it stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retrdistill import registry
from retrdistill.data.beir import Corpus
from retrdistill.parts import Run, Teacher


class ChosenTeacher(Teacher):
    """Context: ``corpus`` and ``cache_dir``, handed on to the chosen teacher(s)."""

    @dataclass
    class Options:
        choice: str = ""  # a teacher-choice artefact folder ("@rate" in a pipeline)
        normalise: str = "zscore"  # select: weights: how members are normalised within a group
        rerank_depth: int = field(default=100, metadata={"min": 1})

        def __post_init__(self) -> None:
            from retrdistill.teachers.ensemble import NORMALISERS

            if not self.choice:
                raise ValueError("'choice' (a rate-teachers step's folder, e.g. \"@rate\") is required")
            if self.normalise not in NORMALISERS:
                raise ValueError(f"normalise must be one of {', '.join(NORMALISERS)}, got {self.normalise!r}")

    output_neutral: ClassVar[tuple[str, ...]] = ("rerank_depth",)
    example_options: ClassVar[dict[str, Any]] = {"choice": "{small_teacher_choice}"}
    example_variants: ClassVar[dict[str, Any]] = {"choice": "{small_teacher_pick}", "normalise": "minmax"}
    corpus: Corpus
    cache_dir: Path

    def setup(self) -> None:
        from retrdistill.kinds import read_choice

        choice = read_choice(self.options.choice)
        self.choice = choice
        if choice.get("weights"):
            members = [{**choice["candidates"][name], "weight": weight} for name, weight in choice["weights"].items()]
            self.inner = registry.build("teacher", "ensemble", {
                "members": members, "normalise": self.options.normalise, "combine": "weighted",
                "rerank_depth": self.options.rerank_depth}, corpus=self.corpus, cache_dir=self.cache_dir)
        else:
            picked = choice["candidates"][choice["picked"]]
            self.inner = registry.build("teacher", picked["teacher"], picked.get("options") or {},
                                        corpus=self.corpus, cache_dir=self.cache_dir)

    def fingerprint(self) -> dict:
        return self.inner.fingerprint()

    def resolved(self) -> Teacher:
        return self.inner.resolved()

    def members(self) -> list[Teacher]:
        return self.inner.members()

    def combine(self, member_scores: list[dict[str, np.ndarray]], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        return self.inner.combine(member_scores, groups)

    def score_groups(self, queries: dict[str, str], groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
        return self.inner.score_groups(queries, groups)

    def retrieve(self, queries: dict[str, str], k: int, **kwargs: Any) -> Run:
        return self.inner.retrieve(queries, k, **kwargs)
