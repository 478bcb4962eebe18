"""Prequential simulation: every sample is predicted before any label of it is learned.

Labels come back ``delay`` samples after their request, as an annotator would answer them, and go through
the same :class:`~streamal.engine.Engine` as in the service. The samples between two moments at which a
label can arrive are scored as one batch, as the service scores a poll: the model cannot change in between,
so every prediction is the one a sample-by-sample run makes (with ``delay=0`` every batch has one sample).

>>> from streamal.datasets import load
>>> result = simulate(load("phishing"), budget=0.1, seed=1)  # least confidence, biqf, kNN (the defaults)
>>> result.n, result.labels_used, round(result.accuracy, 3)
(1250, 125, 0.866)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streamal.datasets import Record
from streamal.engine import Engine
from streamal.errors import InvalidArgument
from streamal.evaluation.overhead import BEST_OF, time_decisions
from streamal.messages import Label, Proba, Sample
from streamal.models import build_model
from streamal.policies import build_policy, reads_clock
from streamal.strategies import NEEDS_COMMITTEE, build_strategy


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
    #: time in the strategy and the policy only (the per-decision overhead), per sample
    us_per_decision: float = 0.0
    #: the same in batches of ``decision_batch`` (the run's samples and probabilities decided again, see
    #: :mod:`streamal.evaluation.overhead`); ``None`` unless asked for
    us_per_decision_batched: float | None = None
    decision_batch: int | None = None
    delay: int = 0
    #: labels the model learned (the engine's applied outcomes): fewer than ``labels_used`` when requests were
    #: still waiting for their label as the stream ended (a label delay as long as the stream learns none);
    #: ``None`` when not counted
    labels_learned: int | None = None
    #: (samples seen, accuracy over the preceding ``curve_step`` samples)
    curve: list[tuple[int, float]] = field(default_factory=list)
    #: whether each prediction was right (for plots)
    hits: list[bool] = field(default_factory=list, repr=False)

    @property
    def spent(self) -> float:
        """The fraction of the samples whose label was asked for."""
        return self.labels_used / self.n if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        fields = asdict(self)
        fields.pop("hits")
        out = {}
        for name, value in fields.items():
            if name != "labels_learned":
                out[name] = value
            if name == "labels_used":  # the two side by side
                out["labels_learned"] = self.labels_learned
        out["spent"] = self.spent
        return out


def default_model(strategy: str) -> str:
    """The model a strategy is simulated with when none is named: the committee for the committee
    strategies, the kNN for every other."""
    return "committee" if strategy in NEEDS_COMMITTEE else "knn"


def learning_curve(hits: Sequence[bool], step: int | None = None) -> list[tuple[int, float]]:
    """Accuracy over consecutive blocks of ``step`` samples (50 blocks when not given)."""
    n = len(hits)
    step = step or max(1, n // 50)
    return [(min(j + step, n), sum(hits[j : j + step]) / len(hits[j : j + step])) for j in range(0, n, step)]


def simulate(
    records: Sequence[Record],
    *,
    strategy: str = "least_confidence",
    policy: str = "biqf",
    budget: float = 0.1,
    model: str | None = None,
    delay: int = 0,
    seed: int = 0,
    curve_step: int | None = None,
    policy_params: dict[str, Any] | None = None,
    model_params: dict[str, Any] | None = None,
    samples_per_second: float = 1.0,
    max_batch: int = 256,
    decision_batch: int | None = None,
) -> SimulationResult:
    """Run one strategy and policy over ``records``; see the module's description.

    ``samples_per_second`` drives the simulated clock (sample ``i`` arrives at ``i / samples_per_second``),
    which a policy with a ``clock`` (the labels-per-hour rate limit) is given. ``model`` defaults to
    :func:`default_model`; committee and torch models are seeded with ``seed``.

    With ``decision_batch``, the run's samples and the probabilities its model gave them are decided again
    by a new strategy and policy in batches of that many (the best of ``BEST_OF`` runs; see
    :func:`~streamal.evaluation.overhead.time_decisions`): ``us_per_decision_batched`` is what a decision
    costs when the service decides a poll of that many samples at once, whatever the label delay.
    """
    if delay < 0:
        raise InvalidArgument(f"delay must be non-negative, got {delay}")
    if decision_batch is not None and decision_batch < 1:
        raise InvalidArgument(f"decision_batch must be at least 1 (or None), got {decision_batch}")
    model = model or default_model(strategy)
    position = [0]

    def clock() -> float:
        return position[0] / samples_per_second

    params = dict(policy_params or {})
    if reads_clock(policy):
        params.setdefault("clock", clock)
    m_params = dict(model_params or {})
    if model == "committee" or model.startswith("torch_"):
        m_params.setdefault("seed", seed)
    engine = Engine(
        build_model(model, m_params),
        build_strategy(strategy, seed=seed),
        build_policy(policy, budget=budget, seed=seed, params=params),
        clock=clock,
    )
    probas: list[Proba] | None = [] if decision_batch else None
    hits, elapsed = _run(engine, records, delay, max_batch, position, probas)
    n = len(records)
    batched = None
    if decision_batch and probas is not None:
        batched = min(
            time_decisions(
                strategy,
                policy,
                budget,
                records,
                probas,
                batch=decision_batch,
                seed=seed,
                policy_params=policy_params,
                samples_per_second=samples_per_second,
            )[0]
            for _ in range(BEST_OF)
        )
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
        us_per_decision=engine.decision_seconds / n * 1e6 if n else 0.0,
        us_per_decision_batched=batched,
        decision_batch=decision_batch,
        delay=delay,
        labels_learned=engine.labels_learned,
        curve=learning_curve(hits, curve_step),
        hits=hits,
    )


def _run(
    engine: Engine,
    records: Sequence[Record],
    delay: int,
    max_batch: int,
    position: list[int],
    probas: list[Proba] | None = None,
) -> tuple[list[bool], float]:
    """Run ``records`` through ``engine``; whether each prediction was right, and the seconds taken. The
    probabilities of the samples are appended to ``probas`` when it is given."""
    due: deque[tuple[int, Label]] = deque()  # (index of the sample before which it arrives, label)
    hits: list[bool] = []
    n = len(records)
    score: Callable[[Sequence[Sample]], Any] = engine.score
    started = time.perf_counter()
    i = 0
    while i < n:
        while due and due[0][0] <= i:
            engine.learn(due.popleft()[1])
        # until the next moment a label can arrive, the model cannot change: score all of it at once
        end = min(n, i + 1 + delay, i + max_batch)
        if due:
            end = min(end, due[0][0])
        position[0] = i
        chunk = records[i:end]
        for j, (record, decision) in enumerate(
            zip(chunk, score([Sample(id=r.id, features=r.features) for r in chunk]), strict=True)
        ):
            hits.append(decision.prediction == record.label)
            if probas is not None:
                probas.append(decision.proba)
            if decision.queried:
                due.append((i + j + 1 + delay, Label(id=record.id, label=record.label)))
        i = end
    return hits, time.perf_counter() - started
