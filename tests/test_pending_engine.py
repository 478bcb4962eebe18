"""Pending requests (bounded, expiring, explicit outcomes) and the engine that joins labels to them."""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False
# (the loose typing pyproject.toml gives tests.*, also when mypy names this module without the package)

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streamal.engine import Engine
from streamal.messages import ClassLabel, Features, Label, Proba, Sample
from streamal.models import build_model
from streamal.models.base import Model
from streamal.pending import LabelOutcome, PendingRequest, PendingRequests
from streamal.policies import FixedThreshold, Policy, VariableUncertainty
from streamal.strategies import Entropy, LeastConfidence, Margin


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _request(x: float = 1.0, at: float = 0.0) -> PendingRequest:
    return PendingRequest({"x": x}, None, 0, at)


# -- pending requests -----------------------------------------------------------------------------
def test_pending_is_bounded_and_counts_evictions():
    pending = PendingRequests(max_size=3, clock=Clock())
    for i in range(5):
        pending.add(f"s{i}", _request(float(i)))
    assert len(pending) == 3
    assert pending.evicted == 2
    assert "s0" not in pending
    assert "s2" in pending
    assert pending.resolve("s0", "a") == (LabelOutcome.EXPIRED, None)
    assert pending.resolve("s1", "a") == (LabelOutcome.EXPIRED, None)
    outcome, request = pending.resolve("s4", "a")
    assert outcome is LabelOutcome.APPLIED
    assert request is not None
    assert request.features == {"x": 4.0}


def test_pending_ttl_with_injected_clock():
    clock = Clock(100.0)
    pending = PendingRequests(ttl_seconds=10.0, clock=clock)
    pending.add("old", _request(at=100.0))
    pending.add("new", _request(at=105.0))
    clock.now = 109.5
    assert pending.expire() == 0
    clock.now = 110.5
    assert pending.expire() == 1
    assert pending.timed_out == 1
    assert "old" not in pending
    assert "new" in pending
    assert pending.resolve("old", "a")[0] is LabelOutcome.EXPIRED
    assert pending.resolve("new", "a")[0] is LabelOutcome.APPLIED


def test_a_label_after_the_ttl_is_expired_even_without_a_sweep():
    clock = Clock(0.0)
    pending = PendingRequests(ttl_seconds=10.0, clock=clock)
    pending.add("s", _request(at=0.0))
    clock.now = 30.0
    assert pending.resolve("s", "a") == (LabelOutcome.EXPIRED, None)
    assert pending.timed_out == 1
    assert pending.resolve("s", "a") == (LabelOutcome.EXPIRED, None)  # stays expired
    assert pending.timed_out == 1


def test_outcomes_applied_duplicate_conflicting_unknown():
    pending = PendingRequests(clock=Clock())
    request = _request()
    pending.add("s", request)
    assert pending.resolve("s", "cat") == (LabelOutcome.APPLIED, request)
    assert pending.resolve("s", "cat") == (LabelOutcome.DUPLICATE, None)
    assert pending.resolve("s", "dog") == (LabelOutcome.CONFLICTING, None)
    assert pending.resolve("s", "cat") == (LabelOutcome.DUPLICATE, None)  # the first label stands
    assert pending.resolve("never-asked", "cat") == (LabelOutcome.UNKNOWN, None)
    assert len(pending) == 0


@pytest.mark.parametrize(
    ("first", "again", "outcome"),
    [
        (1, 1, LabelOutcome.DUPLICATE),
        (1, "1", LabelOutcome.CONFLICTING),
        (1, True, LabelOutcome.CONFLICTING),
        (True, True, LabelOutcome.DUPLICATE),
        (True, 1, LabelOutcome.CONFLICTING),
        (False, 0, LabelOutcome.CONFLICTING),
        ("1", "1", LabelOutcome.DUPLICATE),
        ("1", 1, LabelOutcome.CONFLICTING),
    ],
)
def test_duplicate_detection_respects_label_type(first, again, outcome):
    pending = PendingRequests(clock=Clock())
    pending.add("s", _request())
    assert pending.resolve("s", first)[0] is LabelOutcome.APPLIED
    assert pending.resolve("s", again)[0] is outcome


def test_a_repeated_request_replaces_the_older_and_an_answered_one_is_not_reopened():
    pending = PendingRequests(clock=Clock())
    pending.add("s", _request(1.0))
    pending.add("s", _request(2.0))  # scored again after a restart
    assert len(pending) == 1
    outcome, request = pending.resolve("s", "a")
    assert outcome is LabelOutcome.APPLIED
    assert request is not None
    assert request.features == {"x": 2.0}
    pending.add("s", _request(3.0))
    assert len(pending) == 0
    assert pending.resolve("s", "a")[0] is LabelOutcome.DUPLICATE


def test_memory_of_ended_requests_is_bounded():
    pending = PendingRequests(memory=2, clock=Clock())
    for sid in ("a", "b", "c"):
        pending.add(sid, _request())
        pending.resolve(sid, "x")
    assert pending.resolve("a", "x")[0] is LabelOutcome.UNKNOWN  # forgotten
    assert pending.resolve("c", "x")[0] is LabelOutcome.DUPLICATE


@pytest.mark.parametrize(
    "kwargs", [{"max_size": -1}, {"ttl_seconds": 0.0}, {"ttl_seconds": -1.0}, {"memory": -1}]
)
def test_pending_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError, match="max_size"):
        PendingRequests(**kwargs)


# -- engine -----------------------------------------------------------------------------------------
class ScriptedModel(Model):
    """Predicts whatever ``proba`` says and records what it learns; memorises the last label if asked."""

    name = "scripted"

    def __init__(self, proba: Proba | None = None, memorise: bool = False) -> None:
        self.proba: Proba = proba or {}
        self.memorise = memorise
        self.learned: list[tuple[Features, ClassLabel]] = []

    @property
    def classes(self) -> list[ClassLabel]:
        return list(self.proba)

    def predict_proba_many(self, xs: Sequence[Features]) -> list[Proba]:
        return [dict(self.proba) for _ in xs]

    def learn_one(self, x: Features, y: ClassLabel) -> None:
        self.learned.append((dict(x), y))
        if self.memorise:
            self.proba = {y: 0.9, **{c: 0.1 / max(1, len(self.proba)) for c in self.proba if c != y}}


class AlwaysAsk(Policy):
    """Asks for every sample, so that engine tests do not depend on a budget."""

    name = "always"

    def decide(self, utility: float) -> bool:
        return True

    def _ask(self, utility: float) -> bool:
        return True


def _always() -> AlwaysAsk:
    return AlwaysAsk(budget=1.0)


def test_cold_start_asks_with_maximal_uncertainty():
    engine = Engine(build_model("knn"), Margin(), VariableUncertainty(budget=0.1), clock=Clock(5.0))
    [d] = engine.score([Sample(id="s1", features={"x": 1.0})])
    assert d.prediction is None
    assert d.proba == {}
    assert d.uncertainty == 1.0
    assert d.utility == 1.0
    assert d.queried is True
    assert (d.model_version, d.ts) == (0, 5.0)
    assert "s1" in engine.pending


def test_cold_start_keeps_asking_until_two_classes_are_known():
    engine = Engine(build_model("knn"), Entropy(), _always())
    engine.score([Sample(id="a", features={"x": 0.0})])
    engine.learn(Label(id="a", label="cat"))
    [d] = engine.score([Sample(id="b", features={"x": 0.0})])
    assert d.proba == {"cat": 1.0}
    assert d.prediction == "cat"
    assert d.utility == 1.0  # one known class: nothing to be sure about yet
    assert d.uncertainty == 0.0


def test_engine_learns_from_the_features_as_they_were_scored():
    model = ScriptedModel()
    engine = Engine(model, LeastConfidence(), _always(), clock=Clock())
    [first] = engine.score([Sample(id="s1", features={"x": 1.0, "y": 2.0}, meta={"x": 99})])
    assert first.queried
    engine.score([Sample(id="s2", features={"x": -5.0})])
    assert engine.learn(Label(id="s1", label="a", annotator="ann")) is LabelOutcome.APPLIED
    assert model.learned == [({"x": 1.0, "y": 2.0}, "a")]


def test_model_version_increments_per_applied_label_only():
    clock = Clock()
    model = ScriptedModel()
    engine = Engine(model, Margin(), _always(), PendingRequests(ttl_seconds=10, clock=clock), clock=clock)
    engine.score([Sample(id=s, features={"x": 0.0}) for s in ("a", "b", "c")])
    assert engine.requests_made == 3
    outcomes = [
        engine.learn(Label(id="a", label=1)),
        engine.learn(Label(id="a", label=1)),
        engine.learn(Label(id="a", label=2)),
        engine.learn(Label(id="nope", label=1)),
        engine.learn(Label(id="b", label=True)),
    ]
    clock.now = 20.0
    outcomes.append(engine.learn(Label(id="c", label=1)))
    assert [o.value for o in outcomes] == [
        "applied",
        "duplicate",
        "conflicting",
        "unknown",
        "applied",
        "expired",
    ]
    assert engine.model_version == 2
    assert engine.labels_learned == 2
    assert [y for _, y in model.learned] == [1, True]
    assert engine.outcomes == {
        LabelOutcome.APPLIED: 2,
        LabelOutcome.DUPLICATE: 1,
        LabelOutcome.CONFLICTING: 1,
        LabelOutcome.UNKNOWN: 1,
        LabelOutcome.EXPIRED: 1,
    }
    assert engine.describe()["outcomes"] == {o.value: n for o, n in engine.outcomes.items()}


def test_decisions_carry_the_model_version_they_were_made_with():
    engine = Engine(ScriptedModel(), Margin(), _always(), clock=Clock())
    [d0] = engine.score([Sample(id="a", features={"x": 0.0})])
    engine.learn(Label(id="a", label="x"))
    [d1] = engine.score([Sample(id="b", features={"x": 0.0})])
    assert (d0.model_version, d1.model_version) == (0, 1)


def test_prequential_accuracy_uses_the_prediction_made_before_learning():
    model = ScriptedModel({"a": 0.9, "b": 0.1}, memorise=True)
    engine = Engine(model, Margin(), _always(), clock=Clock())
    assert engine.prequential_accuracy is None
    [d] = engine.score([Sample(id="s1", features={"x": 0.0})])
    assert d.prediction == "a"
    engine.learn(Label(id="s1", label="b"))  # the model now predicts "b"; the score was made before
    assert engine.prequential_accuracy == 0.0
    [d] = engine.score([Sample(id="s2", features={"x": 0.0})])
    assert d.prediction == "b"
    engine.learn(Label(id="s2", label="b"))
    assert engine.prequential_accuracy == 0.5
    assert engine.correct_total == 1


def test_prequential_accuracy_is_windowed():
    model = ScriptedModel({"a": 0.9, "b": 0.1})
    engine = Engine(model, Margin(), _always(), clock=Clock(), accuracy_window=2)
    for i, label in enumerate(["b", "a", "a"]):
        engine.score([Sample(id=str(i), features={})])
        engine.learn(Label(id=str(i), label=label))
    assert engine.prequential_accuracy == 1.0
    assert engine.correct_total == 2


def test_counts_budget_spent_and_empty_batches():
    engine = Engine(ScriptedModel({"a": 1.0, "b": 0.0}), Margin(), FixedThreshold(budget=0.5), clock=Clock())
    assert engine.score([]) == []
    assert engine.budget_spent == 0.0
    decisions = engine.score([Sample(id=str(i), features={"x": float(i)}) for i in range(10)])
    assert engine.samples_scored == 10
    assert engine.requests_made == sum(d.queried for d in decisions) == len(engine.pending)
    assert engine.budget_spent == engine.requests_made / 10
    assert [d.sample.id for d in decisions] == [str(i) for i in range(10)]


def test_engine_expire_sweeps_old_requests():
    clock = Clock()
    engine = Engine(
        ScriptedModel(), Margin(), _always(), PendingRequests(ttl_seconds=5, clock=clock), clock=clock
    )
    engine.score([Sample(id="a", features={})])
    clock.now = 1.0
    engine.score([Sample(id="b", features={})])
    clock.now = 5.5
    assert engine.expire() == 1
    assert engine.learn(Label(id="a", label="x")) is LabelOutcome.EXPIRED
    assert engine.learn(Label(id="b", label="x")) is LabelOutcome.APPLIED
    assert engine.pending.timed_out == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_distribution_with_a_nan_or_an_infinity_is_scored_as_uniform_and_counted(bad):
    engine = Engine(ScriptedModel({"a": bad, "b": 0.5}), Margin(), _always())
    [d] = engine.score([Sample(id="s1", features={"x": 1.0})])
    assert d.proba == {"a": 0.5, "b": 0.5}  # nothing known of it: maximally uncertain, never null on the wire
    assert d.uncertainty == 0.5
    assert d.utility == 1.0
    assert engine.invalid_probas == 1
    assert engine.describe()["invalid_probas"] == 1
    engine.model = ScriptedModel({"a": 0.7, "b": 0.3})
    [d] = engine.score([Sample(id="s2", features={"x": 1.0})])
    assert d.proba == {"a": 0.7, "b": 0.3}
    assert engine.invalid_probas == 1


def test_a_label_the_model_fails_to_learn_leaves_its_request_waiting_for_a_replay():
    class Refusing(ScriptedModel):
        refuse = True

        def learn_one(self, x: Features, y: ClassLabel) -> None:
            if self.refuse:
                raise TypeError("'<' not supported between instances of 'str' and 'int'")
            super().learn_one(x, y)

    model = Refusing({"a": 0.6, "b": 0.4})
    engine = Engine(model, Margin(), _always())
    engine.score([Sample(id="s1", features={"x": 1.0})])
    with pytest.raises(TypeError):
        engine.learn(Label(id="s1", label=1))
    # nothing of it was kept: not counted, not learned, and the request still waits
    assert engine.outcomes[LabelOutcome.APPLIED] == 0
    assert (engine.labels_learned, engine.model_version, engine.prequential_accuracy) == (0, 0, None)
    assert "s1" in engine.pending
    model.refuse = False
    assert engine.learn(Label(id="s1", label="b")) is LabelOutcome.APPLIED  # the corrected label, replayed
    assert model.learned == [({"x": 1.0}, "b")]
    assert engine.learn(Label(id="s1", label="b")) is LabelOutcome.DUPLICATE


def test_a_scorers_engine_keeps_and_reports_no_pending_request():
    # (a scorer kept a one-slot buffer: every request after its first counted as evicted, and the dashboard's
    # pending and dropped panels added those up)
    from streamal.config import Settings
    from streamal.service import build_engine

    settings = Settings.model_validate({"policy": {"name": "threshold", "budget": 1.0}})
    scorer, whole = (build_engine(settings, clock=Clock(), role=role) for role in ("scorer", "all"))
    samples = [Sample(id=f"s{i}", features={"x": float(i)}) for i in range(20)]
    for engine in (scorer, whole):
        assert sum(d.queried for d in engine.score(samples)) == 20
    assert (len(scorer.pending), scorer.pending.evicted) == (0, 0)
    assert len(whole.pending) == 20
    assert scorer.learn(Label(id="s3", label="a")) is LabelOutcome.UNKNOWN
