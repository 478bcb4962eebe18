"""Prequential simulation: every sample is predicted before any label of it is learned.

Labels come back ``delay`` samples after their request, as an annotator would answer them, and go through
the same :class:`~streamal.engine.Engine` as in the service.

>>> from streamal.datasets import load
>>> result = simulate(load("phishing"), budget=0.1, seed=1)  # least confidence, threshold, kNN
>>> result.n, result.labels_used, round(result.accuracy, 3)
(1250, 125, 0.849)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streamal.datasets import Record
from streamal.engine import Engine
from streamal.messages import Label, Sample
from streamal.models import build_model
from streamal.policies import build_policy
from streamal.strategies import build_strategy


@dataclass
class SimulationResult:
    n: int
    accuracy: float
    labels_used: int
    budget: float
    strategy: str
    policy: str
    model: str
    seed: int
    us_per_sample: float
    #: (samples seen, accuracy over the preceding ``curve_step`` samples)
    curve: list[tuple[int, float]] = field(default_factory=list)
    #: cumulative accuracy after each sample (for plots)
    hits: list[bool] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("hits")
        return out


def simulate(
    records: Sequence[Record],
    *,
    strategy: str = "least_confidence",
    policy: str = "threshold",
    budget: float = 0.1,
    model: str = "knn",
    delay: int = 0,
    seed: int = 0,
    curve_step: int | None = None,
    policy_params: dict[str, Any] | None = None,
    model_params: dict[str, Any] | None = None,
) -> SimulationResult:
    engine = Engine(
        build_model(model, model_params),
        build_strategy(strategy, seed=seed),
        build_policy(policy, budget=budget, seed=seed, params=policy_params),
        clock=lambda: 0.0,
    )
    due: deque[tuple[int, Label]] = deque()
    hits: list[bool] = []
    started = time.perf_counter()
    for i, record in enumerate(records):
        while due and due[0][0] <= i:
            engine.learn(due.popleft()[1])
        [decision] = engine.score([Sample(id=record.id, features=record.features)])
        hits.append(decision.prediction == record.label)
        if decision.queried:
            due.append((i + 1 + delay, Label(id=record.id, label=record.label)))
    elapsed = time.perf_counter() - started
    n = len(records)
    step = curve_step or max(1, n // 50)
    curve = [(min(j + step, n), sum(hits[j : j + step]) / len(hits[j : j + step])) for j in range(0, n, step)]
    return SimulationResult(
        n=n,
        accuracy=sum(hits) / n if n else 0.0,
        labels_used=engine.requests_made,
        budget=budget,
        strategy=strategy,
        policy=policy,
        model=model,
        seed=seed,
        us_per_sample=elapsed / n * 1e6 if n else 0.0,
        curve=curve,
        hits=hits,
    )
