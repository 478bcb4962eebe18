"""Query by committee (Seung et al. 1992): ask where the members of an ensemble disagree.

The members' probabilities come from a committee model (``model.name: committee``, see
:mod:`streamal.models.committee`), whose consensus ``proba`` carries them as ``proba.members``. Two
measures of disagreement (Settles 2009, section 3.2):

* vote entropy: the entropy of the members' votes (each member votes for its most probable class),
  divided by its largest value ``log min(members, classes)``; ties among committees that agree are broken
  by the consensus's entropy, with weight ``tie_break``;
* KL divergence to the consensus: the members' mean ``KL(p_m || p_mean)``, which equals
  ``H(p_mean) - mean_m H(p_m)``, divided by the same largest value.

With a model that has no committee, both read the model's probabilities as a committee of one and fall
back to the normalised entropy of ``proba``.

>>> from streamal.models.committee import CommitteeProba
>>> agree = CommitteeProba({"a": 0.8, "b": 0.2}, [[0.8, 0.2], [0.8, 0.2], [0.8, 0.2]])
>>> split = CommitteeProba({"a": 0.5, "b": 0.5}, [[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
>>> [round(VoteEntropy().utility(p), 3) for p in (agree, split)]
[0.072, 0.926]
>>> [round(KLDivergence().utility(p), 3) for p in (agree, split)]
[0.0, 0.354]

A decision must cost a few µs. One sample is scored by the formula, term by term in Python; a batch of
at least ``BATCH`` samples with numpy, over one ``(samples, members, classes)`` array per committee
shape, which agrees with the formula to about 1e-15 but not to the last bit. The last bit matters where
utilities tie, and they tie where the clip to [0, 1] piles them up: at 0, where a committee that agrees
leaves the formula's rounding noise (which variable uncertainty at its ceiling asks for, and a quantile
filter ranks), and at 1. So within ``EDGE`` of 0 or 1 a batch takes the formula's own values too; in
every replay tried (26 combinations, batch sizes 1 to 250, two streams) the decisions were the same at any
batch size, though a threshold falling between two utilities one bit apart could still tell them apart
(``tests/test_strategy_speed_paths.py`` holds the paths against the formula).

The formula's cost is its logs, one per probability (a committee of 5 over 7 classes: 42 of them, about
5 µs). KL divergence scores one sample whose model handed out the members' array (the torch models), of
at least ``QUICK_FROM`` probabilities, by :func:`quick_information` instead, to about 1e-15 (each entropy
as one log of a product, the members' product by numpy), and by the formula within ``EDGE`` of 0 or 1 as
a batch does. Without the array (the kNN committee) it keeps the formula: most of that committee's
samples agree up to rounding, at 0, where the formula decides anyway. Vote entropy keeps the formula
everywhere: its utilities sit inside (0, 1), where a quantile filter still ranks the last bit (a quicker
formula changed the decisions of a replay).

>>> [round(u, 3) for u in KLDivergence().utilities([{}] * BATCH, [agree, split] * (BATCH // 2))][:2]
[0.0, 0.354]
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from itertools import chain
from math import log, pow, prod
from typing import ClassVar

import numpy as np

from streamal.messages import Features, Proba
from streamal.strategies.base import Strategy

#: from this many samples, :meth:`CommitteeStrategy.utilities` scores the committees with numpy (below,
#: numpy's few µs per call cost more than the loops)
BATCH = 16
#: a utility of numpy's this close to 0 or 1 is computed again by the formula
EDGE = 1e-9
#: from this many probabilities in the members' array, :class:`KLDivergence` scores one sample by
#: :func:`quick_information` (below, the formula's logs cost less than numpy's two calls)
QUICK_FROM = 16


def _entropy(ps: Iterable[float]) -> float:
    """``-sum p log p`` over the ``p > 0`` of ``ps``, term by term."""
    h, ln = 0.0, log  # (a local name is the quicker lookup in a loop)
    for p in ps:
        if p > 0.0:
            h -= p * ln(p)
    return h


def quick_information(proba: Proba) -> float:
    """The members' mean KL divergence to their consensus ``proba`` (their mean), ``H(proba) - mean_m
    H(p_m)``, over ``log min(members, classes)``, in [0, 1] (with no committee, the normalised ``H(proba)``):
    :meth:`KLDivergence._formula` to about 1e-15. Each entropy is ``-log prod p**p`` (``0**0`` is 1), one
    log instead of one per term, which is what a sum costs in Python, within a few ulps per term; the
    members' product by numpy when the model handed out their array (the torch models; float64, else the
    rows are read). NaN, for the formula to decide, for fewer than two classes, where a product is not
    positive (a ``p < 0``, with a warning from numpy on an array) and past 512 terms, where the product's
    rounding errors add up beyond the sum's."""
    values = proba.values()
    k = len(values)
    if k < 2:
        return math.nan
    try:
        q = prod(map(pow, values, values))
    except ValueError:  # pow of a negative number: not a probability
        q = 0.0
    members: list[list[float]] | None = getattr(proba, "members", None)
    if not members or len(members) < 2:
        return min(1.0, max(0.0, -log(q) / log(k))) if q > 0.0 and k <= 512 else math.nan
    n = len(members)
    array: np.ndarray | None = getattr(proba, "members_array", None)
    if array is not None and array.dtype == np.float64:
        q_members = float(_product(np.power(array, array), None)) if array.size <= 512 else 0.0
    elif n * k <= 512:
        flat = list(chain.from_iterable(members))
        try:
            q_members = prod(map(pow, flat, flat))
        except ValueError:
            q_members = 0.0
    else:
        q_members = 0.0
    if q > 0.0 and q_members > 0.0 and k <= 512:
        return min(1.0, max(0.0, (log(q_members) / n - log(q)) / log(min(n, k))))
    return math.nan


#: the product of all of an array's values (the ufunc's own reduce: ``np.prod`` adds a µs of Python around it)
_product = np.multiply.reduce


def neg_entropies(p: np.ndarray) -> np.ndarray:
    """``sum p log p`` over the last axis of ``p``, with ``0 log 0 = 0`` (and no term for ``p < 0``)."""
    logs = np.zeros_like(p)
    np.log(p, out=logs, where=p > 0.0)
    logs *= p
    out: np.ndarray = logs.sum(axis=-1)
    return out


def log_terms(p: np.ndarray) -> np.ndarray:
    """``p log p`` for the ``p > 0`` of ``p`` and 0 for the others, with the logs of ``math.log`` (numpy's
    differ from them in the last bit now and then), taken once per distinct value."""
    positive = p > 0.0
    values = p[positive]
    ordered = np.sort(values)
    first = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    distinct = ordered[first]
    logs = np.fromiter(map(log, distinct.tolist()), np.float64, len(distinct))
    terms = np.zeros_like(p)
    terms[positive] = values * logs[np.searchsorted(distinct, values)]
    return terms


def entropies_in_order(terms: np.ndarray) -> np.ndarray:
    """Minus the sum of each row of ``terms``, added in order as :func:`_entropy` adds them (a cumulative
    sum is sequential, and ``-(a + b)`` is ``(0 - a) - b`` to the last bit): its value, given its terms."""
    out: np.ndarray = -terms.cumsum(axis=1)[:, -1]
    return out


class CommitteeStrategy(Strategy):
    """A strategy on the committee of ``proba.members``, by its formula (:meth:`_formula`, the reference,
    which scores one sample unless a subclass's :meth:`_utility` has a quicker way to the same value) and
    by numpy (:meth:`_quick_batch`, a batch's committees of one shape), which :meth:`utilities` combines:
    numpy's values but within :data:`EDGE` of 0 or 1, where it takes the formula's
    (:meth:`_formula_batch`)."""

    #: whether the batch methods read the consensus (the probabilities of ``proba`` itself)
    _reads_consensus: ClassVar[bool] = True

    def _utility(self, proba: Proba) -> float:
        return self._formula(proba)

    @abc.abstractmethod
    def _formula(self, proba: Proba) -> float:
        """The utility of a sample whose model knows at least two classes, by the formula: the reference."""

    @abc.abstractmethod
    def _quick_batch(self, consensus: np.ndarray | None, members: np.ndarray) -> np.ndarray:
        """The utilities of committees of ``n >= 2`` members over ``k >= 2`` classes, to about 1e-15:
        ``members`` are their rows (``samples x n x k``), ``consensus`` their ``proba`` (``samples x k``;
        ``None`` unless :attr:`_reads_consensus`)."""

    def _formula_batch(
        self, probas: list[Proba], consensus: np.ndarray | None, members: np.ndarray
    ) -> np.ndarray:
        """:meth:`_formula` of each of ``probas`` (whose arrays :meth:`_quick_batch` takes)."""
        return np.array([self._formula(p) for p in probas], dtype=np.float64)

    def utilities(self, xs: Sequence[Features], probas: Sequence[Proba]) -> list[float]:
        if len(probas) == 1:  # one sample (the simulator's batches): the base's loop, without the loop
            p = probas[0]
            return [self._utility(p) if len(p) >= 2 else 1.0]
        if len(probas) < BATCH:
            return super().utilities(xs, probas)
        return self._batch_utilities(probas)

    def _batch_utilities(self, probas: Sequence[Proba]) -> list[float]:
        inner = self._utility
        out = [1.0] * len(probas)
        shapes: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(probas):
            k = len(p)
            if k < 2:
                continue  # the base's cold start: 1
            members: list[list[float]] | None = getattr(p, "members", None)
            if members and len(members) >= 2:
                shape = (len(members), k)
                if shape in shapes:
                    shapes[shape].append(i)
                else:
                    shapes[shape] = [i]
            else:
                out[i] = inner(p)
        for (n, k), rows in shapes.items():
            group = [probas[i] for i in rows]
            array = _stacked(group, n, k)
            consensus = _consensus(group, k) if self._reads_consensus else None
            u = self._quick_batch(consensus, array)
            edge = (u <= EDGE) | (u >= 1.0 - EDGE)
            if edge.any():
                at = np.flatnonzero(edge)
                some = None if consensus is None else consensus[at]
                u[at] = self._formula_batch([group[j] for j in at.tolist()], some, array[at])
            for i, v in zip(rows, u.tolist(), strict=True):
                out[i] = v
        return out


def _stacked(probas: list[Proba], n: int, k: int) -> np.ndarray:
    """The members of ``probas`` (committees of ``n`` members over ``k`` classes), ``samples x n x k``:
    the arrays the model handed out (``CommitteeProba.members_array``) when every one has it."""
    arrays: list[np.ndarray | None] = [getattr(p, "members_array", None) for p in probas]
    if all(a is not None for a in arrays):
        return np.stack(arrays).astype(np.float64, copy=False)  # type: ignore[arg-type]  # (no None left)
    values = chain.from_iterable(chain.from_iterable(getattr(p, "members") for p in probas))  # noqa: B009
    return np.fromiter(values, np.float64, len(probas) * n * k).reshape(len(probas), n, k)


def _consensus(probas: list[Proba], k: int) -> np.ndarray:
    """The ``k`` probabilities of each of ``probas``, ``samples x k``."""
    values = chain.from_iterable(p.values() for p in probas)
    return np.fromiter(values, np.float64, len(probas) * k).reshape(len(probas), k)


class VoteEntropy(CommitteeStrategy):
    """Entropy of the members' votes over ``log min(members, classes)``."""

    name = "qbc_vote_entropy"

    def __init__(self, seed: int | None = None, tie_break: float = 0.1) -> None:
        super().__init__(seed)
        if not 0.0 <= tie_break <= 1.0:
            raise ValueError(f"tie_break must be in [0, 1], got {tie_break}")
        self.tie_break = tie_break

    def _formula(self, proba: Proba) -> float:
        k = len(proba)
        consensus = _entropy(proba.values()) / log(k)
        members: list[list[float]] | None = getattr(proba, "members", None)
        if not members or len(members) < 2:
            return min(1.0, max(0.0, consensus))
        votes = [row.index(max(row)) for row in members]
        n = len(members)
        if votes.count(votes[0]) == n:
            ve = 0.0
        else:  # the shares in the order the classes were first voted for
            ve = _entropy([votes.count(c) / n for c in dict.fromkeys(votes)]) / log(min(n, k))
        tie = self.tie_break
        return min(1.0, max(0.0, (1.0 - tie) * ve + tie * consensus))

    def _quick_batch(self, consensus: np.ndarray | None, members: np.ndarray) -> np.ndarray:
        assert consensus is not None
        b, n, k = members.shape
        h = neg_entropies(consensus) / -math.log(k)
        votes = members.argmax(axis=2)  # the first most probable class, as list.index(max(row))
        votes += np.arange(0, b * k, k)[:, None]
        shares = np.bincount(votes.ravel(), minlength=b * k).reshape(b, k) / n
        ve = neg_entropies(shares) / -math.log(min(n, k))
        ve[np.count_nonzero(shares, axis=1) < 2] = 0.0
        tie = self.tie_break
        out: np.ndarray = np.clip((1.0 - tie) * ve + tie * h, 0.0, 1.0)
        return out


class KLDivergence(CommitteeStrategy):
    """Mean KL divergence of the members to the consensus, over ``log min(members, classes)``."""

    name = "qbc_kl"

    def _formula(self, proba: Proba) -> float:
        k = len(proba)
        consensus = _entropy(proba.values())
        members: list[list[float]] | None = getattr(proba, "members", None)
        if not members or len(members) < 2:
            return min(1.0, max(0.0, consensus / log(k)))
        n = len(members)
        # the members' entropies in one loop (a call per member and math.fsum cost more than the logs)
        h_members, ln = 0.0, log
        for row in members:
            for p in row:
                if p > 0.0:
                    h_members -= p * ln(p)
        return min(1.0, max(0.0, (consensus - h_members / n) / log(min(n, k))))

    def _utility(self, proba: Proba) -> float:
        # quickly given a members' array of QUICK_FROM probabilities or more, but within EDGE of 0 or 1;
        # else the formula right away (the kNN committee, the model with no array, agrees up to rounding
        # more often than not, at 0)
        array: np.ndarray | None = getattr(proba, "members_array", None)
        if array is not None and array.size >= QUICK_FROM:
            u = quick_information(proba)
            if EDGE < u < 1.0 - EDGE:
                return u
        return self._formula(proba)

    def _quick_batch(self, consensus: np.ndarray | None, members: np.ndarray) -> np.ndarray:
        assert consensus is not None
        b, n, k = members.shape
        h_members = neg_entropies(members.reshape(b, n * k))
        out: np.ndarray = np.clip((h_members / n - neg_entropies(consensus)) / math.log(min(n, k)), 0.0, 1.0)
        return out

    def _formula_batch(
        self, probas: list[Proba], consensus: np.ndarray | None, members: np.ndarray
    ) -> np.ndarray:
        # a committee that agrees is at 0, and then often, by rounding noise: the formula, vectorised
        assert consensus is not None
        b, n, k = members.shape
        terms = log_terms(np.hstack([consensus, members.reshape(b, n * k)]))
        h, h_members = entropies_in_order(terms[:, :k]), entropies_in_order(terms[:, k:])
        out: np.ndarray = np.minimum(1.0, np.maximum(0.0, (h - h_members / n) / log(min(n, k))))
        return out
