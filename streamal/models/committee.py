"""A committee of kNN classifiers trained by online bagging, for query by committee.

Each member is a :class:`~streamal.models.knn.KNNClassifier` that learns every label ``k ~ Poisson(1)``
times (Oza and Russell 2001, "Online bagging and boosting"), from its own random subspace of the features
when ``max_features < 1`` (Ho 1998), so the members disagree where the labels do not pin the classes
down. The committee predicts the members' mean, as a :class:`CommitteeProba`: a plain ``{class: p}`` dict
(what every strategy, policy and message reads) that also carries each member's probabilities, which is
what the committee strategies (:mod:`streamal.strategies.committee`) measure the disagreement of.

>>> m = CommitteeModel(n_members=3, seed=1)
>>> m.predict_proba_one({"x": 0.0})
{}
>>> for i, (x, y) in enumerate([(0.0, "a"), (0.3, "a"), (5.0, "b"), (5.3, "b")] * 3):
...     m.learn_one({"x": x + i / 100}, y)
>>> p = m.predict_proba_one({"x": 0.2})
>>> max(p, key=p.get), len(p.members), len(p.members[0])
('a', 3, 2)
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamal.messages import ClassLabel, Features, Proba
from streamal.models.base import Model
from streamal.models.knn import KNNClassifier


class CommitteeProba(dict[ClassLabel, float]):
    """The committee's consensus ``{class: mean p}``, with ``members``: one row of probabilities per
    member, in the order of the dict's keys. The consensus must be the members' mean (to rounding): BALD
    scores one sample from it (``tests/test_strategy_speed_paths.py`` holds every committee model to it).

    A model that computes the members as one array anyway (the torch models) also hands it out as
    ``members_array`` (``members x classes``, float64, equal to ``members``), which spares the committee
    strategies converting the rows; ``None`` otherwise, and after unpickling (only ``members`` is kept).
    """

    members: list[list[float]]
    members_array: np.ndarray | None = None

    def __init__(
        self,
        consensus: dict[ClassLabel, float],
        members: list[list[float]],
        members_array: np.ndarray | None = None,
    ) -> None:
        super().__init__(consensus)
        self.members = members
        if members_array is not None:
            self.members_array = members_array

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self), self.members))


class CommitteeModel(Model):
    """``n_members`` kNN classifiers on Poisson(1) bootstrap resamples of the labels (online bagging)."""

    name = "committee"

    def __init__(
        self,
        n_members: int = 5,
        n_neighbors: int = 5,
        window_size: int = 1000,
        max_features: float = 1.0,
        seed: int | None = 0,
    ) -> None:
        if n_members < 2:
            raise ValueError(f"n_members must be at least 2, got {n_members}")
        if not 0.0 < max_features <= 1.0:
            raise ValueError(f"max_features must be in (0, 1], got {max_features}")
        self.n_members = n_members
        self.n_neighbors = n_neighbors
        self.window_size = window_size
        self.max_features = max_features
        self.seed = seed
        self._rng = random.Random(seed)
        self.members = [KNNClassifier(n_neighbors, window_size) for _ in range(n_members)]
        self._classes: dict[ClassLabel, None] = {}
        self._subspace: list[dict[str, bool]] = [{} for _ in range(n_members)]

    @property
    def classes(self) -> list[ClassLabel]:
        return list(self._classes)

    def _keeps(self, member: int, feature: str) -> bool:
        """Whether ``member`` sees ``feature``: a fixed pseudo-random choice per (seed, member, name)."""
        chosen = self._subspace[member]
        keep = chosen.get(feature)
        if keep is None:
            digest = zlib.crc32(f"{self.seed}:{member}:{feature}".encode())
            keep = chosen[feature] = digest / 2**32 < self.max_features
        return keep

    def _view(self, member: int, x: Features) -> Features:
        if self.max_features >= 1.0:
            return x
        sub = {k: v for k, v in x.items() if self._keeps(member, k)}
        return sub or x  # a member that would see no feature of this sample sees them all

    def predict_proba_many(self, xs: Sequence[Features]) -> list[Proba]:
        classes = list(self._classes)
        if not classes or not xs:
            return [{} for _ in xs]
        k = len(classes)
        uniform = [1.0 / k] * k
        rows: list[list[list[float]]] = [[] for _ in xs]  # sample -> member -> probabilities
        for m, member in enumerate(self.members):
            if not member._filled:  # this member has drawn no label yet: it knows nothing
                for r in rows:
                    r.append(uniform)
                continue
            for r, p in zip(rows, member.predict_proba_batch([self._view(m, x) for x in xs]), strict=True):
                r.append(_aligned(p, classes))
        out: list[Proba] = []
        n = float(self.n_members)
        for members in rows:
            consensus = {c: math.fsum(row[j] for row in members) / n for j, c in enumerate(classes)}
            out.append(CommitteeProba(consensus, members))
        return out

    def learn_one(self, x: Features, y: ClassLabel) -> None:
        self._classes.setdefault(y, None)
        for m, member in enumerate(self.members):
            for _ in range(_poisson1(self._rng)):
                member.learn_one(self._view(m, x), y)

    def __repr__(self) -> str:
        return (
            f"CommitteeModel(n_members={self.n_members}, n_neighbors={self.n_neighbors}, "
            f"window_size={self.window_size}, max_features={self.max_features}, seed={self.seed!r})"
        )


def _aligned(p: dict[Any, float], classes: list[ClassLabel]) -> list[float]:
    """A member's probabilities over the committee's classes (a class it never drew has none)."""
    row = [p.get(c, 0.0) for c in classes]
    total = sum(row)
    return [v / total for v in row] if total > 0 else [1.0 / len(classes)] * len(classes)


def _poisson1(rng: random.Random) -> int:
    """A Poisson(1) draw by inversion (Knuth), from the model's own seeded generator."""
    limit, k, product = math.exp(-1.0), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k
