"""Windowed batch selection for bursty streams: collect ``window`` samples, then pick the ones to ask for.

A strategy rates each sample alone; in a burst of near-duplicates it asks for the same thing many times. A
selector sees a whole window of scored samples at once and picks ``k = round(budget * window)`` of them
that cover it:

* ``kcenter``: k-center greedy, the core-set (Sener and Savarese 2018): each pick is the sample farthest
  from everything labelled recently and everything already picked;
* ``badge``: BADGE (Ash et al. 2020): each sample's gradient embedding, the gradient of the cross-entropy at
  the predicted class with respect to a linear last layer, ``(p - onehot(argmax p)) ⊗ [x, 1]``, whose length
  is the model's uncertainty and whose direction says where in feature space and towards which class; picks
  are seeded as k-means++ does (the longest first, then each with probability proportional to its squared
  distance to the nearest pick), so they are uncertain *and* diverse.

Distances are between standardised feature vectors (the window and the labelled memory, scaled by their
pooled standard deviation; a missing feature takes the mean), so any model can be used. The
:class:`~streamal.engine.Engine` is the one place that consults a selector; its policy still gates every
request, so the budget is the same shared estimate as without one.

>>> xs = [{"x": 0.0}, {"x": 0.1}, {"x": 0.2}, {"x": 5.0}, {"x": 5.1}, {"x": 10.0}]
>>> KCenterGreedy(seed=0).select(xs, [{}] * 6, 3)
[5, 0, 3]
"""

from __future__ import annotations

import abc
import random
from collections import deque
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from streamal.errors import ConfigError
from streamal.messages import Features, Proba
from streamal.strategies._space import FeatureSpace

_EPS = 1e-12


class Selector(abc.ABC):
    """Template: the base turns a window into standardised rows; subclasses implement :meth:`_pick` only."""

    name: ClassVar[str]

    def __init__(self, window: int = 100, memory: int = 500, seed: int | None = 0) -> None:
        if window < 1 or memory < 0:
            raise ValueError(f"window must be at least 1 and memory not negative, got {window}, {memory}")
        self.window = window
        self.memory = memory
        self.seed = seed
        self._rng = random.Random(seed)
        self._space = FeatureSpace()
        self._labelled: deque[Features] = deque(maxlen=memory)

    def observe_label(self, x: Features) -> None:
        """The model has learned a label for ``x``: picks should now keep away from it."""
        if self.memory:
            self._labelled.append(x)

    def select(self, xs: Sequence[Features], probas: Sequence[Proba], k: int) -> list[int]:
        """Indices of the ``k`` samples of the window ``xs`` to ask for, in the order they were picked."""
        k = max(0, min(k, len(xs)))
        if k == 0:
            return []
        rows = self._space.rows([*xs, *self._labelled])
        mean = np.nanmean(rows, axis=0) if rows.size else np.zeros(rows.shape[1])
        mean = np.where(np.isnan(mean), 0.0, mean)
        missing = np.isnan(rows)
        if missing.any():
            rows[missing] = np.broadcast_to(mean, rows.shape)[missing]
        std = rows.std(axis=0)
        rows = (rows - mean) / np.where(std > _EPS, std, 1.0)
        picks = self._pick(rows[: len(xs)], rows[len(xs) :], probas, k)
        assert len(picks) == len(set(picks)) == k, picks
        return picks

    @abc.abstractmethod
    def _pick(self, window: np.ndarray, labelled: np.ndarray, probas: Sequence[Proba], k: int) -> list[int]:
        """``k`` distinct row indices of ``window`` (standardised rows; ``labelled``: the recent labels')."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(window={self.window}, memory={self.memory}, seed={self.seed!r})"


def _kcenter(window: np.ndarray, labelled: np.ndarray, k: int) -> list[int]:
    """Greedy k-center: repeatedly the sample whose distance to the nearest labelled or picked one is largest
    (with nothing labelled, the first pick is the sample farthest from the window's centre)."""
    if len(labelled):
        d2 = (window * window).sum(1)[:, None] - 2 * window @ labelled.T + (labelled * labelled).sum(1)
        nearest = np.sqrt(np.maximum(d2, 0.0)).min(axis=1)
        first = int(np.argmax(nearest))
    else:
        nearest = np.full(len(window), np.inf)
        first = int(np.argmax(np.linalg.norm(window - window.mean(axis=0), axis=1)))
    picks: list[int] = []
    for _ in range(k):
        chosen = int(np.argmax(nearest)) if picks else first
        picks.append(chosen)
        nearest = np.minimum(nearest, np.linalg.norm(window - window[chosen], axis=1))
        nearest[picks] = -1.0
    return picks


class KCenterGreedy(Selector):
    """Core-set selection: cover the window, away from what was labelled recently."""

    name = "kcenter"

    def _pick(self, window: np.ndarray, labelled: np.ndarray, probas: Sequence[Proba], k: int) -> list[int]:
        return _kcenter(window, labelled, k)


class Badge(Selector):
    """BADGE: k-means++ seeding over the gradient embeddings of the window."""

    name = "badge"

    def _pick(self, window: np.ndarray, labelled: np.ndarray, probas: Sequence[Proba], k: int) -> list[int]:
        classes = list(dict.fromkeys(c for p in probas for c in p))
        if (
            len(classes) < 2
        ):  # the model cannot tell classes apart yet: all equally uncertain, cover the window
            return _kcenter(window, labelled, k)
        index = {c: j for j, c in enumerate(classes)}
        residual = np.zeros((len(window), len(classes)))
        for i, p in enumerate(probas):
            if len(p) < 2:
                residual[i] = 1.0 / np.sqrt(len(classes))  # a sample the model knew nothing of: uncertain
                continue
            for c, v in p.items():
                residual[i, index[c]] = v
            residual[i, index[max(p, key=p.__getitem__)]] -= 1.0
        features = np.hstack([window, np.ones((len(window), 1))])
        embedding = (residual[:, :, None] * features[:, None, :]).reshape(len(window), -1)
        picks = [int(np.argmax((embedding * embedding).sum(axis=1)))]
        d2 = ((embedding - embedding[picks[0]]) ** 2).sum(axis=1)
        while len(picks) < k:
            d2[picks] = 0.0
            total = float(d2.sum())
            if total <= _EPS:  # the rest coincide with picks: take them in order
                rest = [i for i in range(len(window)) if i not in picks]
                picks += rest[: k - len(picks)]
                break
            chosen = self._rng.choices(range(len(window)), weights=d2.tolist())[0]
            picks.append(chosen)
            d2 = np.minimum(d2, ((embedding - embedding[chosen]) ** 2).sum(axis=1))
        return picks


SELECTORS: dict[str, type[Selector]] = {cls.name: cls for cls in (KCenterGreedy, Badge)}


def build_selector(name: str, window: int = 100, seed: int | None = 0) -> Selector:
    try:
        cls = SELECTORS[name]
    except KeyError:
        known = ", ".join(sorted(SELECTORS))
        raise ConfigError(f"selector: unknown selector {name!r}; choose one of {known}") from None
    try:
        return cls(window=window, seed=seed)
    except ValueError as exc:
        raise ConfigError(f"selector: {exc}") from None
