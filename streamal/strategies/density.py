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
from streamal.strategies._space import (
    FeatureSpace,
    fill_missing,
    inverse_variance,
    squared_distances,
    squared_distances_to,
    widen,
)
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
        q = self._space.row(xs[0]) if len(xs) == 1 else None
        if q is not None:  # one sample (the simulator's batches): the fewest numpy calls
            return [self._one(q, probas[0])]
        m = self._space.rows(xs)
        width = m.shape[1]
        if self._recent.shape[1] < width:
            self._recent = widen(self._recent, width)
            self._weights = np.append(self._weights, np.ones(width - self._weights.shape[0]))
            self._mean = np.append(self._mean, np.zeros(width - self._mean.shape[0]))
        fill_missing(m, self._mean)
        out = self._uncertainty.utilities(xs, probas)
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

    def _one(self, q: np.ndarray, p: Proba) -> float:
        """:meth:`utilities` of one sample whose row ``q`` has the known features (the same operations on
        one row, without the batch's)."""
        u = self._uncertainty.utility(p)
        n = self._filled
        if n >= 10:
            d2 = squared_distances_to(q, self._recent[:n], self._weights)
            dens = float(np.exp(d2 * (-0.5 / max(q.shape[0], 1))).sum()) / n
            mean = self._mean_density or dens
            if len(p) >= 2 and dens < mean:
                u *= (dens / mean) ** self.beta
            self._mean_density = mean + (1.0 / self.window) * (dens - mean)
        self._recent[self._next] = q
        self._advance(1)
        return u

    def _push(self, m: np.ndarray) -> None:
        """Writes the rows of ``m`` into the window, refreshing its scale where writing them one by one
        would: only the last such point of a batch counts, as each refresh replaces the previous one."""
        rows = m[-self.window :]
        refresh = self._last_refresh(len(rows))
        if refresh:
            self._write(rows[:refresh])
        self._write(rows[refresh:])

    def _last_refresh(self, count: int) -> int:
        """After how many of the next ``count`` rows (at most a window) the scale is last refreshed (see
        :meth:`_refreshes`); 0 if it is not."""
        turn = self.window - self._next  # the row that ends the turn of the window
        last = turn if turn <= count else 0
        filling = min(self._filled + count, self.window - 1)  # the window fills: at powers of two
        if filling > self._filled:
            power = 1 << (filling.bit_length() - 1)
            if power > self._filled:
                last = max(last, power - self._filled)
        return last

    def _write(self, rows: np.ndarray) -> None:
        """Rows into the ring from ``_next`` on (at most a window of them), then :meth:`_advance`."""
        head = min(len(rows), self.window - self._next)
        self._recent[self._next : self._next + head] = rows[:head]
        self._recent[: len(rows) - head] = rows[head:]
        self._advance(len(rows))

    def _advance(self, written: int) -> None:
        if not written:
            return
        self._next = (self._next + written) % self.window
        self._filled = min(self._filled + written, self.window)
        if self._refreshes(self._next, self._filled):
            window = self._recent[: self._filled]
            self._weights = inverse_variance(window)
            self._mean = window.mean(axis=0)

    def _refreshes(self, at: int, filled: int) -> bool:
        """Whether the scale is refreshed once the window holds ``filled`` rows and the next one goes
        ``at``: as the window fills (at powers of two), then once per turn of it."""
        return at == 0 or (filled < self.window and filled & (filled - 1) == 0)
