"""For tests of a pipeline with streamal in it: `streamal run` as a child process, and topics read back.

The chaos and scale harnesses (``scripts/chaos.py``, ``scripts/bench_scale.py``) are built on it.

``ServiceProcess`` runs one service (any role) with its own HTTP port and log file, configured only by the
environment it is given (nothing of the caller's ``STREAMAL_*`` leaks in), and can be killed with SIGKILL,
started again on the same port and checkpoint directory, and stopped with SIGTERM. ``read_back`` follows
topics from their beginning without a consumer group (it commits nothing, so it cannot disturb the
service's group).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streamal.broker import free_port
from streamal.http import fetch_json

#: the topics of the default configuration
TOPICS = ["samples", "predictions", "label-requests", "labels", "dead-letters"]

#: group timings short enough that a killed member leaves the group within seconds
FAST_GROUP = {
    "STREAMAL_KAFKA__SESSION_TIMEOUT_MS": "3000",
    "STREAMAL_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
    "STREAMAL_KAFKA__REBALANCE_TIMEOUT_MS": "5000",
}


class ServiceProcess:
    """``streamal run --role ROLE`` as a child process that can be killed and started again."""

    def __init__(
        self, bootstrap: str, log: Path, env: Mapping[str, str] | None = None, role: str = "all"
    ) -> None:
        self.role = role
        self.port = free_port()
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAL_")}
        self.env.update(
            {
                "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                **FAST_GROUP,
                "STREAMAL_HTTP__PORT": str(self.port),
                **(env or {}),
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamal", "run", "--role", self.role],
                env=self.env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM, and the exit code (SIGKILL after 15 s without one)."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def model(self) -> dict[str, Any] | None:
        """``/v1/model``, or None while the service does not answer."""
        return fetch_json(f"http://127.0.0.1:{self.port}/v1/model")


async def read_back(
    options: dict[str, Any],
    topics: Iterable[str],
    on_record: Callable[[str, ConsumerRecord], None],
    stopping: asyncio.Event,
) -> None:
    """Call ``on_record(topic, record)`` for every record of ``topics``, from their beginning, until
    ``stopping`` is set."""
    consumer = AIOKafkaConsumer(**options, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()
        parts = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while not stopping.is_set():
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=5000)).items():
                for record in records:
                    on_record(tp.topic, record)
    finally:
        await consumer.stop()
