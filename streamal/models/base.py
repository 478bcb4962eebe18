"""The one small interface every online model sits behind: score a batch, learn one label."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from streamal.messages import ClassLabel, Features, Proba


class Model(abc.ABC):
    """An online multi-class classifier.

    Classes appear as labels arrive. An untrained model returns an empty ``proba`` (it knows no class),
    which every strategy reads as maximal uncertainty: the cold start asks for labels, it never deadlocks.
    """

    #: short name for logs, ``/v1/model`` and metrics
    name: str = "model"

    @property
    @abc.abstractmethod
    def classes(self) -> list[ClassLabel]:
        """The classes seen so far, in the order they first appeared."""

    @abc.abstractmethod
    def predict_proba_many(self, xs: Sequence[Features]) -> list[Proba]:
        """Class probabilities for each sample (each dict sums to 1, or is empty before any label)."""

    @abc.abstractmethod
    def learn_one(self, x: Features, y: ClassLabel) -> None:
        """Learn from one labelled sample."""

    def predict_proba_one(self, x: Features) -> Proba:
        return self.predict_proba_many([x])[0]
