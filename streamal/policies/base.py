"""A policy decides, sample by sample, whether a utility is worth one label of the budget.

The base class owns the budget: a windowed estimate of the fraction of samples asked for (Žliobaitė et
al. 2014, "Active learning with drifting streaming data", with the bias correction that keeps the first
``window`` samples from overspending). Above the budget nothing is asked; below ``min_spend`` times the
budget the next sample is asked whatever its utility, so an over-confident model cannot starve the
learner. In between, the subclass's one hook, :meth:`_ask`, decides.

**Warm start.** A model with no labels predicts nothing, and with a handful it is wrong about nearly every
sample, whatever their utilities say; spread one request per ``1 / budget`` samples, as the windowed
estimate alone would, it stays that way for the first hundreds of samples. So the first
``budget * warmup`` samples are asked for whatever their utility: a seed set, as pool-based active learning
starts from. The seed set is repaid over the next ``payback`` samples: the estimate counts it as if its
labels had been spread over them, so the policy goes on asking at a little under the budget's rate
meanwhile instead of asking nothing until the seed set is paid for (which left the model without labels
for about ``warmup`` samples, and cost accuracy: ``docs/benchmarks.md``). Over the first ``n`` samples it
asks about ``budget * n`` plus the part of the seed set not yet repaid, at most; a run shorter than
``payback`` samples may spend up to the seed set more than its budget. ``payback=0`` counts the seed set
at once: its labels are spent early, not added (within the estimate's slack), and the policy asks nothing
more until its spending is back under the budget; ``warmup=0`` turns the warm start off. While the seed
set is being repaid, :attr:`spending` (the estimate the policy decides on) leaves out the part not yet
repaid, which :meth:`state` shows as ``seed_debt``.

>>> from streamal.policies import FixedThreshold
>>> p = FixedThreshold(budget=0.1, threshold=0.0)          # every utility is worth asking for
>>> asked = [p.decide(1.0) for _ in range(1000)]
>>> sum(asked[:10]), sum(asked[:100]), sum(asked[:500]), sum(asked)
(10, 19, 51, 101)

A policy that needs to know more than the utility has two optional hooks, both called by the
:class:`~streamal.engine.Engine` only: with ``uses_prediction`` set, the engine decides each sample with
:meth:`decide_with`, which also gets the model's predicted class (the class-balanced quota uses it), and
:meth:`observe_label` is told every label the model learns.
"""

from __future__ import annotations

import abc
import random
from typing import Any, ClassVar

from streamal.messages import ClassLabel


class Policy(abc.ABC):
    name: ClassVar[str]
    #: whether the engine should call :meth:`decide_with` (with the predicted class) instead of :meth:`decide`
    uses_prediction: ClassVar[bool] = False

    #: samples whose budget is spent up front (a class attribute as well, so that a policy restored from an
    #: older checkpoint, far past its start anyway, has none)
    warmup: int = 0
    payback: int = 0
    #: seed-set labels the estimate has not counted yet, and how many it counts per sample
    _debt: float = 0.0
    _repay: float = 0.0

    def __init__(
        self,
        budget: float = 0.1,
        window: int = 1000,
        min_spend: float = 0.8,
        seed: int | None = None,
        warmup: int = 100,
        payback: int = 500,
    ) -> None:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be in (0, 1], got {budget}")
        for name, value in (("window", window), ("warmup", warmup), ("payback", payback)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number of samples, got {value!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 0.0 <= min_spend <= 1.0:
            raise ValueError(f"min_spend must be in [0, 1], got {min_spend}")
        if warmup < 0:
            raise ValueError(f"warmup must be non-negative, got {warmup}")
        if payback < 0:
            raise ValueError(f"payback must be non-negative, got {payback}")
        self.budget = budget
        self.window = window
        self.min_spend = min_spend
        self.seed = seed
        self.warmup = warmup
        self.payback = payback
        self._rng = random.Random(seed)
        self._decay = 1.0 - 1.0 / window
        self._asked = 0.0  # decayed count of requests
        self._seen = 0.0  # decayed count of samples
        self.n_seen = 0
        self.n_asked = 0

    @property
    def spending(self) -> float:
        """The windowed fraction of recent samples that were asked for, as the policy decides on it: the
        warm start's seed set counts only as far as it has been repaid (see ``state()["seed_debt"]``)."""
        return self._asked / self._seen if self._seen else 0.0

    def decide(self, utility: float) -> bool:
        spent = self._asked / self._seen if self._seen else 0.0  # self.spending, inlined: once per sample
        if self.n_seen < self.warmup and self.n_asked < self.budget * self.warmup:
            # the warm start: the seed set, up front; the estimate counts it as if it had been spread
            # over the next ``payback`` samples, so the budget's rate goes on meanwhile, a little lower
            if self.payback:
                self._debt += 1.0
                self._repay = self._debt / self.payback
            else:
                self._asked = self._asked * self._decay + 1.0
            self._seen = self._seen * self._decay + 1.0
            self.n_seen += 1
            self.n_asked += 1
            return True
        if self._debt > 0.0:
            repaid = min(self._debt, self._repay)
            self._debt -= repaid
            self._asked += repaid
            spent = self._asked / self._seen
        if spent >= self.budget and self.budget < 1.0:
            ask = False
        elif spent < self.min_spend * self.budget:
            ask = True
        else:
            ask = self._ask(utility)
        self._asked = self._asked * self._decay + ask
        self._seen = self._seen * self._decay + 1.0
        self.n_seen += 1
        self.n_asked += ask
        return ask

    def decide_with(self, utility: float, prediction: ClassLabel | None) -> bool:
        """:meth:`decide`, told the predicted class too (None before the model knows any class)."""
        return self.decide(utility)

    def observe_label(self, label: ClassLabel) -> None:  # noqa: B027 - an optional hook
        """The model has just learned ``label``. Default: nothing to do."""

    @abc.abstractmethod
    def _ask(self, utility: float) -> bool:
        """Whether to ask, given that the budget allows it."""

    def state(self) -> dict[str, Any]:
        """What a dashboard or ``/v1/model`` shows of this policy."""
        return {"name": self.name, "budget": self.budget, "spending": self.spending, "seed_debt": self._debt}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(budget={self.budget}, window={self.window}, seed={self.seed!r})"
