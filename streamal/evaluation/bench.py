"""The bench: strategies x policies x data sets x budgets x seeds, with the peers in the same run.

Every run is one :func:`~streamal.evaluation.simulate.simulate` (or, for a peer,
:func:`~streamal.evaluation.peers.simulate_peer`) over the same records with the same protocol, so the
rows of ``results.json`` compare like with like; :mod:`streamal.evaluation.report` turns them into tables,
tests and plots.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamal.datasets import Record, load
from streamal.evaluation.simulate import SimulationResult, simulate

#: the built-in suite: river's offline data sets and the drifting synthetic streams
SUITE = (
    "phishing",
    "bananas",
    "image_segments",
    "shuttle",
    "sea_abrupt",
    "agrawal_abrupt",
    "hyperplane",
    "rbf_drift",
)
#: samples per data set when the suite is run (the peers spend milliseconds per sample)
SUITE_LIMIT = 2000

#: random sampling: the baseline every run includes. The threshold is set to ``1 - budget``, so each sample
#: is asked with probability ``budget`` (within the policy's budget window): random sampling that spends
#: its whole budget. (random / fixed_rate spends less: its rank window asks for ties conservatively.)
BASELINE = ("random", "threshold")

#: the streamal combinations run by default: each strategy with the policies it is meant for
COMBOS: tuple[tuple[str, str], ...] = (
    BASELINE,
    ("periodic", "threshold"),
    ("entropy", "biqf"),
    ("margin", "biqf"),
    ("least_confidence", "biqf"),
    ("margin", "variable_uncertainty"),
    ("margin", "split"),
    ("entropy", "split"),
    ("margin", "fixed_rate"),
    ("entropy", "class_balanced"),
    ("probabilistic_entropy", "threshold"),
    ("qbc_vote_entropy", "biqf"),
    ("qbc_kl", "split"),
    ("density_weighted", "biqf"),
    ("diversity", "split"),
)


@dataclass(frozen=True)
class Task:
    """One run: a method (a streamal strategy and policy, or a peer) on one data set, budget and seed."""

    dataset: str
    strategy: str
    policy: str  # "" for a peer
    budget: float
    seed: int
    target: str = "label"
    limit: int | None = None
    delay: int = 0

    @property
    def is_peer(self) -> bool:
        return not self.policy

    @property
    def method(self) -> str:
        return self.strategy if self.is_peer else f"{self.strategy} / {self.policy}"


def dataset_name(source: str) -> str:
    """A data set's name in the results: a built-in name as it is, a file by its stem."""
    return Path(source).stem if ("/" in source or "." in source) else source


@functools.lru_cache(maxsize=16)
def _records(source: str, target: str, limit: int | None) -> tuple[Record, ...]:
    return tuple(load(source, target=target, limit=limit))


def run_task(task: Task) -> dict[str, Any]:
    """Run one task; returns its row of ``results.json``."""
    records = _records(task.dataset, task.target, task.limit)
    result: SimulationResult
    if task.is_peer:
        from streamal.evaluation.peers import simulate_peer

        result = simulate_peer(records, task.strategy, budget=task.budget, delay=task.delay, seed=task.seed)
        kind = "peer"
    else:
        params = {"threshold": 1.0 - task.budget} if (task.strategy, task.policy) == BASELINE else None
        result = simulate(
            records,
            policy_params=params,
            strategy=task.strategy,
            policy=task.policy,
            budget=task.budget,
            delay=task.delay,
            seed=task.seed,
        )
        kind = "baseline" if (task.strategy, task.policy) == BASELINE else "streamal"
    return {
        "dataset": dataset_name(task.dataset),
        "strategy": result.strategy,
        "policy": result.policy,
        "method": task.method,
        "kind": kind,
        "model": result.model,
        "budget": task.budget,
        "seed": task.seed,
        "delay": task.delay,
        "accuracy": float(result.accuracy),
        "labels_used": int(result.labels_used),
        "n": result.n,
        "spent": float(result.spent),
        "us_per_sample": float(result.us_per_sample),
        "us_per_decision": float(result.us_per_decision),
        "curve": result.curve,
    }


def plan(
    datasets: Sequence[str],
    budgets: Sequence[float],
    seeds: int,
    *,
    target: str = "label",
    limit: int | None = None,
    delay: int = 0,
    combos: Iterable[tuple[str, str]] = COMBOS,
    peers: Iterable[str] = (),
) -> list[Task]:
    """Every task of a bench, the peers first (they take longest)."""
    combos = list(combos)
    if BASELINE not in combos:
        combos.insert(0, BASELINE)
    peers = list(peers)
    tasks = []
    for methods in ([(p, "") for p in peers], combos):
        for dataset in datasets:
            for budget in budgets:
                for seed in range(seeds):
                    for strategy, policy in methods:
                        tasks.append(Task(dataset, strategy, policy, budget, seed, target, limit, delay))
    return tasks


def run(
    tasks: Sequence[Task],
    *,
    jobs: int | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``tasks`` on ``jobs`` processes (all cores by default; 1: in this process), in order of the
    tasks in the result."""
    jobs = jobs or os.cpu_count() or 1
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    if jobs == 1:
        for i, task in enumerate(tasks):
            rows[i] = run_task(task)
            if on_done:
                on_done(rows[i])  # type: ignore[arg-type]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            pending: dict[Future[dict[str, Any]], int] = {
                pool.submit(run_task, task): i for i, task in enumerate(tasks)
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    i = pending.pop(future)
                    rows[i] = future.result()
                    if on_done:
                        on_done(rows[i])  # type: ignore[arg-type]
    return [r for r in rows if r is not None]
