"""Any river classifier behind the :class:`~streamal.models.base.Model` interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamal.messages import ClassLabel, Features, Proba
from streamal.models.base import Model


class RiverModel(Model):
    """Wraps a river classifier (``learn_one`` / ``predict_proba_one``).

    A classifier that also offers ``predict_proba_batch`` (as :class:`~streamal.models.knn.KNNClassifier`
    does) is scored a whole batch at a time; any other is scored one sample at a time.

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

    @property
    def classes(self) -> list[ClassLabel]:
        return list(self._classes)

    def predict_proba_many(self, xs: Sequence[Features]) -> list[Proba]:
        if not self._classes:
            return [{} for _ in xs]
        if self._batch is not None:
            out: list[Proba] = self._batch(xs)
            return out
        return [self._normalise(self.estimator.predict_proba_one(x)) for x in xs]

    def _normalise(self, proba: dict[Any, float]) -> Proba:
        # river may leave out classes it gives no mass, or return unnormalised scores.
        full = {c: max(0.0, float(proba.get(c, 0.0))) for c in self._classes}
        total = sum(full.values())
        if total <= 0.0:
            return {c: 1.0 / len(full) for c in full}
        return {c: p / total for c, p in full.items()}

    def learn_one(self, x: Features, y: ClassLabel) -> None:
        self._classes.setdefault(y, None)
        self.estimator.learn_one(x, y)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_batch"] = None  # a bound method; rebuilt on restore
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._batch = getattr(self.estimator, "predict_proba_batch", None)
