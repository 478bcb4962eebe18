"""Feature dicts as numpy rows, for the strategies that measure distances (density, diversity)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter

import numpy as np

_EPS = 1e-12


class FeatureSpace:
    """Names features in the order they first appear and turns batches of dicts into matrices.

    A feature a sample lacks is NaN in its row; :meth:`fill` replaces it with a given row of values.
    """

    #: the known features' values of a dict, as a tuple (built again after unpickling an older object)
    _getter: Callable[[dict[str, float]], tuple[float, ...]] | None = None

    def __init__(self) -> None:
        self.names: list[str] = []
        self._key: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return len(self.names)

    def _values(self) -> Callable[[dict[str, float]], tuple[float, ...]] | None:
        getter = self._getter
        if getter is None and len(self.names) >= 2:  # (one name's itemgetter returns no tuple)
            getter = self._getter = itemgetter(*self.names)
        return getter

    def row(self, x: dict[str, float]) -> np.ndarray | None:
        """``x`` as one row, when it has exactly the known features and none is NaN, so that it needs
        neither new columns nor :func:`fill_missing` (the fast path of a batch of one); else ``None``."""
        getter = self._values()
        if getter is None or len(x) != len(self.names):
            return None
        try:
            values = getter(x)
        except KeyError:
            return None
        total = sum(values)
        if total != total:  # a NaN (or inf - inf: the general path then decides)
            return None
        return np.array(values, dtype=np.float64)

    def rows(self, xs: Sequence[dict[str, float]]) -> np.ndarray:
        getter = self._values()
        d = len(self.names)
        if getter is not None and sum(map(len, xs)) == d * len(xs):
            # the common case, every sample has the known features and no other (as the sizes add up
            # and every name is found): one C-level lookup per sample
            try:
                values = np.fromiter(chain.from_iterable(map(getter, xs)), np.float64, d * len(xs))
            except KeyError:
                pass
            else:
                return values.reshape(len(xs), d)
        key = self._key
        if all(len(x) == len(key) and tuple(x) == key for x in xs):
            return np.array([list(x.values()) for x in xs], dtype=np.float64).reshape(len(xs), len(key))
        known = set(self.names)
        for x in xs:
            for name in x:
                if name not in known:
                    known.add(name)
                    self.names.append(name)
        self._key = tuple(self.names)
        self._getter = None
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


def squared_distances_to(q: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted squared distances between the row ``q`` (d) and the rows of ``z`` (n x d): n."""
    diff = z - q
    diff *= diff
    out: np.ndarray = diff @ w
    return out


def squared_distances(q: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted squared distances between the rows of ``q`` (B x d) and of ``z`` (n x d): B x n."""
    if q.shape[0] == 1:
        one: np.ndarray = squared_distances_to(q[0], z, w)[None, :]
        return one
    qw = q * w
    d2 = (qw * q).sum(axis=1)[:, None] - 2.0 * (qw @ z.T) + ((z * z) @ w)[None, :]
    out: np.ndarray = np.maximum(d2, 0.0)
    return out
