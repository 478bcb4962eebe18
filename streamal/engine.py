"""The pure, synchronous core: a batch of samples in, decisions out; a label in, an outcome out.

No Kafka, no asyncio, no clock but the one injected: the service, the offline simulator and the tests all
drive this same object.

>>> from streamal.messages import Sample, Label
>>> from streamal.models import build_model
>>> from streamal.strategies import Entropy
>>> from streamal.policies import VariableUncertainty
>>> engine = Engine(build_model("knn"), Entropy(), VariableUncertainty(budget=0.5), clock=lambda: 0.0)
>>> [d] = engine.score([Sample(id="s1", features={"x": 1.0})])
>>> d.prediction, d.uncertainty, d.queried           # an untrained model is maximally uncertain
(None, 1.0, True)
>>> engine.learn(Label(id="s1", label="cat")).value, engine.model_version, engine.labels_learned
('applied', 1, 1)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from math import isfinite
from time import perf_counter
from typing import Any, NamedTuple

from streamal.messages import ClassLabel, Features, Label, Proba, Sample
from streamal.models.base import Model
from streamal.pending import LabelOutcome, PendingRequest, PendingRequests
from streamal.policies.base import Policy
from streamal.selection import Selector
from streamal.strategies.base import Strategy


class Decision(NamedTuple):
    """What the engine decided for one sample (a named tuple: one is made per sample)."""

    sample: Sample
    prediction: ClassLabel | None
    proba: Proba
    uncertainty: float  # 1 - max p (1.0 when the model knows no class)
    utility: float  # the strategy's utility
    queried: bool
    model_version: int
    ts: float


def finite(probas: list[Proba]) -> int:
    """Replace, in place, every distribution of ``probas`` that has a NaN or an infinite value with the
    uniform one over its classes (the model knows nothing of such a sample: maximally uncertain), and return
    how many were. Models should not give them; a numerical accident (a torch model that diverged, a
    feature at the edge of the float range) must not reach the ``predictions`` topic as ``null``."""
    replaced = 0
    for i, proba in enumerate(probas):
        if not isfinite(sum(proba.values())):  # a NaN or an infinity carries through the sum
            probas[i] = dict.fromkeys(proba, 1.0 / len(proba))
            replaced += 1
    return replaced


def predict(probas: Sequence[Proba]) -> list[ClassLabel | None]:
    """Each sample's predicted class: its most probable (the first of equals), ``None`` for a model that
    knows no class yet."""
    return [max(proba, key=proba.__getitem__) if proba else None for proba in probas]


def ask_each(
    policy: Policy, utilities: Sequence[float], predictions: Sequence[ClassLabel | None]
) -> list[bool]:
    """The policy's decision on each utility of a batch, in order (given the sample's predicted class too,
    for a policy that reads it)."""
    if policy.uses_prediction:
        return list(map(policy.decide_with, utilities, predictions))
    return list(map(policy.decide, utilities))


class Engine:
    """Model → strategy → policy for samples; pending request → model update for labels."""

    #: seconds spent in the strategy and the policy (not the model): the per-decision overhead. A class
    #: attribute as well, so that an engine restored from an older checkpoint starts it at zero.
    decision_seconds: float = 0.0
    #: distributions of the model with a NaN or an infinity, scored as uniform ones (:func:`finite`); a class
    #: attribute as well, for engines restored from older checkpoints
    invalid_probas: int = 0
    #: the windowed batch selector, if any (see :meth:`take_requests`); a class attribute as well, for
    #: engines restored from older checkpoints
    selector: Selector | None = None

    def __init__(
        self,
        model: Model,
        strategy: Strategy,
        policy: Policy,
        pending: PendingRequests | None = None,
        *,
        clock: Callable[[], float] = time.time,
        accuracy_window: int = 1000,
        selector: Selector | None = None,
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.policy = policy
        self.pending = pending if pending is not None else PendingRequests(clock=clock)
        self._clock = clock
        self.model_version = 0
        self.labels_learned = 0
        self.samples_scored = 0
        self.requests_made = 0
        self.outcomes: dict[LabelOutcome, int] = dict.fromkeys(LabelOutcome, 0)
        self._hits: deque[bool] = deque(maxlen=accuracy_window)
        self.correct_total = 0
        self.decision_seconds = 0.0
        self.invalid_probas = 0
        self.selector = selector
        #: the decisions of the window still open (selector only): part of the pickled state
        self._window: list[Decision] = []
        #: label requests decided when a window closed, not yet taken by :meth:`take_requests`
        self._requests: list[Decision] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_window", [])  # an engine pickled before windows existed
        self.__dict__.setdefault("_requests", [])

    # -- samples ----------------------------------------------------------------------------------
    def score(self, samples: Sequence[Sample]) -> list[Decision]:
        """Score a batch with the current model, then decide each sample in order.

        With a selector, every decision of the batch says ``queried=False``: which samples of a window are
        asked for is decided when the window fills, and those requests come from :meth:`take_requests`.
        """
        if not samples:
            # a poll without samples (a learner's) still ends a batch of labels: a model that learns the
            # labels of a batch together (the torch models) does so now; any other has nothing to do
            self.model.predict_proba_many([])
            return []
        xs = [s.features for s in samples]
        probas = self.model.predict_proba_many(xs)
        self.invalid_probas += finite(probas)
        now = self._clock()
        version = self.model_version
        predictions = predict(probas)
        policy = self.policy
        started = perf_counter()
        utilities = self.strategy.utilities(xs, probas)
        asks = (
            [False] * len(samples) if self.selector is not None else ask_each(policy, utilities, predictions)
        )
        self.decision_seconds += perf_counter() - started
        out = []
        for sample, proba, prediction, utility, queried in zip(
            samples, probas, predictions, utilities, asks, strict=True
        ):
            uncertainty = 1.0 - proba[prediction] if prediction is not None else 1.0
            if queried:
                self.pending.add(sample.id, PendingRequest(sample.features, prediction, version, now))
            out.append(Decision(sample, prediction, proba, uncertainty, utility, queried, version, now))
        self.samples_scored += len(samples)
        self.requests_made += sum(asks)
        if self.selector is not None:
            started = perf_counter()
            for decision in out:
                self._window.append(decision)
                if len(self._window) >= self.selector.window:
                    self._close_window(self.selector)
            self.decision_seconds += perf_counter() - started
        return out

    def _close_window(self, selector: Selector) -> None:
        """Pick ``round(budget * window)`` samples of the full window; the policy still gates every
        request, so the spending stays under its one budget estimate (and its floor still holds).

        The policy is shown the window's samples with utility 1 for a pick and 0 for the others, the picks
        spread evenly over the window from its first slot on (as a stream spending its budget evenly would
        show them): a pick is refused only when the estimate is over the budget, another sample asked only
        when it is under the policy's least spending."""
        window, self._window = self._window, []
        now = self._clock()
        n = len(window)
        k = round(self.policy.budget * n)
        picks = selector.select([d.sample.features for d in window], [d.proba for d in window], k)
        chosen = set(picks)
        slots = {j * n // len(picks) for j in range(len(picks))}
        next_pick, next_other = iter(picks), (i for i in range(n) if i not in chosen)
        policy = self.policy
        for slot in range(n):
            i = next(next_pick) if slot in slots else next(next_other)
            d = window[i]
            utility = 1.0 if i in chosen else 0.0
            ask = (
                policy.decide_with(utility, d.prediction)
                if policy.uses_prediction
                else policy.decide(utility)
            )
            if ask:
                self.pending.add(
                    d.sample.id, PendingRequest(d.sample.features, d.prediction, d.model_version, now)
                )
                self._requests.append(d._replace(queried=True, ts=now))
                self.requests_made += 1

    def take_requests(self) -> list[Decision]:
        """The label requests decided since the last call for samples scored before (windowed selection
        only; always empty without a selector): publish each as its sample's label request. ``ts`` is when
        the window closed (the request's time), ``model_version`` and ``proba`` those it was scored with."""
        requests, self._requests = self._requests, []
        return requests

    def withdraw(self, sample_id: str) -> None:
        """The label request of ``sample_id`` cannot be sent (its sample went to the dead-letter topic: its
        output cannot be encoded, or is over the size limit): forget it, so that it is neither pending nor,
        later, timed out, and a label for it is ``unknown``. The policy's budget stays spent (it decided).

        With a selector the sample also leaves the open window (no window closing later picks it) and the
        requests not yet taken (:meth:`take_requests`).
        """
        self.pending.withdraw(sample_id)
        if self.selector is not None:
            self._window = [d for d in self._window if d.sample.id != sample_id]
            self._requests = [d for d in self._requests if d.sample.id != sample_id]

    def register_request(
        self,
        sample_id: str,
        features: Features,
        prediction: ClassLabel | None,
        model_version: int,
        requested_at: float,
    ) -> None:
        """Record a label request read back from the ``label-requests`` topic (after a restart, or made by
        another process): a label for it can then be learned even if this engine did not make it."""
        self.pending.add(sample_id, PendingRequest(features, prediction, model_version, requested_at))

    # -- labels -----------------------------------------------------------------------------------
    def learn(self, label: Label) -> LabelOutcome:
        """Join a label with its request and learn from the features as they were scored.

        If the model raises, the exception goes on and nothing of the label is kept: its request waits
        again (:meth:`PendingRequests.reopen`), so the label replayed (or corrected) is learned then."""
        outcome, request = self.pending.resolve(label.id, label.label)
        if request is None:
            self.outcomes[outcome] += 1
            return outcome
        try:
            self.model.learn_one(request.features, label.label)
        except Exception:
            self.pending.reopen(label.id, request)
            raise
        self.outcomes[outcome] += 1
        if request.prediction is not None:  # a request made before any label predicted nothing
            hit = request.prediction == label.label
            self._hits.append(hit)
            self.correct_total += hit
        self.strategy.observe_label(request.features, label.label)
        self.policy.observe_label(label.label)
        if self.selector is not None:
            self.selector.observe_label(request.features)
        self.model_version += 1
        self.labels_learned += 1
        return outcome

    def expire(self) -> int:
        """Drop requests that outlived their time to live (call it now and then)."""
        return self.pending.expire()

    # -- what the outside sees --------------------------------------------------------------------
    @property
    def prequential_accuracy(self) -> float | None:
        """Accuracy of the predictions made before learning, over the most recent labels."""
        return sum(self._hits) / len(self._hits) if self._hits else None

    @property
    def budget_spent(self) -> float:
        """Fraction of all samples scored that were asked for."""
        return self.requests_made / self.samples_scored if self.samples_scored else 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.model_version,
            "labels_learned": self.labels_learned,
            "samples_scored": self.samples_scored,
            "label_requests": self.requests_made,
            "pending_requests": len(self.pending),
            "classes": self.model.classes,
            "model": self.model.name,
            "strategy": self.strategy.name,
            "policy": self.policy.state(),
            "prequential_accuracy": self.prequential_accuracy,
            "budget_spent": self.budget_spent,
            "outcomes": {o.value: n for o, n in self.outcomes.items()},
            "invalid_probas": self.invalid_probas,
        }
