"""When and what the service checkpoints: the engine with the offsets of every input partition it reflects.

:mod:`streamal.checkpoint` is the file format (signed, atomic); this is the service's use of it:

* at start, the newest valid checkpoint is restored and its offsets become the engine's positions;
* before anything is read, a checkpoint of that starting point is written, so a crash before the first
  periodic one restarts from it and not from the group's committed offsets (with an empty engine they
  would skip what the lost state had taken in);
* then one every ``interval_seconds`` or ``every_labels`` labels, and one at a clean shutdown.

A checkpoint must say where to resume every input partition; while some partition is neither assigned
nor known to the engine (before the first assignment, during a rebalance) it waits for the next turn.

It records the positions of what was delivered, so everything the engine caused must be acknowledged and
committed first: for at most ``drain_seconds``, and not at all while the worker's last delivery or commit
failed with output still outstanding (the cluster is away). Otherwise the checkpoint is postponed to a
later turn; a failed delivery is processed again by the worker, as any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from streamal import checkpoint
from streamal.engine import Engine
from streamal.kafka.worker import Worker

log = logging.getLogger(__name__)


class Checkpoints:
    """The checkpoints of one service, in ``directory`` (None: it keeps none), signed with ``key``."""

    def __init__(
        self,
        directory: Path | None,
        key: bytes,
        interval_seconds: float,
        every_labels: int,
        drain_seconds: float = 5.0,
    ) -> None:
        self.directory = directory
        self.key = key
        self.interval_seconds = interval_seconds
        self.every_labels = every_labels
        self.drain_seconds = drain_seconds
        #: since when checkpoints are postponed (monotonic; None: the last one was written)
        self._postponed_since: float | None = None
        #: the offsets of the checkpoint restored at start (empty if none was)
        self.restored_offsets: dict[str, dict[int, int]] = {}
        self.restored = False
        #: :func:`checkpoint.stamp` of the file last restored or written here
        self._stamp: tuple[int, int, int] | None = None
        self._last = time.monotonic()
        self._labels_at_last = 0

    def restore(self, only_newer: bool = False) -> Engine | None:
        """The engine of the newest valid checkpoint, or None; a tampered one raises CheckpointError.

        ``only_newer``: None as well if it is the one restored before (a standby learner asks again when it
        takes over, to continue from the checkpoint the learner it replaces wrote meanwhile).
        """
        if self.directory is None:
            return None
        stamp = checkpoint.stamp(self.directory)
        if stamp is None or (only_newer and stamp == self._stamp):
            return None  # nothing there, or the file this one has: not read (and unpickled) again
        saved = checkpoint.load(self.directory, self.key)
        if saved is None:
            return None
        self.restored_offsets = saved.offsets
        self.restored = True
        self._stamp = stamp
        engine: Engine = saved.engine
        log.info(
            "restored checkpoint: model version %d, %d labels learned, %d requests pending",
            engine.model_version,
            engine.labels_learned,
            len(engine.pending),
        )
        return engine

    def due(self, engine: Engine) -> bool:
        return self.directory is not None and (
            time.monotonic() - self._last >= self.interval_seconds
            or engine.labels_learned - self._labels_at_last >= self.every_labels
        )

    async def write(
        self, engine: Engine, worker: Worker, consumer: AIOKafkaConsumer | None, inputs: list[str]
    ) -> bool:
        """Snapshot ``engine`` with the offsets it reflects, once everything it caused is delivered.

        Call it between batches (the engine must not change meanwhile; the file is written in a thread).
        Returns whether it was written: not while some input partition is neither assigned nor known, nor
        while what the engine caused is not delivered and committed (see the module's description).
        """
        if self.directory is None:
            return False
        if worker.failing and worker.unsettled:
            self._postpone("the Kafka cluster did not take the last output or commit")
            return False
        if not await worker.drain(self.drain_seconds):
            self._postpone(
                f"the output so far was not delivered and committed within {self.drain_seconds:g} s"
            )
            return False
        positions = {t: dict(p) for t, p in worker.positions.items()}
        if consumer is not None:
            expected: set[tuple[str, int]] = set()
            for topic in inputs:
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:  # its metadata is not known yet: the checkpoint could not cover it
                    return False
                expected |= {(topic, p) for p in partitions}
            owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            if not expected <= owned | {(t, p) for t, ps in positions.items() for p in ps}:
                return False
            # an assigned partition the engine has not read from yet: where it would start reading
            for tp in consumer.assignment():
                if tp.partition not in positions.get(tp.topic, {}):
                    try:
                        start = await asyncio.wait_for(consumer.position(tp), 5)
                    except (KafkaError, TimeoutError) as exc:
                        log.warning("checkpoint postponed: no position for %s: %r", tp, exc)
                        return False
                    positions.setdefault(tp.topic, {})[tp.partition] = start
        created = time.time()
        payload = checkpoint.dumps(checkpoint.Checkpoint(engine, positions, created))
        self._last = time.monotonic()
        self._labels_at_last = engine.labels_learned
        await asyncio.to_thread(checkpoint.write, self.directory, payload, created, self.key)
        self._stamp = checkpoint.stamp(self.directory)  # our own: nothing to restore from it later
        if self._postponed_since is not None:
            log.info(
                "checkpoint written, %.0f s after it was first postponed", self._last - self._postponed_since
            )
            self._postponed_since = None
        return True

    def _postpone(self, why: str) -> None:
        """Say once why checkpoints wait (the loop asks again at every turn)."""
        if self._postponed_since is None:
            self._postponed_since = time.monotonic()
            log.warning("checkpoint postponed: %s", why)
        else:
            log.debug("checkpoint postponed: %s", why)
