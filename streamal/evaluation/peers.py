"""The peers streamal is measured against, run on the same streams with the same prequential protocol.

* ``skactiveml.<Name>``: scikit-activeml's stream query strategies with their default budget managers.
  Their classifier is the closest their API allows to streamal's kNN: scikit-learn's distance-weighted
  5-nearest-neighbours (``SklearnClassifier(KNeighborsClassifier(5, weights="distance"))``) refitted on
  the last 1,000 labels after every label, on features standardised by the labelled samples' running
  mean and deviation (as streamal's kNN scales them). scikit-activeml needs the list of classes up front:
  it is given the classes of the whole stream (streamal learns them as they come).
* ``river.EntropySampler``: river's active learning wrapper, around streamal's own kNN classifier (it is a
  river classifier), so the model is the same and only the sampling differs. river's sampler has no budget:
  it asks with probability ``(H / H_max) ** 3``; here it is also held to the budget (it may not ask once
  ``budget * samples seen`` labels have been asked), and it asks while its classifier knows fewer than two
  classes (it would otherwise never ask: an untrained classifier returns no probabilities, whose entropy
  is 0).

The per-decision time of a peer is that of its query step as its API defines it: for scikit-activeml
``query`` + ``update``, for river ``_ask_for_label`` given the probabilities. scikit-activeml's ``query``
asks the classifier for the candidate's probabilities; the harness has just computed them to predict the
sample, and the classifier remembers them until its next fit, so the query step finds them computed, as
streamal's strategy and policy are given them (the neighbour search is timed once, as the model's).

Where a peer's time goes (scikit-activeml 1.0.1, ``cProfile`` on Phishing): mostly in scikit-activeml's and
scikit-learn's input validation (``check_array`` on every call), in scikit-learn's neighbour search, and for
``StreamProbabilisticAL`` in fitting a Parzen window classifier on all the labels at every query. The harness
avoids what is its own: the second neighbour search per sample, and scikit-learn's OpenMP thread pool for
single-sample searches (on a loaded 2-core machine one such search took 38 ms, against well under 1 ms on
one thread). Neither changes a decision (``tests/test_peers.py`` compares the decisions with a plain loop).
They need the ``peers`` extra: ``pip install 'streamal[peers]'``.
"""

from __future__ import annotations

import functools
import importlib
import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from streamal.datasets import Record
from streamal.errors import ConfigError
from streamal.evaluation.simulate import SimulationResult, learning_curve
from streamal.messages import ClassLabel

#: scikit-activeml's stream query strategies run by default. The others can be named: its random and
#: periodic baselines; RandomVariableUncertainty and CognitiveDualQueryStrategyRanVarUn (left out to keep
#: the bench's time down: each costs milliseconds per sample); FixedUncertainty, left out because with
#: this classifier it asks for almost nothing (0.1% of the samples at budget 0.1 on Phishing).
SKACTIVEML = ("StreamProbabilisticAL", "VariableUncertainty", "Split", "StreamDensityBasedAL")
SKACTIVEML_ALL = (
    *SKACTIVEML,
    "RandomVariableUncertainty",
    "CognitiveDualQueryStrategyRanVarUn",
    "FixedUncertainty",
    "StreamRandomSampling",
    "PeriodicSampling",
)
PEERS = (*(f"skactiveml.{n}" for n in SKACTIVEML), "river.EntropySampler")
#: the budget manager each strategy uses by default (scikit-activeml 1.0)
_DEFAULT_MANAGER = {
    "StreamProbabilisticAL": "BalancedIncrementalQuantileFilter",
    "VariableUncertainty": "VariableUncertaintyBudgetManager",
    "Split": "SplitBudgetManager",
    "RandomVariableUncertainty": "RandomVariableUncertaintyBudgetManager",
    "FixedUncertainty": "FixedUncertaintyBudgetManager",
    "StreamDensityBasedAL": "DensityBasedSplitBudgetManager",
    "CognitiveDualQueryStrategyRanVarUn": "RandomVariableUncertaintyBudgetManager",
    "StreamRandomSampling": "(none)",
    "PeriodicSampling": "(none)",
}
WINDOW = 1000
N_NEIGHBORS = 5


def available() -> bool:
    """Whether the peers' packages are installed (the ``peers`` extra)."""
    try:
        importlib.import_module("skactiveml.stream")
    except ImportError:
        return False
    return True


def _matrix(records: Sequence[Record]) -> np.ndarray:
    names: dict[str, None] = {}
    for r in records:
        for k in r.features:
            names.setdefault(k, None)
    m = np.array([[r.features.get(k, math.nan) for k in names] for r in records], dtype=np.float64)
    if np.isnan(m).any():
        means = np.nanmean(np.where(np.isnan(m), np.nan, m), axis=0)
        m = np.where(np.isnan(m), np.nan_to_num(means)[None, :], m)
    return m


class _Scale:
    """Running mean and deviation over the labelled samples (Welford)."""

    def __init__(self, width: int) -> None:
        self.n = 0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    def add(self, row: np.ndarray) -> None:
        self.n += 1
        delta = row - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.m2 + delta * (row - self.mean)

    def apply(self, m: np.ndarray) -> np.ndarray:
        if self.n < 2:
            return m
        std = np.sqrt(self.m2 / self.n)
        return (m - self.mean) / np.where(std > 1e-12, std, 1.0)


@functools.cache
def _remembering_classifier(base: type) -> type:
    """``base`` (scikit-activeml's ``SklearnClassifier``) remembering its last probabilities until it is
    fitted again: the harness predicts a sample and the query step then asks for the same probabilities of
    the same sample, so the neighbour search runs once instead of twice. Nothing else changes."""

    class RememberingClassifier(base):  # type: ignore[misc]
        _last: tuple[bytes, np.ndarray] | None = None

        def fit(self, *args: Any, **kwargs: Any) -> Any:
            self._last = None
            return super().fit(*args, **kwargs)

        def predict_proba(self, X: Any, **kwargs: Any) -> np.ndarray:
            key = np.ascontiguousarray(X, dtype=np.float64)
            token = key.tobytes() + repr(key.shape).encode()
            if not kwargs and self._last is not None and self._last[0] == token:
                return self._last[1].copy()
            proba: np.ndarray = super().predict_proba(X, **kwargs)
            if not kwargs:
                self._last = (token, proba.copy())
            return proba

    RememberingClassifier.__name__ = RememberingClassifier.__qualname__ = f"Remembering{base.__name__}"
    return RememberingClassifier


def simulate_peer(
    records: Sequence[Record], peer: str, *, budget: float = 0.1, delay: int = 0, seed: int = 0
) -> SimulationResult:
    """One peer over ``records``, prequentially, labels ``delay`` samples after their request."""
    if peer == "river.EntropySampler":
        return _river_entropy(records, budget, delay, seed)
    family, _, name = peer.partition(".")
    if family != "skactiveml" or name not in SKACTIVEML_ALL:
        raise ConfigError(f"unknown peer {peer!r}; choose one of {', '.join(PEERS)}")
    return _skactiveml(records, name, budget, delay, seed)


def _skactiveml(
    records: Sequence[Record], name: str, budget: float, delay: int, seed: int
) -> SimulationResult:
    stream = importlib.import_module("skactiveml.stream")
    classifier = importlib.import_module("skactiveml.classifier")
    neighbors = importlib.import_module("sklearn.neighbors")
    threadpool_limits = importlib.import_module("threadpoolctl").threadpool_limits  # scikit-learn's
    x_all = _matrix(records)
    classes: list[ClassLabel] = sorted({r.label for r in records}, key=str)
    code = {c: i for i, c in enumerate(classes)}
    y_all = np.array([code[r.label] for r in records])
    params: dict[str, Any] = {"budget": budget, "random_state": seed}
    if name == "StreamProbabilisticAL":
        params["metric"] = "rbf"
    if name == "FixedUncertainty":
        params["classes"] = np.arange(len(classes))
    qs = getattr(stream, name)(**params)
    policy = _DEFAULT_MANAGER.get(name, "default")

    def make_clf(n_labels: int) -> Any:
        knn = neighbors.KNeighborsClassifier(
            n_neighbors=max(1, min(N_NEIGHBORS, n_labels)), weights="distance"
        )
        return _remembering_classifier(classifier.SklearnClassifier)(
            knn, classes=np.arange(len(classes)), missing_label=-1, random_state=seed
        )

    window_x: deque[np.ndarray] = deque(maxlen=WINDOW)
    window_y: deque[int] = deque(maxlen=WINDOW)
    scale = _Scale(x_all.shape[1])
    clf = make_clf(0)
    fitted = False
    due: deque[tuple[int, int]] = deque()
    hits: list[bool] = []
    asked = 0
    decision_seconds = 0.0
    started = time.perf_counter()
    # one thread for scikit-learn's OpenMP neighbour search: its pool costs far more than a query of one
    # sample saves (tens of ms per call on a loaded machine) and the answers do not depend on it
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")  # scikit-activeml warns while its classifier has too few labels
        for i in range(len(records)):
            changed = False
            while due and due[0][0] <= i:
                j = due.popleft()[1]
                window_x.append(x_all[j])
                window_y.append(int(y_all[j]))
                scale.add(x_all[j])
                changed = True
            if changed:
                if len(window_y) <= N_NEIGHBORS:
                    clf = make_clf(len(window_y))
                train_x = scale.apply(np.array(window_x))
                train_y = np.array(window_y)
                clf.fit(train_x, train_y)
                fitted = True
            candidate = scale.apply(x_all[i : i + 1])
            if fitted:
                # the prediction is the arg max of the probabilities the query step asks for next: computed
                # once, and remembered by the classifier until its next fit
                prediction = int(np.argmax(clf.predict_proba(candidate)[0]))
                hits.append(bool(prediction == y_all[i]))
            else:  # no label yet: nothing is predicted (a miss, as streamal's cold start counts it)
                hits.append(False)
                train_x, train_y = candidate, np.array([-1])
                clf.fit(train_x, train_y)
            t0 = time.perf_counter()
            if name == "StreamProbabilisticAL":
                queried, utilities = qs.query(candidate, clf=clf, X=train_x, y=train_y, return_utilities=True)
            elif name in ("StreamRandomSampling", "PeriodicSampling"):
                queried = qs.query(candidate)
            else:
                queried, utilities = qs.query(candidate, clf=clf, return_utilities=True)
            if name in ("StreamRandomSampling", "PeriodicSampling"):
                qs.update(candidate, queried)
            else:
                qs.update(candidate, queried, budget_manager_param_dict={"utilities": utilities})
            decision_seconds += time.perf_counter() - t0
            if len(queried):
                asked += 1
                due.append((i + 1 + delay, i))
    return _result(
        records,
        hits,
        asked,
        budget,
        f"skactiveml.{name}",
        policy,
        "sklearn-knn",
        seed,
        delay,
        time.perf_counter() - started,
        decision_seconds,
        learned=asked - len(due),
    )


def _river_entropy(records: Sequence[Record], budget: float, delay: int, seed: int) -> SimulationResult:
    active = importlib.import_module("river.active")
    from streamal.models.knn import KNNClassifier

    knn = KNNClassifier(n_neighbors=N_NEIGHBORS, window_size=WINDOW)
    sampler = active.EntropySampler(knn, discount_factor=3, seed=seed)
    ask_for_label: Callable[[dict[str, float], dict[Any, float]], bool] = sampler._ask_for_label
    due: deque[tuple[int, Record]] = deque()
    hits: list[bool] = []
    asked = 0
    decision_seconds = 0.0
    started = time.perf_counter()
    for i, record in enumerate(records):
        while due and due[0][0] <= i:
            r = due.popleft()[1]
            sampler.learn_one(r.features, r.label)
        proba = knn.predict_proba_one(record.features)
        hits.append(bool(proba) and max(proba, key=proba.__getitem__) == record.label)
        t0 = time.perf_counter()
        ask = len(proba) < 2 or ask_for_label(record.features, proba)
        decision_seconds += time.perf_counter() - t0
        if ask and asked + 1 <= budget * (i + 1):
            asked += 1
            due.append((i + 1 + delay, record))
    return _result(
        records,
        hits,
        asked,
        budget,
        "river.EntropySampler",
        "budget cap",
        "knn",
        seed,
        delay,
        time.perf_counter() - started,
        decision_seconds,
        learned=asked - len(due),
    )


def _result(
    records: Sequence[Record],
    hits: list[bool],
    asked: int,
    budget: float,
    strategy: str,
    policy: str,
    model: str,
    seed: int,
    delay: int,
    elapsed: float,
    decision_seconds: float,
    *,
    learned: int,
) -> SimulationResult:
    n = len(records)
    return SimulationResult(
        n=n,
        accuracy=sum(hits) / n if n else 0.0,
        labels_used=asked,
        budget=budget,
        strategy=strategy,
        policy=policy,
        model=model,
        seed=seed,
        us_per_sample=elapsed / n * 1e6 if n else 0.0,
        us_per_decision=decision_seconds / n * 1e6 if n else 0.0,
        delay=delay,
        labels_learned=learned,
        curve=learning_curve(hits),
        hits=hits,
    )
