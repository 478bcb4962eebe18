"""A k-nearest-neighbours classifier for streams, vectorised with numpy, with the river API.

river's own ``neighbors.KNNClassifier`` measured 80 to 600 µs per prediction on this project's data sets
(``scripts/`` has the measurement); a service that scores tens of thousands of samples a second cannot
afford that. This one keeps the last ``window_size`` labelled samples in a numpy ring buffer and scores a
whole batch with one matrix product. It is a river ``base.Classifier``, so it works in river pipelines and
river's evaluation too.

Features are scaled by a running standard deviation over the labelled samples, so no feature dominates
the distance because of its unit. A missing feature takes its running mean when distances are computed:
in a query, and in a stored sample learned without it or before the feature first appeared (of two samples
equally near, the one that had the feature wins). Each feature's mean and variance count only the samples
that had it, and a feature no labelled sample had yet counts for nothing. Predicting changes nothing, so a
decision does not depend on how samples were batched, and every copy of a model scores alike. Probabilities
are distance-weighted neighbour votes with a small prior spread over the known classes, so that a model
with few labels is honestly unsure:

>>> knn = KNNClassifier(n_neighbors=3)
>>> knn.predict_proba_one({"x": 0.0})
{}
>>> for x, y in [(0.0, "a"), (0.2, "a"), (0.4, "a"), (5.0, "b"), (5.2, "b")]:
...     knn.learn_one({"x": x}, y)
>>> p = knn.predict_proba_one({"x": 0.1})
>>> max(p, key=p.get), round(p["a"], 3)
('a', 0.875)

A feature that first shows up late is missing from the samples stored before, not 0 in them:

>>> knn = KNNClassifier(n_neighbors=1)
>>> for a, b, y in [(0, None, "old"), (1, None, "old"), (9, 500, "new"), (10, 500, "new")]:
...     knn.learn_one({"a": a} if b is None else {"a": a, "b": b}, y)
>>> knn.predict_proba_one({"a": 0.2, "b": 500})
{'old': 0.75, 'new': 0.25}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from river import base

_EPS = 1e-9


class KNNClassifier(base.Classifier):
    """Distance-weighted k-nearest neighbours over a sliding window of labelled samples."""

    def __init__(self, n_neighbors: int = 5, window_size: int = 1000) -> None:
        if n_neighbors < 1:
            raise ValueError("n_neighbors must be at least 1")
        if window_size < n_neighbors:
            raise ValueError("window_size must be at least n_neighbors")
        self.n_neighbors = n_neighbors
        self.window_size = window_size
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._X = np.zeros((window_size, 0))
        self._y = np.zeros(window_size, dtype=np.int64)
        self._filled = 0
        self._next = 0
        self._classes: list[Any] = []
        self._class_index: dict[Any, int] = {}
        # running scale over the labelled samples (Chan et al.'s parallel variance update)
        self._count = 0.0
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        # how many labelled samples had each feature; None while every one had every feature (the common
        # case, kept on the scalar path above): then each feature's count is ``_count``
        self._counts: np.ndarray | None = None
        # the samples learned before this many labels may be stored with a gap: NaN where one missed a
        # feature that some labelled sample had (a feature none had is 0 throughout, and counts for nothing)
        self._holes_before = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_counts", None)  # a model pickled before features were counted apart
        self.__dict__.setdefault("_holes_before", 0.0)

    @property
    def _multiclass(self) -> bool:
        return True

    # -- features ---------------------------------------------------------------------------------
    def _add_feature(self, name: str) -> None:
        if self._count > 0:  # labelled samples came without it: its count starts apart, at 0
            self._counts = np.append(self._per_feature_counts(), 0.0)
        self._index[name] = len(self._names)
        self._names.append(name)
        self._X = np.hstack([self._X, np.zeros((self.window_size, 1))])
        self._mean = np.append(self._mean, 0.0)
        self._m2 = np.append(self._m2, 0.0)

    def _per_feature_counts(self) -> np.ndarray:
        return np.full(len(self._names), self._count) if self._counts is None else self._counts

    def _rows(self, xs: Sequence[dict[str, float]]) -> np.ndarray:
        """The samples as rows over the known features (adding any new one), NaN where one is missing."""
        for x in xs:
            if len(x) != len(self._names) or x.keys() != self._index.keys():
                for name in x:
                    if name not in self._index:
                        self._add_feature(name)
        names = self._names
        nan = math.nan
        return np.array([[x.get(k, nan) for k in names] for x in xs], dtype=np.float64).reshape(
            len(xs), len(names)
        )

    def _matrix(self, xs: Sequence[dict[str, float]]) -> np.ndarray:
        m = self._rows(xs)
        missing = np.isnan(m)
        if missing.any():
            m[missing] = np.broadcast_to(self._mean, m.shape)[missing]
        return m

    def _observe(self, m: np.ndarray) -> None:
        n_b = float(m.shape[0])
        if n_b == 0:
            return
        mean_b = m.mean(axis=0)
        m2_b = ((m - mean_b) ** 2).sum(axis=0)
        total = self._count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + delta**2 * (self._count * n_b / total)
        self._count = total

    def _observe_partial(self, row: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """:meth:`_observe` for one sample that may miss features, with a count for each feature: the same
        arithmetic, column by column, over the features it has. Returns the row to store."""
        counts = self._per_feature_counts()
        unseen = counts == 0
        first = unseen & ~missing
        if first.any():  # the first labelled sample with these features: every one stored before misses them
            self._X[:, first] = math.nan
            self._holes_before = self._count
        if (missing & ~unseen).any():  # this one is stored with a gap
            self._holes_before = self._count + 1.0
        has = ~missing
        total = counts + has
        zero = np.zeros_like(total)
        delta = np.where(has, row - self._mean, 0.0)
        self._mean = self._mean + delta * np.divide(1.0, total, out=zero.copy(), where=has)
        self._m2 = self._m2 + delta**2 * np.divide(counts, total, out=zero, where=has)
        self._counts = total
        self._count += 1.0
        return np.where(missing & unseen, 0.0, row)

    def _inv_scale(self) -> np.ndarray:
        if self._counts is not None:
            counts = self._counts
            std = np.sqrt(self._m2 / np.maximum(counts, 1.0))
            scale = np.where((std > _EPS) & (counts >= 2), 1.0 / np.maximum(std, _EPS), 1.0)
            return np.where(counts > 0, scale, 0.0)  # a feature no label had tells no sample apart
        if self._count < 2:
            return np.ones(len(self._names))
        std = np.sqrt(self._m2 / self._count)
        return np.where(std > _EPS, 1.0 / np.maximum(std, _EPS), 1.0)

    def _stored(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The stored samples scaled by ``w``, a missing feature filled with its running mean, and which
        ones missed one (None when none can: the oldest was learned after the last one stored with a gap)."""
        z = self._X[: self._filled] * w
        if self._count - self._filled >= self._holes_before:
            return z, None
        holes = np.isnan(z)
        np.copyto(z, self._mean * w, where=holes)
        return z, holes.any(axis=1)

    # -- river API --------------------------------------------------------------------------------
    def learn_one(self, x: dict[Any, Any], y: Any, **kwargs: Any) -> None:
        row = self._rows([x])[0]
        missing = np.isnan(row)
        if self._counts is None and not missing.any():  # every labelled sample had every feature
            self._observe(row[None, :])
        else:
            row = self._observe_partial(row, missing)
        if y not in self._class_index:
            self._class_index[y] = len(self._classes)
            self._classes.append(y)
        self._X[self._next] = row
        self._y[self._next] = self._class_index[y]
        self._next = (self._next + 1) % self.window_size
        self._filled = min(self._filled + 1, self.window_size)

    def predict_proba_one(self, x: dict[Any, Any], **kwargs: Any) -> dict[Any, float]:
        return self.predict_proba_batch([x])[0]

    def predict_proba_batch(self, xs: Sequence[dict[str, float]]) -> list[dict[Any, float]]:
        """Class probabilities for a batch of samples, in one matrix product."""
        if not xs:
            return []
        m = self._matrix(xs)
        n_classes = len(self._classes)
        if self._filled == 0:
            return [{} for _ in xs]
        w = self._inv_scale()
        q = m * w
        z, filled_in = self._stored(w)
        # squared distance minus |q|^2 (the same for every neighbour of a row, so it does not change the
        # ranking): one matrix product and one broadcast add over the batch x window matrix, in float32
        score = (q.astype(np.float32) @ z.T.astype(np.float32)) * np.float32(-2.0)
        score += (z * z).sum(axis=1).astype(np.float32)[None, :]
        if filled_in is not None:
            # of samples equally near, one that has the features wins over one whose gaps were filled in
            np.nextafter(score, np.float32(np.inf), out=score, where=filled_in[None, :])
        k = min(self.n_neighbors, self._filled)
        if k < self._filled:
            nearest = np.argpartition(score, k - 1, axis=1)[:, :k]
        else:
            nearest = np.broadcast_to(np.arange(self._filled), (len(xs), k))
        d2 = np.take_along_axis(score, nearest, axis=1).astype(np.float64) + (q * q).sum(axis=1)[:, None]
        dist = np.sqrt(np.maximum(d2, 0.0))
        weight = 1.0 / (dist + _EPS)
        weight /= weight.sum(axis=1, keepdims=True)
        votes = np.zeros((len(xs), n_classes))
        rows = np.arange(len(xs))
        labels = self._y[: self._filled][nearest]
        for j in range(k):
            votes[rows, labels[:, j]] += weight[:, j]
        # k neighbours' votes plus one pseudo-vote spread evenly: a prior that keeps few labels unsure
        proba = (votes * k + 1.0 / n_classes) / (k + 1.0)
        classes = self._classes
        return [dict(zip(classes, row, strict=True)) for row in proba.tolist()]
