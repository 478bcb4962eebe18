"""Density-weighted uncertainty: uncertain *and* typical, so outliers are not chased.

Information density (Settles and Craven 2008, "An analysis of active learning strategies for sequence
labeling tasks") weighs a sample's uncertainty by how representative it is of the input distribution. On
a stream the distribution is the recent one: the density of a sample is a Gaussian kernel estimate over
the last ``window`` samples (labelled or not), in features standardised by that window's variance, with
bandwidth ``sqrt(d)`` for ``d`` features. Its weight is ``min(1, density / mean density) ** beta``: a
sample in a typical region keeps its whole uncertainty, an outlier loses most of it.

The window and its scale move once per scored batch, so within one batch every sample is compared with
the samples of the earlier batches (sample by sample when batches have one sample).

>>> from streamal.datasets import load
>>> s = DensityWeighted()
>>> records = load("bananas", limit=300)
>>> _ = s.utilities([r.features for r in records[:200]], [{"a": 0.5, "b": 0.5}] * 200)
>>> typical, outlier = {"x": 0.0, "y": 0.0}, {"x": 40.0, "y": -40.0}
>>> [round(u, 3) for u in s.utilities([typical, outlier], [{"a": 0.5, "b": 0.5}] * 2)]
[1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamal.messages import Features, Proba
from streamal.strategies._space import FeatureSpace, fill_missing, inverse_variance, squared_distances, widen
from streamal.strategies.base import Strategy
from streamal.strategies.uncertainty import Margin


class DensityWeighted(Strategy):
    """Margin uncertainty times ``min(1, density / mean density) ** beta``."""

    name = "density_weighted"

    def __init__(self, seed: int | None = None, window: int = 100, beta: float = 1.0) -> None:
        super().__init__(seed)
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        if beta < 0.0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.window = window
        self.beta = beta
        self._uncertainty = Margin()
        self._space = FeatureSpace()
        self._recent = np.zeros((window, 0))
        self._filled = 0
        self._next = 0
        self._weights = np.ones(0)  # inverse variances of the window's features
        self._mean = np.zeros(0)
        self._mean_density = 0.0

    def _utility(self, proba: Proba) -> float:
        return self._uncertainty.utility(proba)  # without the features: plain margin

    def utilities(self, xs: Sequence[Features], probas: Sequence[Proba]) -> list[float]:
        m = self._space.rows(xs)
        width = m.shape[1]
        if self._recent.shape[1] < width:
            self._recent = widen(self._recent, width)
            self._weights = np.append(self._weights, np.ones(width - self._weights.shape[0]))
            self._mean = np.append(self._mean, np.zeros(width - self._mean.shape[0]))
        fill_missing(m, self._mean)
        uncertainty = self._uncertainty.utility
        out = [uncertainty(p) for p in probas]
        n = self._filled
        if n >= 10:
            d2 = squared_distances(m, self._recent[:n], self._weights)
            density = (np.exp(d2 * (-0.5 / max(width, 1))).sum(axis=1) / n).tolist()
            alpha = 1.0 / self.window
            mean = self._mean_density or density[0]
            for j, (p, dens) in enumerate(zip(probas, density, strict=True)):
                if len(p) >= 2 and dens < mean:
                    out[j] *= (dens / mean) ** self.beta
                mean += alpha * (dens - mean)
            self._mean_density = mean
        self._push(m)
        return out

    def _push(self, m: np.ndarray) -> None:
        for row in m[-self.window :]:
            self._recent[self._next] = row
            self._next = (self._next + 1) % self.window
            self._filled = min(self._filled + 1, self.window)
            # refresh the scale as the window fills, then once per turn of the window
            if self._next == 0 or (self._filled < self.window and self._filled & (self._filled - 1) == 0):
                window = self._recent[: self._filled]
                self._weights = inverse_variance(window)
                self._mean = window.mean(axis=0)
