"""Throughput of `streamal run` against a bare aiokafka loop, on one embedded broker, in one run.

Both read the same 100,000 samples (river's Shuttle data set, cycled; 9 features) that were produced
before the clock starts, from a 3-partition topic, and both commit after the broker acknowledged what
they produced:

* bare loop (per-record send): consume → orjson decode → ``producer.send`` per record → await acks → commit;
* bare loop (record batches): the same, with one ``send_batch`` per partition, as streamal does;
* ``streamal run`` (a child process, defaults: kNN, least confidence, biqf) at budget 0.1, with an
  oracle answering every label request at once, so the model learns while it scores. ``--model`` names
  another model (``STREAMAL_MODEL__NAME``), e.g. ``torch_mlp``: each fetched batch is then scored in one
  forward pass, and the labels that arrive together are learned together.

It prints messages per second for each and the ratio streamal / fastest bare loop. The machine is shared
and noisy: compare ratios from one run, not absolute numbers across runs.

    .venv/bin/python scripts/bench_throughput.py [--samples 100000] [--model torch_mlp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streamal.broker import EmbeddedBroker, free_port
from streamal.config import KafkaSettings
from streamal.datasets import load
from streamal.kafka.client import connection_options, ensure_topics
from streamal.oracle import OracleStats, run_oracle

PARTITIONS = 3


async def _fill(options: dict[str, Any], topic: str, payloads: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**options, acks="all", linger_ms=20, enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in payloads]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _bare(options: dict[str, Any], src: str, dst: str, n: int, batched: bool) -> float:
    """A bare consume → decode → produce → ack → commit loop; returns messages per second."""
    consumer = AIOKafkaConsumer(
        src,
        **options,
        group_id=f"bare-{dst}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(**options, acks="all", linger_ms=5, enable_idempotence=False)
    await producer.start()
    await consumer.start()
    partitioner = DefaultPartitioner()
    parts = sorted(await producer.partitions_for(dst))
    done = 0
    started: float | None = None
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            if not batch:
                continue
            if started is None:
                started = time.perf_counter()
            futures = []
            offsets = {}
            if batched:
                open_batches: dict[int, Any] = {}
                for tp, records in batch.items():
                    offsets[tp] = records[-1].offset + 1
                    for r in records:
                        value = orjson.dumps(orjson.loads(r.value))
                        p = partitioner(r.key, parts, parts)
                        b = open_batches.get(p)
                        if b is None:
                            b = open_batches[p] = producer.create_batch()
                        if b.append(key=r.key, value=value, timestamp=None) is None:
                            b.close()
                            futures.append(await producer.send_batch(b, dst, partition=p))
                            b = open_batches[p] = producer.create_batch()
                            b.append(key=r.key, value=value, timestamp=None)
                for p, b in open_batches.items():
                    b.close()
                    futures.append(await producer.send_batch(b, dst, partition=p))
            else:
                for tp, records in batch.items():
                    offsets[tp] = records[-1].offset + 1
                    for r in records:
                        futures.append(
                            await producer.send(dst, orjson.dumps(orjson.loads(r.value)), key=r.key)
                        )
            await asyncio.gather(*futures)
            await consumer.commit(offsets)
            done += sum(len(r) for r in batch.values())
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


def _scrape(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


async def _streamal(
    bootstrap: str, options: dict[str, Any], n: int, truth: dict[str, Any], model: str | None
) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAL_")}
    env.update(
        {
            "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "STREAMAL_HTTP__PORT": str(port),
            "STREAMAL_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "STREAMAL_POLICY__BUDGET": "0.1",
            "STREAMAL_CHECKPOINT__DIR": tempfile.mkdtemp(prefix="streamal-bench-"),
        }
    )
    if model:
        env["STREAMAL_MODEL__NAME"] = model
    stopping = asyncio.Event()
    stats = OracleStats()
    ready = asyncio.Event()
    oracle = asyncio.create_task(
        run_oracle(options, truth, stopping, delay_seconds=0.0, stats=stats, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 60)
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, polled over HTTP
        [sys.executable, "-m", "streamal", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first: tuple[float, float] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            count = await asyncio.to_thread(_scrape, port, "streamal_samples_total")
            now = time.perf_counter()
            if count:
                if first is None:
                    first = (now, count)
                if count >= n:
                    break
            await asyncio.sleep(0.1)
        if first is None or count is None or count < n:
            raise RuntimeError("streamal did not finish in time")
        requests = await asyncio.to_thread(_scrape, port, "streamal_label_requests_total") or 0.0
        learned = await asyncio.to_thread(_scrape, port, "streamal_model_version") or 0.0
        return {"rate": (n - first[1]) / (now - first[0]), "requests": requests, "learned": learned}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        stopping.set()
        await oracle


async def main(n: int, model: str | None) -> None:
    records = load("shuttle")
    payloads, truth = [], {}
    for i in range(n):
        r = records[i % len(records)]
        sample_id = f"s-{i}"
        truth[sample_id] = r.label
        payloads.append((sample_id.encode(), orjson.dumps({"id": sample_id, "features": r.features})))
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        options = connection_options(kafka)
        await ensure_topics(
            kafka,
            [
                "bare-in",
                "bare-out-send",
                "bare-out-batch",
                "samples",
                "predictions",
                "label-requests",
                "labels",
                "dead-letters",
            ],
            partitions=PARTITIONS,
        )
        print(f"producing {n} samples twice (bare loop input, streamal input) ...", flush=True)
        await _fill(options, "bare-in", payloads)
        await _fill(options, "samples", payloads)
        runs: list[tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = [
            (
                "bare loop, per-record send",
                lambda: _bare(options, "bare-in", "bare-out-send", n, batched=False),
            ),
            (
                "bare loop, record batches",
                lambda: _bare(options, "bare-in", "bare-out-batch", n, batched=True),
            ),
        ]
        rates = {}
        for name, run in runs:
            rates[name] = await run()
            print(f"{name:32s} {rates[name]:10,.0f} messages/s", flush=True)
        result = await _streamal(broker.bootstrap_servers, options, n, truth, model)
        label = f"streamal run ({model or 'knn'}, budget 0.1)"
        print(
            f"{label:32s} {result['rate']:10,.0f} messages/s "
            f"({result['requests']:.0f} label requests, {result['learned']:.0f} labels learned)"
        )
        best = max(rates.values())
        print(f"ratio streamal / fastest bare loop: {result['rate'] / best:.2f}")
        per_record = rates["bare loop, per-record send"]
        print(f"ratio streamal / per-record bare loop: {result['rate'] / per_record:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--model", help="the service's model.name (default: the service's default, knn)")
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.model))
