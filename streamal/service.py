"""Wiring: settings → objects, once; then the lifecycle of the service (start, run, stop on a signal).

The service owns no logic of its own: the engine decides, the worker moves records, the HTTP app shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from streamal import checkpoint
from streamal.config import Settings
from streamal.engine import Engine
from streamal.errors import BrokerUnavailableError
from streamal.http import build_app, serve
from streamal.kafka.client import connection_options, ensure_topics
from streamal.kafka.outbox import Outbox
from streamal.kafka.worker import Topics, Worker
from streamal.metrics import Metrics
from streamal.models import build_model
from streamal.pending import PendingRequests
from streamal.policies import build_policy
from streamal.strategies import build_strategy

log = logging.getLogger(__name__)

#: /healthz fails when the loop has not turned for this long
STALL_SECONDS = 30.0


def build_engine(settings: Settings, clock: Callable[[], float] = time.time) -> Engine:
    """The engine the settings describe (every name and parameter is checked here, at start)."""
    return Engine(
        build_model(settings.model.name, settings.model.params),
        build_strategy(settings.strategy.name, seed=settings.strategy.seed),
        build_policy(
            settings.policy.name, settings.policy.budget, settings.policy.seed, settings.policy.params
        ),
        PendingRequests(
            max_size=settings.pending.max_size, ttl_seconds=settings.pending.ttl_seconds, clock=clock
        ),
        clock=clock,
    )


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: Service) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._service.assigned -= set(revoked)
        for tp in revoked:
            with contextlib.suppress(KeyError):
                self._service.metrics.lag.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._service.assigned |= set(assigned)
        self._service.resume_where_the_engine_is(assigned)
        if self._service._worker is not None:
            self._service._worker.on_assigned()


class Service:
    """``await Service(settings).run()`` runs until SIGTERM/SIGINT (or :meth:`stop`) and returns 0."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.engine = build_engine(settings)
        self.topics = Topics(
            samples=settings.topics.samples,
            labels=settings.topics.labels,
            predictions=settings.topics.predictions,
            label_requests=settings.topics.label_requests,
            dead_letters=settings.topics.dead_letters,
        )
        self.assigned: set[TopicPartition] = set()
        self.http_port: int | None = None
        self._stopping = asyncio.Event()
        self._worker: Worker | None = None
        self._consumer: AIOKafkaConsumer | None = None
        ckpt = settings.checkpoint
        self._ckpt_dir: Path | None = ckpt.dir
        self._ckpt_key = (
            checkpoint.key_for(ckpt.dir, ckpt.key.get_secret_value() if ckpt.key else None)
            if ckpt.dir
            else b""
        )
        self._last_checkpoint = time.monotonic()
        self._labels_at_checkpoint = 0
        self._restored = False
        self._saved_offsets: dict[str, dict[int, int]] = {}
        self.broker_up = True
        self.exit_code = 0
        self.metrics.budget.set(settings.policy.budget)

    # -- what HTTP shows --------------------------------------------------------------------------
    def alive(self) -> bool:
        worker = self._worker
        return worker is None or time.monotonic() - worker.last_turn < STALL_SECONDS

    def ready(self) -> bool:
        return (
            self._worker is not None
            and bool(self.assigned)
            and self.broker_up
            and not self._stopping.is_set()
        )

    def model_info(self) -> dict[str, Any]:
        info = dict(self._worker.status if self._worker else self.engine.describe())
        info["budget"] = self.settings.policy.budget
        return info

    # -- checkpoints ------------------------------------------------------------------------------
    def _restore(self) -> None:
        if self._ckpt_dir is None:
            return
        saved = checkpoint.load(self._ckpt_dir, self._ckpt_key)
        if saved is None:
            return
        self.engine = saved.engine
        self.metrics.model_version.set(self.engine.model_version)
        self._saved_offsets = saved.offsets
        self._restored = True
        log.info(
            "restored checkpoint: model version %d, %d labels learned, %d requests pending",
            self.engine.model_version,
            self.engine.labels_learned,
            len(self.engine.pending),
        )

    def resume_where_the_engine_is(self, assigned: list[TopicPartition]) -> None:
        """After an assignment, read each partition from where the engine's state ends.

        The committed offsets may be ahead of it (a crash after the last checkpoint): starting there would
        skip labels and the label requests they answer. They may also be behind it (commits are
        coalesced): starting there would only repeat work. So the engine's own positions win: those of
        the restored checkpoint at first, then those of what it has taken in since.
        """
        if self._consumer is None:
            return
        known = self._worker.positions if self._worker is not None else self._saved_offsets
        for tp in assigned:
            offset = known.get(tp.topic, {}).get(tp.partition)
            if offset is not None:
                self._consumer.seek(tp, offset)

    async def _checkpoint(self) -> None:
        """Snapshot the engine with the offsets it reflects, once everything it caused is delivered.

        It runs inside the worker's loop (between batches), so the engine does not change meanwhile; the
        file is written in a thread.
        """
        if self._ckpt_dir is None or self._worker is None:
            return
        await self._worker.drain()
        positions = {t: dict(p) for t, p in self._worker.positions.items()}
        if self._consumer is not None:
            # an assigned partition the engine has not read from yet: where it would start reading
            for tp in self._consumer.assignment():
                if tp.partition not in positions.get(tp.topic, {}):
                    try:
                        start = await asyncio.wait_for(self._consumer.position(tp), 5)
                    except (KafkaError, TimeoutError) as exc:
                        log.warning("checkpoint postponed: no position for %s: %r", tp, exc)
                        return
                    positions.setdefault(tp.topic, {})[tp.partition] = start
        created = time.time()
        payload = checkpoint.dumps(checkpoint.Checkpoint(self.engine, positions, created))
        self._last_checkpoint = time.monotonic()
        self._labels_at_checkpoint = self.engine.labels_learned
        await asyncio.to_thread(checkpoint.write, self._ckpt_dir, payload, created, self._ckpt_key)

    async def _after_batch(self) -> None:
        ckpt = self.settings.checkpoint
        due = (
            time.monotonic() - self._last_checkpoint >= ckpt.interval_seconds
            or self.engine.labels_learned - self._labels_at_checkpoint >= ckpt.every_labels
        )
        if self._ckpt_dir is not None and due:
            try:
                await self._checkpoint()
            except (OSError, checkpoint.CheckpointError) as exc:
                self.metrics.errors.labels("checkpoint").inc()
                log.error("checkpoint failed: %r", exc)

    def _topic_names(self) -> list[str]:
        t = self.topics
        return [t.samples, t.labels, t.predictions, t.label_requests, t.dead_letters]

    # -- lifecycle --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        s = self.settings
        self._restore()
        app = build_app(self.registry, self.model_info, self.alive, self.ready)
        runner, self.http_port = await serve(app, s.http.host, s.http.port)
        log.info("HTTP on http://%s:%d (/metrics /healthz /readyz /v1/model)", s.http.host, self.http_port)
        producer: AIOKafkaProducer | None = None
        consumer: AIOKafkaConsumer | None = None
        try:
            if s.topics.create_missing:
                await ensure_topics(s.kafka, self._topic_names())
            options = connection_options(s.kafka)
            producer = AIOKafkaProducer(
                **options, acks="all", linger_ms=s.kafka.linger_ms, enable_idempotence=False
            )
            await producer.start()
            consumer = AIOKafkaConsumer(
                **options,
                group_id=s.kafka.group_id,
                enable_auto_commit=False,
                auto_offset_reset=s.kafka.auto_offset_reset,
                session_timeout_ms=s.kafka.session_timeout_ms,
                heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            self._consumer = consumer
            # the service reads its own label requests back: after a restore, the requests made since the
            # checkpoint are known again before any label for them is learned
            consumer.subscribe(
                [self.topics.samples, self.topics.labels, self.topics.label_requests],
                listener=_Assignment(self),
            )
            await consumer.start()
            self._worker = Worker(
                self.engine,
                consumer,
                Outbox(producer),
                self.topics,
                self.metrics,
                max_batch_size=s.kafka.max_batch_size,
                on_batch=self._after_batch,
            )
            if self._restored:
                self._worker.positions = {t: dict(p) for t, p in self._saved_offsets.items()}
                self._worker.hold_labels()
            admin = AIOKafkaAdminClient(**options, request_timeout_ms=5000)
            await admin.start()
            watchdog = asyncio.create_task(self._watch_broker(admin))
            log.info(
                "scoring %s with %s / %s / %s at budget %s",
                self.topics.samples,
                s.model.name,
                s.strategy.name,
                s.policy.name,
                s.policy.budget,
            )
            await self._worker.run(self._stopping)
            watchdog.cancel()
            await admin.close()
            if self._worker.clean_stop and self.exit_code == 0:
                await self._checkpoint()
        finally:
            self._stopping.set()
            self.metrics.ready.set(0)
            for client in (consumer, producer):
                if client is not None:
                    await _close(client)
            await runner.cleanup()
        if self.exit_code == 0:
            log.info("stopped cleanly")
        return self.exit_code

    async def _watch_broker(self, admin: AIOKafkaAdminClient, every: float = 2.0) -> None:
        """Ask the cluster for its metadata every ``every`` seconds: readiness follows the answer, and after
        ``kafka.max_outage_seconds`` without one the service exits non-zero so an orchestrator restarts it."""
        limit = self.settings.kafka.max_outage_seconds
        down_since: float | None = None
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(admin.describe_cluster(), timeout=5)
                up = True
            except (KafkaError, TimeoutError, OSError):
                up = False
            now = time.monotonic()
            if up and down_since is not None:
                log.warning("the Kafka cluster is back after %.0f s", now - down_since)
                down_since = None
                if self.settings.topics.create_missing:
                    # a cluster that lost its state (a wiped development broker) gets its topics back
                    try:
                        await ensure_topics(self.settings.kafka, self._topic_names(), timeout_seconds=10)
                    except (BrokerUnavailableError, KafkaError) as exc:
                        log.warning("could not check the topics: %r", exc)
                        up, down_since = False, now
            elif not up:
                if down_since is None:
                    down_since = now
                    log.warning(
                        "the Kafka cluster at %s does not answer", self.settings.kafka.bootstrap_servers
                    )
                if limit and now - down_since >= limit:
                    log.error("no Kafka cluster for %.0f s: exiting so that the service is restarted", limit)
                    self.exit_code = 3
                    self.stop()
            self.broker_up = up
            self.metrics.broker_up.set(1 if up else 0)
            self.metrics.ready.set(1 if self.ready() else 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), every)


async def _close(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Stop an aiokafka client within 3 s, whatever state the broker is in."""
    try:
        await asyncio.wait_for(client.stop(), 3)
    except (KafkaError, TimeoutError) as exc:
        log.warning("could not close a Kafka client cleanly: %r", exc)
    except asyncio.CancelledError:
        # aiokafka's consumer re-raises the cancellation of its own fetch tasks from stop() while the broker
        # is away; only a cancellation of this task itself is passed on
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("a Kafka client was stopped while the broker was away")
