"""Any river classifier behind the :class:`~streamal.models.base.Model` interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamal.messages import ClassLabel, Features, Proba
from streamal.models.base import Model
from streamal.models.river_linear import LinearScorer, linear_scorer


class RiverModel(Model):
    """Wraps a river classifier (``learn_one`` / ``predict_proba_one``).

    A classifier that also offers ``predict_proba_batch`` (as :class:`~streamal.models.knn.KNNClassifier`
    does) is scored a whole batch at a time. So are river's linear classifiers that
    :func:`~streamal.models.river_linear.linear_scorer` recognises (``softmax``, a ``StandardScaler`` and a
    ``SoftmaxRegression``; a ``LogisticRegression``, bare, scaled or in the ``OneVsRestClassifier`` that
    ``river:linear_model.LogisticRegression`` comes in), with numpy and the numbers river gives one sample at
    a time. A batch smaller than the scorer's ``min_batch`` (10 samples for a softmax, 20 for a scaled
    logistic regression, 64 for a bare one; for a one-vs-rest, 32 over the number of classes, 24 over it
    when scaled, at least 2) still takes river's own path, faster for so few. Any other classifier is
    scored one sample at a time.

    >>> from river import naive_bayes
    >>> m = RiverModel(naive_bayes.GaussianNB(), name="gaussian_nb")
    >>> m.predict_proba_one({"x": 1.0})
    {}
    >>> m.learn_one({"x": 1.0}, "a"); m.learn_one({"x": 5.0}, "b")
    >>> m.classes
    ['a', 'b']
    """

    def __init__(self, estimator: Any, name: str | None = None) -> None:
        self.estimator = estimator
        self.name = name or type(estimator).__name__
        self._classes: dict[ClassLabel, None] = {}
        self._batch = getattr(estimator, "predict_proba_batch", None)
        self._linear: LinearScorer | None = linear_scorer(estimator)

    @property
    def classes(self) -> list[ClassLabel]:
        return list(self._classes)

    def predict_proba_many(self, xs: Sequence[Features]) -> list[Proba]:
        if not self._classes:
            return [{} for _ in xs]
        if self._batch is not None:
            out: list[Proba] = self._batch(xs)
            return out
        if self._linear is not None and len(xs) >= self._linear.min_batch:
            scored = self._linear.predict_proba(xs)
            if scored is not None:
                return self._normalise_matrix(*scored)
        return [self._normalise(self.estimator.predict_proba_one(x)) for x in xs]

    def _normalise(self, proba: dict[Any, float]) -> Proba:
        # river may leave out classes it gives no mass, or return unnormalised scores.
        full = {c: max(0.0, float(proba.get(c, 0.0))) for c in self._classes}
        total = sum(full.values())
        if total <= 0.0:
            return {c: 1.0 / len(full) for c in full}
        return {c: p / total for c, p in full.items()}

    def _normalise_matrix(self, labels: list[Any], proba: np.ndarray) -> list[Proba]:
        """:meth:`_normalise` over a matrix of river's probabilities (a column per label of ``labels``)."""
        classes = list(self._classes)
        if labels == classes:  # the usual case: river's classes are ours, in our order
            full = proba
        else:
            column = {label: j for j, label in enumerate(labels)}  # looked up as river's dict would be
            full = np.zeros((proba.shape[0], len(classes)))
            for i, c in enumerate(classes):
                j = column.get(c)
                if j is not None:
                    full[:, i] = proba[:, j]
        full = np.where(full > 0.0, full, 0.0)  # as max(0.0, p), which also turns NaN into 0.0
        total = full.sum(axis=1, keepdims=True)
        empty = total[:, 0] <= 0.0
        if empty.any():
            full[empty] = 1.0 / len(classes)
            total[empty] = 1.0
        rows: list[list[float]] = (full / total).tolist()
        return [dict(zip(classes, row, strict=True)) for row in rows]

    def learn_one(self, x: Features, y: ClassLabel) -> None:
        self._classes.setdefault(y, None)
        self.estimator.learn_one(x, y)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_batch"] = None  # a bound method; rebuilt on restore
        state["_linear"] = None  # references into the estimator; rebuilt on restore
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._batch = getattr(self.estimator, "predict_proba_batch", None)
        self._linear = linear_scorer(self.estimator)
