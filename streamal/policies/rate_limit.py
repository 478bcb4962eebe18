"""A labels-per-hour rate limit: annotators are people, with a capacity.

Variable uncertainty (Žliobaitė et al. 2014) under two ceilings: the budget, a fraction of the samples,
and ``labels_per_hour``, what the annotators can answer. The second is a token bucket of ``burst``
requests refilled at ``labels_per_hour``, read from the injected ``clock``: in any period of ``T``
seconds at most ``burst + labels_per_hour * T / 3600`` labels are asked, the budget's floor included. So
that the capacity goes to the most useful samples rather than to the first ones, the budget the base
class enforces is lowered to what the annotators can take at the current arrival rate of samples
(measured over the last ``rate_window`` samples), and the floor follows it.

``labels_per_hour=None`` (the default) is no limit: the policy is then variable uncertainty.

>>> now = [0.0]
>>> p = RateLimit(budget=0.5, labels_per_hour=3600, burst=1, clock=lambda: now[0])
>>> asked = []
>>> for i in range(100):           # 10 samples a second for 10 seconds: one label a second at most
...     now[0] = i / 10
...     asked.append(p.decide(1.0))
>>> sum(asked)
10
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamal.policies.variable_uncertainty import VariableUncertainty


class RateLimit(VariableUncertainty):
    """Variable uncertainty within the budget and at most ``labels_per_hour`` (plus a ``burst``)."""

    name = "rate_limit"

    def __init__(
        self,
        budget: float = 0.1,
        labels_per_hour: float | None = None,
        burst: int = 10,
        step: float = 0.01,
        rate_window: int = 100,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(budget, step, **kwargs)
        if labels_per_hour is not None and labels_per_hour <= 0.0:
            raise ValueError(f"labels_per_hour must be positive (or None: no limit), got {labels_per_hour}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if rate_window < 2:
            raise ValueError(f"rate_window must be at least 2, got {rate_window}")
        self.labels_per_hour = labels_per_hour
        self.burst = burst
        self.rate_window = rate_window
        self._clock = clock
        self._tokens = float(burst)
        self._refilled_at: float | None = None
        self._arrivals: deque[float] = deque(maxlen=rate_window)

    def decide(self, utility: float) -> bool:
        if self.labels_per_hour is None:
            return super().decide(utility)
        per_second = self.labels_per_hour / 3600.0
        now = self._clock()
        if self._refilled_at is not None:
            self._tokens = min(
                float(self.burst), self._tokens + max(0.0, now - self._refilled_at) * per_second
            )
        self._refilled_at = now
        arrivals = self._arrivals
        arrivals.append(now)
        configured = self.budget
        if self._tokens < 1.0:
            allowed = 0.0  # the annotators are busy: nothing may be asked, not even by the floor
        else:
            allowed = configured
            span = now - arrivals[0]
            if span > 0.0:
                allowed = min(allowed, per_second / ((len(arrivals) - 1) / span))
        self.budget = allowed
        try:
            ask = super().decide(utility)
        finally:
            self.budget = configured
        if ask:
            self._tokens -= 1.0
        return ask

    def state(self) -> dict[str, Any]:
        return {**super().state(), "labels_per_hour": self.labels_per_hour, "tokens": self._tokens}
