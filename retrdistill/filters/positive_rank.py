"""Filter ``positive-rank`` (a query filter): drop a query whose positive the teacher does not rank highly."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retrdistill.parts import CandidateFilter, FilterView


class PositiveRank(CandidateFilter):
    """Drops the whole query when the teacher ranks its best positive below ``max_rank`` among the query's
    candidates (rank 1 + the number of negatives scored above it), the consistency filter of InPars and
    Promptagator for generated queries: a query the teacher does not match to its source passage is likely bad."""

    level = "query"

    @dataclass
    class Options:
        max_rank: int = field(default=1, metadata={"min": 1})

        def __post_init__(self) -> None:
            if self.max_rank < 1:
                raise ValueError("max_rank must be >= 1")

    example_variants = {"max_rank": 3}

    def flag(self, view: FilterView) -> np.ndarray:
        rank = 1 + int(np.sum(view.scores > np.max(view.positive_scores)))
        return np.array([rank > self.options.max_rank])
