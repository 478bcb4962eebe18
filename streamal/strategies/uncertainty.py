"""Uncertainty sampling (Lewis and Gale 1994; Settles 2009): ask where the model is least sure.

Each utility is normalised to [0, 1] by its largest value for the number of known classes, so a policy's
threshold means the same with 2 classes as with 10.

>>> p = {"a": 0.5, "b": 0.3, "c": 0.2}
>>> round(LeastConfidence().utility(p), 3), round(Margin().utility(p), 3), round(Entropy().utility(p), 3)
(0.75, 0.8, 0.937)
>>> Entropy().utility({"a": 1.0})  # one known class: nothing to be sure about yet
1.0
"""

from __future__ import annotations

from math import log

from streamal.messages import Proba
from streamal.strategies.base import Strategy


class LeastConfidence(Strategy):
    """``(1 - max p) / (1 - 1/K)``."""

    name = "least_confidence"

    def _utility(self, proba: Proba) -> float:
        k = len(proba)
        return min(1.0, max(0.0, (1.0 - max(proba.values())) * k / (k - 1)))


class Margin(Strategy):
    """``1 - (p1 - p2)`` for the two most probable classes."""

    name = "margin"

    def _utility(self, proba: Proba) -> float:
        first = second = 0.0
        for p in proba.values():
            if p > first:
                first, second = p, first
            elif p > second:
                second = p
        return min(1.0, max(0.0, 1.0 - (first - second)))


class Entropy(Strategy):
    """Shannon entropy over the known classes divided by ``log K``."""

    name = "entropy"

    def _utility(self, proba: Proba) -> float:
        h = 0.0
        for p in proba.values():
            if p > 0.0:
                h -= p * log(p)
        return min(1.0, max(0.0, h / log(len(proba))))
