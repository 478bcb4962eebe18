"""The model topic: the learner publishes signed snapshots, scorers follow the newest one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streamal.checkpoint import CheckpointError
from streamal.metrics import Metrics
from streamal.models.base import Model
from streamal.snapshot import decode_snapshot, encode_snapshot

log = logging.getLogger(__name__)

#: every snapshot has the same key, so a compacted topic keeps only the newest
SNAPSHOT_KEY = b"model"


async def publish(producer: AIOKafkaProducer, topic: str, model: Model, version: int, key: bytes) -> int:
    """Send a snapshot and wait for the broker's acknowledgement; returns its size in bytes."""
    data = encode_snapshot(model, version, key)
    await producer.send_and_wait(topic, data, key=SNAPSHOT_KEY, partition=0)
    return len(data)


class ModelFollower:
    """Reads the model topic from its newest snapshot on and hands each new, valid one to ``apply``.

    ``ready`` is set once the topic has been looked at (with or without a snapshot in it), so a scorer
    never scores with a model older than the one published when it started.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        key: bytes,
        apply: Callable[[int, Model], None],
        metrics: Metrics,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._key = key
        self._apply = apply
        self._metrics = metrics
        self.ready = asyncio.Event()
        self.version = -1

    async def run(self, stopping: asyncio.Event) -> None:
        tp = TopicPartition(self._topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
        positioned = False
        while not stopping.is_set():
            try:
                batch = await self._consumer.getmany(
                    tp, timeout_ms=300, max_records=1 if not positioned else 50
                )
            except KafkaError as exc:
                log.warning("reading the model topic failed: %r", exc)
                await asyncio.sleep(1.0)
                continue
            highwater = self._consumer.highwater(tp)
            if not positioned:
                # the newest snapshot is the last record (end_offsets() is not reliable on every broker)
                if highwater is None:
                    continue
                positioned = True
                if highwater > 0:
                    self._consumer.seek(tp, highwater - 1)
                    continue
                self.ready.set()
                continue
            records = batch.get(tp, [])
            if records:
                self._load(records[-1].value, records[-1].offset)
            if not self.ready.is_set() and highwater is not None:
                position = await self._consumer.position(tp)
                if position >= highwater:
                    self.ready.set()

    def _load(self, data: bytes | None, offset: int) -> None:
        try:
            version, model = decode_snapshot(data or b"", self._key, f"{self._topic}@{offset}")
        except CheckpointError as exc:
            self._metrics.errors.labels("snapshot").inc()
            log.error("refused a model snapshot: %s", exc)
            return
        self._metrics.model_latest_version.set(version)
        if version > self.version:
            self.version = version
            self._apply(version, model)
