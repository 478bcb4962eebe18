"""The strategies beyond uncertainty: committee, probabilistic entropy, density, diversity, periodic; the
engine hooks they use; and the committee model."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import functools
import itertools
import math
import pickle

import pytest

from streamal.datasets import Record, load
from streamal.engine import Engine
from streamal.messages import Label, Proba, Sample
from streamal.models import CommitteeModel, CommitteeProba, build_model
from streamal.policies import FixedThreshold, VariableUncertainty
from streamal.strategies import (
    STRATEGIES,
    DensityWeighted,
    Diversity,
    Entropy,
    KLDivergence,
    PeriodicSampling,
    ProbabilisticEntropy,
    Strategy,
    VoteEntropy,
)


@functools.cache
def phishing(n: int = 600) -> tuple[Record, ...]:
    return tuple(load("phishing", limit=n))


def replay(engine: Engine, stream, delay: int = 10, batch: int = 10) -> list[bool]:
    due: list[tuple[int, Label]] = []
    asked = []
    for start in range(0, len(stream), batch):
        while due and due[0][0] <= start:
            engine.learn(due.pop(0)[1])
        chunk = stream[start : start + batch]
        for i, d in enumerate(engine.score([Sample(id=r.id, features=r.features) for r in chunk])):
            asked.append(d.queried)
            if d.queried:
                due.append((start + i + delay, Label(id=chunk[i].id, label=chunk[i].label)))
    return asked


# -- committee ------------------------------------------------------------------------------------
def test_committee_utilities_measure_disagreement():
    agree = CommitteeProba({"a": 0.7, "b": 0.3}, [[0.7, 0.3]] * 4)
    split = CommitteeProba({"a": 0.5, "b": 0.5}, [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # vote entropy: all agree -> only the tie-break share of the consensus entropy is left
    assert VoteEntropy(tie_break=0.0).utility(agree) == 0.0
    assert VoteEntropy(tie_break=0.0).utility(split) == pytest.approx(1.0)
    assert VoteEntropy().utility(agree) == pytest.approx(0.1 * Entropy().utility(agree))
    # KL to the consensus = H(mean) - mean H(member): 0 when all agree, log 2 / log 2 here
    assert KLDivergence().utility(agree) == pytest.approx(0.0, abs=1e-12)
    assert KLDivergence().utility(split) == pytest.approx(1.0)


@pytest.mark.parametrize("cls", [VoteEntropy, KLDivergence])
def test_committee_strategies_fall_back_to_entropy_without_a_committee(cls):
    probas: list[Proba] = [{"a": 0.9, "b": 0.1}, {"a": 0.5, "b": 0.3, "c": 0.2}]
    for proba in probas:
        assert cls().utility(proba) == pytest.approx(Entropy().utility(proba))
    assert cls().utility({"a": 1.0}) == 1.0  # cold start, from the base


def test_committee_model_consensus_is_the_members_mean_and_pickles():
    built = build_model("committee", {"n_members": 4, "seed": 3})
    assert isinstance(built, CommitteeModel)
    model: CommitteeModel = built
    assert model.predict_proba_many([{"x": 1.0}]) == [{}]
    for r in phishing()[:200]:
        model.learn_one(r.features, r.label)
    xs = [r.features for r in phishing()[200:260]]
    probas = [p for p in model.predict_proba_many(xs) if isinstance(p, CommitteeProba)]
    assert len(probas) == len(xs)
    for p in probas:
        assert len(p.members) == 4
        assert sum(p.values()) == pytest.approx(1.0)
        for j, c in enumerate(p):
            assert p[c] == pytest.approx(sum(row[j] for row in p.members) / 4)
    assert any(len({tuple(row) for row in p.members}) > 1 for p in probas)  # the members differ
    copy = pickle.loads(pickle.dumps(model))  # noqa: S301
    assert copy.predict_proba_many(xs) == probas
    for x, p in zip(xs[:5], probas[:5], strict=True):  # batching changes nothing (but float rounding)
        assert copy.predict_proba_one(x) == pytest.approx(p)
    assert pickle.loads(pickle.dumps(probas[0])).members == probas[0].members  # noqa: S301


def test_committee_with_random_subspaces():
    model = CommitteeModel(n_members=3, max_features=0.5, seed=1)
    for r in phishing()[:100]:
        model.learn_one(r.features, r.label)
    [p] = model.predict_proba_many([phishing()[150].features])
    assert isinstance(p, CommitteeProba)
    assert len(p.members) == 3
    with pytest.raises(ValueError, match="n_members"):
        CommitteeModel(n_members=1)
    with pytest.raises(ValueError, match="max_features"):
        CommitteeModel(max_features=0.0)


@pytest.mark.parametrize("name", ["qbc_vote_entropy", "qbc_kl"])
def test_committee_strategies_through_the_engine_with_a_committee(name):
    def run(seed: int) -> tuple[list[bool], list[float]]:
        engine = Engine(
            CommitteeModel(n_members=3, seed=seed),
            STRATEGIES[name](seed=seed),
            VariableUncertainty(budget=0.1),
        )
        asked = replay(engine, phishing())
        return asked, [engine.strategy.utility(p) for p in engine.model.predict_proba_many([{"f": 1.0}])]

    asked, _ = run(0)
    assert 0.05 <= sum(asked) / len(asked) <= 0.11
    assert run(0) == (asked, run(0)[1])


# -- probabilistic entropy ----------------------------------------------------------------------------
def test_probabilistic_entropy_asks_with_rivers_probability():
    s = ProbabilisticEntropy(seed=0, discount_factor=2.0)
    proba: Proba = {"a": 0.8, "b": 0.2}
    ratio = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2)) / math.log(2)
    draws = [s.utility(proba) for _ in range(20000)]
    # a threshold policy at 0 asks when the utility is positive: with probability ratio ** 2
    assert sum(u > 0 for u in draws) / len(draws) == pytest.approx(ratio**2, abs=0.01)
    assert all(0.0 <= u <= 1.0 for u in draws)
    same = _draws(ProbabilisticEntropy(seed=4), proba, 20)
    assert _draws(ProbabilisticEntropy(seed=4), proba, 20) == same
    assert _draws(ProbabilisticEntropy(seed=5), proba, 20) != same
    assert ProbabilisticEntropy().utility({"a": 1.0, "b": 0.0, "c": 0.0}) == 0.0
    with pytest.raises(ValueError, match="discount_factor"):
        ProbabilisticEntropy(discount_factor=-1)


def _draws(s: Strategy, proba, n: int) -> list[float]:
    return [s.utility(proba) for _ in range(n)]


# -- density-weighted ---------------------------------------------------------------------------------
def test_density_weighting_discounts_outliers_and_keeps_the_cold_start():
    s = DensityWeighted(window=50)
    stream = load("bananas", limit=120)
    uniform: Proba = {"a": 0.5, "b": 0.5}
    s.utilities([r.features for r in stream[:100]], [uniform] * 100)
    typical, outlier = s.utilities([stream[110].features, {"x": 50.0, "y": 50.0}], [uniform, uniform])
    assert typical > 0.5
    assert outlier < 0.05
    # with fewer than two known classes the base's cold start stands, outlier or not
    assert s.utilities([{"x": 50.0, "y": 50.0}], [{"a": 1.0}]) == [1.0]
    # a margin of 0.6 vs 0.4: never more than plain margin
    assert s.utilities([stream[111].features], [{"a": 0.6, "b": 0.4}])[0] <= 0.8 + 1e-12


def test_density_handles_new_and_missing_features():
    s = DensityWeighted(window=20)
    half: Proba = {"a": 0.5, "b": 0.5}
    s.utilities([{"x": float(i)} for i in range(30)], [half] * 30)
    [u] = s.utilities([{"x": 3.0, "z": 1.0}], [half])
    [v] = s.utilities([{"z": 1.0}], [half])
    assert 0.0 <= u <= 1.0
    assert 0.0 <= v <= 1.0


# -- diversity ------------------------------------------------------------------------------------
def test_diversity_is_the_distance_to_the_nearest_label():
    s = Diversity()
    assert s.utilities([{"x": 1.0}, {"x": 2.0}], [{}, {}]) == [1.0, 1.0]
    for x in (0.0, 10.0):
        s.observe_label({"x": x, "y": 0.0}, "a")
    near, mid, far = s.utilities(
        [{"x": 0.0, "y": 0.0}, {"x": 5.0, "y": 0.0}, {"x": 100.0, "y": 0.0}], [{}] * 3
    )
    assert near == 0.0
    assert 0.0 < mid < far < 1.0


def test_the_engine_tells_strategy_and_policy_each_applied_label_once():
    seen: list[tuple[dict[str, float], object]] = []
    labels: list[object] = []

    class Spy(Diversity):
        def observe_label(self, x, y):
            seen.append((dict(x), y))
            super().observe_label(x, y)

    class PolicySpy(VariableUncertainty):
        def observe_label(self, label):
            labels.append(label)

    engine = Engine(build_model("knn"), Spy(), PolicySpy(budget=1.0), clock=lambda: 0.0)
    [d] = engine.score([Sample(id="s", features={"x": 1.0})])
    assert d.queried
    engine.learn(Label(id="s", label="a"))
    engine.learn(Label(id="s", label="a"))  # a duplicate is not learned, so not observed
    engine.learn(Label(id="nope", label="a"))
    assert seen == [({"x": 1.0}, "a")]
    assert labels == ["a"]
    assert engine.strategy._filled == 1  # type: ignore[attr-defined]
    assert engine.decision_seconds > 0.0


def test_engine_restored_from_an_older_checkpoint_has_a_decision_clock():
    engine = Engine(build_model("knn"), Entropy(), VariableUncertainty(), clock=lambda: 0.0)
    del engine.__dict__["decision_seconds"]  # as an engine pickled before the attribute existed
    engine.score([Sample(id="s", features={"x": 1.0})])
    assert engine.decision_seconds >= 0.0


# -- periodic ---------------------------------------------------------------------------------------
def test_periodic_sampling_spaces_requests_evenly():
    s, p = PeriodicSampling(), FixedThreshold(budget=0.1, min_spend=0.0, warmup=0)
    asked = [i for i in range(2000) if p.decide(s.utility({"a": 0.99, "b": 0.01}))]
    gaps = {b - a for a, b in itertools.pairwise(asked)}
    assert len(asked) == pytest.approx(200, abs=2)
    assert gaps <= {9, 10, 11}


@pytest.mark.parametrize("name", ["density_weighted", "diversity", "probabilistic_entropy", "periodic"])
def test_new_strategies_are_registered_and_named(name):
    assert STRATEGIES[name].name == name
    assert isinstance(STRATEGIES[name](seed=1), Strategy)
