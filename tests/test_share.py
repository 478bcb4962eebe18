"""A labels-per-hour capacity is shared among scorers by the samples partitions each one owns."""

from __future__ import annotations

from streamal.policies import RateLimit
from streamal.service import share_capacity


def test_a_scorer_with_a_third_of_the_partitions_asks_a_third_of_the_capacity() -> None:
    now = [0.0]
    policy = RateLimit(budget=1.0, labels_per_hour=600.0, burst=1, clock=lambda: now[0])
    share_capacity(policy, owned=2, total=6)
    assert policy.labels_per_hour == 200.0
    asked = 0
    for i in range(36_000):  # one hour at 10 samples a second, every sample as useful as can be
        now[0] = i / 10
        asked += policy.decide(1.0)
    assert 190 <= asked <= 201
    # after a rebalance that gives it every partition, it has the whole capacity again
    share_capacity(policy, owned=6, total=6)
    assert policy.labels_per_hour == 600.0
