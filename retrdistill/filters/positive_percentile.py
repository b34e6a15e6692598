"""Filter ``positive-percentile``: a negative scored above the p-th percentile of all positives' scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retrdistill.parts import CandidateFilter, FilterView


class PositivePercentile(CandidateFilter):
    """Flags a negative whose teacher score exceeds the ``percentile``-th percentile of every training query's
    positive scores (learned in :meth:`fit`): with ``percentile: 10``, a negative the teacher scores higher than
    nine positives in ten is treated as a likely false negative. A percentile is scale-free, so the same setting
    suits any teacher."""

    @dataclass
    class Options:
        percentile: float = field(default=10.0, metadata={"min": 0, "max": 100})

        def __post_init__(self) -> None:
            if not 0.0 <= self.percentile <= 100.0:
                raise ValueError("percentile must be in [0, 100]")

    example_variants = {"percentile": 25.0}

    def setup(self) -> None:
        self.threshold: float | None = None

    def fit(self, positive_scores: np.ndarray) -> None:
        self.threshold = float(np.percentile(positive_scores, self.options.percentile)) if len(positive_scores) \
            else float("inf")

    def flag(self, view: FilterView) -> np.ndarray:
        if self.threshold is None:
            raise RuntimeError("positive-percentile: fit() must see the positives' scores first")
        return view.scores > self.threshold
