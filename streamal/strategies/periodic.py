"""Periodic sampling: every ``1 / budget``-th sample, whatever the model says.

The utility is 1 for every sample, so the policy's budget window alone decides: it asks whenever the
recent spending is below the budget, which spaces the requests evenly (with any policy whose rule asks
for a maximal utility: all of streamal's). A baseline, like random sampling, but with no gaps and no
bursts.

>>> from streamal.policies import FixedThreshold
>>> s, p = PeriodicSampling(), FixedThreshold(budget=0.25, min_spend=0.0, warmup=0)
>>> "".join("x" if p.decide(s.utility({"a": 0.9, "b": 0.1})) else "-" for _ in range(16))
'x---x---x---x---'
"""

from __future__ import annotations

from streamal.messages import Proba
from streamal.strategies.base import Strategy


class PeriodicSampling(Strategy):
    """Utility 1 for every sample: the budget window spaces the requests evenly."""

    name = "periodic"

    def _utility(self, proba: Proba) -> float:
        return 1.0
