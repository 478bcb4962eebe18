"""The compose demo's sample source: one built-in data set sent once to the samples topic at a steady rate.

Run by deploy/compose.yaml (profile ``demo``) in the streamal image; the oracle answers from the same data
set. Settings, from the environment: ``STREAMAL_KAFKA__BOOTSTRAP_SERVERS``, ``DEMO_DATA`` (a built-in data
set: image_segments, phishing, bananas, shuttle), ``DEMO_RATE`` (samples per second), ``DEMO_LIMIT`` (send
only the first N), ``DEMO_TOPIC``.
Sample ids are the data set's own, so sending the same data set twice to one service sends repeats.
"""

from __future__ import annotations

import asyncio
import os
import time

from aiokafka import AIOKafkaProducer

from streamal.config import KafkaSettings
from streamal.datasets import load
from streamal.kafka.client import connection_options, ensure_topics
from streamal.messages import encode


async def feed(bootstrap: str, data: str, rate: float, topic: str, limit: int | None = None) -> int:
    """Send ``data`` (its first ``limit`` records) to ``topic`` at ``rate`` per second; returns how many."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    await ensure_topics(kafka, [topic])  # the service creates it too; whoever is first wins
    records = load(data, limit=limit)
    producer = AIOKafkaProducer(**connection_options(kafka), acks="all", linger_ms=5)
    await producer.start()
    try:
        started = time.monotonic()
        for i, record in enumerate(records):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(
                topic, encode({"id": record.id, "features": record.features}), key=record.id.encode()
            )
            if (i + 1) % 500 == 0:
                print(f"sent {i + 1} of {len(records)} samples", flush=True)
        await producer.flush()
    finally:
        await producer.stop()
    return len(records)


def main() -> None:
    bootstrap = os.environ.get("STREAMAL_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    data = os.environ.get("DEMO_DATA", "image_segments")
    rate = float(os.environ.get("DEMO_RATE", "10"))
    topic = os.environ.get("DEMO_TOPIC", "samples")
    limit = int(os.environ["DEMO_LIMIT"]) if os.environ.get("DEMO_LIMIT") else None
    n = asyncio.run(feed(bootstrap, data, rate, topic, limit))
    print(f"sent all {n} samples of {data} to {topic}", flush=True)


if __name__ == "__main__":
    main()
