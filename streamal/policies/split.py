"""Split (Žliobaitė et al. 2014): some decisions are random sampling, the rest variable uncertainty."""

from __future__ import annotations

from typing import Any

from streamal.policies.variable_uncertainty import VariableUncertainty


class Split(VariableUncertainty):
    """With probability ``random_share`` ask with probability ``budget``; otherwise variable uncertainty.

    The random part keeps sampling the whole input space, so a change far from the current decision
    boundary is still seen.
    """

    name = "split"

    def __init__(
        self, budget: float = 0.1, step: float = 0.01, random_share: float = 0.2, **kwargs: Any
    ) -> None:
        super().__init__(budget, step, **kwargs)
        if not 0.0 <= random_share <= 1.0:
            raise ValueError(f"random_share must be in [0, 1], got {random_share}")
        self.random_share = random_share

    def _ask(self, utility: float) -> bool:
        if self._rng.random() < self.random_share:
            return self._rng.random() < self.budget
        return super()._ask(utility)
