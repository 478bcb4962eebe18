"""The torch models against the kNN and river's models, on the built-in suite: accuracy and time per sample.

Offline, through the same engine as the service (:func:`streamal.evaluation.simulate.simulate`): every data
set of ``streamal.evaluation.bench.SUITE`` (its first ``SUITE_LIMIT`` samples), one budget (0.1), seeds 0-2,
labels answered ``--delay`` samples later. Each model runs with least confidence / threshold (the
service's default pair until session 2); the committee models also with their own strategies (BALD, KL to
the consensus), with the fixed threshold and with ``split``, whose threshold adapts. Prints a markdown
table: mean prequential accuracy per data set, their mean, labels used per sample, and microseconds per
sample (scoring, deciding and learning, wall clock: the machine is shared, compare within one run).

    .venv/bin/python scripts/compare_models.py [--budget 0.1] [--delay 0] [--seeds 3] \\
        [--models torch_mlp knn] [--policies split]

With ``--bursty`` it measures windowed batch selection (:mod:`streamal.selection`) instead: each sample of
image segments and phishing (their first 600) arrives as a burst of 5 copies jittered by 1%, labels come
back 50 samples later, batches of 10; least confidence and the threshold policy alone, then with a
``kcenter`` and a ``badge`` selector over windows of 100 samples; the kNN and ``torch_mlp``; seeds 0-1.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence

from streamal.datasets import load
from streamal.engine import Engine
from streamal.evaluation.bench import SUITE, SUITE_LIMIT
from streamal.evaluation.simulate import simulate
from streamal.messages import ClassLabel, Features, Label, Sample
from streamal.models import build_model
from streamal.policies import build_policy
from streamal.selection import build_selector
from streamal.strategies import build_strategy

#: (model, strategy, policy) rows of the table
ROWS = [
    ("knn", "least_confidence", "threshold"),
    ("softmax", "least_confidence", "threshold"),
    ("hoeffding_tree", "least_confidence", "threshold"),
    ("committee", "qbc_kl", "threshold"),
    ("committee", "qbc_kl", "split"),
    ("torch_mlp", "least_confidence", "threshold"),
    ("torch_mc_dropout", "least_confidence", "threshold"),
    ("torch_mc_dropout", "bald", "threshold"),
    ("torch_mc_dropout", "bald", "split"),
    ("torch_ensemble", "least_confidence", "threshold"),
    ("torch_ensemble", "qbc_kl", "threshold"),
    ("torch_ensemble", "qbc_kl", "split"),
]
#: models whose own randomness takes the run's seed
SEEDED = {"committee", "torch_mlp", "torch_mc_dropout", "torch_ensemble"}


def _bursty(
    name: str, seed: int, copies: int = 5, limit: int = 600
) -> list[tuple[str, Features, ClassLabel]]:
    rng = random.Random(seed)
    return [
        (f"{r.id}-{c}", {k: v * (1.0 + rng.gauss(0.0, 0.01)) for k, v in r.features.items()}, r.label)
        for r in load(name, limit=limit)
        for c in range(copies)
    ]


def _windowed_run(
    stream: Sequence[tuple[str, Features, ClassLabel]],
    model: str,
    selector: str | None,
    budget: float,
    seed: int,
    delay: int = 50,
    batch: int = 10,
) -> tuple[float, float]:
    """Prequential accuracy and labels per sample of one run; requests come from the decisions or, with a
    selector, from :meth:`Engine.take_requests` when a window closes."""
    engine = Engine(
        build_model(model),
        build_strategy("least_confidence", seed=seed),
        build_policy("threshold", budget, seed, {}),
        clock=lambda: 0.0,
        selector=build_selector(selector, window=100, seed=seed) if selector else None,
    )
    truth = {sample_id: y for sample_id, _, y in stream}
    due: list[tuple[int, Label]] = []
    hits = 0
    for i in range(0, len(stream), batch):
        for _, label in [d for d in due if d[0] <= i]:
            engine.learn(label)
        due = [d for d in due if d[0] > i]
        chunk = stream[i : i + batch]
        decisions = engine.score([Sample(id=sample_id, features=x) for sample_id, x, _ in chunk])
        hits += sum(d.prediction == y for d, (_, _, y) in zip(decisions, chunk, strict=True))
        for d in [d for d in decisions if d.queried] + engine.take_requests():
            due.append((i + batch + delay, Label(id=d.sample.id, label=truth[d.sample.id])))
    return hits / len(stream), engine.requests_made / len(stream)


def bursty_table(budget: float) -> None:
    print("| data set (bursts of 5) | model | selector | accuracy | labels/n |")
    print("|---|---|---|---|---|")
    for name in ("image_segments", "phishing"):
        streams = [_bursty(name, seed) for seed in range(2)]
        for model in ("knn", "torch_mlp"):
            for selector in (None, "kcenter", "badge"):
                runs = [_windowed_run(s, model, selector, budget, seed) for seed, s in enumerate(streams)]
                print(
                    f"| {name} | {model} | {selector or 'none'} | {statistics.fmean(a for a, _ in runs):.4f} "
                    f"| {statistics.fmean(n for _, n in runs):.4f} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--delay", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=SUITE_LIMIT, help="samples per data set")
    parser.add_argument("--models", nargs="*", help="only these models (default: all rows)")
    parser.add_argument("--policies", nargs="*", help="only these policies (default: all rows)")
    parser.add_argument("--bursty", action="store_true", help="measure windowed batch selection instead")
    args = parser.parse_args()
    if args.bursty:
        bursty_table(args.budget)
        return
    data = {name: load(name, limit=args.limit) for name in SUITE}
    rows = [
        r
        for r in ROWS
        if (not args.models or r[0] in args.models) and (not args.policies or r[2] in args.policies)
    ]
    print(
        f"budget {args.budget}, delay {args.delay}, seeds 0-{args.seeds - 1}, "
        f"{args.limit} samples per data set",
        flush=True,
    )
    header = "| model | strategy | policy | " + " | ".join(data) + " | mean | labels/n | µs/sample |"
    lines = [header, "|" + "---|" * (len(data) + 6)]
    for model, strategy, policy in rows:
        accuracies, spent, micros = [], [], []
        for records in data.values():
            runs = [
                simulate(
                    records,
                    strategy=strategy,
                    policy=policy,
                    budget=args.budget,
                    model=model,
                    model_params={"seed": seed} if model in SEEDED else None,
                    delay=args.delay,
                    seed=seed,
                )
                for seed in range(args.seeds)
            ]
            accuracies.append(statistics.fmean(r.accuracy for r in runs))
            spent += [r.spent for r in runs]
            micros += [r.us_per_sample for r in runs]
        line = (
            f"| {model} | {strategy} | {policy} | "
            + " | ".join(f"{a:.4f}" for a in accuracies)
            + f" | {statistics.fmean(accuracies):.4f} | {min(spent):.3f}-{max(spent):.3f}"
            + f" | {statistics.fmean(micros):.0f} |"
        )
        lines.append(line)
        print(line, flush=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
