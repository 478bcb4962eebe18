"""The poll loop: fetch a batch, decode, let the engine decide, produce; commit once acknowledged.

Offsets are committed only after everything a batch caused (predictions, label requests, dead letters) is
acknowledged by the broker, so a crash repeats work but never skips it (at least once). Delivery is
pipelined: the loop goes on with the next batch while earlier ones wait for their acknowledgements (at
most ``max_in_flight`` batches), and commits are coalesced, in order, in the background. A batch whose
output cannot be delivered is not committed: the consumer seeks back to it and processes it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streamal.engine import Engine
from streamal.errors import DecodeError
from streamal.kafka.outbox import Outbox
from streamal.kafka.partitioner import partitions_for
from streamal.messages import (
    Label,
    Sample,
    decode_label,
    decode_label_request,
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
    models: str = "streamal-models"


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
        max_in_flight: int = 4,
        drain_seconds: float = 5.0,
        on_batch: Callable[[], Awaitable[None]] | None = None,
        before_start: Callable[[], Awaitable[bool]] | None = None,
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
        self._before_start = before_start
        self._max_in_flight = max_in_flight
        #: batches produced but not yet acknowledged: (acks, first offsets, next offsets)
        self._in_flight: deque[
            tuple[asyncio.Future[Any], dict[TopicPartition, int], dict[TopicPartition, int]]
        ]
        self._in_flight = deque()
        self._to_commit: dict[TopicPartition, int] = {}
        self._commit_task: asyncio.Task[None] | None = None
        self._holding = False
        self._held_since = 0.0
        self._held_warned = 0.0
        self._drain_seconds = drain_seconds
        #: False when the last stop could not deliver and commit everything (no checkpoint is written then)
        self.clean_stop = True
        #: monotonic time of the last completed loop turn (``/healthz`` reads it)
        self.last_turn = time.monotonic()
        self._last_lag = 0.0
        self._last_expire = 0.0
        self._dropped = {"evicted": engine.pending.evicted, "timed_out": engine.pending.timed_out}
        for topic in (topics.samples, topics.labels, topics.label_requests):
            metrics.consumed.labels(topic)
        #: topic -> partition -> next offset, of everything the engine has taken in (what a checkpoint holds)
        self.positions: dict[str, dict[int, int]] = {}
        #: topic -> partition -> the last offset committed
        self.committed: dict[str, dict[int, int]] = {}

    def replace_engine(self, engine: Engine, positions: dict[str, dict[int, int]]) -> None:
        """Continue from another engine (a checkpoint restored late) and the positions it reflects; call it
        before the first batch. Labels are held until the label requests are read back."""
        self.engine = engine
        self.positions = {t: dict(p) for t, p in positions.items()}
        self._dropped = {"evicted": engine.pending.evicted, "timed_out": engine.pending.timed_out}
        self.hold_labels()

    def hold_labels(self) -> None:
        """After a restore or an assignment: learn no label until the label requests are read back to their
        end, or a label could arrive before the request it answers and be called unknown."""
        if not self._holding:
            self._holding = True
            self._held_since = time.monotonic()
        self._pause_labels()

    def _pause_labels(self) -> None:
        held = [tp for tp in self._consumer.assignment() if tp.topic == self._topics.labels]
        if held:
            self._consumer.pause(*held)

    def on_assigned(self) -> None:
        """Call after every assignment: hold the labels again until the label requests are read to their end.

        A label-requests partition this member did not have before may hold requests that the labels now
        coming in answer: after a restart the partitions the killed member still held in the group come
        back only when its session expires, and until then its share of the requests is unread.
        """
        if any(tp.topic == self._topics.labels for tp in self._consumer.assignment()):
            self.hold_labels()

    def _warn_if_held_long(self, after: float = 60.0) -> None:
        """Labels held for over a minute mean this member does not get every label-requests partition (two
        all-in-one services in one group?): say so, once a minute."""
        now = time.monotonic()
        if now - self._held_since < after or now - self._held_warned < after:
            return
        if not any(tp.topic == self._topics.labels for tp in self._consumer.assignment()):
            return
        self._held_warned = now
        mine = sorted(
            tp.partition for tp in self._consumer.assignment() if tp.topic == self._topics.label_requests
        )
        log.warning(
            "labels held for %.0f s: waiting to read every %s partition to its end (assigned here: %s); "
            "a learner or all-in-one service must be the only member of its group",
            now - self._held_since,
            self._topics.label_requests,
            mine,
        )

    def _requests_caught_up(self) -> bool:
        """Every partition of ``label-requests`` is assigned here and read up to its last fetched end."""
        topic = self._topics.label_requests
        parts = [tp for tp in self._consumer.assignment() if tp.topic == topic]
        existing = self._consumer.partitions_for_topic(topic)
        if not parts or not existing or not existing <= {tp.partition for tp in parts}:
            return False
        for tp in parts:
            highwater = self._consumer.highwater(tp)
            position = self.positions.get(tp.topic, {}).get(tp.partition)
            if highwater is None:
                return False
            if highwater > 0 and (position is None or position < highwater):
                return False
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        """Loop until ``stopping`` is set; what is in flight is then delivered and committed."""
        while not stopping.is_set():
            if self._before_start is not None:
                # nothing is read (so nothing is committed) until ``before_start`` says so: the service writes
                # the checkpoint a restart would begin from first
                self.last_turn = time.monotonic()
                if not self._consumer.assignment() or not await self._before_start():
                    await self._idle_poll()
                    continue
                self._before_start = None
            if self._holding and not self._requests_caught_up():
                self._warn_if_held_long()
            elif self._holding:
                self._holding = False
                held = [tp for tp in self._consumer.assignment() if tp.topic == self._topics.labels]
                self._consumer.resume(*held)
                log.info("label requests read to their end; learning labels")
            try:
                if len(self._in_flight) >= self._max_in_flight:
                    # back pressure: no new batch until the oldest one is acknowledged (checked every second,
                    # so that a stop or an outage is noticed)
                    await self._settle(wait=True)
                else:
                    batch = await self._consumer.getmany(
                        timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
                    )
                    if batch:
                        await self._handle(batch)
                    await self._settle(wait=False)
            except KafkaError as exc:
                await self._recover(exc)
            now = time.monotonic()
            self.last_turn = now
            if now - self._last_lag >= 1.0:
                self._last_lag = now
                await self._restart_truncated()
                await self._update_lag()
            if now - self._last_expire >= 10.0:
                self._last_expire = now
                self.engine.expire()
            if self._on_batch is not None:
                await self._on_batch()
        try:
            await asyncio.wait_for(self.drain(), self._drain_seconds)
        except (KafkaError, TimeoutError) as exc:
            self.clean_stop = False
            log.warning(
                "stopping with output not acknowledged (%r): its input was not committed and will be "
                "processed again after a restart",
                exc,
            )

    async def _idle_poll(self) -> None:
        """Wait a moment without taking anything in, but polling: a consumer that does not poll for
        ``max_poll_interval_ms`` leaves its group (a standby learner or a spare scorer would never get
        partitions). Whatever a partition assigned meanwhile returns is put back."""
        try:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=1)
        except KafkaError as exc:
            log.debug("poll before the start: %r", exc)
            await asyncio.sleep(0.1)
            return
        if batch:
            self._rewind(batch)

    async def drain(self) -> None:
        """Wait until every batch handled so far is acknowledged and its offsets committed."""
        await self._settle(wait=True, everything=True)
        if self._commit_task is not None:
            await self._commit_done(self._commit_task)
        if self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            await self._commit(offsets)

    async def _settle(self, wait: bool, everything: bool = False) -> None:
        """Take acknowledged batches off the in-flight queue, in order; start a commit of their offsets.

        ``wait``: wait up to a second for the oldest batch; ``everything``: wait for all of them.
        """
        while self._in_flight:
            acks, _, ends = self._in_flight[0]
            if not acks.done():
                if everything:
                    await asyncio.wait([acks])
                elif wait:
                    await asyncio.wait([acks], timeout=1.0)
                    wait = False
                if not acks.done():
                    break
            if acks.cancelled():  # the producer gave the batch up (e.g. while the broker was away)
                raise KafkaError("the delivery of a batch was cancelled")
            acks.result()  # raises if the delivery failed
            self._in_flight.popleft()
            self._to_commit.update(ends)
        if self._to_commit and (self._commit_task is None or self._commit_task.done()):
            if self._commit_task is not None:
                await self._commit_done(self._commit_task)
            offsets, self._to_commit = self._to_commit, {}
            self._commit_task = asyncio.create_task(self._commit(offsets))

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        t0 = time.perf_counter()
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # the group rebalanced under us: the new owner processes these records again (at least once)
            self._metrics.errors.labels("commit").inc()
            log.warning("commit failed after a rebalance: %r", exc)
            return
        self._metrics.processing.labels("commit").observe(time.perf_counter() - t0)
        for tp, offset in offsets.items():
            self.committed.setdefault(tp.topic, {})[tp.partition] = offset

    async def _commit_done(self, task: asyncio.Task[None]) -> None:
        self._commit_task = None
        try:
            await task
        except KafkaError as exc:
            self._metrics.errors.labels("commit").inc()
            log.warning("commit failed, the next one will carry its offsets: %r", exc)

    async def _recover(self, exc: KafkaError) -> None:
        """Delivery failed: seek back to the oldest batch not acknowledged and process it all again."""
        self._metrics.errors.labels("produce").inc()
        log.warning("delivery failed, the batches in flight will be processed again: %r", exc)
        starts: dict[TopicPartition, int] = {}
        for acks, first, _ in self._in_flight:
            acks.cancel()
            for tp, offset in first.items():
                starts[tp] = min(offset, starts.get(tp, offset))
        self._in_flight.clear()
        for tp, offset in starts.items():
            self._consumer.seek(tp, offset)
        await asyncio.sleep(self._backoff)

    async def _handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        t0 = time.perf_counter()
        topics, engine, metrics, outbox = self._topics, self.engine, self._metrics, self._outbox
        samples: list[Sample] = []
        labels: list[Label] = []
        offsets: dict[TopicPartition, int] = {}
        firsts: dict[TopicPartition, int] = {}
        n_records = 0
        for tp, records in batch.items():
            offsets[tp] = records[-1].offset + 1
            firsts[tp] = records[0].offset
            n_records += len(records)
            metrics.consumed.labels(tp.topic).inc(len(records))
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
            elif tp.topic == topics.label_requests:
                for record in records:
                    try:
                        req = decode_label_request(record.value)
                    except DecodeError as exc:
                        await self._dead_letter(record, exc)
                        continue
                    engine.register_request(
                        req.id, req.features, req.prediction, req.model_version, req.requested_at
                    )
        t1 = time.perf_counter()
        version_before = engine.model_version
        for label in labels:
            metrics.labels.labels(engine.learn(label).value).inc()
        t2 = time.perf_counter()
        decided_before = engine.decision_seconds
        decisions = engine.score(samples)
        t3 = time.perf_counter()
        requests = 0
        pred_topic, req_topic = topics.predictions, topics.label_requests
        pred_parts = await outbox.partitions_of(pred_topic)
        req_parts = await outbox.partitions_of(req_topic)
        keys = [d.sample.id.encode() for d in decisions]
        pred_index = partitions_for(keys, len(pred_parts)).tolist() if keys else []
        same_parts = pred_parts == req_parts
        strategy = engine.strategy.name
        for d, key, index in zip(decisions, keys, pred_index, strict=True):
            partition = pred_parts[index]
            await outbox.add(
                pred_topic,
                key,
                prediction_message(
                    d.sample.id, d.prediction, d.proba, d.uncertainty, d.model_version, d.queried, d.ts
                ),
                partition=partition,
            )
            if d.queried:
                requests += 1
                await outbox.add(
                    req_topic,
                    key,
                    label_request_message(
                        d.sample, d.prediction, d.proba, d.utility, strategy, d.model_version, d.ts
                    ),
                    partition=partition if same_parts else None,
                )
        # windowed selection: requests for samples of this or earlier batches, decided when a window filled
        # (their predictions went out with their own batch)
        for d in engine.take_requests():
            requests += 1
            await outbox.add(
                req_topic,
                d.sample.id.encode(),
                label_request_message(
                    d.sample, d.prediction, d.proba, d.utility, strategy, d.model_version, d.ts
                ),
            )
        t4 = time.perf_counter()
        acks = await outbox.ship()
        self._in_flight.append((acks, firsts, offsets))
        t5 = time.perf_counter()
        for tp, offset in offsets.items():
            self.positions.setdefault(tp.topic, {})[tp.partition] = offset

        metrics.samples.inc(len(samples))
        # (with the samples: a batch polled again counts once)
        metrics.decision_seconds.inc(engine.decision_seconds - decided_before)
        metrics.predictions.inc(len(decisions))
        metrics.label_requests.inc(requests)
        metrics.batch_size.observe(n_records)
        stage = metrics.processing.labels
        stage("decode").observe(t1 - t0)
        stage("learn").observe(t2 - t1)
        stage("score").observe(t3 - t2)
        stage("decide").observe(t4 - t3)
        stage("produce").observe(t5 - t4)
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

    async def start_over(self) -> None:
        """Forget every position and read every assigned partition from its beginning."""
        self.positions.clear()
        self.committed.clear()
        assigned = list(self._consumer.assignment())
        if assigned:
            await self._consumer.seek_to_beginning(*assigned)

    async def _restart_truncated(self) -> None:
        """A partition whose end is now before where we are was deleted and created again (a broker that
        lost its data): read it from its beginning, as Kafka's offset-out-of-range reset would."""
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            position = self.positions.get(tp.topic, {}).get(tp.partition)
            if highwater is not None and position is not None and position > highwater:
                log.warning(
                    "%s ends at %d, before %d where we were: reading it from its beginning",
                    tp,
                    highwater,
                    position,
                )
                self.positions[tp.topic][tp.partition] = 0
                await self._consumer.seek_to_beginning(tp)

    async def _update_lag(self) -> None:
        # from the high watermark of the last fetch and what the engine has taken in: no broker round trip
        # (consumer.position() can wait for the broker indefinitely during an outage)
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            position = self.positions.get(tp.topic, {}).get(tp.partition)
            if highwater is None:
                continue
            if position is None:
                position = highwater if highwater == 0 else None
            if position is not None:
                self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))
