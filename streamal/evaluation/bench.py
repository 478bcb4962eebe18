"""The bench: strategies x policies x data sets x budgets x seeds, with the peers in the same run.

Every run is one :func:`~streamal.evaluation.simulate.simulate` (or, for a peer,
:func:`~streamal.evaluation.peers.simulate_peer`) over the same records with the same protocol, so the
rows of ``results.json`` compare like with like; :mod:`streamal.evaluation.report` turns them into tables,
tests and plots. Each row names its data set twice: ``dataset``, the name the report gives it, and
``source``, what the data was (:func:`data_source`), which :func:`reusable` compares.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamal.datasets import BUILTIN, Record, load
from streamal.errors import ConfigError, DataWarning, InvalidArgument
from streamal.evaluation.overhead import SERVICE_BATCH
from streamal.evaluation.simulate import SimulationResult, default_model, simulate
from streamal.models import build_model

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

#: a streamal combination: (strategy, policy), run with the strategy's default model
#: (:func:`~streamal.evaluation.simulate.default_model`), or (strategy, policy, model) with a named model of
#: :data:`streamal.models.MODELS` (or ``river:<module>.<Class>``)
Combo = tuple[str, str] | tuple[str, str, str]

#: the streamal combinations run by default: each strategy with the policies it is meant for. A combination
#: with another model is a triple, e.g. ``("entropy", "biqf", "softmax")``; one whose strategy or model is
#: not registered (an optional dependency missing) is left out of a bench with a note, not an error.
COMBOS: tuple[Combo, ...] = (
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
    # the torch models (the ``torch`` extra): the MLP with the default strategy, BALD on MC dropout, and
    # KL to the consensus of a deep ensemble; left out with a note where torch is not installed
    ("least_confidence", "biqf", "torch_mlp"),
    ("bald", "split", "torch_mc_dropout"),
    ("qbc_kl", "split", "torch_ensemble"),
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
    #: the model of a streamal run; "" is the strategy's default (kNN, or the committee for ``qbc_*``)
    model: str = ""
    #: parameters given to the policy of a streamal run (``warmup``, ``window``, ...), as (name, value)
    policy_params: tuple[tuple[str, Any], ...] = ()

    @property
    def is_peer(self) -> bool:
        return not self.policy

    @property
    def is_baseline(self) -> bool:
        """Random sampling (with any model: the baseline of the runs with that model)."""
        return (self.strategy, self.policy) == BASELINE

    @property
    def method(self) -> str:
        """The method's name in the report: a run with a model other than the default names it, so that
        the same strategy and policy with two models are two rows."""
        if self.is_peer:
            return self.strategy
        name = f"{self.strategy} / {self.policy}"
        return f"{name} / {self.model}" if self.model else name


def combo_parts(combo: Combo) -> tuple[str, str, str]:
    """``(strategy, policy, model)``, with ``""`` for the default model."""
    strategy, policy, *rest = combo
    model = rest[0] if rest else ""
    return strategy, policy, "" if model == default_model(strategy) else model


def model_of(combo: Combo) -> str:
    """The model a combination runs with: the one it names, or its strategy's default."""
    strategy, _, model = combo_parts(combo)
    return model or default_model(strategy)


def check_model(name: str) -> None:
    """Build the model ``name`` once, as each run with it will (:func:`~streamal.models.build_model`, the
    check ``streamal simulate`` makes): a ``ConfigError`` says why it cannot be used, before any run. A
    ``river:`` name must name a river classifier that can be built without parameters (a run gives it none).

    >>> check_model("river:naive_bayes.GaussianNB")
    >>> check_model("river:linear_model.LinearRegression")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamal.errors.ConfigError: river:linear_model.LinearRegression must be a river classifier, and it is ...
    >>> check_model("river:ensemble.BaggingClassifier")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamal.errors.ConfigError: river:ensemble.BaggingClassifier cannot be built without parameters (...)
    """
    if (problem := _model_problem(name)) is not None:
        raise ConfigError(problem)


@functools.lru_cache(maxsize=64)
def _model_problem(name: str) -> str | None:
    """Why ``name`` cannot be built, or ``None``: once per process (the command line checks the models
    with the flags that named them, :func:`run` again for its other callers; a torch model takes seconds)."""
    try:
        build_model(name)
    except ConfigError as exc:
        text = str(exc)
        if text.startswith("model.params: "):
            text = f"{name} cannot be built without parameters ({text.removeprefix('model.params: ')})"
        return text.removeprefix("model.name: ")
    return None


def missing_parts(combo: Combo) -> list[str]:
    """What a combination names that is not registered here (empty when it can run)."""
    from streamal.models import MODELS
    from streamal.policies import POLICIES
    from streamal.strategies import STRATEGIES

    strategy, policy, model = combo_parts(combo)
    missing = []
    if strategy not in STRATEGIES:
        missing.append(f"strategy {strategy!r}")
    if policy not in POLICIES:
        missing.append(f"policy {policy!r}")
    if model and model not in MODELS and not model.startswith("river:"):
        missing.append(f"model {model!r}")
    elif model.startswith("torch_") and importlib.util.find_spec("torch") is None:
        missing.append(f"model {model!r} (torch is not installed: pip install 'streamal[torch]')")
    return missing


def dataset_name(source: str) -> str:
    """A data set's name in the results: a built-in name as it is, a file by its stem."""
    return Path(source).stem if ("/" in source or "." in source) else source


def dataset_names(sources: Iterable[str]) -> dict[str, str]:
    """Each source's :func:`dataset_name`; a ``ConfigError`` when two sources would share one (two files
    with the same stem, or a file named like a built-in data set), as the report would merge them.

    >>> dataset_names(["phishing", "data/sea.csv"])
    {'phishing': 'phishing', 'data/sea.csv': 'sea'}
    >>> dataset_names(["a/data.csv", "b/data.csv"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamal.errors.ConfigError: --data a/data.csv and --data b/data.csv would both be called 'data' ...
    """
    names: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for source in sources:
        name = dataset_name(source)
        if name in by_name and by_name[name] != source:
            which = "the file" if name in BUILTIN else "one of the files"
            raise ConfigError(
                f"--data {by_name[name]} and --data {source} would both be called {name!r} in the results: "
                f"rename {which}"
            )
        by_name[name] = source
        names[source] = name
    return names


def data_source(source: str, target: str = "label") -> dict[str, Any]:
    """What a data set is, as the ``source`` of its rows in ``results.json`` records it: a built-in data set
    by its name; a file by its resolved path, its size in bytes, the SHA-256 of its bytes and the label
    column. A file named like a built-in data set, or changed since, or read with another ``--target``, is
    other data, whose rows :func:`reusable` does not take.

    >>> data_source("phishing")
    {'builtin': 'phishing'}
    """
    if source in BUILTIN:
        return {"builtin": source}
    path = Path(source).resolve()
    stat = path.stat()
    return dict(_file_source(str(path), target, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _file_source(path: str, target: str, size: int, mtime_ns: int) -> tuple[tuple[str, Any], ...]:
    """A file's :func:`data_source`, hashed once per process while its size and time of change stay."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return (("file", path), ("bytes", size), ("sha256", digest.hexdigest()), ("target", target))


def _source_key(source: Any) -> bytes:
    return orjson.dumps(source, option=orjson.OPT_SORT_KEYS)


@functools.lru_cache(maxsize=16)
def records_of(source: str, target: str = "label", limit: int | None = None) -> tuple[Record, ...]:
    """:func:`~streamal.datasets.load`, once per process: its warnings about the data
    (:class:`~streamal.errors.DataWarning`) are given by the first call. Load every data set of a bench
    with it before running the bench: the runs do not repeat them."""
    return tuple(load(source, target=target, limit=limit))


def _records(source: str, target: str, limit: int | None) -> tuple[Record, ...]:
    with warnings.catch_warnings():  # given when the data was loaded first (records_of)
        warnings.simplefilter("ignore", DataWarning)
        return records_of(source, target, limit)


def run_task(task: Task) -> dict[str, Any]:
    """Run one task; returns its row of ``results.json``."""
    records = _records(task.dataset, task.target, task.limit)
    result: SimulationResult
    if task.is_peer:
        from streamal.evaluation.peers import simulate_peer

        result = simulate_peer(records, task.strategy, budget=task.budget, delay=task.delay, seed=task.seed)
        kind = "peer"
    else:
        params = dict(task.policy_params)
        if (task.strategy, task.policy) == BASELINE:
            params["threshold"] = 1.0 - task.budget
        result = simulate(
            records,
            policy_params=params,
            strategy=task.strategy,
            policy=task.policy,
            model=task.model or None,
            budget=task.budget,
            delay=task.delay,
            seed=task.seed,
            decision_batch=SERVICE_BATCH,
        )
        kind = "baseline" if task.is_baseline else "streamal"
    return {
        "dataset": dataset_name(task.dataset),
        # what the data was (missing from the rows of older results.json files)
        "source": data_source(task.dataset, task.target),
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
        # (missing from the rows of older results.json files)
        "labels_learned": result.labels_learned,
        "n": result.n,
        "spent": float(result.spent),
        "us_per_sample": float(result.us_per_sample),
        "us_per_decision": float(result.us_per_decision),
        # (None for a peer: its API decides one sample at a time)
        "us_per_decision_batched": result.us_per_decision_batched,
        "decision_batch": result.decision_batch,
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
    combos: Iterable[Combo] = COMBOS,
    peers: Iterable[str] = (),
    policy_params: dict[str, Any] | None = None,
) -> list[Task]:
    """Every task of a bench, the peers first (they take longest). A policy parameter goes to the streamal
    runs whose policy takes it (:func:`~streamal.policies.parameters`), and to no other."""
    from streamal.policies import parameters

    given = tuple(sorted((policy_params or {}).items()))
    methods = [(p, "", "") for p in peers]
    parts = [combo_parts(c) for c in combos]
    if (*BASELINE, "") not in parts:
        parts.insert(0, (*BASELINE, ""))
    methods += list(dict.fromkeys(parts))
    tasks = []
    for dataset in datasets:
        for budget in budgets:
            for seed in range(seeds):
                for strategy, policy, model in methods:
                    params = tuple((k, v) for k, v in given if k in parameters(policy)) if policy else ()
                    tasks.append(
                        Task(dataset, strategy, policy, budget, seed, target, limit, delay, model, params)
                    )
    tasks.sort(key=lambda t: not t.is_peer)  # stable: the peers first, each group in its order
    return tasks


def reusable(tasks: Sequence[Task], rows: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The rows of an earlier ``results.json`` that answer some of ``tasks``: index of the task -> row.

    Only scikit-activeml's peers are reused: they are the slow runs, and nothing of streamal's changes
    them (river's sampler runs streamal's kNN, so it is run again, as is every streamal method). A row
    answers a task when data (``source``, :func:`data_source`), method, budget, seed, delay and number of
    samples are the same. A row of a ``results.json`` written before rows had a ``source`` is taken for
    the built-in data set of its ``dataset`` name, and for no file; the rows returned have a ``source``.
    """
    index = {}
    for r in rows:
        if r.get("kind") != "peer" or not str(r["method"]).startswith("skactiveml."):
            continue
        source = r.get("source")
        if source is None and r["dataset"] in BUILTIN:  # a row of a results.json from before sources
            source = {"builtin": r["dataset"]}
        if source is not None:
            at = (r["dataset"], r["method"], r["budget"], r["seed"], r.get("delay", 0), r["n"])
            index[(_source_key(source), *at)] = r
    found = {}
    for i, task in enumerate(tasks):
        if task.is_peer and task.strategy.startswith("skactiveml."):
            n = len(_records(task.dataset, task.target, task.limit))
            source = data_source(task.dataset, task.target)
            name = dataset_name(task.dataset)
            key = (_source_key(source), name, task.method, task.budget, task.seed, task.delay, n)
            if key in index:
                found[i] = {**index[key], "source": source}
    return found


def run(
    tasks: Sequence[Task],
    *,
    jobs: int | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    done: dict[int, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run ``tasks`` on ``jobs`` processes (all cores by default; 1: in this process), in order of the
    tasks in the result. ``done`` holds rows already known (from :func:`reusable`): those tasks are not
    run again. Every model the runs use is built first (:func:`check_model`): one that cannot be used
    stops the bench before its first run."""
    if jobs is not None and jobs < 1:
        raise InvalidArgument(f"jobs must be at least 1 (or None: one per core), got {jobs}")
    jobs = jobs or os.cpu_count() or 1
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    for i, row in (done or {}).items():
        rows[i] = row
    todo = [i for i in range(len(tasks)) if rows[i] is None]
    ours = [tasks[i] for i in todo if not tasks[i].is_peer]
    for model in dict.fromkeys(t.model or default_model(t.strategy) for t in ours):
        check_model(model)
    if jobs == 1:
        for i in todo:
            rows[i] = run_task(tasks[i])
            if on_done:
                on_done(rows[i])  # type: ignore[arg-type]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            pending: dict[Future[dict[str, Any]], int] = {pool.submit(run_task, tasks[i]): i for i in todo}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    rows[i] = future.result()
                    if on_done:
                        on_done(rows[i])  # type: ignore[arg-type]
    return [r for r in rows if r is not None]
