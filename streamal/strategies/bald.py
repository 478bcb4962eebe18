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

One sample is scored quickly, by :func:`~streamal.strategies.committee.quick_information` (the consensus
``proba`` is the members' mean, so the information is the one ``qbc_kl`` measures; each entropy is one log
of a product, the members' by numpy when the model hands out their array), a batch with numpy (as the
committee strategies are, :class:`~streamal.strategies.committee.CommitteeStrategy`), both to about
1e-15, and by the formula (``math.fsum`` throughout) within ``EDGE`` of 0 or 1, where ties make the last
bit count.
"""

from __future__ import annotations

import math
from math import fsum, log
from operator import mul

import numpy as np

from streamal.messages import Proba
from streamal.strategies.committee import EDGE, CommitteeStrategy, neg_entropies, quick_information


class BALD(CommitteeStrategy):
    """Mutual information of label and model over ``log min(members, classes)``."""

    name = "bald"
    _reads_consensus = False

    def _formula(self, proba: Proba) -> float:
        k = len(proba)
        members: list[list[float]] | None = getattr(proba, "members", None)
        if not members or len(members) < 2:
            return min(1.0, max(0.0, _entropy(list(proba.values())) / math.log(k)))
        n = len(members)
        mean = [fsum(column) / n for column in zip(*members, strict=True)]
        information = _entropy(mean) - fsum(map(_entropy, members)) / n
        return min(1.0, max(0.0, information / math.log(min(n, k))))

    def _utility(self, proba: Proba) -> float:
        u = quick_information(proba)  # (the consensus proba is the members' mean)
        return u if EDGE < u < 1.0 - EDGE else self._formula(proba)

    def _quick_batch(self, consensus: np.ndarray | None, members: np.ndarray) -> np.ndarray:
        b, n, k = members.shape
        information = neg_entropies(members.reshape(b, n * k)) / n - neg_entropies(members.sum(axis=1) / n)
        out: np.ndarray = np.clip(information / math.log(min(n, k)), 0.0, 1.0)
        return out


def _entropy(ps: list[float]) -> float:
    """``-sum p log p`` over the ``p > 0``, exactly rounded (``math.fsum``)."""
    try:  # the terms by map, as long as every p has a log (fsum's sum does not depend on their order)
        h = -fsum(map(mul, ps, map(log, ps)))
    except ValueError:  # a p <= 0
        h = math.nan
    return h if h == h else -fsum(p * log(p) for p in ps if p > 0.0)
