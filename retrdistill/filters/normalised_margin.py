"""Filter ``normalised-margin``: the margin test on per-query normalised scores, the same for any teacher scale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrdistill.filters import REFERENCES, reference_score
from retrdistill.parts import CandidateFilter, FilterView

METHODS = ("minmax", "zscore")


def normalise(values: np.ndarray, method: str) -> np.ndarray:
    """Min-max to [0, 1] or z-score over ``values`` (one query's candidates); constant values map to 0."""
    values = np.asarray(values, dtype=np.float64)
    if method == "minmax":
        span = values.max() - values.min()
        return (values - values.min()) / span if span > 0 else np.zeros_like(values)
    if method == "zscore":
        std = values.std()
        return (values - values.mean()) / std if std > 0 else np.zeros_like(values)
    raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")


class NormalisedMargin(CandidateFilter):
    """Per query, normalises the teacher's scores of the positives and negatives together (``minmax`` or
    ``zscore``), then flags a negative scored above ``positive - margin`` on that scale. Both normalisations
    are unchanged by any positive rescaling and shift of the scores, so one threshold keeps the same
    candidates for a cosine bi-encoder, a logit cross-encoder and an LLM's log-probabilities."""

    @dataclass
    class Options:
        margin: float = 0.1
        method: str = "minmax"
        reference: str = "min"

        def __post_init__(self) -> None:
            if self.method not in METHODS:
                raise ValueError(f"method must be one of {', '.join(METHODS)}")
            if self.reference not in REFERENCES:
                raise ValueError(f"reference must be one of {', '.join(REFERENCES)}")

    example_variants = {"margin": 0.2, "method": "zscore", "reference": "max"}

    def flag(self, view: FilterView) -> np.ndarray:
        n_pos = len(view.positive_scores)
        norm = normalise(np.concatenate([view.positive_scores, view.scores]), self.options.method)
        pos = reference_score(norm[:n_pos], self.options.reference)
        return norm[n_pos:] > pos - self.options.margin
