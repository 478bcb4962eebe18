"""The balanced incremental quantile filter (Kottke, Krempl and Spiliopoulou 2015, "Probabilistic active
learning in datastreams").

A sample is asked when its utility reaches the ``1 - budget`` quantile of the last ``w`` utilities,
lowered when the policy has asked less than the budget and raised when it has asked more: the balance
``budget * seen - asked`` (over the base's budget window), times the range of the recent utilities, over
``w_tol``. The quantile follows the scale of any strategy's utilities; the balance spends what the
quantile alone leaves unspent (after a shift to more confident predictions, say), within ``w_tol``
requests.

>>> p = BalancedIncrementalQuantileFilter(budget=0.1, min_spend=0.0)
>>> import random
>>> rng = random.Random(0)
>>> sum(p.decide(rng.random()) for _ in range(2000))
198
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from typing import Any

from streamal.policies.base import Policy


class BalancedIncrementalQuantileFilter(Policy):
    """Ask when ``utility >= quantile(last w, 1 - budget) - range * (budget * seen - asked) / w_tol``."""

    name = "biqf"

    def __init__(self, budget: float = 0.1, w: int = 100, w_tol: float = 50.0, **kwargs: Any) -> None:
        super().__init__(budget, **kwargs)
        if w < 2:
            raise ValueError(f"w must be at least 2, got {w}")
        if w_tol <= 0.0:
            raise ValueError(f"w_tol must be positive, got {w_tol}")
        self.w = w
        self.w_tol = w_tol
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []

    def _ask(self, utility: float) -> bool:
        recent, ranked = self._recent, self._sorted
        if len(recent) == self.w:
            del ranked[bisect_left(ranked, recent.popleft())]
        recent.append(utility)
        insort(ranked, utility)
        # the 1 - budget quantile, interpolated as numpy's default does
        budget, last = self.budget, len(ranked) - 1
        position = (1.0 - budget) * last
        low = int(position)
        theta = ranked[low]
        if low < last:
            theta += (ranked[low + 1] - theta) * (position - low)
        left = budget * self._seen - self._asked  # requests the budget window still allows
        return utility >= theta - (ranked[last] - ranked[0]) * left / self.w_tol

    def state(self) -> dict[str, Any]:
        return {**super().state(), "w": self.w, "w_tol": self.w_tol}
