"""Random sampling: the baseline every other strategy must beat."""

from __future__ import annotations

from streamal.messages import Proba
from streamal.strategies.base import Strategy


class RandomStrategy(Strategy):
    """A uniform random utility, so any policy turns it into random sampling at its budget.

    >>> s = RandomStrategy(seed=1)
    >>> [round(s.utility({"a": 0.9, "b": 0.1}), 3) for _ in range(3)]
    [0.134, 0.847, 0.764]
    """

    name = "random"

    def utility(self, proba: Proba) -> float:
        # no cold-start special case: random sampling stays random from the first sample
        return self._rng.random()

    def _utility(self, proba: Proba) -> float:  # pragma: no cover - utility() is overridden
        return self._rng.random()
