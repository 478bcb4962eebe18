"""A class-balanced quota, so that minority classes are not starved of labels.

Uncertainty sampling on an imbalanced stream spends most labels on the majority class: most samples, and
so most uncertain ones, are predicted to be of it. Here every class that has been labelled has an equal
quota of the labels. A sample predicted to be of a class whose share of the recent labels (decayed over
``memory`` labels) is below its quota counts as more useful: its utility is multiplied by
``quota / share``, at most ``max_boost``; one of a class above its quota counts as less, at least
``1 / max_boost``. Variable uncertainty (Žliobaitė et al. 2014) then decides on the adjusted utility,
under the base's budget ceiling and floor.

It needs the predicted class: the engine passes it through :meth:`decide_with`.

>>> p = ClassBalancedQuota(budget=0.5, min_spend=0.0)
>>> for label in ["major"] * 9 + ["minor"]:
...     p.observe_label(label)
>>> round(p.adjusted(0.2, "major"), 3), round(p.adjusted(0.2, "minor"), 3)
(0.111, 0.8)
"""

from __future__ import annotations

from typing import Any

from streamal.messages import ClassLabel
from streamal.policies.variable_uncertainty import VariableUncertainty


class ClassBalancedQuota(VariableUncertainty):
    """Variable uncertainty on ``utility * quota / share`` of the predicted class."""

    name = "class_balanced"
    uses_prediction = True

    def __init__(
        self,
        budget: float = 0.1,
        step: float = 0.01,
        max_boost: float = 4.0,
        memory: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(budget, step, **kwargs)
        if max_boost < 1.0:
            raise ValueError(f"max_boost must be at least 1, got {max_boost}")
        if memory < 1:
            raise ValueError(f"memory must be at least 1, got {memory}")
        self.max_boost = max_boost
        self.memory = memory
        self._labels: dict[ClassLabel, float] = {}  # decayed count of labels per class
        self._total = 0.0
        self._prediction: ClassLabel | None = None

    def adjusted(self, utility: float, prediction: ClassLabel | None) -> float:
        """The utility weighed by the predicted class's quota over its share of the labels."""
        if prediction is None or not self._total:
            return utility
        share = self._labels.get(prediction, 0.0) / self._total
        quota = 1.0 / max(1, len(self._labels) + (prediction not in self._labels))
        boost = self.max_boost if share * self.max_boost <= quota else quota / share
        return min(1.0, utility * max(boost, 1.0 / self.max_boost))

    def decide_with(self, utility: float, prediction: ClassLabel | None) -> bool:
        self._prediction = prediction
        try:
            return self.decide(utility)
        finally:
            self._prediction = None

    def _ask(self, utility: float) -> bool:
        return super()._ask(self.adjusted(utility, self._prediction))

    def observe_label(self, label: ClassLabel) -> None:
        decay = 1.0 - 1.0 / self.memory
        labels = self._labels
        for c in labels:
            labels[c] *= decay
        labels[label] = labels.get(label, 0.0) + 1.0
        self._total = self._total * decay + 1.0

    def state(self) -> dict[str, Any]:
        shares = {str(c): n / self._total for c, n in self._labels.items()} if self._total else {}
        return {**super().state(), "label_shares": shares}
