"""Rescaling the teacher's scores before the training labels are made (``TrainConfig.teacher_scale``).

Margin-MSE fits the student's margins to the teacher's margins in absolute units, so a teacher whose scores
live on another scale than the student's similarities (an LLM re-ranker's logits against a SPLADE student's
dot products, or cosine teachers against unbounded students) is fitted badly however good its ranking is.
One setting, applied in one place (:meth:`retrdistill.training.data.TrainingInputs.groups`, which every
training-data builder reads), rescales each query's scores first, for every student:

* ``mode: none`` (default): the scores as the teacher gave them;
* ``mode: factor``: every score times ``factor``;
* ``mode: standardise``: per query, over all of its scored candidates (positives and every scored negative, not
  only the ones a row keeps), ``(s - mean) / std``, times ``factor``; a query whose candidates all score the same
  gets zeros.

Listwise KL is shift-invariant, Margin-MSE uses differences, so only the spread matters to either loss.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from retrdistill.kinds import ScoredGroup


@dataclass(frozen=True)
class TeacherScale:
    """How teacher scores are rescaled. ``mode``: ``none``, ``factor`` or ``standardise``; ``factor``: the
    multiplier (``factor``), or the standard deviation after standardising (``standardise``)."""

    mode: str = "none"
    factor: float = field(default=1.0, metadata={"min": 0, "exclusive_min": True})

    MODES: ClassVar[tuple[str, ...]] = ("none", "factor", "standardise")

    def __post_init__(self) -> None:
        if self.mode not in self.MODES:
            raise ValueError(f"teacher_scale mode must be one of {', '.join(self.MODES)}, got {self.mode!r}")
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or not self.factor > 0:
            raise ValueError(f"teacher_scale factor must be a positive number, got {self.factor!r}")
        if self.mode == "none" and self.factor != 1.0:
            raise ValueError("teacher_scale factor applies to mode factor or standardise, not none")

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def as_config(self) -> dict[str, Any]:
        """The canonical config value: empty for ``none`` (the default), both fields otherwise."""
        return {} if not self.active else {"mode": self.mode, "factor": float(self.factor)}

    def scores(self, scores: list[float]) -> list[float]:
        """One query's candidate scores, rescaled."""
        values = [float(s) for s in scores]
        if self.mode == "none":
            return values
        if self.mode == "factor":
            return [s * self.factor for s in values]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((s - mean) ** 2 for s in values) / len(values))
        if std == 0:
            return [0.0] * len(values)
        return [(s - mean) / std * self.factor for s in values]

    def group(self, group: ScoredGroup) -> ScoredGroup:
        """``group`` with its scores rescaled (the same group when ``mode`` is ``none``)."""
        return group if not self.active else dataclasses.replace(group, scores=self.scores(group.scores))


def teacher_scale(value: dict[str, Any] | None) -> TeacherScale:
    """The :class:`TeacherScale` of a config value; a ConfigError lists the known keys on a typo."""
    from retrdistill.errors import ConfigError

    value = dict(value or {})
    unknown = sorted(set(value) - {"mode", "factor"})
    if unknown:
        raise ConfigError(f"unknown teacher_scale key(s) {', '.join(unknown)}; expected: factor, mode")
    try:
        return TeacherScale(**value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
