"""The poll loop: fetch a batch, decode, let the engine decide, produce, wait for acks, then commit.

Offsets are committed only after everything a batch caused (predictions, label requests, dead letters) is
acknowledged by the broker, so a crash repeats work but never skips it (at least once). A batch whose
output cannot be delivered is not committed: the consumer seeks back and the batch is processed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streamal.engine import Engine
from streamal.errors import DecodeError
from streamal.kafka.outbox import Outbox
from streamal.messages import (
    Label,
    Sample,
    decode_label,
    decode_sample,
    label_request_message,
    prediction_message,
)
from streamal.metrics import Metrics

log = logging.getLogger(__name__)

_MAX_DETAIL = 1000


@dataclass(frozen=True, slots=True)
class Topics:
    samples: str
    labels: str
    predictions: str
    label_requests: str
    dead_letters: str


class Worker:
    def __init__(
        self,
        engine: Engine,
        consumer: AIOKafkaConsumer,
        outbox: Outbox,
        topics: Topics,
        metrics: Metrics,
        *,
        max_batch_size: int = 2000,
        poll_timeout_ms: int = 200,
        retry_backoff_seconds: float = 1.0,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self._consumer = consumer
        self._outbox = outbox
        self._topics = topics
        self._metrics = metrics
        self._max_batch = max_batch_size
        self._poll_timeout_ms = poll_timeout_ms
        self._backoff = retry_backoff_seconds
        self._on_batch = on_batch
        #: monotonic time of the last completed loop turn (``/healthz`` reads it)
        self.last_turn = time.monotonic()
        self._last_lag = 0.0
        self._last_expire = 0.0
        self._dropped = {"evicted": engine.pending.evicted, "timed_out": engine.pending.timed_out}
        self.status: dict[str, Any] = engine.describe()
        #: topic -> partition -> next offset, of everything the engine has taken in (what a checkpoint holds)
        self.positions: dict[str, dict[int, int]] = {}

    async def run(self, stopping: asyncio.Event) -> None:
        """Loop until ``stopping`` is set; the batch in hand is finished, delivered and committed first."""
        while not stopping.is_set():
            batch = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
            )
            if batch:
                try:
                    await self._handle(batch)
                except KafkaError as exc:
                    self._metrics.errors.labels("produce").inc()
                    log.warning("delivery failed, the batch will be processed again: %r", exc)
                    self._rewind(batch)
                    await asyncio.sleep(self._backoff)
            now = time.monotonic()
            self.last_turn = now
            if now - self._last_lag >= 1.0:
                self._last_lag = now
                await self._update_lag()
            if now - self._last_expire >= 10.0:
                self._last_expire = now
                self.engine.expire()

    async def _handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        t0 = time.perf_counter()
        topics, engine, metrics, outbox = self._topics, self.engine, self._metrics, self._outbox
        samples: list[Sample] = []
        labels: list[Label] = []
        offsets: dict[TopicPartition, int] = {}
        n_records = 0
        for tp, records in batch.items():
            offsets[tp] = records[-1].offset + 1
            n_records += len(records)
            if tp.topic == topics.samples:
                for record in records:
                    try:
                        samples.append(decode_sample(record.value))
                    except DecodeError as exc:
                        await self._dead_letter(record, exc)
            elif tp.topic == topics.labels:
                for record in records:
                    try:
                        labels.append(decode_label(record.value))
                    except DecodeError as exc:
                        await self._dead_letter(record, exc)
        t1 = time.perf_counter()
        version_before = engine.model_version
        for label in labels:
            metrics.labels.labels(engine.learn(label).value).inc()
        t2 = time.perf_counter()
        decisions = engine.score(samples)
        t3 = time.perf_counter()
        requests = 0
        for d in decisions:
            key = d.sample.id.encode()
            await outbox.add(
                topics.predictions,
                key,
                prediction_message(
                    d.sample.id, d.prediction, d.proba, d.uncertainty, d.model_version, d.queried, d.ts
                ),
            )
            if d.queried:
                requests += 1
                await outbox.add(
                    topics.label_requests,
                    key,
                    label_request_message(
                        d.sample,
                        d.prediction,
                        d.proba,
                        d.utility,
                        engine.strategy.name,
                        d.model_version,
                        d.ts,
                    ),
                )
        t4 = time.perf_counter()
        await outbox.flush()
        t5 = time.perf_counter()
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # the group rebalanced under us: the new owner processes the batch again (at least once)
            metrics.errors.labels("commit").inc()
            log.warning("commit failed after a rebalance: %r", exc)
        t6 = time.perf_counter()
        for tp, offset in offsets.items():
            self.positions.setdefault(tp.topic, {})[tp.partition] = offset

        metrics.samples.inc(len(samples))
        metrics.predictions.inc(len(decisions))
        metrics.label_requests.inc(requests)
        metrics.batch_size.observe(n_records)
        stage = metrics.processing.labels
        stage("decode").observe(t1 - t0)
        stage("learn").observe(t2 - t1)
        stage("score").observe(t3 - t2)
        stage("decide").observe(t4 - t3)
        stage("produce").observe(t5 - t4)
        stage("commit").observe(t6 - t5)
        if engine.model_version != version_before:
            metrics.model_version.set(engine.model_version)
            metrics.model_updated.set(time.time())
        metrics.budget_spent.set(engine.policy.spending)
        accuracy = engine.prequential_accuracy
        if accuracy is not None:
            metrics.accuracy.set(accuracy)
        metrics.pending.set(len(engine.pending))
        for cause, total in (("evicted", engine.pending.evicted), ("timed_out", engine.pending.timed_out)):
            if total > self._dropped[cause]:
                metrics.pending_dropped.labels(cause).inc(total - self._dropped[cause])
                self._dropped[cause] = total
        self.status = engine.describe()
        if self._on_batch is not None:
            self._on_batch()

    async def _dead_letter(self, record: ConsumerRecord, exc: DecodeError) -> None:
        headers = [
            ("error", str(exc)[:_MAX_DETAIL].encode()),
            ("error.reason", exc.reason.encode()),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        await self._outbox.add(self._topics.dead_letters, record.key, record.value or b"", headers)
        self._metrics.dead_letters.labels(exc.reason).inc()
        log.debug("dead letter %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)

    def _rewind(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            self._consumer.seek(tp, records[0].offset)

    async def _update_lag(self) -> None:
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await self._consumer.position(tp)
            except KafkaError:
                continue
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
