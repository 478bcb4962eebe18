"""Which strategy × policy pair to ship as the default: every pair on the built-in data sets.

Offline (the same engine as the service, no Kafka), model kNN, one budget, seeds 0-2, label delays of 0 and
50 samples. Prints mean accuracy per data set and delay, labels used per sample, and the average rank of each
pair over the (data set, delay) cells. The `streamal bench` verb is the general tool; this script is the
record of how the service's default pair was chosen.

Every registered policy takes part except ``rate_limit``, which without a ``labels_per_hour`` is variable
uncertainty (the same decisions, so the same row twice).

    .venv/bin/python scripts/compare_pairs.py [--budget 0.1] [--shuttle 20000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from scipy.stats import rankdata

from streamal.datasets import load
from streamal.evaluation.simulate import simulate

STRATEGIES = ["least_confidence", "margin", "entropy", "random"]
POLICIES = [
    "threshold",
    "fixed_rate",
    "variable_uncertainty",
    "randomized_variable_uncertainty",
    "split",
    "biqf",
    "class_balanced",
]
SEEDS = [0, 1, 2]
DELAYS = [0, 50]
DATASETS = ["image_segments", "phishing", "bananas", "shuttle"]

Pair = tuple[str, str]


def _cell(job: tuple[str, int, int, float]) -> tuple[str, int, dict[Pair, tuple[float, list[float]]]]:
    """Every pair on one data set at one delay: (mean accuracy over the seeds, labels per sample)."""
    name, delay, shuttle, budget = job
    records = load(name, limit=shuttle if name == "shuttle" else None)
    out: dict[Pair, tuple[float, list[float]]] = {}
    for pair in itertools.product(STRATEGIES, POLICIES):
        runs = [
            simulate(records, strategy=pair[0], policy=pair[1], budget=budget, delay=delay, seed=s)
            for s in SEEDS
        ]
        out[pair] = (statistics.fmean(r.accuracy for r in runs), [r.labels_used / r.n for r in runs])
    return name, delay, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--shuttle", type=int, default=20_000, help="samples of Shuttle to use")
    parser.add_argument("--jobs", type=int, default=1, help="processes, one (data set, delay) cell each")
    args = parser.parse_args()
    pairs = list(itertools.product(STRATEGIES, POLICIES))
    jobs = [(name, delay, args.shuttle, args.budget) for name, delay in itertools.product(DATASETS, DELAYS)]
    acc: dict[tuple[str, int], dict[Pair, float]] = {}
    spent: dict[Pair, list[float]] = defaultdict(list)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name, delay, result in pool.map(_cell, jobs):  # in order, so the columns are too
            acc[(name, delay)] = {p: a for p, (a, _) in result.items()}
            for p, (_, fractions) in result.items():
                spent[p] += fractions
            print(f"done: {name}, delay {delay}", flush=True)
    ranks: dict[Pair, list[float]] = defaultdict(list)
    for by_pair in acc.values():
        order = rankdata([-by_pair[p] for p in pairs])
        for p, r in zip(pairs, order, strict=True):
            ranks[p].append(float(r))
    header = (
        "| strategy / policy | " + " | ".join(f"{n} (d={d})" for n, d in acc) + " | labels/n | avg rank |"
    )
    print(header)
    print("|---" * (len(acc) + 3) + "|")
    for p in sorted(pairs, key=lambda p: statistics.fmean(ranks[p])):
        cells = " | ".join(f"{acc[c][p]:.4f}" for c in acc)
        used = f"{min(spent[p]):.4f}–{max(spent[p]):.4f}"
        print(f"| {p[0]} / {p[1]} | {cells} | {used} | {statistics.fmean(ranks[p]):.2f} |")


if __name__ == "__main__":
    main()
