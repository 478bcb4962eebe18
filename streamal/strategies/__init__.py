"""Query strategies: the utility of a scored sample. Register a new one in ``STRATEGIES``."""

from __future__ import annotations

from streamal.errors import ConfigError
from streamal.strategies.base import Strategy
from streamal.strategies.random import RandomStrategy
from streamal.strategies.uncertainty import Entropy, LeastConfidence, Margin

__all__ = [
    "STRATEGIES",
    "Entropy",
    "LeastConfidence",
    "Margin",
    "RandomStrategy",
    "Strategy",
    "build_strategy",
]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (LeastConfidence, Margin, Entropy, RandomStrategy)
}


def build_strategy(name: str, seed: int | None = None) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"strategy.name: unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}"
        ) from None
    return cls(seed=seed)
