"""Spend the budget at a fixed rate on the samples that rank highest among the recent ones."""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from streamal.policies.base import Policy


class FixedRate(Policy):
    """Ask when the utility is in the top ``budget`` fraction of the last ``rank_window`` utilities.

    Utilities are compared by rank, not value, so the labelling rate is the budget whatever scale the
    strategy's utilities have; the windowed spending estimate of the base class keeps it a ceiling.

    >>> p = FixedRate(budget=0.25, rank_window=8, min_spend=0.0, warmup=0)
    >>> sum(p.decide(u / 100) for u in range(100))
    25
    """

    name = "fixed_rate"

    def __init__(self, budget: float = 0.1, rank_window: int = 500, **kwargs: Any) -> None:
        super().__init__(budget, **kwargs)
        if rank_window < 2:
            raise ValueError(f"rank_window must be at least 2, got {rank_window}")
        self.rank_window = rank_window
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []

    def _ask(self, utility: float) -> bool:
        recent, ranked = self._recent, self._sorted
        if len(recent) == self.rank_window:
            del ranked[bisect.bisect_left(ranked, recent.popleft())]
        recent.append(utility)
        bisect.insort(ranked, utility)
        # the utility's rank from the top among the recent ones
        above = len(ranked) - bisect.bisect_right(ranked, utility)
        return above < self.budget * len(ranked)
