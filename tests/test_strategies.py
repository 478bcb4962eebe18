"""Strategies: exact utilities, the cold start, and the random baseline's reproducibility."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamal.errors import ConfigError
from streamal.messages import Proba
from streamal.strategies import (
    STRATEGIES,
    Entropy,
    LeastConfidence,
    Margin,
    RandomStrategy,
    Strategy,
    build_strategy,
)

# strategies whose utility is not a measure of the model's uncertainty (random draws, a constant, a distance)
NOT_UNCERTAINTY = {"random", "periodic", "diversity", "probabilistic_entropy"}
UNCERTAINTY = [name for name in STRATEGIES if name not in NOT_UNCERTAINTY]


def _entropy(ps: list[float]) -> float:
    return -sum(p * math.log(p) for p in ps if p > 0) / math.log(len(ps))


@pytest.mark.parametrize(
    ("proba", "least_confidence", "margin", "entropy"),
    [
        ({"a": 0.5, "b": 0.3, "c": 0.2}, 0.75, 0.8, _entropy([0.5, 0.3, 0.2])),
        ({"a": 0.9, "b": 0.1}, 0.2, 0.2, _entropy([0.9, 0.1])),
        ({True: 0.1, False: 0.9}, 0.2, 0.2, _entropy([0.9, 0.1])),
        ({1: 0.6, 2: 0.3, 3: 0.1, 4: 0.0}, 0.4 * 4 / 3, 0.7, _entropy([0.6, 0.3, 0.1, 0.0])),
        ({"a": 0.4, "b": 0.4, "c": 0.2}, 0.6 * 3 / 2, 1.0, _entropy([0.4, 0.4, 0.2])),
    ],
)
def test_uncertainty_utilities_have_exact_values(proba, least_confidence, margin, entropy):
    assert LeastConfidence().utility(proba) == pytest.approx(least_confidence, abs=1e-12)
    assert Margin().utility(proba) == pytest.approx(margin, abs=1e-12)
    assert Entropy().utility(proba) == pytest.approx(entropy, abs=1e-12)


def test_entropy_is_normalised_by_the_number_of_classes():
    # divided by log K of the known classes (here 3), not by a fixed log 2
    three: Proba = {"a": 0.5, "b": 0.3, "c": 0.2}
    raw = -sum(p * math.log(p) for p in three.values())
    assert Entropy().utility(three) == pytest.approx(raw / math.log(3))
    assert Entropy().utility(three) != pytest.approx(raw / math.log(2))


@pytest.mark.parametrize("name", UNCERTAINTY)
@pytest.mark.parametrize("k", [2, 3, 7])
def test_uniform_is_maximal_and_certain_is_minimal(name, k):
    strategy = STRATEGIES[name]()
    assert strategy.utility({f"c{i}": 1.0 / k for i in range(k)}) == pytest.approx(1.0)
    assert strategy.utility({f"c{i}": float(i == 0) for i in range(k)}) == 0.0


@pytest.mark.parametrize("name", UNCERTAINTY)
@pytest.mark.parametrize("proba", [{}, {"a": 1.0}, {0: 0.3}])
def test_cold_start_fewer_than_two_classes_is_maximal(name, proba):
    assert STRATEGIES[name]().utility(proba) == 1.0


@pytest.mark.parametrize("name", list(STRATEGIES))
@settings(max_examples=150, derandomize=True, deadline=None)
@given(weights=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=12))
def test_every_utility_is_within_unit_interval(name, weights):
    total = sum(weights)
    if total == 0.0:
        weights, total = [1.0] * len(weights), float(len(weights))
    proba: Proba = {f"c{i}": w / total for i, w in enumerate(weights)}
    utility = STRATEGIES[name](seed=0).utility(proba)
    assert 0.0 <= utility <= 1.0


def test_more_confident_means_lower_utility():
    for name in UNCERTAINTY:
        strategy = STRATEGIES[name]()
        utilities = [strategy.utility({"a": p, "b": 1 - p}) for p in (0.5, 0.6, 0.8, 0.95, 1.0)]
        assert utilities == sorted(utilities, reverse=True), name
        assert len(set(utilities)) == len(utilities), name


def test_random_strategy_is_deterministic_per_seed_and_ignores_the_model():
    a, b = RandomStrategy(seed=7), RandomStrategy(seed=7)
    confident = [a.utility({"x": 1.0, "y": 0.0}) for _ in range(50)]
    cold = [b.utility({}) for _ in range(50)]
    assert confident == cold  # no cold-start special case, and no dependence on proba
    rng = random.Random(7)
    assert confident == [rng.random() for _ in range(50)]
    assert RandomStrategy(seed=1).utility({}) == pytest.approx(0.13436424411240122)
    other = RandomStrategy(seed=8)
    assert [other.utility({}) for _ in range(50)] != confident
    assert all(0.0 <= u < 1.0 for u in confident)


def test_registry_names_match_classes():
    assert set(STRATEGIES) >= {"least_confidence", "margin", "entropy", "random"}
    for name, cls in STRATEGIES.items():
        assert cls.name == name
        assert issubclass(cls, Strategy)


def test_build_strategy_passes_the_seed():
    strategy = build_strategy("random", seed=3)
    assert isinstance(strategy, RandomStrategy)
    assert strategy.seed == 3
    assert strategy.utility({}) == random.Random(3).random()
    assert isinstance(build_strategy("margin"), Margin)


def test_build_strategy_unknown_name_names_the_setting():
    with pytest.raises(ConfigError, match=r"strategy\.name.*'uncertain'") as info:
        build_strategy("uncertain")
    for name in STRATEGIES:
        assert name in str(info.value)
