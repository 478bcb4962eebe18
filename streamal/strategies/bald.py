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
"""

from __future__ import annotations

import math

from streamal.messages import Proba
from streamal.strategies.base import Strategy


def _entropy(ps: list[float]) -> float:
    return -math.fsum(p * math.log(p) for p in ps if p > 0.0)


class BALD(Strategy):
    """Mutual information of label and model over ``log min(members, classes)``."""

    name = "bald"

    def _utility(self, proba: Proba) -> float:
        k = len(proba)
        consensus = list(proba.values())
        members: list[list[float]] | None = getattr(proba, "members", None)
        if not members or len(members) < 2:
            return min(1.0, max(0.0, _entropy(consensus) / math.log(k)))
        n = len(members)
        mean = [math.fsum(row[j] for row in members) / n for j in range(k)]
        information = _entropy(mean) - math.fsum(_entropy(row) for row in members) / n
        return min(1.0, max(0.0, information / math.log(min(n, k))))
