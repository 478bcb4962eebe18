"""Windowed batch selection (k-center greedy, BADGE) and the engine that consults it once per window."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import pickle

import numpy as np
import pytest

from streamal.datasets import load
from streamal.engine import Engine
from streamal.errors import ConfigError
from streamal.messages import Label, Proba, Sample
from streamal.models import build_model
from streamal.pending import LabelOutcome
from streamal.policies import POLICIES
from streamal.selection import SELECTORS, Badge, KCenterGreedy, build_selector
from streamal.strategies import Entropy


def clusters(sizes, centres, seed=0, spread=0.1) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for size, centre in zip(sizes, centres, strict=True):
        for _ in range(size):
            x, y = np.asarray(centre) + rng.normal(scale=spread, size=2)
            out.append({"x": float(x), "y": float(y)})
    return out


CENTRES = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)]


def cluster_of(x) -> int:
    return min(range(3), key=lambda c: (x["x"] - CENTRES[c][0]) ** 2 + (x["y"] - CENTRES[c][1]) ** 2)


# -- the selectors alone ----------------------------------------------------------------------------
def test_kcenter_picks_spread_out_points():
    xs = clusters([40, 5, 5], CENTRES)  # a burst of near-duplicates and two small groups
    picks = KCenterGreedy().select(xs, [{}] * len(xs), 3)
    assert sorted(cluster_of(xs[i]) for i in picks) == [0, 1, 2]
    # the three most uncertain by a strategy could all be in the burst; k-center takes one of it
    assert len(set(picks)) == 3


def test_kcenter_keeps_away_from_what_was_labelled():
    selector = KCenterGreedy()
    for x in clusters([20], [CENTRES[0]], seed=1):
        selector.observe_label(x)
    xs = clusters([10, 10, 10], CENTRES, seed=2)
    picks = selector.select(xs, [{}] * len(xs), 2)
    assert sorted(cluster_of(xs[i]) for i in picks) == [1, 2]


def test_badge_prefers_uncertain_samples_and_covers_the_window():
    xs = clusters([20, 20, 20], CENTRES, seed=3)
    # the model is sure of cluster 0, unsure of clusters 1 and 2
    probas: list[Proba] = [{"a": 0.99, "b": 0.01} if cluster_of(x) == 0 else {"a": 0.5, "b": 0.5} for x in xs]
    for seed in range(5):
        picks = Badge(seed=seed).select(xs, probas, 6)
        chosen = [cluster_of(xs[i]) for i in picks]
        # the sure samples' gradients all lie near the origin: one of them at most is distinct enough
        assert chosen.count(0) <= 1, chosen
        assert chosen.count(1) >= 2, chosen
        assert chosen.count(2) >= 2, chosen
        assert Badge(seed=seed).select(xs, probas, 6) == picks  # seeded


def test_badge_without_known_classes_covers_the_window():
    xs = clusters([20, 3, 3], CENTRES, seed=4)
    picks = Badge().select(xs, [{}] * len(xs), 3)
    assert sorted(cluster_of(xs[i]) for i in picks) == [0, 1, 2]


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selectors_return_k_distinct_indices_even_on_duplicates(name):
    xs = [{"x": 1.0}] * 10 + [{"x": 2.0, "z": 1.0}]  # a feature missing from most samples
    probas: list[Proba] = [{"a": 0.6, "b": 0.4}] * 11
    for k in (0, 1, 5, 11, 20):
        picks = build_selector(name).select(xs, probas, k)
        assert len(picks) == len(set(picks)) == min(k, 11)
        assert all(0 <= i < 11 for i in picks)


def test_unknown_selectors_and_bad_windows_are_config_errors():
    with pytest.raises(ConfigError, match="unknown selector"):
        build_selector("nope")
    with pytest.raises(ConfigError, match="window"):
        build_selector("kcenter", window=0)


# -- the engine with a selector ---------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_engine(selector: str, policy: str = "threshold", budget: float = 0.1, window: int = 50) -> Engine:
    return Engine(
        build_model("knn"),
        Entropy(seed=0),
        POLICIES[policy](budget=budget, seed=0),
        clock=Clock(),
        selector=build_selector(selector, window=window, seed=0),
    )


def replay(engine: Engine, records, start: int = 0, batch: int = 7, delay: int = 20):
    """Score in batches; each request (taken from the engine when a window closes) is answered later."""
    due: list[tuple[int, Label]] = []
    log: list[tuple[object, ...]] = []
    for i in range(start, len(records), batch):
        for _, label in [d for d in due if d[0] <= i]:
            assert engine.learn(label) is LabelOutcome.APPLIED
        due = [d for d in due if d[0] > i]
        chunk = records[i : i + batch]
        decisions = engine.score([Sample(id=r.id, features=r.features) for r in chunk])
        assert not any(d.queried for d in decisions)  # predictions go out at once, undecided
        log += [(d.sample.id, d.prediction, d.model_version) for d in decisions]
        for request in engine.take_requests():
            assert request.queried
            log.append(("request", request.sample.id, request.ts))
            label = next(r.label for r in records if r.id == request.sample.id)
            due.append((i + delay, Label(id=request.sample.id, label=label)))
    return log


@pytest.mark.parametrize("selector", sorted(SELECTORS))
@pytest.mark.parametrize("policy", ["threshold", "variable_uncertainty", "class_balanced", "split"])
def test_windowed_engine_spends_its_budget_and_no_more(selector, policy):
    records = load("image_segments", limit=1000)
    engine = make_engine(selector, policy)
    log = replay(engine, records)
    requests = [entry for entry in log if entry[0] == "request"]
    assert engine.samples_scored == 1000
    assert engine.requests_made == len(requests)
    assert 0.09 <= len(requests) / 1000 <= 0.101
    assert engine.labels_learned > 0.8 * len(requests)
    assert len({entry[1] for entry in requests}) == len(requests)  # each sample asked at most once


def test_requests_come_when_the_window_fills():
    records = load("image_segments", limit=120)
    engine = make_engine("kcenter", budget=0.1, window=50)
    # no warm start (a policy may ask for its first samples whatever it is shown): the picks alone
    engine.policy.warmup = 0
    first = engine.score([Sample(id=r.id, features=r.features) for r in records[:49]])
    assert not any(d.queried for d in first)
    assert engine.take_requests() == []
    assert len(engine.pending) == 0
    engine.score([Sample(id=r.id, features=r.features) for r in records[49:60]])
    requests = engine.take_requests()
    window = [r.features for r in records[:50]]
    picks = KCenterGreedy().select(window, [{}] * 50, 5)  # round(0.1 * 50); the model knew nothing
    assert sorted(d.sample.id for d in requests) == sorted(records[i].id for i in picks)
    assert all(d.sample.id in engine.pending for d in requests)
    assert engine.take_requests() == []  # taken once
    assert len(engine._window) == 10  # the next window is open


def test_an_open_window_survives_pickling():
    records = load("image_segments", limit=600)
    engine = make_engine("badge", budget=0.2)
    replay(engine, records[:230])
    assert engine._window  # a window is open at the checkpoint
    restored = pickle.loads(pickle.dumps(engine))  # noqa: S301 - bytes this test just made
    assert replay(restored, records, start=230) == replay(engine, records, start=230)


def test_without_a_selector_nothing_changes():
    records = load("image_segments", limit=200)
    plain = Engine(
        build_model("knn"), Entropy(seed=0), POLICIES["threshold"](budget=0.1, seed=0), clock=Clock()
    )
    decisions = plain.score([Sample(id=r.id, features=r.features) for r in records])
    assert any(d.queried for d in decisions)
    assert plain.take_requests() == []
    old = pickle.loads(pickle.dumps(plain))  # noqa: S301 - bytes this test just made
    del old.__dict__["selector"]  # as an engine pickled before selectors existed
    assert old.selector is None
    assert old.take_requests() == []
