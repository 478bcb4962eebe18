"""The worker processes a fetched batch's partitions in a fixed order, whatever order the consumer returns
them in (aiokafka shuffles them): sorted by topic and partition, each in offset order. So a service run can
be replayed exactly (``streamal.offline``): the samples of a batch are scored, and the labels of a fetch
learned, in that order.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from streamal.engine import Engine
from streamal.kafka.outbox import Headers, Outbox
from streamal.kafka.worker import Topics, Worker
from streamal.messages import Label, label_message
from streamal.metrics import Metrics
from streamal.models import build_model
from streamal.pending import PendingRequests
from streamal.policies import FixedThreshold
from streamal.strategies import Entropy

TOPICS = Topics("samples", "labels", "predictions", "label-requests", "dead-letters")


class ListOutbox(Outbox):
    """What the worker queues, in order, in a list; every delivery acknowledged at once."""

    def __init__(self) -> None:  # (no producer)
        self.records: list[tuple[str, bytes | None, bytes]] = []

    async def partitions_of(self, topic: str) -> list[int]:
        return [0]

    async def add(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers = (), partition: int | None = None
    ) -> None:
        self.records.append((topic, key, value))

    async def ship(self) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result([])
        return done

    def discard(self) -> None:
        self.records.clear()


class SpyEngine(Engine):
    """The engine, noting the ids of the labels it learns, in order."""

    learned: list[str]

    def learn(self, label: Label) -> Any:
        self.learned.append(label.id)
        return super().learn(label)


def _record(topic: str, partition: int, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    key = f"{topic}-{partition}-{offset}".encode()
    return ConsumerRecord(topic, partition, offset, 0, 0, key, value, None, len(key), len(value), [])


def _samples(partition: int, n: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        _record(
            "samples",
            partition,
            offset,
            orjson.dumps({"id": f"p{partition}-{offset}", "features": {"x": float(offset), "y": 1.0}}),
        )
        for offset in range(n)
    ]


def _labels(partition: int, ids: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
    return [_record("labels", partition, n, label_message(i, "cat", "test")) for n, i in enumerate(ids)]


def test_a_batch_is_processed_in_the_order_of_its_partitions_whatever_order_it_comes_in() -> None:
    """Partitions given in descending order (as the consumer may return them): the labels are learned and
    the samples scored, predicted and asked for in ascending order of partition, each in offset order."""
    engine = SpyEngine(
        build_model("knn"),
        Entropy(),
        FixedThreshold(budget=1.0, threshold=0.0, min_spend=0.0, warmup=0),  # asks for every sample
        PendingRequests(ttl_seconds=60.0, clock=lambda: 0.0),
        clock=lambda: 0.0,
    )
    engine.learned = []
    outbox = ListOutbox()
    worker = Worker(engine, cast(Any, None), outbox, TOPICS, Metrics(CollectorRegistry()))

    async def main() -> None:
        # a first batch: the samples the labels of the second answer (asked for: every one)
        first = {TopicPartition("samples", p): _samples(p, 3) for p in (2, 1, 0)}
        await worker._handle(first)
        # the second: labels of two partitions and samples of three, all in descending order
        second = {
            TopicPartition("labels", 1): _labels(1, ["p2-0", "p1-1"]),
            TopicPartition("samples", 2): _samples(2, 5)[3:],
            TopicPartition("labels", 0): _labels(0, ["p0-2", "p0-0"]),
            TopicPartition("samples", 0): _samples(0, 5)[3:],
            TopicPartition("samples", 1): _samples(1, 5)[3:],
        }
        await worker._handle(second)

    asyncio.run(main())
    ids = [orjson.loads(value)["id"] for topic, _, value in outbox.records if topic == "predictions"]
    ascending = [f"p{p}-{o}" for p in range(3) for o in range(3)]
    ascending += [f"p{p}-{o}" for p in range(3) for o in range(3, 5)]
    assert ids == ascending
    asked = [orjson.loads(value)["id"] for topic, _, value in outbox.records if topic == "label-requests"]
    assert asked == ascending
    assert engine.learned == ["p0-2", "p0-0", "p2-0", "p1-1"]  # partition 0's, then 1's: offset order
