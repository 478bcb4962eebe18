"""Feature dicts as numpy rows, for the strategies that measure distances (density, diversity)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_EPS = 1e-12


class FeatureSpace:
    """Names features in the order they first appear and turns batches of dicts into matrices.

    A feature a sample lacks is NaN in its row; :meth:`fill` replaces it with a given row of values.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self._key: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return len(self.names)

    def rows(self, xs: Sequence[dict[str, float]]) -> np.ndarray:
        key = self._key
        if all(len(x) == len(key) and tuple(x) == key for x in xs):
            # the common case: every sample has the same features, in the same order
            return np.array([list(x.values()) for x in xs], dtype=np.float64).reshape(len(xs), len(key))
        known = set(self.names)
        for x in xs:
            for name in x:
                if name not in known:
                    known.add(name)
                    self.names.append(name)
        self._key = tuple(self.names)
        nan = math.nan
        names = self.names
        return np.array([[x.get(k, nan) for k in names] for x in xs], dtype=np.float64).reshape(
            len(xs), len(names)
        )


def widen(m: np.ndarray, width: int) -> np.ndarray:
    """``m`` with zero columns appended up to ``width`` (features that appeared later)."""
    if m.shape[1] >= width:
        return m
    return np.hstack([m, np.zeros((m.shape[0], width - m.shape[1]))])


def fill_missing(m: np.ndarray, values: np.ndarray) -> np.ndarray:
    missing = np.isnan(m)
    if missing.any():
        m[missing] = np.broadcast_to(values, m.shape)[missing]
    return m


def inverse_variance(m: np.ndarray) -> np.ndarray:
    """Per-column ``1 / variance`` (1 for a constant column): weights that standardise squared distances."""
    var = m.var(axis=0) if m.shape[0] > 1 else np.ones(m.shape[1])
    return np.where(var > _EPS, 1.0 / np.maximum(var, _EPS), 1.0)


def squared_distances(q: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted squared distances between the rows of ``q`` (B x d) and of ``z`` (n x d): B x n."""
    if q.shape[0] == 1:
        diff = z - q[0]
        diff *= diff
        out: np.ndarray = (diff @ w)[None, :]
        return out
    qw = q * w
    d2 = (qw * q).sum(axis=1)[:, None] - 2.0 * (qw @ z.T) + ((z * z) @ w)[None, :]
    out = np.maximum(d2, 0.0)
    return out
