"""The balanced incremental quantile filter, the labels-per-hour rate limit and the class-balanced quota."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import pickle
import random
import time
from collections import Counter

import pytest

from streamal.datasets import load
from streamal.engine import Engine
from streamal.errors import ConfigError
from streamal.messages import Label, Sample
from streamal.models import build_model
from streamal.policies import (
    POLICIES,
    BalancedIncrementalQuantileFilter,
    ClassBalancedQuota,
    RateLimit,
    VariableUncertainty,
    build_policy,
)
from streamal.strategies import Margin


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _uniform(n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


# -- balanced incremental quantile filter -------------------------------------------------------------
def test_biqf_spends_the_budget_on_the_highest_utilities():
    utilities = _uniform(5000)
    p = BalancedIncrementalQuantileFilter(budget=0.1, min_spend=0.0)
    asked = [u for u in utilities if p.decide(u)]
    assert len(asked) / len(utilities) == pytest.approx(0.1, abs=0.01)
    assert sum(asked) / len(asked) > 0.85  # the top tenth of a uniform utility averages 0.95


def test_biqf_follows_the_scale_of_the_utilities():
    # a strategy whose utilities are all small: a fixed threshold would never ask, the quantile does
    p = BalancedIncrementalQuantileFilter(budget=0.2, min_spend=0.0)
    asked = [p.decide(u / 100) for u in _uniform(3000, seed=2)]
    assert sum(asked) / len(asked) == pytest.approx(0.2, abs=0.02)


def test_biqf_balance_spends_what_the_quantile_leaves():
    # utilities that fall over time: the quantile of the past is too high, the balance lowers it
    p = BalancedIncrementalQuantileFilter(budget=0.1, min_spend=0.0, w=100, w_tol=20)
    asked = [p.decide(1.0 - i / 4000) for i in range(4000)]
    # every utility is the lowest of its window, so the quantile alone would ask for nothing; the balance
    # keeps spending within about w_tol requests of the budget (over the base's window of 1,000)
    assert 0.07 <= sum(asked) / len(asked) <= 0.1


def test_biqf_checks_its_parameters():
    with pytest.raises(ValueError, match="w must"):
        BalancedIncrementalQuantileFilter(w=1)
    with pytest.raises(ValueError, match="w_tol"):
        BalancedIncrementalQuantileFilter(w_tol=0)
    with pytest.raises(ConfigError, match="policy"):
        build_policy("biqf", 0.1, params={"w": 0})


# -- rate limit -----------------------------------------------------------------------------------------
def test_rate_limit_caps_labels_per_hour_floor_included():
    clock = Clock()
    p = RateLimit(budget=0.5, labels_per_hour=360.0, burst=5, clock=clock)  # one label every 10 s
    asked_at = []
    for i in range(3600):  # one sample a second for an hour, every one maximally useful
        clock.now = float(i)
        if p.decide(1.0):
            asked_at.append(clock.now)
    assert len(asked_at) <= 5 + 360
    assert len(asked_at) >= 300  # and the capacity is used
    for start in range(0, 3600, 600):  # any ten minutes: at most the burst plus 60
        assert sum(start <= t < start + 600 for t in asked_at) <= 5 + 60
    assert p.budget == 0.5  # the configured budget is what the outside sees


def test_rate_limit_lowers_the_floor_to_the_annotators_capacity():
    # a confident model (utility 0): the floor asks, but no faster than the annotators answer
    clock = Clock()
    p = RateLimit(budget=0.2, labels_per_hour=3600.0, burst=1, clock=clock)
    asked = 0
    for i in range(10_000):  # 100 samples a second: capacity is one in a hundred
        clock.now = i / 100
        asked += p.decide(0.0)
    assert asked <= 1 + 100
    assert asked >= 50


def test_rate_limit_without_a_limit_is_variable_uncertainty():
    utilities = _uniform(3000, seed=5)
    a = RateLimit(budget=0.1)
    b = VariableUncertainty(budget=0.1)
    assert [a.decide(u) for u in utilities] == [b.decide(u) for u in utilities]
    assert a.state()["labels_per_hour"] is None


def test_rate_limit_pickles_with_its_clock_and_checks_parameters():
    clock = Clock(5.0)
    p = RateLimit(budget=0.3, labels_per_hour=100.0, clock=clock)
    for u in _uniform(50):
        p.decide(u)
    copy = pickle.loads(pickle.dumps(p))  # noqa: S301
    rest = _uniform(200, seed=9)
    assert [copy.decide(u) for u in rest] == [p.decide(u) for u in rest]
    assert RateLimit(clock=time.time).state()["tokens"] == 10.0
    with pytest.raises(ValueError, match="labels_per_hour"):
        RateLimit(labels_per_hour=0)
    with pytest.raises(ValueError, match="burst"):
        RateLimit(burst=0)


# -- class-balanced quota ----------------------------------------------------------------------------------
def test_quota_boosts_a_class_below_its_share_and_damps_one_above():
    p = ClassBalancedQuota(budget=0.2, max_boost=4.0, memory=10**12)  # (almost) no decay: exact shares
    assert p.adjusted(0.3, "a") == 0.3  # no label yet: nothing to balance
    for label in ["a"] * 8 + ["b"] * 2:
        p.observe_label(label)
    assert p.adjusted(0.3, "b") == pytest.approx(0.3 * 0.5 / 0.2)
    assert p.adjusted(0.3, "a") == pytest.approx(0.3 * 0.5 / 0.8)
    assert p.adjusted(0.2, "new") == pytest.approx(0.2 * 4.0)  # a class with no label at all
    assert p.adjusted(0.9, "b") == 1.0
    assert p.adjusted(0.3, None) == 0.3
    assert set(p.state()["label_shares"]) == {"a", "b"}


def test_quota_gives_the_minority_class_more_labels_than_variable_uncertainty():
    stream = load("shuttle", limit=2000)  # 92% one class

    def labels_of(policy) -> Counter[object]:
        engine = Engine(build_model("knn"), Margin(), policy, clock=lambda: 0.0)
        got: Counter[object] = Counter()
        for r in stream:
            [d] = engine.score([Sample(id=r.id, features=r.features)])
            if d.queried:
                engine.learn(Label(id=r.id, label=r.label))
                got[r.label] += 1
        return got

    plain = labels_of(VariableUncertainty(budget=0.1))
    balanced = labels_of(ClassBalancedQuota(budget=0.1))
    assert sum(balanced.values()) <= 0.11 * len(stream)
    assert balanced[1] / sum(balanced.values()) > plain[1] / sum(plain.values())


def test_quota_without_the_prediction_is_variable_uncertainty():
    utilities = _uniform(2000, seed=3)
    a, b = ClassBalancedQuota(budget=0.1), VariableUncertainty(budget=0.1)
    a.observe_label("x")
    assert [a.decide(u) for u in utilities] == [b.decide(u) for u in utilities]
    with pytest.raises(ValueError, match="max_boost"):
        ClassBalancedQuota(max_boost=0.5)


def test_new_policies_are_registered():
    assert {"biqf", "rate_limit", "class_balanced"} <= set(POLICIES)
    assert POLICIES["class_balanced"].uses_prediction
    assert not POLICIES["biqf"].uses_prediction
    assert isinstance(build_policy("rate_limit", 0.1, params={"labels_per_hour": 60}), RateLimit)


def test_biqf_spends_the_whole_budget_when_the_model_becomes_confident():
    # uncertain for 1,000 samples, then every utility ten times smaller: a fixed threshold falls to the
    # spending floor; biqf's quantile follows the new scale and spends the budget, never over it
    rng = random.Random(3)
    utilities = [rng.random() * (1.0 if i < 1000 else 0.1) for i in range(4000)]
    p = BalancedIncrementalQuantileFilter(budget=0.1)
    asked = [p.decide(u) for u in utilities]
    assert 0.097 <= sum(asked[-1000:]) / 1000 <= 0.1
    assert 0.097 <= sum(asked) / len(asked) <= 0.1
    threshold = build_policy("threshold", 0.1, params={"threshold": 0.5})
    assert sum(threshold.decide(u) for u in utilities[1000:]) / 3000 < 0.09
