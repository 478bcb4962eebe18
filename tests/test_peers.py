"""The peers' harness decides exactly as the straightforward loop it replaced.

The harness (``streamal.evaluation.peers``) saves work around scikit-activeml: the classifier remembers its
probabilities between the harness's prediction and the query step, and scikit-learn runs on one thread.
The reference below is the plain loop: predict with ``clf.predict``, let the query step compute the
probabilities again, refit after every label. Both must give the same predictions and the same queries.
"""

# mypy: disallow-untyped-defs=False, disallow-incomplete-defs=False

from __future__ import annotations

import functools
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from streamal.datasets import Record, load
from streamal.evaluation import peers

pytest.importorskip("skactiveml.stream")


@functools.cache
def stream(name: str, n: int) -> tuple[Record, ...]:
    return tuple(load(name, limit=n))


def reference(
    records: Sequence[Record], name: str, budget: float, delay: int, seed: int
) -> tuple[list[bool], list[int]]:
    """The peer run sample by sample with nothing saved: (hits, indices of the queried samples)."""
    from skactiveml import stream as skstream
    from skactiveml.classifier import SklearnClassifier
    from sklearn.neighbors import KNeighborsClassifier

    x_all = peers._matrix(records)
    classes = sorted({r.label for r in records}, key=str)
    y_all = np.array([classes.index(r.label) for r in records])
    params: dict[str, Any] = {"budget": budget, "random_state": seed}
    if name == "StreamProbabilisticAL":
        params["metric"] = "rbf"
    qs = getattr(skstream, name)(**params)

    def make_clf(n_labels: int) -> Any:
        knn = KNeighborsClassifier(n_neighbors=max(1, min(5, n_labels)), weights="distance")
        return SklearnClassifier(knn, classes=np.arange(len(classes)), missing_label=-1, random_state=seed)

    window_x: deque[np.ndarray] = deque(maxlen=peers.WINDOW)
    window_y: deque[int] = deque(maxlen=peers.WINDOW)
    scale = peers._Scale(x_all.shape[1])
    due: deque[tuple[int, int]] = deque()
    hits: list[bool] = []
    queried_at: list[int] = []
    clf, fitted = make_clf(0), False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(records)):
            changed = False
            while due and due[0][0] <= i:
                j = due.popleft()[1]
                window_x.append(x_all[j])
                window_y.append(int(y_all[j]))
                scale.add(x_all[j])
                changed = True
            if changed:
                if len(window_y) <= 5:
                    clf = make_clf(len(window_y))
                train_x, train_y = scale.apply(np.array(window_x)), np.array(window_y)
                clf.fit(train_x, train_y)
                fitted = True
            candidate = scale.apply(x_all[i : i + 1])
            if fitted:
                hits.append(bool(int(clf.predict(candidate)[0]) == y_all[i]))
            else:
                hits.append(False)
                train_x, train_y = candidate, np.array([-1])
                clf.fit(train_x, train_y)
            if name == "StreamProbabilisticAL":
                queried, utilities = qs.query(candidate, clf=clf, X=train_x, y=train_y, return_utilities=True)
            else:
                queried, utilities = qs.query(candidate, clf=clf, return_utilities=True)
            qs.update(candidate, queried, budget_manager_param_dict={"utilities": utilities})
            if len(queried):
                queried_at.append(i)
                due.append((i + 1 + delay, i))
    return hits, queried_at


@pytest.mark.parametrize(
    ("name", "data", "delay", "seed"),
    [
        ("VariableUncertainty", "phishing", 0, 0),
        ("Split", "phishing", 0, 1),
        ("StreamProbabilisticAL", "phishing", 0, 0),
        ("StreamDensityBasedAL", "phishing", 0, 0),
        ("VariableUncertainty", "image_segments", 5, 2),  # 7 classes, some unseen for a while; a delay
        ("Split", "image_segments", 0, 0),
    ],
)
def test_the_harness_decides_as_the_plain_loop(name, data, delay, seed):
    records = stream(data, 300)
    result = peers.simulate_peer(records, f"skactiveml.{name}", budget=0.1, delay=delay, seed=seed)
    hits, queried_at = reference(records, name, 0.1, delay, seed)
    assert result.hits == hits
    assert result.labels_used == len(queried_at)
    assert result.labels_used > 0
    assert result.accuracy == sum(hits) / len(records)


def test_the_remembering_classifier_forgets_on_fit():
    from skactiveml.classifier import SklearnClassifier
    from sklearn.neighbors import KNeighborsClassifier

    cls = peers._remembering_classifier(SklearnClassifier)
    clf = cls(KNeighborsClassifier(1), classes=np.arange(2), missing_label=-1)
    clf.fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    q = np.array([[0.1]])
    first = clf.predict_proba(q)
    first[0, 0] = 42.0  # a caller's change to its copy does not reach the remembered probabilities
    assert clf.predict_proba(q).tolist() == [[1.0, 0.0]]
    clf.fit(np.array([[0.0], [1.0]]), np.array([1, 0]))
    assert clf.predict_proba(q).tolist() == [[0.0, 1.0]]
    assert clf.predict_proba(np.array([[0.9]])).tolist() == [[1.0, 0.0]]
