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
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from math import log

from streamal.messages import Proba
from streamal.strategies.base import Strategy


def _entropy(ps: Iterable[float]) -> float:
    h = 0.0
    for p in ps:
        if p > 0.0:
            h -= p * log(p)
    return h


class VoteEntropy(Strategy):
    """Entropy of the members' votes over ``log min(members, classes)``."""

    name = "qbc_vote_entropy"

    def __init__(self, seed: int | None = None, tie_break: float = 0.1) -> None:
        super().__init__(seed)
        if not 0.0 <= tie_break <= 1.0:
            raise ValueError(f"tie_break must be in [0, 1], got {tie_break}")
        self.tie_break = tie_break

    def _utility(self, proba: Proba) -> float:
        k = len(proba)
        consensus = _entropy(proba.values()) / math.log(k)
        members: list[list[float]] | None = getattr(proba, "members", None)
        if not members or len(members) < 2:
            return min(1.0, max(0.0, consensus))
        votes: dict[int, int] = {}
        for row in members:
            best = row.index(max(row))
            votes[best] = votes.get(best, 0) + 1
        n = len(members)
        ve = _entropy([v / n for v in votes.values()]) / math.log(min(n, k)) if len(votes) > 1 else 0.0
        tie = self.tie_break
        return min(1.0, max(0.0, (1.0 - tie) * ve + tie * consensus))


class KLDivergence(Strategy):
    """Mean KL divergence of the members to the consensus, over ``log min(members, classes)``."""

    name = "qbc_kl"

    def _utility(self, proba: Proba) -> float:
        k = len(proba)
        consensus = _entropy(proba.values())
        members: list[list[float]] | None = getattr(proba, "members", None)
        if not members or len(members) < 2:
            return min(1.0, max(0.0, consensus / math.log(k)))
        n = len(members)
        # the members' entropies in one loop (a call per member and math.fsum cost more than the logs)
        h_members = 0.0
        for row in members:
            for p in row:
                if p > 0.0:
                    h_members -= p * log(p)
        return min(1.0, max(0.0, (consensus - h_members / n) / math.log(min(n, k))))
