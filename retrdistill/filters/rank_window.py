"""Filter ``rank-window``: keep only negatives the miner ranked between ``min_rank`` and ``max_rank``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retrdistill.parts import CandidateFilter, FilterView


class RankWindow(CandidateFilter):
    """Flags a negative whose 1-based miner rank (known positives removed) is outside [min_rank, max_rank]:
    the top ranks hold most false negatives, the deep ranks the easy ones."""

    @dataclass
    class Options:
        min_rank: int = field(default=1, metadata={"min": 1})
        max_rank: int = field(default=1000, metadata={"min": 1})

        def __post_init__(self) -> None:
            if not 1 <= self.min_rank <= self.max_rank:
                raise ValueError("need 1 <= min_rank <= max_rank")

    example_variants = {"min_rank": 3}

    def flag(self, view: FilterView) -> np.ndarray:
        return (view.ranks < self.options.min_rank) | (view.ranks > self.options.max_rank)
