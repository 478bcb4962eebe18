"""Which strategy × policy pair to ship as the default: every pair on the built-in data sets.

Offline (the same engine as the service, no Kafka), model kNN, one budget, seeds 0-2, label delays of 0 and
50 samples. Prints mean accuracy per data set, labels used per sample, and the average rank of each pair
over the (data set, delay) cells. The `streamal bench` verb is the general tool; this script is the record
of how the service's default pair was chosen.

    .venv/bin/python scripts/compare_pairs.py [--budget 0.1] [--shuttle 20000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections import defaultdict

from scipy.stats import rankdata

from streamal.datasets import load
from streamal.evaluation.simulate import simulate

STRATEGIES = ["least_confidence", "margin", "entropy", "random"]
POLICIES = ["threshold", "fixed_rate", "variable_uncertainty", "randomized_variable_uncertainty", "split"]
SEEDS = [0, 1, 2]
DELAYS = [0, 50]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--shuttle", type=int, default=20_000, help="samples of Shuttle to use")
    args = parser.parse_args()
    data = {
        "image_segments": load("image_segments"),
        "phishing": load("phishing"),
        "bananas": load("bananas"),
        "shuttle": load("shuttle", limit=args.shuttle),
    }
    pairs = list(itertools.product(STRATEGIES, POLICIES))
    acc: dict[tuple[str, int], dict[tuple[str, str], float]] = defaultdict(dict)
    spent: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (name, records), delay in itertools.product(data.items(), DELAYS):
        for pair in pairs:
            runs = [
                simulate(records, strategy=pair[0], policy=pair[1], budget=args.budget, delay=delay, seed=s)
                for s in SEEDS
            ]
            acc[(name, delay)][pair] = statistics.fmean(r.accuracy for r in runs)
            spent[pair] += [r.labels_used / r.n for r in runs]
        print(f"done: {name}, delay {delay}", flush=True)
    ranks: dict[tuple[str, str], list[float]] = defaultdict(list)
    for cell in acc.values():
        order = rankdata([-cell[p] for p in pairs])
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
