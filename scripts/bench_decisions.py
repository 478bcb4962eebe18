"""Per-decision overhead of every strategy x policy, and of the peers, in µs per sample.

A decision is the strategy's utility and the policy's choice, apart from the model (the engine's
``decision_seconds``, reported by the bench as ``us_per_decision`` as its run decided the samples, and as
``us_per_decision_batched`` decided again in batches of 100). The model's probabilities for a real
stream are computed once per model, by a model that learns every label: the combination's own (the torch
combinations of the bench name theirs), else the strategy's default (the kNN, or the committee for the
committee strategies). Then each combination decides the whole stream as the engine calls it: one sample
per batch (``streamal simulate`` without a label delay) and 100 per batch (a poll of the service). Every
label the policy asks for is told to the strategy and the policy, as the engine does
(:func:`streamal.evaluation.overhead.time_decisions`, which the bench calls too). Each figure is the best
of ``--repeat`` runs.

The peers are timed on the same samples by the bench's own harness (``streamal.evaluation.peers``): for
scikit-activeml its ``query`` + ``update`` (given the classifier, whose probabilities the harness has
already computed to predict the sample), for river ``_ask_for_label`` given the probabilities. One run
each (``--peer-limit`` samples): they are slow.

    .venv/bin/python scripts/bench_decisions.py [--data image_segments] [--limit 2000] [--repeat 3]

The machine is shared and noisy: compare figures from one run, and read the load average it prints.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
from collections.abc import Sequence

from streamal.datasets import Record, load
from streamal.evaluation import peers
from streamal.evaluation.bench import BASELINE, COMBOS, combo_parts, missing_parts
from streamal.evaluation.overhead import time_decisions
from streamal.evaluation.simulate import default_model
from streamal.messages import Proba
from streamal.models import build_model
from streamal.policies import POLICIES
from streamal.strategies import STRATEGIES


def scored(records: Sequence[Record], model_name: str) -> list[Proba]:
    """The probabilities a model that learns every label gives each sample before learning it."""
    model = build_model(model_name, {"seed": 0} if model_name == "committee" else None)
    out = []
    for r in records:
        out.append(model.predict_proba_one(r.features))
        model.learn_one(r.features, r.label)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", default="image_segments")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--all", action="store_true", help="every strategy x policy (default: the bench set)")
    parser.add_argument("--peer-limit", type=int, default=1000, help="samples the peers are timed on")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    records = load(args.data, limit=args.limit)
    combos = (
        [(s, p, "") for s in STRATEGIES for p in POLICIES]
        if args.all
        else [combo_parts(c) for c in COMBOS if not missing_parts(c)]
    )
    models = {model or default_model(strategy) for strategy, _, model in combos}
    probas = {name: scored(records, name) for name in sorted(models)}
    load_before = os.getloadavg()[0]
    n_classes = len({r.label for r in records})
    print(
        f"{args.data}: {len(records)} samples, {n_classes} classes; budget {args.budget}; "
        f"µs per decision (strategy + policy), best of {args.repeat}; load average {load_before:.2f}"
    )
    print(f"{'strategy / policy':45s} {'batch 1':>8s} {'batch 100':>10s} {'labels':>7s}")
    ones, hundreds = [], []
    for strategy, policy, model in combos:
        p = probas[model or default_model(strategy)]
        params = {"threshold": 1.0 - args.budget} if (strategy, policy) == BASELINE else None
        decide = functools.partial(
            time_decisions, strategy, policy, args.budget, records, p, policy_params=params
        )
        one = min(decide(batch=1)[0] for _ in range(args.repeat))
        runs = [decide(batch=100) for _ in range(args.repeat)]
        hundred = min(r[0] for r in runs)
        ones.append(one)
        hundreds.append(hundred)
        method = f"{strategy} / {policy}" + (f" / {model}" if model else "")
        print(f"{method:45s} {one:8.2f} {hundred:10.2f} {len(runs[0][1]):7d}", flush=True)
    print(f"{'median of the above':45s} {statistics.median(ones):8.2f} {statistics.median(hundreds):10.2f}")
    if args.no_peers or not peers.available():
        return
    stream = records[: args.peer_limit]
    print(f"\npeers, on the first {len(stream)} samples (one run each; the bench's harness, batch 1)")
    for peer in peers.PEERS:
        result = peers.simulate_peer(stream, peer, budget=args.budget, seed=0)
        print(f"{peer:45s} {result.us_per_decision:8.1f}", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
