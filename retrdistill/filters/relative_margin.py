"""Filter ``relative-margin``: a negative must score at least ``ratio`` × |positive| below the positive."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retrdistill.filters import REFERENCES, reference_score
from retrdistill.parts import CandidateFilter, FilterView


class RelativeMargin(CandidateFilter):
    """Flags a negative scored above ``positive - ratio * |positive|``. Taking the absolute value keeps the
    threshold below the positive when scores are negative (a logit cross-encoder, a log-probability), where
    the usual ``ratio * positive`` would put it above. Still scale-dependent near zero: a positive scored 0.01
    leaves almost no margin; prefer ``normalised-margin`` across teachers."""

    @dataclass
    class Options:
        ratio: float = field(default=0.05, metadata={"min": 0})
        reference: str = "min"

        def __post_init__(self) -> None:
            if self.ratio < 0:
                raise ValueError("ratio must be >= 0")
            if self.reference not in REFERENCES:
                raise ValueError(f"reference must be one of {', '.join(REFERENCES)}")

    example_variants = {"ratio": 0.1, "reference": "max"}

    def flag(self, view: FilterView) -> np.ndarray:
        pos = reference_score(view.positive_scores, self.options.reference)
        return view.scores > pos - self.options.ratio * abs(pos)
