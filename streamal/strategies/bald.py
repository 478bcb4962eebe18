"""BALD, Bayesian active learning by disagreement (Houlsby et al. 2011; Gal et al. 2017 with MC dropout).

The utility is the mutual information between a sample's label and the model's parameters, estimated from
the committee a model predicts (the MC-dropout passes of ``torch_mc_dropout``, the members of
``torch_ensemble`` or ``committee``, carried as ``proba.members``):

    I = H(mean_m p_m) - mean_m H(p_m)

the entropy of the consensus minus the members' mean entropy, divided by its largest value
``log min(members, classes)``. It separates what the model does not know (members that disagree: high) from
noise it knows about (members that agree the sample is ambiguous: entropy high, mutual information near
zero), which plain entropy cannot. The same quantity is the members' mean KL divergence to the consensus,
so on a committee ``bald`` and ``qbc_kl`` give equal utilities; ``bald`` is the name under which the
literature pairs it with MC dropout. With a model that has no committee it falls back to the normalised
entropy of ``proba``, as the committee strategies do.

>>> from streamal.models.committee import CommitteeProba
>>> unsure = CommitteeProba({"a": 0.5, "b": 0.5}, [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
>>> split = CommitteeProba({"a": 0.5, "b": 0.5}, [[0.95, 0.05], [0.05, 0.95], [0.5, 0.5]])
>>> [round(BALD().utility(p), 3) for p in (unsure, split)]    # entropy would rate both 1.0
[0.0, 0.476]
>>> round(BALD().utility({"a": 0.5, "b": 0.5}), 3)             # no committee: the entropy
1.0

One sample is scored quickly in Python, a batch with numpy (as the committee strategies are,
:class:`~streamal.strategies.committee.CommitteeStrategy`), both to about 1e-15, and by the formula
(``math.fsum`` throughout) within ``EDGE`` of 0 or 1, where ties make the last bit count.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from itertools import chain
from math import fsum, log, pow, prod
from operator import mul

import numpy as np

from streamal.messages import Proba
from streamal.strategies.committee import EDGE, CommitteeStrategy, neg_entropies


class BALD(CommitteeStrategy):
    """Mutual information of label and model over ``log min(members, classes)``."""

    name = "bald"
    _reads_consensus = False

    def _utility(self, proba: Proba) -> float:
        u = self._quick(proba)
        return u if EDGE < u < 1.0 - EDGE else self._formula(proba)

    def _formula(self, proba: Proba) -> float:
        k = len(proba)
        members: list[list[float]] | None = getattr(proba, "members", None)
        if not members or len(members) < 2:
            return min(1.0, max(0.0, _entropy(list(proba.values())) / math.log(k)))
        n = len(members)
        mean = [fsum(column) / n for column in zip(*members, strict=True)]
        information = _entropy(mean) - fsum(map(_entropy, members)) / n
        return min(1.0, max(0.0, information / math.log(min(n, k))))

    def _quick(self, proba: Proba) -> float:
        """:meth:`_formula` to about 1e-15: plain sums, and each entropy as one log of a product."""
        k = len(proba)
        members: list[list[float]] | None = getattr(proba, "members", None)
        if not members or len(members) < 2:
            return min(1.0, max(0.0, _quick_entropy([proba.values()], k) / math.log(k)))
        n = len(members)
        mean = [sum(column) / n for column in zip(*members, strict=True)]
        information = _quick_entropy([mean], k) - _quick_entropy(members, n * k) / n
        return min(1.0, max(0.0, information / math.log(min(n, k))))

    def _quick_batch(self, consensus: np.ndarray | None, members: np.ndarray) -> np.ndarray:
        b, n, k = members.shape
        information = neg_entropies(members.reshape(b, n * k)) / n - neg_entropies(members.sum(axis=1) / n)
        out: np.ndarray = np.clip(information / math.log(min(n, k)), 0.0, 1.0)
        return out

    def _formula_batch(
        self, probas: list[Proba], consensus: np.ndarray | None, members: np.ndarray
    ) -> np.ndarray:
        return np.array([self._formula(p) for p in probas], dtype=np.float64)


def _entropy(ps: list[float]) -> float:
    """``-sum p log p`` over the ``p > 0``, exactly rounded (``math.fsum``)."""
    try:  # the terms by map, as long as every p has a log (fsum's sum does not depend on their order)
        h = -fsum(map(mul, ps, map(log, ps)))
    except ValueError:  # a p <= 0
        h = math.nan
    return h if h == h else -fsum(p * log(p) for p in ps if p > 0.0)


def _quick_entropy(rows: Collection[Collection[float]], count: int) -> float:
    """``-sum p log p`` over the ``p > 0`` of ``rows`` (``count`` probabilities in all), as
    ``-log prod p**p`` (``0**0`` is 1): one log instead of one per term, which is what the sum costs in
    Python, equal to it within a few ulps per term; the sum where the product could lose its precision
    (past 512 terms) or leave (0, 1]."""
    if count <= 512:
        try:
            q = prod(map(pow, chain.from_iterable(rows), chain.from_iterable(rows)))
        except ValueError:  # pow of a negative number: not a probability
            q = 0.0
        if q > 0.0:
            return -log(q)
    return -fsum(p * log(p) for p in chain.from_iterable(rows) if p > 0.0)
