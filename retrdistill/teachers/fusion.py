"""A fused teacher: one teacher and BM25, each min-max normalised per query, in a weighted mean.

A fixed two-member case of :class:`retrdistill.teachers.ensemble.EnsembleTeacher` (members ``teacher`` with
``teacher_options`` and ``bm25``; ``normalise: minmax``, ``combine: weighted``), kept for its short options. Each
member is cached under its own fingerprint, like any ensemble's. Normalisation is within each query's candidate
list, so the weights mean the same on any collection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from retrdistill.teachers.ensemble import EnsembleTeacher, Member, normalise


def minmax(x):
    return normalise(x, "minmax")


class FusionTeacher(EnsembleTeacher):
    """Context: ``corpus`` and ``cache_dir``, handed on to the inner teacher and to BM25."""

    @dataclass
    class Options:
        teacher: str = "bi-encoder"
        teacher_options: dict[str, Any] = field(default_factory=dict, metadata={
            "part": {"kind": "teacher", "name": "teacher"}})
        teacher_weight: float = field(default=0.7, metadata={"min": 0})
        bm25_weight: float = field(default=0.3, metadata={"min": 0})
        rerank_depth: int = field(default=100, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.teacher in ("fusion", "ensemble"):
                raise ValueError(f"a fusion teacher cannot fuse a {self.teacher} teacher; use an ensemble")
            if self.teacher_weight < 0 or self.bm25_weight < 0 or self.teacher_weight + self.bm25_weight <= 0:
                raise ValueError("teacher_weight and bm25_weight must be >= 0, not both 0")

    output_neutral: ClassVar[tuple[str, ...]] = ("rerank_depth",)
    example_options: ClassVar[dict[str, Any]] = {"teacher_options": {"model": "offline:all-MiniLM-L6-v2"}}
    example_variants: ClassVar[dict[str, Any]] = {
        "teacher": "cross-encoder", "teacher_options": {"model": "offline:all-MiniLM-L6-v2", "max_seq_length": 64}}

    def member_specs(self) -> list[Member]:
        o = self.options
        return [Member(o.teacher, dict(o.teacher_options), float(o.teacher_weight)),
                Member("bm25", {}, float(o.bm25_weight))]

    @property
    def inner(self):
        return self.teachers[0]

    def fingerprint(self) -> dict:
        """The ensemble's: its members' fingerprints stand for ``teacher_options``."""
        opts = asdict(self.options)
        opts.pop("teacher_options")
        opts.pop("rerank_depth")
        return {**super().fingerprint(), "teacher": "fusion", "options": opts}

    def normalisation(self) -> str:
        return "minmax"

    def combination(self) -> str:
        return "weighted"
