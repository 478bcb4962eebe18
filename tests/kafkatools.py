"""Helpers for the Kafka tests: an independent client (confluent-kafka / librdkafka) to read what the
service wrote, and a service settings builder."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from streamal.config import load_settings
from streamal.messages import ClassLabel
from streamal.oracle import OracleStats, run_oracle
from streamal.service import Service


def settings_for(bootstrap: str, prefix: str, **extra: str) -> Any:
    env = {
        "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "STREAMAL_KAFKA__GROUP_ID": f"{prefix}streamal",
        "STREAMAL_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "STREAMAL_HTTP__PORT": "0",
        "STREAMAL_TOPICS__SAMPLES": f"{prefix}samples",
        "STREAMAL_TOPICS__PREDICTIONS": f"{prefix}predictions",
        "STREAMAL_TOPICS__LABEL_REQUESTS": f"{prefix}label-requests",
        "STREAMAL_TOPICS__LABELS": f"{prefix}labels",
        "STREAMAL_TOPICS__DEAD_LETTERS": f"{prefix}dead-letters",
        **extra,
    }
    return load_settings(env=env)


def read_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[Any]:
    """Read ``topic`` from the beginning with librdkafka until ``expect`` messages or ``timeout``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    out: list[Any] = []
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(error)
                out.append(msg)
    finally:
        consumer.close()
    return out


def produce(bootstrap: str, topic: str, items: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in items:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def oracle_for(
    options: dict[str, Any],
    prefix: str,
    truth: Mapping[str, ClassLabel],
    stopping: asyncio.Event,
    stats: OracleStats,
    delay_seconds: float = 0.1,
    ready: asyncio.Event | None = None,
) -> asyncio.Task[OracleStats]:
    """The annotator stand-in on the ``prefix``-ed topics of :func:`settings_for`, as a task."""
    return asyncio.create_task(
        run_oracle(
            options,
            truth,
            stopping,
            requests_topic=f"{prefix}label-requests",
            labels_topic=f"{prefix}labels",
            delay_seconds=delay_seconds,
            group_id=f"{prefix}oracle",
            stats=stats,
            ready=ready,
        )
    )


def wait_until(condition: Callable[[], bool], seconds: float, what: str = "the condition") -> None:
    """Poll ``condition`` every 0.2 s; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.2)


# -- an in-process service, for the tests that inject faults around it -------------------------------------
def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value in ``registry`` (0 when it has none yet)."""
    return registry.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """:func:`wait_until` for a coroutine: polls every 0.1 s, gives up after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.1)


async def start_service(
    settings: Any, registry: CollectorRegistry, role: str = "all"
) -> tuple[Service, asyncio.Task[int]]:
    """A :class:`~streamal.service.Service` running in this event loop, once it is ready."""
    service = Service(settings, registry, role=role)
    run = asyncio.create_task(service.run())
    await until(lambda: service.ready() or run.done(), 30, "readiness")
    assert not run.done(), run
    return service, run


async def finish_service(run: asyncio.Task[int]) -> None:
    """Cancel the service if a failed test left it running."""
    if not run.done():
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await run


def sample_records(stem: str, n: int) -> list[tuple[bytes | None, bytes | None]]:
    """``n`` samples ``stem0``, ``stem1``, ... as (key, value) records, two features each."""
    return [
        (f"{stem}{i}".encode(), orjson.dumps({"id": f"{stem}{i}", "features": {"x": float(i % 7), "y": 1.0}}))
        for i in range(n)
    ]
