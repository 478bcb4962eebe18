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
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from streamal import checkpoint
from streamal.checkpointing import Checkpoints
from streamal.config import Settings
from streamal.engine import Engine
from streamal.errors import BrokerUnavailableError, ConfigError
from streamal.http import build_app, serve
from streamal.kafka.assignor import SingleActiveAssignor
from streamal.kafka.client import connection_options, ensure_topics
from streamal.kafka.models import ModelFollower, publish
from streamal.kafka.outbox import Outbox
from streamal.kafka.worker import DeliveryRefusedError, Topics, Worker
from streamal.metrics import Metrics
from streamal.models import Model, build_model
from streamal.pending import PendingRequests
from streamal.policies import Policy, build_policy
from streamal.selection import build_selector
from streamal.strategies import build_strategy

log = logging.getLogger(__name__)

#: the model topic keeps only the newest snapshot (on a broker that compacts), and takes large ones
#: the largest model snapshot the learner publishes (a committee of kNNs over 64 features pickles to 2.6 MB)
MODEL_SNAPSHOT_MAX_BYTES = 64 * 1024 * 1024
#: exit codes of ``streamal run`` besides 0, 1 (no cluster at start) and 2 (a wrong setting): no cluster for
#: ``kafka.max_outage_seconds`` while running; the cluster refuses the output for good (a topic's size limit,
#: a missing permission: see :class:`~streamal.kafka.worker.DeliveryRefusedError`)
EXIT_NO_CLUSTER = 3
EXIT_OUTPUT_REFUSED = 4
MODEL_TOPIC_CONFIG = {"cleanup.policy": "compact", "max.message.bytes": str(MODEL_SNAPSHOT_MAX_BYTES)}
#: a scorer's consumer of the model topic: no group (every scorer reads every snapshot), fetches as large
#: as a snapshot may be
FOLLOWER_OPTIONS: dict[str, Any] = {
    "group_id": None,
    "enable_auto_commit": False,
    "fetch_max_bytes": MODEL_SNAPSHOT_MAX_BYTES,
    "max_partition_fetch_bytes": MODEL_SNAPSHOT_MAX_BYTES,
}

#: /healthz fails when the loop has not turned for this long
STALL_SECONDS = 30.0


ROLES = ("all", "scorer", "learner")


def build_engine(settings: Settings, clock: Callable[[], float] = time.time, role: str = "all") -> Engine:
    """The engine the settings describe (every name and parameter is checked here, at start).

    A scorer learns nothing, so it keeps no pending requests (nor reports any, pending or dropped): the
    learner reads them from the topic.
    """
    max_pending = 0 if role == "scorer" else settings.pending.max_size
    return Engine(
        build_model(settings.model.name, settings.model.params),
        build_strategy(settings.strategy.name, seed=settings.strategy.seed),
        build_policy(
            settings.policy.name, settings.policy.budget, settings.policy.seed, settings.policy.params
        ),
        PendingRequests(
            max_size=max_pending,
            ttl_seconds=settings.pending.ttl_seconds,
            memory=0 if role == "scorer" else 100_000,
            clock=clock,
        ),
        clock=clock,
        selector=(
            build_selector(settings.strategy.selector, settings.strategy.window, settings.strategy.seed)
            if settings.strategy.selector is not None
            else None
        ),
    )


def producer_options(settings: Settings, role: str) -> dict[str, Any]:
    """The producer's settings beyond the connection: every record acknowledged by all in-sync replicas,
    and, for the learner, requests as large as a model snapshot may be (the client's default of 1 MiB
    refused any snapshot past it: the scorers then kept an older model)."""
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": settings.kafka.linger_ms,
        "enable_idempotence": False,
    }
    if role == "learner":
        options["max_request_size"] = MODEL_SNAPSHOT_MAX_BYTES
    return options


def share_capacity(policy: Policy, owned: int, total: int) -> None:
    """Give a scorer's policy its share of a labels-per-hour capacity: the fraction of the samples
    partitions it owns (recomputed after every rebalance). Policies without such a limit are untouched.

    >>> class Limited:
    ...     labels_per_hour = 600.0
    >>> p = Limited()
    >>> share_capacity(p, owned=2, total=6); p.labels_per_hour
    200.0
    >>> share_capacity(p, owned=6, total=6); p.labels_per_hour
    600.0
    """
    base = getattr(policy, "_capacity_of_all", None)
    if base is None:
        base = getattr(policy, "labels_per_hour", None)
        if base is None:
            return
        policy._capacity_of_all = base  # type: ignore[attr-defined]
    policy.labels_per_hour = base * (owned / total if total else 1.0)  # type: ignore[attr-defined]


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: Service) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._service.revoked_at = time.monotonic()
        worker = self._service._worker
        # deliver and commit what was taken from these partitions before another member gets them
        if worker is not None and revoked and not await worker.drain(5.0):
            log.warning(
                "could not deliver and commit everything within 5 s before a rebalance: what was not "
                "committed will be processed again by the partitions' next owner"
            )
        self._service.assigned -= set(revoked)
        for tp in revoked:
            with contextlib.suppress(KeyError):
                self._service.metrics.lag.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        service = self._service
        service.metrics.rebalances.inc()
        if service.revoked_at is not None:
            service.metrics.rebalance_seconds.observe(time.monotonic() - service.revoked_at)
            service.revoked_at = None
        self._service.assigned |= set(assigned)
        self._service.resume_where_the_engine_is(assigned)
        if service.role == "scorer" and service._consumer is not None:
            samples = service.topics.samples
            total = len(service._consumer.partitions_for_topic(samples) or ())
            owned = sum(1 for tp in service.assigned if tp.topic == samples)
            share_capacity(service.engine.policy, owned, total)
        if self._service._worker is not None:
            self._service._worker.on_assigned()


class Service:
    """``await Service(settings).run()`` runs until SIGTERM/SIGINT (or :meth:`stop`) and returns 0."""

    def __init__(
        self, settings: Settings, registry: CollectorRegistry | None = None, role: str = "all"
    ) -> None:
        if role not in ROLES:
            raise ConfigError(f"--role {role!r}: choose one of {', '.join(ROLES)}")
        if role != "all" and settings.checkpoint.key is None:
            raise ConfigError(
                "STREAMAL_CHECKPOINT__KEY (checkpoint.key) is required with --role scorer or learner: it "
                "signs the model snapshots the learner publishes and the scorers load, so every process "
                "needs the same key"
            )
        self.role = role
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics.info.labels(role).set(1)
        self.engine = build_engine(settings, role=role)
        self.topics = Topics(
            samples=settings.topics.samples,
            labels=settings.topics.labels,
            predictions=settings.topics.predictions,
            label_requests=settings.topics.label_requests,
            dead_letters=settings.topics.dead_letters,
            models=settings.topics.models,
        )
        self.assigned: set[TopicPartition] = set()
        self.http_port: int | None = None
        self._stopping = asyncio.Event()
        self._worker: Worker | None = None
        self._consumer: AIOKafkaConsumer | None = None
        ckpt = settings.checkpoint
        if ckpt.key is not None:
            key = ckpt.key.get_secret_value().encode()
            if ckpt.dir and role != "scorer":
                checkpoint.prepare(ckpt.dir)
        else:
            key = checkpoint.key_for(ckpt.dir, None) if ckpt.dir else b""
        # a scorer keeps no state worth a checkpoint: it is at least once through its commits
        self.checkpoints = Checkpoints(
            ckpt.dir if role != "scorer" else None, key, ckpt.interval_seconds, ckpt.every_labels
        )
        self.revoked_at: float | None = None
        self._follower: ModelFollower | None = None
        self._published_version = -1
        self._last_publish = 0.0
        self.broker_up = True
        #: the worker is past its starting point (a standby learner never gets there)
        self._reading = False
        self.exit_code = 0
        self._producer: AIOKafkaProducer | None = None
        self._verify_cluster = False
        self.metrics.budget.set(settings.policy.budget)

    # -- what HTTP shows --------------------------------------------------------------------------
    def alive(self) -> bool:
        worker = self._worker
        return worker is None or time.monotonic() - worker.last_turn < STALL_SECONDS

    def ready(self) -> bool:
        model_loaded = self._follower is None or self._follower.ready.is_set()
        return (
            self._worker is not None
            and bool(self.assigned)
            and model_loaded
            and self.broker_up
            and not self._stopping.is_set()
        )

    def model_info(self) -> dict[str, Any]:
        info = self.engine.describe()  # the engine runs on this event loop: no batch is half done now
        info["budget"] = self.settings.policy.budget
        info["role"] = self.role
        return info

    # -- checkpoints ------------------------------------------------------------------------------
    def _restore(self) -> None:
        engine = self.checkpoints.restore()
        if engine is not None:
            self.engine = engine
            self.metrics.model_version.set(engine.model_version)

    def _restore_newer(self) -> None:
        """A standby learner takes over: continue from the checkpoint the learner it replaces wrote since this
        one started (the learners of a deployment share ``checkpoint.dir``), not from nothing."""
        engine = self.checkpoints.restore(only_newer=True)
        if engine is None or self._worker is None:
            return
        self.engine = engine
        self.metrics.model_version.set(engine.model_version)
        self._worker.replace_engine(engine, self.checkpoints.restored_offsets)
        if self._consumer is not None:
            self.resume_where_the_engine_is(list(self._consumer.assignment()))

    def resume_where_the_engine_is(self, assigned: list[TopicPartition]) -> None:
        """After an assignment, read each partition from where the engine's state ends.

        The committed offsets may be ahead of it (a crash after the last checkpoint): starting there would
        skip labels and the label requests they answer. They may also be behind it (commits are
        coalesced): starting there would only repeat work. So the engine's own positions win: those of
        the restored checkpoint at first, then those of what it has taken in since.
        """
        if self._consumer is None:
            return
        known = self._worker.positions if self._worker is not None else self.checkpoints.restored_offsets
        for tp in assigned:
            offset = known.get(tp.topic, {}).get(tp.partition)
            if offset is not None:
                self._consumer.seek(tp, offset)

    async def _checkpoint(self) -> bool:
        if self._worker is None:
            return False
        return await self.checkpoints.write(self.engine, self._worker, self._consumer, self._inputs())

    async def _starting_point(self) -> bool:
        """Before anything is read: a checkpoint of where this run begins, over every input partition.

        Without it a crash before the first periodic checkpoint would restart from the group's committed
        offsets with an empty engine: the labels learned and the requests read back before them would be
        forgotten (their labels then come back ``unknown``). The worker reads nothing, so commits nothing,
        until this has been written. Returns whether it has (or there are no checkpoints). If it cannot be
        written (the directory is read-only, the disk full) the service exits with 2.
        """
        if self.checkpoints.directory is None:
            self._reading = True
            return True
        try:
            self._restore_newer()
            self._reading = await self._checkpoint()
            return self._reading
        except (OSError, checkpoint.CheckpointError) as exc:
            # nothing has been read yet: stop here rather than run without a way back after a crash
            self.metrics.errors.labels("checkpoint").inc()
            log.error(
                "cannot restore or write a checkpoint in checkpoint.dir %s: %r; exiting",
                self.checkpoints.directory,
                exc,
            )
            self.exit_code = 2
            self.stop()
            return False

    async def _publish(self, producer: AIOKafkaProducer, force: bool = False) -> None:
        """Learner: send the model to the scorers when it changed, at most once per publish interval."""
        version = self.engine.model_version
        interval = self.settings.checkpoint.publish_interval_seconds
        if version == self._published_version or (
            not force and time.monotonic() - self._last_publish < interval
        ):
            return
        self._last_publish = time.monotonic()
        try:
            size = await publish(
                producer, self.topics.models, self.engine.model, version, self.checkpoints.key
            )
        except KafkaError as exc:
            self.metrics.errors.labels("snapshot").inc()
            log.warning("could not publish model version %d: %r", version, exc)
            return
        self._published_version = version
        self.metrics.model_latest_version.set(version)
        log.debug("published model version %d (%d bytes)", version, size)

    def _apply_snapshot(self, version: int, model: Model) -> None:
        """Scorer: score with the learner's newest model from the next batch on (no pause)."""
        self.engine.model = model
        self.engine.model_version = version
        self.metrics.model_version.set(version)
        self.metrics.model_updated.set(time.time())

    async def _after_batch(self) -> None:
        if self.role == "learner" and self._producer is not None:
            await self._publish(self._producer)
        if self.checkpoints.due(self.engine):
            try:
                await self._checkpoint()
            except (OSError, checkpoint.CheckpointError) as exc:
                self.metrics.errors.labels("checkpoint").inc()
                log.error("checkpoint failed: %r", exc)

    def _topic_names(self) -> list[str]:
        t = self.topics
        return [t.samples, t.labels, t.predictions, t.label_requests, t.dead_letters]

    def _inputs(self) -> list[str]:
        """What this role reads. The all-in-one and the learner read their label requests back: after a
        restore, the requests made since the checkpoint are known again before any label is learned."""
        t = self.topics
        return {
            "all": [t.samples, t.labels, t.label_requests],
            "scorer": [t.samples],
            "learner": [t.labels, t.label_requests],
        }[self.role]

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
                if self.role != "all":
                    await ensure_topics(
                        s.kafka, [self.topics.models], partitions=1, configs=MODEL_TOPIC_CONFIG
                    )
            options = connection_options(s.kafka)
            producer = AIOKafkaProducer(**options, **producer_options(s, self.role))
            await producer.start()
            self._producer = producer
            consumer = AIOKafkaConsumer(
                **options,
                group_id=f"{s.kafka.group_id}-learner" if self.role == "learner" else s.kafka.group_id,
                group_instance_id=s.kafka.group_instance_id,
                partition_assignment_strategy=(
                    (SingleActiveAssignor(),) if self.role == "learner" else (RoundRobinPartitionAssignor,)
                ),
                enable_auto_commit=False,
                auto_offset_reset=s.kafka.auto_offset_reset,
                session_timeout_ms=s.kafka.session_timeout_ms,
                heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
                # a member killed in the middle of a rebalance holds the group up to this long
                rebalance_timeout_ms=s.kafka.rebalance_timeout_ms,
                max_poll_interval_ms=s.kafka.max_poll_interval_ms,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            self._consumer = consumer
            consumer.subscribe(self._inputs(), listener=_Assignment(self))
            await consumer.start()
            if self.role == "scorer":
                follower_consumer = AIOKafkaConsumer(**options, **FOLLOWER_OPTIONS)
                await follower_consumer.start()
                self._follower = ModelFollower(
                    follower_consumer,
                    self.topics.models,
                    self.checkpoints.key,
                    self._apply_snapshot,
                    self.metrics,
                )
                following = asyncio.create_task(self._follower.run(self._stopping))
            self._worker = Worker(
                self.engine,
                consumer,
                Outbox(producer),
                self.topics,
                self.metrics,
                max_batch_size=s.kafka.max_batch_size,
                on_batch=self._after_batch,
                before_start=self._starting_point,
            )
            if self.checkpoints.restored:
                self._worker.positions = {t: dict(p) for t, p in self.checkpoints.restored_offsets.items()}
                self._worker.hold_labels()
            admin = AIOKafkaAdminClient(**options, request_timeout_ms=5000)
            await admin.start()
            watchdog = asyncio.create_task(self._watch_broker(admin))
            log.info(
                "%s: %s with %s / %s / %s at budget %s",
                self.role,
                ", ".join(self._inputs()),
                s.model.name,
                s.strategy.name,
                s.policy.name,
                s.policy.budget,
            )
            try:
                await self._worker.run(self._stopping)
            except DeliveryRefusedError as exc:
                self.metrics.errors.labels("produce").inc()
                log.error("%s", exc)
                self.exit_code = EXIT_OUTPUT_REFUSED
                self._stopping.set()  # the model follower of a scorer stops with the loop
            finally:
                watchdog.cancel()
                await admin.close()
            if self._follower is not None:
                await asyncio.wait_for(following, 5)
                await _close(follower_consumer)
            # a standby learner that never read anything publishes and checkpoints nothing: its engine is
            # older than the active learner's
            if self.role == "learner" and self._worker.clean_stop and self.exit_code == 0 and self._reading:
                await self._publish(producer, force=True)
            if self._worker.clean_stop and self.exit_code == 0 and self._reading:
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

    async def _start_over_if_the_cluster_forgot(self) -> bool:
        """After an outage: if the group's committed offsets are gone, the cluster lost its state (Kafka
        never forgets them in minutes; an in-memory development broker does on restart). Its topics are
        new, so every input partition is read from its beginning. Returns whether it could tell."""
        worker, consumer = self._worker, self._consumer
        if worker is None or consumer is None:
            return True
        for tp in consumer.assignment():
            if tp.partition not in worker.committed.get(tp.topic, {}):
                continue
            try:
                committed = await asyncio.wait_for(consumer.committed(tp), 5)
            except (KafkaError, TimeoutError):
                return False  # the coordinator is not back yet: ask again at the next turn
            if committed is None:
                log.warning(
                    "the cluster lost its state (its committed offsets are gone): reading every input again"
                )
                await worker.start_over()
            return True
        return bool(consumer.assignment())  # nothing committed to compare with: nothing to forget

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
                self._verify_cluster = True
            elif not up:
                if down_since is None:
                    down_since = now
                    log.warning(
                        "the Kafka cluster at %s does not answer", self.settings.kafka.bootstrap_servers
                    )
                if limit and now - down_since >= limit:
                    log.error("no Kafka cluster for %.0f s: exiting so that the service is restarted", limit)
                    self.exit_code = EXIT_NO_CLUSTER
                    self.stop()
            if up and self._verify_cluster:
                self._verify_cluster = not await self._start_over_if_the_cluster_forgot()
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
