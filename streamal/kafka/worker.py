"""The poll loop: fetch a batch, decode, let the engine decide, produce; commit once acknowledged.

Offsets are committed only after everything a batch caused (predictions, label requests, dead letters) is
acknowledged by the broker, so a crash repeats work but never skips it (at least once). Delivery is
pipelined: the loop goes on with the next batch while earlier ones wait for their acknowledgements (at
most ``max_in_flight`` batches), and commits are coalesced, in order, in the background. A batch whose
output cannot be delivered is not committed: the consumer seeks back to it and processes it again.

A fetched batch is processed in a fixed order, whatever order the consumer returns its partitions in (a random
one): by topic and partition, each partition in offset order. The labels of a fetch are learned in that order,
then its samples scored in that order, so a run can be replayed exactly (``streamal.offline``).

What a batch is counted for (samples, predictions, label requests, dead letters) and how far its input
partitions have been taken in (:attr:`Worker.positions`, what a checkpoint records) both move when its
output is acknowledged, so a batch processed again counts once and a checkpoint never records a position
past output that was not delivered.

Nothing one message does stops the loop: a message the model fails on goes to the dead-letter topic
(``model_error``), and so does a sample whose prediction or label request would be over the size limit
(``too_large``); a label request that does not go out is withdrawn, so that it does not wait for a label.
An error the cluster would repeat at every retry (a record over a topic's size limit, no permission to
write a topic) stops it with :class:`DeliveryRefusedError` instead of a retry for ever. An error reading
the input is no delivery failure: it is counted, and the next poll waits for the retry backoff, while the
batches in flight settle as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CommitFailedError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from streamal.engine import Decision, Engine
from streamal.errors import DecodeError, StreamalError
from streamal.kafka.outbox import Headers, Outbox
from streamal.kafka.partitioner import partitions_for
from streamal.messages import (
    MAX_MESSAGE_BYTES,
    RECORD_OVERHEAD,
    Label,
    Sample,
    decode_label,
    decode_label_request,
    decode_sample,
    encode_outputs,
    fits,
    label_request_message,
)
from streamal.metrics import Metrics

log = logging.getLogger(__name__)

_MAX_DETAIL = 1000

#: what a dead letter keeps of an original value that is too large to pass on whole
DEAD_LETTER_PREFIX_BYTES = 65_536

#: produce errors the cluster gives again at every retry: they stop the service (DeliveryRefusedError).
#: ``KafkaError.retriable`` cannot tell: a timed-out delivery, which a retry cures, is not "retriable" either.
_REFUSED_FOR_GOOD = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    InvalidTopicError,
)

#: at most one traceback of a model error per this many seconds (each error is logged, and counted)
_TRACEBACK_EVERY = 60.0


class DeliveryRefusedError(StreamalError):
    """The Kafka cluster refuses the service's output in a way a retry cannot change: a record batch over a
    topic's ``max.message.bytes``, or no permission to write a topic. Retrying would process the same batch
    again for ever (publishing its other outputs again each time), so the service stops. Fix the topic's
    configuration or the ACLs the message names and start it again: it resumes from its committed offsets."""


def _refusal(exc: KafkaError) -> DeliveryRefusedError:
    """The error that stops the service when the cluster refuses its output for good (a delivery's error,
    not a read's: those are retried, as before)."""
    where = "; ".join(getattr(exc, "__notes__", ())) or "delivering the output"
    return DeliveryRefusedError(
        f"the Kafka cluster refuses the service's output for good ({exc!r}, {where}): stopping rather than "
        "processing the same batch again for ever; check the topic's max.message.bytes and the service's "
        "permission to write it, then start again"
    )


def _record_size(key: bytes | None, value: bytes, headers: Headers = ()) -> int:
    """What a record takes in a record batch of its own, at most (see ``RECORD_OVERHEAD``)."""
    return (
        RECORD_OVERHEAD
        + len(key or b"")
        + len(value)
        + sum(len(name.encode()) + len(data) for name, data in headers)
    )


def _read_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class _Tally:
    """What one batch is counted for, once its output is acknowledged."""

    samples: int = 0
    predictions: int = 0
    requests: int = 0
    decision_seconds: float = 0.0
    dead_letters: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A batch produced but not yet acknowledged."""

    acks: asyncio.Future[Any]
    #: the first offset of each input partition of the batch
    firsts: dict[TopicPartition, int]
    #: the next offset of each
    ends: dict[TopicPartition, int]
    tally: _Tally


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
        commit_timeout_seconds: float = 10.0,
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
        #: batches produced but not yet acknowledged, oldest first
        self._in_flight: deque[_InFlight] = deque()
        self._to_commit: dict[TopicPartition, int] = {}
        self._commit_task: asyncio.Task[bool] | None = None
        self._commit_timeout = commit_timeout_seconds
        #: no commit is started before this (monotonic): a failed one is retried after the retry backoff
        self._commit_after = 0.0
        self._failing = False
        self._model_traceback_at = -_TRACEBACK_EVERY
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
        #: topic -> partition -> next offset, of everything the engine has taken in whose output the broker
        #: acknowledged (what a checkpoint holds: a restart from it skips nothing)
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

    @property
    def failing(self) -> bool:
        """The last delivery or commit failed or timed out, and none has succeeded since: the cluster is
        probably away, and waiting for it to take what is outstanding would be waiting in vain."""
        return self._failing

    @property
    def unsettled(self) -> bool:
        """Some output is not yet acknowledged, or some offsets not yet committed."""
        return bool(self._in_flight or self._to_commit or self._commit_task is not None)

    async def run(self, stopping: asyncio.Event) -> None:
        """Loop until ``stopping`` is set; what is in flight is then delivered and committed.

        Raises :class:`DeliveryRefusedError` when the cluster refuses the output for good; what is in flight
        then is given up (:meth:`_abandon`).
        """
        try:
            await self._loop(stopping)
        except BaseException:
            self._abandon()
            raise
        if not await self.drain(self._drain_seconds):
            self.clean_stop = False
            log.warning(
                "stopping with output not acknowledged or offsets not committed within %g s: that input "
                "will be processed again after a restart",
                self._drain_seconds,
            )

    def _abandon(self) -> None:
        """The loop ends with an exception (a refusal for good): nothing in flight will be committed. Cancel
        the acknowledgements still awaited and read the outcome of every one, or asyncio logs each failed
        one as "exception was never retrieved" when it is collected (the refusal of one batch is usually
        that of the batches behind it too)."""
        for batch in self._in_flight:
            batch.acks.cancel()
            batch.acks.add_done_callback(_read_outcome)
        self._in_flight.clear()
        self._outbox.discard()
        if self._commit_task is not None:
            self._commit_task.add_done_callback(_read_outcome)

    async def _loop(self, stopping: asyncio.Event) -> None:
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
                    batch = await self._poll(stopping)
                    if batch:
                        try:
                            await self._handle(batch)
                        except KafkaError as exc:
                            # its output was not all handed to the producer: read it again after the recovery
                            self._rewind(batch)
                            if isinstance(exc, _REFUSED_FOR_GOOD):
                                raise _refusal(exc) from exc
                            raise
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
                try:
                    await self._on_batch()
                except KafkaError as exc:
                    await self._recover(exc)

    async def _poll(self, stopping: asyncio.Event) -> dict[TopicPartition, list[ConsumerRecord]]:
        """The next batch of records, or none after an error reading them (a topic the service may not read,
        a fetch that failed). A read error is no delivery failure: it is counted (``consume``) and logged,
        the batches in flight are left to settle as usual, and the next poll waits for the retry backoff
        (or a stop)."""
        try:
            batch: dict[TopicPartition, list[ConsumerRecord]] = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
            )
        except KafkaError as exc:
            self._metrics.errors.labels("consume").inc()
            log.warning("reading the input failed, reading again in %g s: %r", self._backoff, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backoff):
                    await stopping.wait()
            return {}
        return batch

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

    async def drain(self, seconds: float | None = None) -> bool:
        """Wait until every batch handled so far is acknowledged and its offsets committed, for at most
        ``seconds``; returns whether they are.

        A failed delivery stays where it is, at the head of the batches in flight, and the loop processes it
        again at its next turn (:meth:`_recover`), as any other; a timeout counts as a failure (see
        :attr:`failing`). It may run in another task than the loop's (a rebalance listener), so it changes
        nothing the loop may be in the middle of. Cancelling it (``asyncio.wait_for``) is safe.
        """
        try:
            async with asyncio.timeout(seconds):
                await self._settle(wait=True, everything=True)
                while self._commit_task is not None or self._to_commit:
                    if self._commit_task is None:
                        self._start_commit()
                    if not await self._commit_finished():
                        return False
                return True
        except TimeoutError:
            self._failing = True
            return False
        except (KafkaError, DeliveryRefusedError) as exc:  # the loop meets it again at its next turn
            log.debug("output not delivered: %r", exc)
            return False

    async def _settle(self, wait: bool, everything: bool = False) -> None:
        """Take acknowledged batches off the in-flight queue, in order: count them, move the positions past
        them, and start a commit of their offsets.

        ``wait``: wait up to a second for the oldest batch; ``everything``: wait for all of them.
        """
        while self._in_flight:
            batch = self._in_flight[0]
            acks = batch.acks
            if not acks.done():
                if everything:
                    await asyncio.wait([acks])
                elif wait:
                    await asyncio.wait([acks], timeout=1.0)
                    wait = False
                if not self._in_flight or self._in_flight[0] is not batch:
                    continue  # settled meanwhile by a drain in another task (a rebalance listener)
                if not acks.done():
                    break
            if acks.cancelled():  # the producer gave the batch up (e.g. while the broker was away)
                raise KafkaError("the delivery of a batch was cancelled")
            try:
                acks.result()  # raises if the delivery failed
            except _REFUSED_FOR_GOOD as exc:  # (the batch stays at the head: a drain's caller sees it again)
                raise _refusal(exc) from exc
            self._in_flight.popleft()
            self._to_commit.update(batch.ends)
            for tp, offset in batch.ends.items():
                self.positions.setdefault(tp.topic, {})[tp.partition] = offset
            self._count(batch.tally)
        if self._commit_task is not None and self._commit_task.done():
            await self._commit_finished()
        if self._to_commit and self._commit_task is None and time.monotonic() >= self._commit_after:
            self._start_commit()

    def _count(self, tally: _Tally) -> None:
        metrics = self._metrics
        metrics.samples.inc(tally.samples)
        # with the samples: the per-decision overhead is the ratio of the two
        metrics.decision_seconds.inc(tally.decision_seconds)
        metrics.predictions.inc(tally.predictions)
        metrics.label_requests.inc(tally.requests)
        for reason, n in tally.dead_letters.items():
            metrics.dead_letters.labels(reason).inc(n)

    def _start_commit(self) -> None:
        offsets, self._to_commit = self._to_commit, {}
        self._commit_task = asyncio.create_task(self._commit(offsets))

    async def _commit_finished(self) -> bool:
        """Wait for the commit under way (never cancelling it) and return whether it succeeded."""
        task = self._commit_task
        assert task is not None
        await asyncio.wait([task])
        if self._commit_task is task:  # not already followed by another (started by another task)
            self._commit_task = None
        return task.result()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> bool:
        t0 = time.perf_counter()
        try:
            # bounded: aiokafka waits for a group coordinator for as long as the cluster is away
            await asyncio.wait_for(self._consumer.commit(offsets), self._commit_timeout)
        except CommitFailedError as exc:
            # the group rebalanced under us: the new owner processes these records again (at least once)
            self._metrics.errors.labels("commit").inc()
            log.warning("commit failed after a rebalance: %r", exc)
            return False
        except (KafkaError, TimeoutError) as exc:
            self._metrics.errors.labels("commit").inc()
            self._failing = True
            self._commit_after = time.monotonic() + self._backoff
            assigned = self._consumer.assignment()
            for tp, offset in offsets.items():
                if tp in assigned:  # unless a newer offset of the partition is waiting already
                    self._to_commit.setdefault(tp, offset)
            log.warning("commit failed, the next one will carry its offsets: %r", exc)
            return False
        self._failing = False
        self._metrics.processing.labels("commit").observe(time.perf_counter() - t0)
        for tp, offset in offsets.items():
            self.committed.setdefault(tp.topic, {})[tp.partition] = offset
        return True

    async def _recover(self, exc: KafkaError) -> None:
        """Delivery failed: seek back to the oldest batch not acknowledged and process it all again.

        The positions stay where the acknowledged batches end (where the consumer is sent back to), and
        nothing of the failed batches is counted. (An error of the output that a retry cannot cure never
        comes here: it is raised as :class:`DeliveryRefusedError` where the acknowledgements are read.)
        """
        self._metrics.errors.labels("produce").inc()
        self._failing = True
        log.warning("delivery failed, the batches in flight will be processed again: %r", exc)
        starts: dict[TopicPartition, int] = {}
        for batch in self._in_flight:
            batch.acks.cancel()
            # a cancelled gather still ends with an exception (CancelledError): read it, or asyncio logs it
            batch.acks.add_done_callback(_read_outcome)
            for tp, offset in batch.firsts.items():
                starts[tp] = min(offset, starts.get(tp, offset))
        self._in_flight.clear()
        self._outbox.discard()
        for tp, offset in starts.items():
            self._consumer.seek(tp, offset)
            taken = self.positions.setdefault(tp.topic, {})
            taken[tp.partition] = min(offset, taken.get(tp.partition, offset))
        await asyncio.sleep(self._backoff)

    async def _handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        t0 = time.perf_counter()
        topics, engine, metrics, outbox = self._topics, self.engine, self._metrics, self._outbox
        tally = _Tally()
        samples: list[Sample] = []
        sources: list[ConsumerRecord] = []  # the record of each sample
        labels: list[tuple[Label, ConsumerRecord]] = []
        offsets: dict[TopicPartition, int] = {}
        firsts: dict[TopicPartition, int] = {}
        n_records = 0
        # in a fixed order: the consumer returns a fetch's partitions in a random one (aiokafka shuffles
        # them), and the order in which the samples are scored and the labels learned is the engine's
        # state; sorted by topic and partition (each in offset order), a run can be replayed exactly
        for tp in sorted(batch):
            records = batch[tp]
            offsets[tp] = records[-1].offset + 1
            firsts[tp] = records[0].offset
            n_records += len(records)
            metrics.consumed.labels(tp.topic).inc(len(records))
            if tp.topic == topics.samples:
                for record in records:
                    try:
                        samples.append(decode_sample(record.value))
                    except DecodeError as exc:
                        await self._dead_letter(record, exc.reason, str(exc), tally)
                    else:
                        sources.append(record)
            elif tp.topic == topics.labels:
                for record in records:
                    try:
                        labels.append((decode_label(record.value), record))
                    except DecodeError as exc:
                        await self._dead_letter(record, exc.reason, str(exc), tally)
            elif tp.topic == topics.label_requests:
                for record in records:
                    try:
                        req = decode_label_request(record.value)
                    except DecodeError as exc:
                        await self._dead_letter(record, exc.reason, str(exc), tally)
                        continue
                    engine.register_request(
                        req.id, req.features, req.prediction, req.model_version, req.requested_at
                    )
        t1 = time.perf_counter()
        version_before = engine.model_version
        for label, record in labels:
            try:
                outcome = engine.learn(label)
            except Exception as exc:  # the model's own failure: this label is set aside, the loop goes on
                self._model_failed(exc, f"learning the label of {label.id!r}")
                await self._dead_letter(record, "model_error", f"learning it: {exc!r}", tally)
                continue
            metrics.labels.labels(outcome.value).inc()
        t2 = time.perf_counter()
        decided_before = engine.decision_seconds
        invalid_before = engine.invalid_probas
        try:
            decisions = engine.score(samples)
        except Exception as exc:  # the model's own failure: the samples it fails on are set aside
            decisions, sources = await self._score_one_by_one(samples, sources, exc, tally)
        if engine.invalid_probas > invalid_before:  # scored as uniform (Engine.score): still a model error
            invalid = engine.invalid_probas - invalid_before
            metrics.errors.labels("model").inc(invalid)
            log.warning("the model gave %d distributions with NaN or infinity: scored as uniform", invalid)
        t3 = time.perf_counter()
        tally.decision_seconds = engine.decision_seconds - decided_before
        await self._send_decisions(decisions, sources, tally)
        t4 = time.perf_counter()
        acks = await outbox.ship()
        self._in_flight.append(_InFlight(acks, firsts, offsets, tally))
        t5 = time.perf_counter()

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

    async def _send_decisions(
        self, decisions: Sequence[Decision], sources: Sequence[ConsumerRecord], tally: _Tally
    ) -> None:
        """Queue each sample's prediction, and its label request if it was asked for; a sample whose
        prediction or label request would be over the size limit goes to the dead-letter topic instead."""
        engine, outbox, topics = self.engine, self._outbox, self._topics
        pred_topic, req_topic = topics.predictions, topics.label_requests
        pred_parts = await outbox.partitions_of(pred_topic)
        req_parts = await outbox.partitions_of(req_topic)
        keys = [d.sample.id.encode() for d in decisions]
        pred_index = partitions_for(keys, len(pred_parts)).tolist() if keys else []
        same_parts = pred_parts == req_parts
        strategy = engine.strategy.name
        windowed = engine.selector is not None
        for d, record, key, index in zip(decisions, sources, keys, pred_index, strict=True):
            try:
                prediction, request = encode_outputs(d, len(record.value or b""), strategy, windowed)
            except DecodeError as exc:  # it cannot be encoded, or a record would be over the size limit
                await self._dead_letter(record, exc.reason, exc.detail, tally)
                if d.queried or windowed:
                    engine.withdraw(d.sample.id)  # no request goes out: none may wait for its label
                continue
            partition = pred_parts[index]
            await outbox.add(pred_topic, key, prediction, partition=partition)
            tally.samples += 1
            tally.predictions += 1
            if d.queried and request is not None:
                tally.requests += 1
                await outbox.add(req_topic, key, request, partition=partition if same_parts else None)
        # windowed selection: requests for samples of this or earlier batches, decided when a window filled
        # (their predictions went out with their own batch)
        for d in engine.take_requests():
            key = d.sample.id.encode()
            request = label_request_message(
                d.sample, d.prediction, d.proba, d.utility, strategy, d.model_version, d.ts
            )
            if not fits(key, request):
                # checked with room to spare when it was scored, and dead-lettered (and withdrawn) then
                log.warning(
                    "label request for %r not sent: %d bytes, over the limit", d.sample.id, len(request)
                )
                engine.withdraw(d.sample.id)
                continue
            tally.requests += 1
            await outbox.add(req_topic, key, request)

    async def _score_one_by_one(
        self, samples: list[Sample], sources: list[ConsumerRecord], exc: Exception, tally: _Tally
    ) -> tuple[list[Decision], list[ConsumerRecord]]:
        """After scoring a batch raised: score its samples one at a time (a model that raises does so before
        anything changes), dead-letter those that raise (``model_error``) and go on with the others."""
        log.warning("scoring a batch of %d samples raised %r: scoring them one by one", len(samples), exc)
        decisions: list[Decision] = []
        kept: list[ConsumerRecord] = []
        for sample, record in zip(samples, sources, strict=True):
            try:
                decisions += self.engine.score([sample])
            except Exception as one:
                self._model_failed(one, f"scoring {sample.id!r}")
                await self._dead_letter(record, "model_error", f"scoring it: {one!r}", tally)
            else:
                kept.append(record)
        return decisions, kept

    def _model_failed(self, exc: Exception, doing: str) -> None:
        """Count and log an exception of the model (or the strategy, the policy); a traceback at most once a
        minute."""
        self._metrics.errors.labels("model").inc()
        now = time.monotonic()
        traceback = now - self._model_traceback_at >= _TRACEBACK_EVERY
        if traceback:
            self._model_traceback_at = now
        log.error(
            "the model failed %s: %r; dead-lettered as model_error",
            doing,
            exc,
            exc_info=exc if traceback else None,
        )

    async def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str, tally: _Tally) -> None:
        """Send ``record`` to the dead-letter topic with why and where it came from. A value that would not
        fit (always so for ``too_large``) is cut to its first ``DEAD_LETTER_PREFIX_BYTES`` bytes, and the
        header ``error.original_size`` says how long it was."""
        value: bytes = record.value or b""
        key: bytes | None = record.key
        headers = [
            ("error", f"{reason}: {detail}"[:_MAX_DETAIL].encode()),
            ("error.reason", reason.encode()),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        if reason == "too_large" or _record_size(key, value, headers) > MAX_MESSAGE_BYTES:
            headers.append(("error.original_size", str(len(value)).encode()))
            value = value[:DEAD_LETTER_PREFIX_BYTES]
            if _record_size(key, value, headers) > MAX_MESSAGE_BYTES:  # a key of nearly a megabyte
                key = (key or b"")[:DEAD_LETTER_PREFIX_BYTES]
        await self._outbox.add(self._topics.dead_letters, key, value, headers)
        tally.dead_letters[reason] += 1
        log.debug(
            "dead letter %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, reason, detail
        )

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
