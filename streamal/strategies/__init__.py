"""Query strategies: the utility of a scored sample. Register a new one in ``STRATEGIES``."""

from __future__ import annotations

from streamal.errors import ConfigError
from streamal.strategies.bald import BALD
from streamal.strategies.base import Strategy
from streamal.strategies.committee import KLDivergence, VoteEntropy
from streamal.strategies.density import DensityWeighted
from streamal.strategies.diversity import Diversity
from streamal.strategies.periodic import PeriodicSampling
from streamal.strategies.probabilistic import ProbabilisticEntropy
from streamal.strategies.random import RandomStrategy
from streamal.strategies.uncertainty import Entropy, LeastConfidence, Margin

__all__ = [
    "BALD",
    "NEEDS_COMMITTEE",
    "STRATEGIES",
    "DensityWeighted",
    "Diversity",
    "Entropy",
    "KLDivergence",
    "LeastConfidence",
    "Margin",
    "PeriodicSampling",
    "ProbabilisticEntropy",
    "RandomStrategy",
    "Strategy",
    "VoteEntropy",
    "build_strategy",
]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        LeastConfidence,
        Margin,
        Entropy,
        RandomStrategy,
        ProbabilisticEntropy,
        VoteEntropy,
        KLDivergence,
        DensityWeighted,
        Diversity,
        PeriodicSampling,
        BALD,
    )
}

#: strategies that read the members of a committee model (``committee``, ``torch_mc_dropout``,
#: ``torch_ensemble``); with any other model they fall back to the entropy of its probabilities
NEEDS_COMMITTEE = frozenset({VoteEntropy.name, KLDivergence.name, BALD.name})


def build_strategy(name: str, seed: int | None = None) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"strategy.name: unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}"
        ) from None
    return cls(seed=seed)
