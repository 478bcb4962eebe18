"""Scale-out on one machine: N scorer processes and one learner on the embedded broker.

``run_cluster`` starts a learner and N scorers (`streamal run --role ...`, one consumer group of scorers
over a samples topic of 6 partitions), replays a stream into it, answers label requests once (an
annotator), optionally kills one scorer with SIGKILL mid-stream, and reports: samples predicted, labels
sent and learned by the learner, and the model version every surviving scorer ends on against the
learner's. The tests use it; run as a script it measures throughput with 1, 2 and 3 scorers:

    .venv/bin/python scripts/bench_scale.py [--samples 60000]

This machine has 2 cores, shared by the broker, the learner, the scorers and the load generator, so the
figures say how the design behaves, not how a cluster scales (docs/scaling.md discusses that).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from streamal.broker import EmbeddedBroker
from streamal.config import KafkaSettings
from streamal.datasets import Record, load
from streamal.http import answers_ok, fetch_json
from streamal.kafka.client import connection_options, ensure_topics
from streamal.oracle import OracleStats, run_oracle
from streamal.testing import TOPICS, ServiceProcess, read_back

KEY = "scale-test-key-0123456789abcdef"


@dataclass
class ClusterReport:
    scorers: int = 0
    samples: int = 0
    predicted: int = 0
    labels_sent: int = 0
    labels_learned: int = -1
    learner_version: int = -1
    scorer_versions: list[int] = field(default_factory=list)
    killed: int = 0
    seconds_to_predict_all: float = 0.0
    throughput: float = 0.0


def _process(role: str, bootstrap: str, workdir: Path, name: str) -> ServiceProcess:
    env = {
        "STREAMAL_KAFKA__PARTITIONS": "6",
        "STREAMAL_CHECKPOINT__KEY": KEY,
        "STREAMAL_CHECKPOINT__PUBLISH_INTERVAL_SECONDS": "0.5",
        "STREAMAL_LOG_LEVEL": os.environ.get("SCALE_LOG_LEVEL", "INFO"),
    }
    if role == "learner":
        env["STREAMAL_CHECKPOINT__DIR"] = str(workdir / f"{name}-checkpoints")
    process = ServiceProcess(bootstrap, workdir / f"{name}.log", env, role=role)
    process.start()
    return process


async def _produce(options: dict[str, Any], records: list[Record], rate: float | None) -> None:
    producer = AIOKafkaProducer(**options, acks="all", linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        started = time.monotonic()
        futures = []
        for i, r in enumerate(records):
            if rate:
                due = started + i / rate
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
            value = orjson.dumps({"id": r.id, "features": r.features})
            futures.append(await producer.send("samples", value, key=r.id.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _counter(ids: dict[str, set[str]], times: dict[str, float]) -> Callable[[str, ConsumerRecord], None]:
    """The distinct ids on ``predictions`` and ``label-requests``; when the first and last prediction came."""

    def on_record(topic: str, record: ConsumerRecord) -> None:
        ids[topic].add(orjson.loads(record.value)["id"])
        if topic == "predictions":
            times.setdefault("first", time.monotonic())
            times["last"] = time.monotonic()

    return on_record


async def run_cluster(
    records: list[Record],
    scorers: int = 3,
    kill_one_at: float | None = None,
    rate: float | None = 300.0,
    delay: float = 0.2,
    wait_seconds: float = 120.0,
    workdir: Path | None = None,
    preload: bool = False,
) -> ClusterReport:
    """``kill_one_at``: the fraction of the stream after which one scorer gets SIGKILL (None: no kill).
    ``preload``: produce the whole stream before the scorers start (for throughput)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="streamal-scale-"))
    report = ClusterReport(scorers=scorers, samples=len(records))
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        options = connection_options(kafka)
        await ensure_topics(kafka, TOPICS, partitions=6)
        truth = {r.id: r.label for r in records}
        stopping = asyncio.Event()
        stats = OracleStats()
        oracle_ready = asyncio.Event()
        ids: dict[str, set[str]] = {"predictions": set(), "label-requests": set()}
        times: dict[str, float] = {}
        seen, requested = ids["predictions"], ids["label-requests"]
        tasks = [
            asyncio.create_task(
                run_oracle(options, truth, stopping, delay_seconds=delay, stats=stats, ready=oracle_ready)
            ),
            asyncio.create_task(read_back(options, list(ids), _counter(ids, times), stopping)),
        ]
        learner = _process("learner", broker.bootstrap_servers, workdir, "learner")
        procs: list[ServiceProcess] = []
        try:
            await asyncio.wait_for(oracle_ready.wait(), 60)
            if preload:
                await _produce(options, records, None)
            procs = [
                _process("scorer", broker.bootstrap_servers, workdir, f"scorer-{i}") for i in range(scorers)
            ]
            deadline = time.monotonic() + 60
            while not all(answers_ok(f"http://127.0.0.1:{p.port}/readyz") for p in [learner, *procs]):
                for p in [learner, *procs]:
                    if not p.alive():
                        raise RuntimeError(f"{p.log.name} exited: {p.log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not become ready")
                await asyncio.sleep(0.2)
            started = time.monotonic()
            producing = None if preload else asyncio.create_task(_produce(options, records, rate))
            killed = False
            end = time.monotonic() + wait_seconds
            while time.monotonic() < end:
                await asyncio.sleep(0.2)
                if kill_one_at is not None and not killed and len(seen) >= kill_one_at * len(records):
                    procs[0].kill()
                    killed = True
                    report.killed = 1
                if len(seen) >= len(records) and not report.seconds_to_predict_all:
                    # from the first prediction to the last one (with preload, scorers start consuming as
                    # soon as they join, before all of them are ready)
                    report.seconds_to_predict_all = times["last"] - (times["first"] if preload else started)
                if producing is not None and producing.done():
                    producing.result()
                model = fetch_json(f"http://127.0.0.1:{learner.port}/v1/model")
                if (
                    report.seconds_to_predict_all
                    and model is not None
                    and requested
                    and stats.answered + stats.unknown >= len(requested)
                    and model["labels_learned"] >= stats.answered
                ):
                    live = [p for p in procs if p.alive()]
                    versions = [
                        (fetch_json(f"http://127.0.0.1:{p.port}/v1/model") or {}).get("version", -1)
                        for p in live
                    ]
                    if all(v == model["version"] for v in versions):
                        break
            model = fetch_json(f"http://127.0.0.1:{learner.port}/v1/model") or {}
            report.labels_learned = model.get("labels_learned", -1)
            report.learner_version = model.get("version", -1)
            report.scorer_versions = [
                (fetch_json(f"http://127.0.0.1:{p.port}/v1/model") or {}).get("version", -1)
                for p in procs
                if p.alive()
            ]
        finally:
            stopping.set()
            for p in procs:
                p.stop()
            learner.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
        report.predicted = len(seen)
        report.labels_sent = stats.answered
        if report.seconds_to_predict_all:
            report.throughput = len(records) / report.seconds_to_predict_all
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=60_000)
    args = parser.parse_args()
    shuttle = load("shuttle")
    records = [
        Record(f"s-{i}", shuttle[i % len(shuttle)].features, shuttle[i % len(shuttle)].label)
        for i in range(args.samples)
    ]
    for n in (1, 2, 3):
        report = asyncio.run(run_cluster(records, scorers=n, rate=None, preload=True, wait_seconds=300))
        print(
            f"{n} scorer(s) + 1 learner: {report.throughput:,.0f} samples/s "
            f"({report.samples} samples in {report.seconds_to_predict_all:.1f} s; labels learned "
            f"{report.labels_learned} of {report.labels_sent}; versions {report.scorer_versions} "
            f"vs learner {report.learner_version})",
            flush=True,
        )


if __name__ == "__main__":
    main()
