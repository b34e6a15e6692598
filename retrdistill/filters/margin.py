"""Filter ``margin``: a negative must score at least ``margin`` below the positive (in the teacher's units)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrdistill.filters import REFERENCES, reference_score
from retrdistill.parts import CandidateFilter, FilterView


class AbsoluteMargin(CandidateFilter):
    """Flags a negative scored above ``positive - margin`` (``margin`` 0: scored above the positive). The
    threshold is in the teacher's own units, so it must be chosen per teacher; ``normalised-margin`` is not."""

    @dataclass
    class Options:
        margin: float = 0.0
        reference: str = "min"  # min / max / mean of the positives' scores

        def __post_init__(self) -> None:
            if self.reference not in REFERENCES:
                raise ValueError(f"reference must be one of {', '.join(REFERENCES)}")

    example_variants = {"margin": 0.1, "reference": "max"}

    def flag(self, view: FilterView) -> np.ndarray:
        threshold = reference_score(view.positive_scores, self.options.reference) - self.options.margin
        return view.scores > threshold
