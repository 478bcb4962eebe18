"""One conformance suite for every registered strategy × policy.

A strategy or policy gets all of it for free by being registered in ``STRATEGIES`` or ``POLICIES``:
same seed, same decisions; a replay never spends over its budget and never starves; a pickled engine
goes on deciding exactly as the original; late, missing and duplicate labels are survived and counted.
Replays drive the real :class:`~streamal.engine.Engine` over real data sets (river's, offline), in
batches as the service polls them, with each requested label answered some samples later.
"""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

import functools
import pickle
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest

from streamal.datasets import Record, load
from streamal.engine import Engine
from streamal.messages import Label, Sample
from streamal.models import build_model
from streamal.pending import LabelOutcome, PendingRequests
from streamal.policies import POLICIES
from streamal.strategies import STRATEGIES

COMBOS = [pytest.param(s, p, id=f"{s}+{p}") for s in STRATEGIES for p in POLICIES]
DATASETS = ("phishing", "image_segments")  # 1,250 and 2,310 samples; 2 and 7 classes
BUDGETS = (0.05, 0.1, 0.2)
BATCH = 10  # samples scored together, as one poll of the service
DELAY = 25  # a requested label comes back this many samples later

#: what a decision says, compared exactly between runs
Key = tuple[str, bool, Any, float, int]


class Clock:
    """A clock the test moves by hand; picklable, unlike a lambda."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@functools.cache
def records(name: str) -> tuple[Record, ...]:
    return tuple(load(name))


def make_engine(strategy: str, policy: str, budget: float, seed: int = 0, **kwargs: Any) -> Engine:
    kwargs.setdefault("clock", Clock())
    return Engine(
        build_model("knn"),
        STRATEGIES[strategy](seed=seed),
        POLICIES[policy](budget=budget, seed=seed),
        **kwargs,
    )


class Replay:
    """Feeds ``stream`` to ``engine`` in batches; each requested label is answered ``delay`` samples later."""

    def __init__(self, engine: Engine, stream: Sequence[Record], delay: int = DELAY) -> None:
        self.engine = engine
        self.stream = stream
        self.delay = delay
        self.position = 0
        self.due: deque[tuple[int, Label]] = deque()

    def run(self, until: int | None = None) -> list[Key]:
        stop = len(self.stream) if until is None else until
        keys: list[Key] = []
        while self.position < stop:
            while self.due and self.due[0][0] <= self.position:
                self.engine.learn(self.due.popleft()[1])
            chunk = self.stream[self.position : min(self.position + BATCH, stop)]
            decisions = self.engine.score([Sample(id=r.id, features=r.features) for r in chunk])
            for i, (record, d) in enumerate(zip(chunk, decisions, strict=True)):
                if d.queried:
                    self.due.append((self.position + i + self.delay, Label(id=record.id, label=record.label)))
                keys.append((d.sample.id, d.queried, d.prediction, d.utility, d.model_version))
            self.position += len(chunk)
        return keys

    def restored(self) -> Replay:
        """A copy whose engine went through pickle; the labels still due are carried over."""
        copy = Replay(pickle.loads(pickle.dumps(self.engine)), self.stream, self.delay)  # noqa: S301
        copy.position, copy.due = self.position, deque(self.due)
        return copy


@functools.cache
def replay(strategy: str, policy: str, dataset: str, budget: float, seed: int = 0) -> tuple[Key, ...]:
    """The decisions of one full replay (cached: several checks read the same run)."""
    return tuple(Replay(make_engine(strategy, policy, budget, seed), records(dataset)).run())


def rate(keys: Sequence[Key]) -> float:
    return sum(k[1] for k in keys) / len(keys)


# -- (a) same seed, same decisions -----------------------------------------------------------------
@pytest.mark.parametrize(("strategy", "policy"), COMBOS)
def test_same_seed_gives_identical_decisions(strategy, policy):
    for dataset in DATASETS:
        first = replay(strategy, policy, dataset, 0.1)
        again = Replay(make_engine(strategy, policy, 0.1), records(dataset)).run()
        assert len(first) == len(records(dataset))
        assert sum(k[1] for k in first) > 0, dataset
        assert list(first) == again, dataset


@pytest.mark.parametrize(("strategy", "policy"), COMBOS)
def test_decisions_are_well_formed(strategy, policy):
    keys = replay(strategy, policy, "image_segments", 0.1)
    assert all(0.0 <= k[3] <= 1.0 for k in keys)
    versions = [k[4] for k in keys]
    assert versions == sorted(versions)
    assert versions[-1] > 0  # the labels were learned
    assert {k[2] for k in keys[DELAY + BATCH :]} <= {r.label for r in records("image_segments")}


# -- (b) a replay never spends over budget --------------------------------------------------------
@pytest.mark.parametrize(("strategy", "policy"), COMBOS)
def test_replay_never_spends_over_budget(strategy, policy):
    for dataset in DATASETS:
        for budget in BUDGETS:
            spent = rate(replay(strategy, policy, dataset, budget))
            assert spent <= budget * 1.10, f"{dataset} at budget {budget}: spent {spent:.4f}"


# -- (c) never starves ------------------------------------------------------------------------------
@pytest.mark.parametrize(("strategy", "policy"), COMBOS)
def test_replay_spends_at_least_half_its_budget(strategy, policy):
    for dataset in DATASETS:
        for budget in BUDGETS:
            spent = rate(replay(strategy, policy, dataset, budget))
            assert spent >= 0.5 * budget, f"{dataset} at budget {budget}: spent {spent:.4f}"


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("budget", BUDGETS)
def test_policy_does_not_starve_on_a_constant_zero_utility(policy, budget):
    p = POLICIES[policy](budget=budget, seed=0)
    asked = [p.decide(0.0) for _ in range(4000)]
    assert sum(asked) >= 0.5 * budget * len(asked)
    assert sum(asked[2000:]) >= 0.5 * budget * 2000  # still spending long after the start
    assert sum(asked) <= 1.10 * budget * len(asked)


def _separable_stream(n: int, seed: int = 0) -> list[Record]:
    """Two tight clusters far apart: a model that has seen a few labels is sure of every sample."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.random() < 0.5
        centre = 10.0 if label else -10.0
        point = {"x": centre + rng.gauss(0, 0.1), "y": centre + rng.gauss(0, 0.1)}
        out.append(Record(f"sep-{i}", point, label))
    return out


@pytest.mark.parametrize(("strategy", "policy"), COMBOS)
def test_does_not_starve_when_the_model_is_confident(strategy, policy):
    stream = _separable_stream(3000)
    for budget in BUDGETS:
        engine = make_engine(strategy, policy, budget)
        keys = Replay(engine, stream).run()
        late = keys[1000:]
        # it is trained ...
        assert [k[2] for k in late] == [r.label for r in stream[1000:]]
        assert all(engine.model.predict_proba_one(r.features)[r.label] > 0.9 for r in stream[-100:])
        # ... confident, and still asking for at least half its budget
        assert rate(keys) >= 0.5 * budget, f"budget {budget}: spent {rate(keys):.4f}"
        assert rate(late) >= 0.5 * budget, f"budget {budget}: spent {rate(late):.4f} once trained"
        assert rate(keys) <= 1.10 * budget


# -- (d) pickle round trip mid-stream ---------------------------------------------------------------
@pytest.mark.parametrize(("strategy", "policy"), COMBOS)
def test_pickled_engine_goes_on_deciding_identically(strategy, policy):
    original = Replay(make_engine(strategy, policy, 0.2, seed=3), records("phishing"))
    original.run(until=500)
    assert original.due  # labels in flight and requests pending cross the pickle boundary
    assert len(original.engine.pending) > 0
    restored = original.restored()
    assert restored.engine is not original.engine
    rest = original.run()
    assert restored.run() == rest
    assert len(rest) == len(records("phishing")) - 500
    assert restored.engine.describe() == original.engine.describe()


# -- (e) late, missing and duplicate labels ----------------------------------------------------------
@pytest.mark.parametrize(("strategy", "policy"), COMBOS)
def test_late_missing_duplicate_and_unknown_labels_are_survived(strategy, policy):
    clock = Clock()
    pending = PendingRequests(ttl_seconds=100.0, clock=clock)
    engine = make_engine(strategy, policy, 0.2, pending=pending, clock=clock)
    stream = records("image_segments")[:800]
    labels = {r.id: r.label for r in stream}
    other = {r.label for r in stream}
    # every requested sample gets one fate, in turn
    fates = ("once", "twice", "contradicted", "missing", "late")
    fate_of: dict[str, str] = {}
    soon: deque[str] = deque()  # answered before the next batch

    def answer() -> None:
        while soon:
            sid = soon.popleft()
            engine.learn(Label(id=sid, label=labels[sid]))
            if fate_of[sid] == "twice":
                engine.learn(Label(id=sid, label=labels[sid]))
            if fate_of[sid] == "contradicted":
                wrong = next(c for c in sorted(other) if c != labels[sid])
                engine.learn(Label(id=sid, label=wrong))

    for start in range(0, len(stream), BATCH):
        answer()
        chunk = stream[start : start + BATCH]
        for d in engine.score([Sample(id=r.id, features=r.features) for r in chunk]):
            if d.queried:
                fate_of[d.sample.id] = fates[len(fate_of) % len(fates)]
                if fate_of[d.sample.id] in ("once", "twice", "contradicted"):
                    soon.append(d.sample.id)
        clock.now += 1.0  # 80 batches: well within the time to live
    answer()
    engine.learn(Label(id="never-asked", label=stream[0].label))
    clock.now += 101.0
    late = [sid for sid, fate in fate_of.items() if fate == "late"]
    for sid in late:
        assert engine.learn(Label(id=sid, label=labels[sid])) is LabelOutcome.EXPIRED
    missing = engine.expire()

    count = {fate: sum(f == fate for f in fate_of.values()) for fate in fates}
    assert min(count.values()) > 0, count
    assert engine.requests_made == len(fate_of)
    applied = count["once"] + count["twice"] + count["contradicted"]
    assert engine.outcomes == {
        LabelOutcome.APPLIED: applied,
        LabelOutcome.DUPLICATE: count["twice"],
        LabelOutcome.CONFLICTING: count["contradicted"],
        LabelOutcome.EXPIRED: count["late"],
        LabelOutcome.UNKNOWN: 1,
    }
    assert missing == count["missing"]
    assert len(engine.pending) == 0
    assert engine.labels_learned == engine.model_version == applied
    [after] = engine.score([Sample(id="after", features=stream[0].features)])
    assert after.model_version == applied
