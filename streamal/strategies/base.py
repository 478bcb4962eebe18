"""A query strategy turns a scored sample into a utility in [0, 1]: how much a label would teach."""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence
from typing import ClassVar

from streamal.messages import ClassLabel, Features, Proba


class Strategy(abc.ABC):
    """Template: the base owns the cold start, subclasses implement :meth:`_utility` only.

    A model that knows fewer than two classes cannot be confident about anything, so such a sample has
    utility 1 (maximal). This is what keeps an untrained model asking instead of deadlocking.

    Two optional hooks serve strategies that need more than the probabilities; the
    :class:`~streamal.engine.Engine` is the one place that calls them:

    * :meth:`utilities` scores a whole batch given the samples' features too (density and diversity
      override it, and vectorise over the batch);
    * :meth:`observe_label` is told every label the model learns, with the features it learns them from
      (diversity keeps the labelled set this way).

    Their defaults reduce to :meth:`utility`, so a strategy that implements only :meth:`_utility` behaves
    exactly as before they existed.
    """

    name: ClassVar[str]
    #: whether the class keeps the base's :meth:`utility` (then :meth:`utilities` may call :meth:`_utility`
    #: directly: one call less per sample)
    _plain_utility: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._plain_utility = cls.utility is Strategy.utility

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def utility(self, proba: Proba) -> float:
        if len(proba) < 2:
            return 1.0
        return self._utility(proba)

    @abc.abstractmethod
    def _utility(self, proba: Proba) -> float:
        """Utility of a sample whose model knows at least two classes; in [0, 1]."""

    def utilities(self, xs: Sequence[Features], probas: Sequence[Proba]) -> list[float]:
        """The utility of each sample of a scored batch, in order (``xs`` are the samples' features)."""
        if self._plain_utility:
            inner = self._utility
            return [inner(p) if len(p) >= 2 else 1.0 for p in probas]
        utility = self.utility
        return [utility(p) for p in probas]

    def observe_label(self, x: Features, y: ClassLabel) -> None:  # noqa: B027 - an optional hook
        """The model has just learned ``y`` for the features ``x``. Default: nothing to do."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed!r})"
