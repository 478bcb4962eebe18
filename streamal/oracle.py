"""An oracle: answers label requests from a labelled file after a delay, as an annotator would.

For demos, tests and benchmarks. It reads the ``label-requests`` topic in its own consumer group and sends
``{"id", "label", "annotator": "oracle"}`` to ``labels`` once the delay has passed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamal.messages import ClassLabel, label_message

log = logging.getLogger(__name__)


@dataclass
class OracleStats:
    requests: int = 0
    answered: int = 0
    unknown: int = 0
    skipped: int = 0  # left unanswered on purpose (miss_rate)
    repeated: int = 0  # requests for a sample already answered


async def run_oracle(
    options: dict[str, Any],
    truth: Mapping[str, ClassLabel],
    stopping: asyncio.Event,
    *,
    requests_topic: str = "label-requests",
    labels_topic: str = "labels",
    delay_seconds: float = 1.0,
    miss_rate: float = 0.0,
    group_id: str = "streamal-oracle",
    seed: int = 0,
    stats: OracleStats | None = None,
    ready: asyncio.Event | None = None,
    answer_once: bool = True,
) -> OracleStats:
    """Answer requests until ``stopping`` is set; ``ready`` is set once its partitions are assigned.

    Like a person, it answers each sample once (``answer_once``), even when a request is repeated (a
    sample scored again after a restart asks again, with the same id).
    """
    stats = stats if stats is not None else OracleStats()
    rng = random.Random(seed)
    consumer = AIOKafkaConsumer(
        requests_topic,
        **options,
        group_id=group_id,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    producer = AIOKafkaProducer(**options, acks="all", linger_ms=5, enable_idempotence=False)
    await consumer.start()
    await producer.start()
    due: list[tuple[float, int, str, ClassLabel]] = []
    seen: set[str] = set()
    seq = 0
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=1000)
            if ready is not None and not ready.is_set() and consumer.assignment():
                ready.set()
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    stats.requests += 1
                    try:
                        sample_id = orjson.loads(r.value)["id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        stats.unknown += 1
                        continue
                    if sample_id not in truth:
                        stats.unknown += 1
                        continue
                    if answer_once:
                        if sample_id in seen:
                            stats.repeated += 1
                            continue
                        seen.add(sample_id)
                    if miss_rate and rng.random() < miss_rate:
                        stats.skipped += 1
                        continue
                    seq += 1
                    heapq.heappush(due, (now + delay_seconds, seq, sample_id, truth[sample_id]))
            sends = []
            while due and due[0][0] <= time.monotonic():
                _, _, sample_id, label = heapq.heappop(due)
                sends.append(
                    await producer.send(
                        labels_topic, label_message(sample_id, label, "oracle"), key=sample_id.encode()
                    )
                )
            if sends:
                await asyncio.gather(*sends)
                stats.answered += len(sends)
        return stats
    finally:
        await consumer.stop()
        await producer.stop()
