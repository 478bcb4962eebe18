"""Ask for every sample whose utility reaches a fixed threshold (within the budget)."""

from __future__ import annotations

from typing import Any

from streamal.policies.base import Policy


class FixedThreshold(Policy):
    """Ask when ``utility >= threshold``.

    >>> p = FixedThreshold(budget=0.5, threshold=0.6, min_spend=0.0, warmup=0)
    >>> [p.decide(u) for u in (0.9, 0.1, 0.7, 0.65, 0.2)]
    [True, False, True, False, False]

    The fourth sample clears the threshold but would take spending over the budget of one in two.
    """

    name = "threshold"

    def __init__(self, budget: float = 0.1, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(budget, **kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold

    def _ask(self, utility: float) -> bool:
        return utility >= self.threshold
