"""Probabilistic entropy sampling, as river's ``active.EntropySampler`` does it.

river asks for a label with probability ``(H / H_max) ** discount_factor`` (the entropy over the classes
given any probability, normalised; a higher discount factor asks less). As a utility for any policy:
``max(0, 1 - U / (H / H_max) ** discount_factor)`` with ``U`` uniform from the strategy's own seeded
generator, so a threshold policy at threshold ``t`` asks with probability ``(1 - t) (H / H_max) ** df``
(river's rule at ``t = 0``), and a rank or variable-uncertainty policy spends its budget on a random
selection that favours uncertain samples while still reaching confident ones.

>>> s = ProbabilisticEntropy(seed=1)
>>> [round(s.utility({"a": 0.5, "b": 0.5}), 3) for _ in range(3)]
[0.866, 0.153, 0.236]
>>> s.utility({"a": 1.0, "b": 0.0})  # certain: never asked but by the policy's floor
0.0
"""

from __future__ import annotations

import math

from streamal.messages import Proba
from streamal.strategies.base import Strategy


class ProbabilisticEntropy(Strategy):
    """``max(0, 1 - U / ratio ** discount_factor)``, ``ratio`` the entropy over its largest value."""

    name = "probabilistic_entropy"

    def __init__(self, seed: int | None = None, discount_factor: float = 3.0) -> None:
        super().__init__(seed)
        if discount_factor < 0.0:
            raise ValueError(f"discount_factor must be non-negative, got {discount_factor}")
        self.discount_factor = discount_factor

    def _utility(self, proba: Proba) -> float:
        u = self._rng.random()
        h, positive = 0.0, 0
        for p in proba.values():
            if p > 0.0:
                h -= p * math.log(p)
                positive += 1
        if positive < 2 or h <= 0.0:
            return 0.0
        ask = min(1.0, h / math.log(positive)) ** self.discount_factor
        return max(0.0, 1.0 - u / ask) if ask > 0.0 else 0.0
