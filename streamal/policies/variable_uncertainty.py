"""Variable and randomized variable uncertainty (Žliobaitė et al. 2014).

The threshold adapts: after each request it rises, after each sample let go it falls, so the policy keeps
asking for the most uncertain part of the stream even when the model becomes more confident over time.
In utility terms (higher utility = less confident), the policy asks when ``1 - utility < theta``.
"""

from __future__ import annotations

from typing import Any

from streamal.policies.base import Policy


class VariableUncertainty(Policy):
    """Asks when ``1 - utility < theta``; ``theta`` shrinks by ``step`` after a request, grows otherwise.

    >>> p = VariableUncertainty(budget=0.2, min_spend=0.0, warmup=0)
    >>> sum(p.decide(0.3) for _ in range(1000))
    200
    """

    name = "variable_uncertainty"

    def __init__(self, budget: float = 0.1, step: float = 0.01, **kwargs: Any) -> None:
        super().__init__(budget, **kwargs)
        if not 0.0 < step < 1.0:
            raise ValueError(f"step must be in (0, 1), got {step}")
        self.step = step
        self.theta = 1.0

    def _threshold(self) -> float:
        return self.theta

    def _ask(self, utility: float) -> bool:
        if 1.0 - utility < self._threshold():
            self.theta *= 1.0 - self.step
            return True
        self.theta = min(1.0, self.theta * (1.0 + self.step))
        return False

    def state(self) -> dict[str, Any]:
        return {**super().state(), "theta": self.theta}


class RandomizedVariableUncertainty(VariableUncertainty):
    """Variable uncertainty whose threshold is multiplied by ``N(1, delta)`` noise at every decision,
    so that samples far from the boundary are sometimes asked too (it follows drift further away).
    """

    name = "randomized_variable_uncertainty"

    def __init__(self, budget: float = 0.1, step: float = 0.01, delta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(budget, step, **kwargs)
        if delta < 0.0:
            raise ValueError(f"delta must be non-negative, got {delta}")
        self.delta = delta

    def _threshold(self) -> float:
        return self.theta * self._rng.gauss(1.0, self.delta)
