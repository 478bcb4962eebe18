"""Diversity: ask where no label is near (core-set style exploration; Sener and Savarese 2018).

The utility of a sample is its distance to the nearest labelled sample (of the last ``window`` labels
the model learned, in features standardised by the labelled samples' running variance), relative to the
typical such distance: ``d / (d + typical d)``. It is 0 on a labelled point, 1/2 at the typical distance
and tends to 1 far from every label. It ignores the model's probabilities: it explores, which is what a
stream whose classes drift into new regions needs, and what uncertainty sampling alone does not do.

>>> s = Diversity()
>>> s.utilities([{"x": 0.0}], [{}])  # nothing labelled yet: everything is new
[1.0]
>>> for x in (0.0, 1.0, 2.0, 3.0):
...     s.observe_label({"x": x}, "a")
>>> [round(u, 3) for u in s.utilities([{"x": 1.5}, {"x": 1.0}, {"x": 30.0}], [{}] * 3)]
[0.5, 0.0, 0.982]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from streamal.messages import ClassLabel, Features, Proba
from streamal.strategies._space import (
    FeatureSpace,
    fill_missing,
    squared_distances,
    squared_distances_to,
    widen,
)
from streamal.strategies.base import Strategy

_EPS = 1e-12


class Diversity(Strategy):
    """``d / (d + typical d)`` for ``d`` the distance to the nearest labelled sample."""

    name = "diversity"

    def __init__(self, seed: int | None = None, window: int = 500, smoothing: float = 0.01) -> None:
        super().__init__(seed)
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.window = window
        self.smoothing = smoothing
        self._space = FeatureSpace()
        self._labelled = np.zeros((window, 0))
        self._filled = 0
        self._next = 0
        # running mean and variance over the labelled samples (Welford)
        self._count = 0
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        self._weights = np.ones(0)
        self._typical = 0.0  # smoothed distance to the nearest label

    def _utility(self, proba: Proba) -> float:  # pragma: no cover - utilities() is overridden
        return 1.0

    def _widen(self, width: int) -> None:
        if self._labelled.shape[1] < width:
            grow = width - self._labelled.shape[1]
            self._labelled = widen(self._labelled, width)
            self._mean = np.append(self._mean, np.zeros(grow))
            self._m2 = np.append(self._m2, np.zeros(grow))
            self._weights = np.append(self._weights, np.ones(grow))

    def utilities(self, xs: Sequence[Features], probas: Sequence[Proba]) -> list[float]:
        n = self._filled
        if n == 0:
            return [1.0] * len(xs)
        q = self._space.row(xs[0]) if len(xs) == 1 else None
        if q is not None:  # one sample (the simulator's batches): the fewest numpy calls
            d2 = squared_distances_to(q, self._labelled[:n], self._weights)
            nearest = [math.sqrt(d2[d2.argmin()])]
        else:
            m = self._space.rows(xs)
            self._widen(m.shape[1])
            fill_missing(m, self._mean)
            nearest = np.sqrt(squared_distances(m, self._labelled[:n], self._weights).min(axis=1)).tolist()
        out = []
        typical, alpha = self._typical, self.smoothing
        for d in nearest:
            if typical <= 0.0:
                typical = d
            out.append(d / (d + typical) if d > 0.0 else 0.0)
            typical += alpha * (d - typical)
        self._typical = typical
        return out

    def observe_label(self, x: Features, y: ClassLabel) -> None:
        row = self._space.rows([x])
        self._widen(row.shape[1])
        row = fill_missing(row, self._mean)[0]
        self._labelled[self._next] = row
        self._next = (self._next + 1) % self.window
        self._filled = min(self._filled + 1, self.window)
        self._count += 1
        delta = row - self._mean
        self._mean = self._mean + delta / self._count
        self._m2 = self._m2 + delta * (row - self._mean)
        if self._count > 1:
            var = self._m2 / self._count
            self._weights = np.where(var > _EPS, 1.0 / np.maximum(var, _EPS), 1.0)
