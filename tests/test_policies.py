"""Policies: what each one asks for, the budget ceiling and floor of the base, and parameter checks."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import random

import pytest

from streamal.errors import ConfigError
from streamal.policies import (
    POLICIES,
    FixedRate,
    FixedThreshold,
    Policy,
    RandomizedVariableUncertainty,
    Split,
    VariableUncertainty,
    build_policy,
)


def _uniform(n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


# -- the base: ceiling, floor, spending -----------------------------------------------------------
def test_threshold_asks_above_threshold_within_budget():
    p = FixedThreshold(budget=0.5, threshold=0.6, min_spend=0.0, warmup=0)
    assert [p.decide(u) for u in (0.9, 0.1, 0.7, 0.65, 0.2, 0.6)] == [True, False, True, False, False, True]
    assert p.n_seen == 6
    assert p.n_asked == 3


def test_ceiling_refuses_even_maximal_utility_once_spent():
    p = FixedThreshold(budget=0.1, threshold=0.0, min_spend=0.0, window=100, warmup=0)
    decisions = [p.decide(1.0) for _ in range(1000)]
    assert decisions[0] is True
    assert decisions[1] is False  # spending 1.0 after the first request
    assert sum(decisions) / len(decisions) == pytest.approx(0.1, abs=0.005)


def test_floor_asks_whatever_the_utility_when_spending_is_low():
    p = FixedThreshold(budget=0.2, threshold=1.0, min_spend=0.5, warmup=0)
    decisions = [p.decide(0.0) for _ in range(2000)]
    assert decisions[0] is True  # nothing spent yet: below the floor
    assert 0.1 <= sum(decisions) / len(decisions) <= 0.12
    no_floor = FixedThreshold(budget=0.2, threshold=1.0, min_spend=0.0, warmup=0)
    assert not any(no_floor.decide(0.0) for _ in range(2000))


def test_spending_and_state():
    p = FixedThreshold(budget=0.25, threshold=0.5, min_spend=0.0, window=10, warmup=0)
    assert p.spending == 0.0
    p.decide(0.9)
    assert p.spending == 1.0
    p.decide(0.1)
    decay = 1 - 1 / 10
    assert p.spending == pytest.approx(decay / (decay + 1))
    assert p.state() == {"name": "threshold", "budget": 0.25, "spending": p.spending, "seed_debt": 0.0}


def test_state_shows_the_seed_set_not_yet_repaid():
    p = FixedThreshold(budget=0.1, threshold=0.0, warmup=100, payback=500)
    for _ in range(10):
        p.decide(1.0)
    assert p.spending == 0.0  # the estimate has counted nothing of the seed set yet ...
    assert p.state()["seed_debt"] == pytest.approx(10.0)  # ... and says so
    for _ in range(250):
        p.decide(1.0)
    assert p.state()["seed_debt"] == pytest.approx(5.0)
    for _ in range(250):
        p.decide(1.0)
    assert p.state()["seed_debt"] == pytest.approx(0.0, abs=1e-9)


# -- fixed rate: by rank, not by value -------------------------------------------------------------
def test_fixed_rate_is_rank_based():
    utilities = _uniform(3000, seed=1)
    a = FixedRate(budget=0.1, rank_window=200, min_spend=0.0, warmup=0)
    b = FixedRate(budget=0.1, rank_window=200, min_spend=0.0, warmup=0)
    on_scale = [a.decide(u) for u in utilities]
    # a monotone change of scale changes no rank, hence no decision
    squeezed = [b.decide(0.4 + u**3 / 100) for u in utilities]
    assert on_scale == squeezed
    assert sum(on_scale) / len(on_scale) == pytest.approx(0.1, abs=0.01)


def test_fixed_rate_asks_only_for_the_top_of_recent_utilities():
    rising = FixedRate(budget=0.2, rank_window=50, min_spend=0.0, warmup=0)
    assert sum(rising.decide(i / 1000) for i in range(1000)) == pytest.approx(200, abs=2)
    falling = FixedRate(budget=0.2, rank_window=50, min_spend=0.0, warmup=0)
    # every new utility is the lowest so far: only the first one is ever on top
    assert [falling.decide(1 - i / 1000) for i in range(200)] == [True] + [False] * 199


# -- variable uncertainty ---------------------------------------------------------------------------
def test_variable_uncertainty_theta_moves_down_after_a_request_and_up_otherwise():
    p = VariableUncertainty(budget=0.5, step=0.1, min_spend=0.0, warmup=0)
    assert p.theta == 1.0
    assert p.decide(0.95) is True  # 1 - 0.95 < theta
    assert p.theta == pytest.approx(0.9)
    assert p.decide(0.0) is False  # refused by the ceiling (spending 1.0): theta stays
    assert p.theta == pytest.approx(0.9)
    assert p.decide(0.0) is False  # let go by the policy: theta rises
    assert p.theta == pytest.approx(0.99)
    assert p.state()["theta"] == p.theta
    p.decide(0.0)
    p.decide(0.0)
    assert p.theta == 1.0  # never above 1


def test_variable_uncertainty_spends_its_budget_on_a_constant_utility():
    p = VariableUncertainty(budget=0.2, min_spend=0.0, warmup=0)
    assert sum(p.decide(0.3) for _ in range(1000)) == 200


def test_randomized_variable_uncertainty_reaches_beyond_the_threshold():
    plain = VariableUncertainty(budget=0.1, min_spend=0.0, warmup=0)
    noisy = RandomizedVariableUncertainty(budget=0.1, min_spend=0.0, seed=3, warmup=0)
    # utility 0 means 1 - u = 1, never below theta <= 1 without the noise
    assert not any(plain.decide(0.0) for _ in range(500))
    assert sum(noisy.decide(0.0) for _ in range(500)) > 5


def test_randomized_variable_uncertainty_is_deterministic_per_seed():
    utilities = _uniform(1000, seed=2)

    def run(seed: int) -> list[bool]:
        p = RandomizedVariableUncertainty(budget=0.1, seed=seed)
        return [p.decide(u) for u in utilities]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_randomized_variable_uncertainty_without_noise_is_variable_uncertainty():
    utilities = _uniform(1000, seed=4)
    plain = VariableUncertainty(budget=0.1)
    noiseless = RandomizedVariableUncertainty(budget=0.1, delta=0.0, seed=9)
    assert [plain.decide(u) for u in utilities] == [noiseless.decide(u) for u in utilities]


# -- split ------------------------------------------------------------------------------------------
def test_split_with_no_random_share_is_variable_uncertainty():
    utilities = _uniform(1000, seed=5)
    plain = VariableUncertainty(budget=0.1)
    split = Split(budget=0.1, random_share=0.0, seed=1)
    assert [plain.decide(u) for u in utilities] == [split.decide(u) for u in utilities]


def test_split_random_share_ignores_the_utility():
    low, high = (Split(budget=0.1, random_share=1.0, min_spend=0.0, seed=2) for _ in range(2))
    on_low = [low.decide(0.0) for _ in range(2000)]
    on_high = [high.decide(1.0) for _ in range(2000)]
    assert on_low == on_high  # only the random numbers decide
    assert 0.05 <= sum(on_low) / len(on_low) <= 0.1


def test_split_random_share_finds_samples_variable_uncertainty_never_asks_for():
    split = Split(budget=0.1, random_share=0.2, min_spend=0.0, seed=0)
    asked = sum(split.decide(0.0) for _ in range(3000))
    # about 0.2 * 0.1 of the samples come from the random part
    assert 0.01 * 3000 <= asked <= 0.03 * 3000


# -- parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget": 0.0},
        {"budget": -0.1},
        {"budget": 1.5},
        {"budget": 0.1, "window": 0},
        {"budget": 0.1, "min_spend": -0.1},
        {"budget": 0.1, "min_spend": 1.1},
        {"budget": 0.1, "warmup": -1},
        {"budget": 0.1, "payback": -1},
        {"budget": 0.1, "payback": "500"},
        {"budget": 0.1, "payback": 1.5},
        {"budget": 0.1, "warmup": True},
        {"budget": 0.1, "window": 10.0},
    ],
)
def test_invalid_base_parameters_raise(name, kwargs):
    with pytest.raises(ValueError, match=r"budget|window|min_spend|warmup|payback"):
        POLICIES[name](**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (FixedThreshold, {"threshold": -0.1}),
        (FixedThreshold, {"threshold": 1.01}),
        (FixedRate, {"rank_window": 1}),
        (VariableUncertainty, {"step": 0.0}),
        (VariableUncertainty, {"step": 1.0}),
        (RandomizedVariableUncertainty, {"delta": -0.5}),
        (Split, {"random_share": 1.5}),
        (Split, {"random_share": -0.1}),
    ],
)
def test_invalid_policy_parameters_raise(cls, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        cls(budget=0.1, **kwargs)


def test_registry_names_match_classes():
    assert set(POLICIES) >= {
        "threshold",
        "fixed_rate",
        "variable_uncertainty",
        "randomized_variable_uncertainty",
        "split",
    }
    for name, cls in POLICIES.items():
        assert cls.name == name
        assert issubclass(cls, Policy)


def test_build_policy_passes_budget_seed_and_params():
    p = build_policy("threshold", budget=0.3, seed=4, params={"threshold": 0.7, "window": 50})
    assert isinstance(p, FixedThreshold)
    assert (p.budget, p.seed, p.threshold, p.window) == (0.3, 4, 0.7, 50)


def test_build_policy_unknown_name_names_the_setting():
    with pytest.raises(ConfigError, match=r"policy\.name.*'greedy'") as info:
        build_policy("greedy", budget=0.1)
    for name in POLICIES:
        assert name in str(info.value)


@pytest.mark.parametrize("params", [{"threshold": 2.0}, {"no_such_argument": 1}])
def test_build_policy_bad_params_raise_config_error(params):
    with pytest.raises(ConfigError, match=r"^policy"):
        build_policy("threshold", budget=0.1, params=params)


# -- the warm start ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize(("budget", "warmup"), [(0.1, 100), (0.2, 50), (0.05, 100)])
@pytest.mark.parametrize("utility", [0.0, 1.0])
def test_warm_start_asks_a_seed_set_up_front_and_repays_it(name, budget, warmup, utility):
    payback = 500
    p = build_policy(name, budget, seed=0, params={"warmup": warmup, "payback": payback})
    asked = [p.decide_with(utility, None) if p.uses_prediction else p.decide(utility) for _ in range(3000)]
    seed_set = round(budget * warmup)
    assert asked[:seed_set] == [True] * seed_set  # whatever the utility (0: worth nothing)
    # ... then the budget's rate at once (here the floor asks the next sample): no drought after the seed set
    assert asked[seed_set] is True
    running = 0
    for n, ask in enumerate(asked, start=1):
        running += ask
        # over every prefix: the budget's share and the part of the seed set not repaid yet (and the
        # windowed estimate's slack) ...
        unpaid = seed_set * max(0.0, 1.0 - (n - seed_set) / payback)
        assert running <= 1.02 * budget * n + unpaid + 2, f"{running} labels in the first {n} samples"
    # ... so that once it is repaid, the run is within its budget
    assert sum(asked[: 2 * payback]) <= 1.02 * budget * 2 * payback + 1


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize(("budget", "warmup"), [(0.1, 100), (0.2, 50), (0.05, 100)])
def test_warm_start_without_payback_asks_early_then_waits(name, budget, warmup):
    p = build_policy(name, budget, seed=0, params={"warmup": warmup, "payback": 0})
    asked = [p.decide_with(0.0, None) if p.uses_prediction else p.decide(0.0) for _ in range(3000)]
    seed_set = round(budget * warmup)
    assert asked[:seed_set] == [True] * seed_set
    # ... then nothing until the spending is back under the budget: a ceiling on every prefix
    assert sum(asked[seed_set : int(0.8 * seed_set / budget)]) == 0
    assert sum(asked) <= 1.10 * budget * len(asked)


def test_without_warm_start_the_first_labels_are_spread():
    p = FixedThreshold(budget=0.1, threshold=1.0, warmup=0)  # asks only on the floor
    asked = [p.decide(0.0) for _ in range(100)]
    assert sum(asked[:10]) == 1


def test_the_warm_start_respects_a_rate_limit():
    from streamal.policies import RateLimit

    p = RateLimit(budget=0.5, labels_per_hour=3600.0, burst=2, clock=lambda: 0.0)  # no time passes
    assert sum(p.decide(1.0) for _ in range(100)) == 2


def test_a_policy_restored_from_before_the_warm_start_has_none():
    p = FixedThreshold(budget=0.1, threshold=1.0)
    del p.__dict__["warmup"]  # as unpickled from a checkpoint written before the parameter existed
    assert p.warmup == 0
    assert sum(p.decide(0.0) for _ in range(10)) == 1


def test_warmup_must_be_non_negative():
    with pytest.raises(ConfigError, match="warmup"):
        build_policy("biqf", 0.1, params={"warmup": -1})
