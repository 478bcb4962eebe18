"""Per-decision overhead of each strategy + policy, apart from the model: how long the engine spends in
``strategy.utilities`` and ``policy.decide`` per sample.

The model's probabilities for a real stream are computed once (the kNN, or the committee for the committee
strategies); then each combination decides the whole stream, with every label learned at once, as the
engine calls it: one sample per batch (``streamal simulate`` without a label delay) and 100 per batch (a
poll of the service). Each figure is the best of ``--repeat`` runs, in µs per sample. The machine is shared
and noisy: compare figures from one run.

    .venv/bin/python scripts/bench_overhead.py [--data image_segments] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from streamal.datasets import Record, load
from streamal.evaluation.bench import COMBOS
from streamal.evaluation.simulate import default_model
from streamal.messages import Features, Proba
from streamal.models import build_model
from streamal.policies import build_policy
from streamal.strategies import build_strategy


def scored(records: Sequence[Record], model_name: str) -> list[Proba]:
    """The probabilities a model that learns every label gives each sample before learning it."""
    model = build_model(model_name)
    out = []
    for r in records:
        out.append(model.predict_proba_one(r.features))
        model.learn_one(r.features, r.label)
    return out


def overhead(
    strategy: str, policy: str, records: Sequence[Record], probas: Sequence[Proba], batch: int, budget: float
) -> float:
    s = build_strategy(strategy, seed=0)
    params = {"threshold": 1.0 - budget} if (strategy, policy) == ("random", "threshold") else None
    p = build_policy(policy, budget, seed=0, params=params)
    xs: list[Features] = [r.features for r in records]
    spent = 0.0
    for start in range(0, len(records), batch):
        chunk_x, chunk_p = xs[start : start + batch], probas[start : start + batch]
        t0 = time.perf_counter()
        utilities = s.utilities(chunk_x, chunk_p)
        if p.uses_prediction:
            predictions = [max(q, key=q.__getitem__) if q else None for q in chunk_p]
            asks = list(map(p.decide_with, utilities, predictions))
        else:
            asks = list(map(p.decide, utilities))
        spent += time.perf_counter() - t0
        for record, ask in zip(records[start : start + batch], asks, strict=True):
            if ask:
                s.observe_label(record.features, record.label)
                p.observe_label(record.label)
    return spent / len(records) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="image_segments")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    records = load(args.data, limit=args.limit)
    probas = {name: scored(records, name) for name in ("knn", "committee")}
    print(f"{args.data}: {len(records)} samples; µs per decision (strategy + policy), best of {args.repeat}")
    print(f"{'strategy / policy':45s} {'batch 1':>8s} {'batch 100':>10s}")
    for strategy, policy in COMBOS:
        p = probas[default_model(strategy)]
        one = min(overhead(strategy, policy, records, p, 1, args.budget) for _ in range(args.repeat))
        hundred = min(overhead(strategy, policy, records, p, 100, args.budget) for _ in range(args.repeat))
        print(f"{strategy + ' / ' + policy:45s} {one:8.2f} {hundred:10.2f}")


if __name__ == "__main__":
    main()
