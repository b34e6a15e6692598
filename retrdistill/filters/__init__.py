"""Candidate filters for the ``select`` stage, one small module per filter (base class:
:class:`retrdistill.parts.CandidateFilter`).

Every filter reads the teacher's scores of one query's group (:class:`retrdistill.parts.FilterView`) and flags
negatives, or the whole query; the stage drops or relabels what is flagged and counts it per filter.
"""

from __future__ import annotations

import numpy as np

REFERENCES = ("min", "max", "mean")


def reference_score(positive_scores: np.ndarray, how: str) -> float:
    """The positive score a negative is compared with: the weakest (``min``, the default: a negative must stay
    below every positive), the strongest (``max``) or the ``mean`` positive."""
    if how not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, not {how!r}")
    return float({"min": np.min, "max": np.max, "mean": np.mean}[how](positive_scores))
