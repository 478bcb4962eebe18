"""The per-decision overhead of a strategy and a policy, timed apart from the model.

A decision is the strategy's utility and the policy's choice (what the engine counts in
``decision_seconds``). How much one costs depends on how many samples are decided together: the service
decides a poll's samples as one batch, while a simulation with no label delay decides one sample per batch,
as the model may learn between any two. :func:`time_decisions` decides given samples and probabilities
again, with a new strategy and policy, in batches of any size, as the engine calls them: the predictions are
made before the clock starts, and every label the policy asks for is then told to the strategy and the
policy (the engine tells them when the label comes back).

>>> from streamal.datasets import load
>>> records = load("phishing", limit=300)
>>> probas = [{True: 0.6, False: 0.4}] * len(records)
>>> us, asked = time_decisions("margin", "split", 0.1, records, probas, batch=100)
>>> us > 0.0, len(asked), asked[:3]   # the warm start's seed set first, then about one in ten
(True, 35, [0, 1, 2])
>>> time_decisions("margin", "split", 0.1, records, probas, batch=1)[1] == asked  # labels read by neither
True
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from streamal.datasets import Record
from streamal.engine import ask_each, predict
from streamal.messages import Proba
from streamal.policies import build_policy, reads_clock
from streamal.strategies import build_strategy

#: the batch the service decides at once, for the figures of the bench: one poll of 100 records
SERVICE_BATCH = 100
#: the bench's batched figure is the best of this many replays
BEST_OF = 3


def time_decisions(
    strategy: str,
    policy: str,
    budget: float,
    records: Sequence[Record],
    probas: Sequence[Proba],
    *,
    batch: int = SERVICE_BATCH,
    seed: int = 0,
    policy_params: dict[str, Any] | None = None,
    samples_per_second: float = 1.0,
) -> tuple[float, list[int]]:
    """µs per decision over ``records`` scored ``probas``, decided ``batch`` at a time by a new
    ``strategy`` and ``policy``; and the positions of the samples whose labels were asked.

    A policy that reads a clock (the labels-per-hour rate limit) is given the simulator's unless
    ``policy_params`` name one: sample ``i`` arrives at ``i / samples_per_second``, and a batch is decided at
    its first sample's time (so in batches it may ask less than sample by sample, as a service would)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if len(probas) != len(records):
        raise ValueError(f"{len(probas)} probabilities for {len(records)} records")
    position = [0]
    params = dict(policy_params or {})
    if reads_clock(policy):
        params.setdefault("clock", lambda: position[0] / samples_per_second)
    s = build_strategy(strategy, seed=seed)
    p = build_policy(policy, budget, seed=seed, params=params)
    xs = [r.features for r in records]
    spent, asked = 0.0, []
    for start in range(0, len(records), batch):
        position[0] = start
        chunk_x, chunk_p = xs[start : start + batch], probas[start : start + batch]
        predictions = predict(chunk_p)
        t0 = time.perf_counter()
        asks = ask_each(p, s.utilities(chunk_x, chunk_p), predictions)
        spent += time.perf_counter() - t0
        for i, ask in enumerate(asks, start):
            if ask:
                record = records[i]
                asked.append(i)
                s.observe_label(record.features, record.label)
                p.observe_label(record.label)
    return (spent / len(records) * 1e6 if records else 0.0), asked
