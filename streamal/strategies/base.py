"""A query strategy turns a scored sample into a utility in [0, 1]: how much a label would teach."""

from __future__ import annotations

import abc
import random
from typing import ClassVar

from streamal.messages import Proba


class Strategy(abc.ABC):
    """Template: the base owns the cold start, subclasses implement :meth:`_utility` only.

    A model that knows fewer than two classes cannot be confident about anything, so such a sample has
    utility 1 (maximal). This is what keeps an untrained model asking instead of deadlocking.
    """

    name: ClassVar[str]

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed!r})"
