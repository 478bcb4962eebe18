"""Chaos harness: a stream through `streamal run` while the service is killed with SIGKILL, again and again.

It starts the embedded broker and `streamal run` (with checkpoints), replays a labelled stream with
malformed samples and labels mixed in, answers every label request once after a delay (an annotator),
kills the service with SIGKILL ``--kills`` times at random moments and restarts it each time. Then it
waits until the service has caught up and reports:

* samples sent, and samples with at least one prediction (every one must have one);
* predictions repeated after a crash (allowed: delivery is at least once, repeats carry the same id);
* label requests, distinct and repeated; labels sent by the annotator and ``labels_learned`` in
  ``/v1/model`` (they must be equal: every label is learned exactly once, across crashes);
* malformed messages mixed in and dead letters for them (every one must have one).

    .venv/bin/python scripts/chaos.py [--data image_segments] [--kills 3] [--seed 0]

Exit code 0 when every invariant holds, 1 otherwise. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from streamal.broker import EmbeddedBroker
from streamal.config import KafkaSettings
from streamal.datasets import Record, load
from streamal.kafka.client import connection_options, ensure_topics
from streamal.messages import encode
from streamal.oracle import OracleStats, run_oracle
from streamal.testing import TOPICS, ServiceProcess, read_back

BAD_SAMPLES = [b"{oops", b'{"id": "bad", "features": {"x": NaN}}', b'{"features": {}}', b"\xff\xfe", b"[]"]
BAD_LABELS = [b"{oops", b'{"id": "x"}', b'{"id": "x", "label": 2.5}', b"null"]


@dataclass
class ChaosReport:
    samples: int = 0
    predicted: int = 0
    repeated_predictions: int = 0
    label_requests: int = 0
    repeated_requests: int = 0
    labels_sent: int = 0
    labels_learned: int = -1
    label_outcomes: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    dead_lettered: int = 0
    kills: int = 0
    restarts: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def chaos_service(
    bootstrap: str, workdir: Path, checkpoint_seconds: float = 1.0, checkpoint_labels: int = 20
) -> ServiceProcess:
    """The all-in-one service, checkpointing to ``workdir`` (often, so that kills land between them)."""
    return ServiceProcess(
        bootstrap,
        workdir / "service.log",
        {
            "STREAMAL_CHECKPOINT__DIR": str(workdir / "checkpoints"),
            "STREAMAL_CHECKPOINT__INTERVAL_SECONDS": str(checkpoint_seconds),
            "STREAMAL_CHECKPOINT__EVERY_LABELS": str(checkpoint_labels),
        },
    )


async def _produce(
    options: dict[str, Any], records: list[Record], rate: float, bad_at: set[int], report: ChaosReport
) -> None:
    producer = AIOKafkaProducer(**options, acks="all", linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        started = time.monotonic()
        for i, r in enumerate(records):
            due = started + i / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await producer.send_and_wait(
                "samples", encode({"id": r.id, "features": r.features}), key=r.id.encode()
            )
            if i in bad_at:
                n = report.malformed // 2
                await producer.send_and_wait("samples", BAD_SAMPLES[n % len(BAD_SAMPLES)], key=b"bad")
                await producer.send_and_wait("labels", BAD_LABELS[n % len(BAD_LABELS)], key=b"bad")
                report.malformed += 2
            report.samples = i + 1
    finally:
        await producer.stop()


def _watcher(seen: dict[str, Any]) -> Callable[[str, ConsumerRecord], None]:
    """Count predictions and label requests per id, and dead letters by their source record."""

    def on_record(topic: str, record: ConsumerRecord) -> None:
        if topic == "dead-letters":
            headers = dict(record.headers or ())
            seen["dead"].add((headers.get("source.topic"), headers.get("source.offset")))
        else:
            counts = seen[topic]
            sample_id = orjson.loads(record.value)["id"]
            counts[sample_id] = counts.get(sample_id, 0) + 1

    return on_record


async def run_chaos(
    records: list[Record],
    kills: int = 3,
    rate: float = 200.0,
    malformed: int = 20,
    delay: float = 0.3,
    seed: int = 0,
    wait_seconds: float = 240.0,
    workdir: Path | None = None,
    kill_from: float = 0.1,
    checkpoint_seconds: float = 1.0,
    checkpoint_labels: int = 20,
) -> ChaosReport:
    rng = random.Random(seed)
    report = ChaosReport(kills=kills)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="streamal-chaos-"))
    started = time.monotonic()
    bad_at = set(rng.sample(range(len(records)), min(malformed // 2, len(records))))
    duration = len(records) / rate
    # kills between ``kill_from`` and 90% of the stream: from 10% on by default, which with a short stream
    # is within the first second of the service's start, before its first periodic checkpoint
    kill_at = sorted(rng.uniform(kill_from * duration, 0.9 * duration) for _ in range(kills))
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        options = connection_options(kafka)
        await ensure_topics(kafka, TOPICS, partitions=3)
        service = chaos_service(broker.bootstrap_servers, workdir, checkpoint_seconds, checkpoint_labels)
        service.start()
        stopping = asyncio.Event()
        seen: dict[str, Any] = {"predictions": {}, "label-requests": {}, "dead": set()}
        oracle_stats = OracleStats()
        oracle_ready = asyncio.Event()
        truth = {r.id: r.label for r in records}
        tasks = [
            asyncio.create_task(
                run_oracle(
                    options, truth, stopping, delay_seconds=delay, stats=oracle_stats, ready=oracle_ready
                )
            ),
            asyncio.create_task(
                read_back(
                    options, ("predictions", "label-requests", "dead-letters"), _watcher(seen), stopping
                )
            ),
        ]
        try:
            await asyncio.wait_for(oracle_ready.wait(), 60)
            deadline = time.monotonic() + 60
            while service.model() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start; see {service.log}")
                await asyncio.sleep(0.2)
            producing = asyncio.create_task(_produce(options, records, rate, bad_at, report))
            tasks.append(producing)
            t0 = time.monotonic()
            for at in kill_at:
                await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
                service.kill()
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                service.start()
            await producing
            end = time.monotonic() + wait_seconds
            model: dict[str, Any] | None = None
            while time.monotonic() < end:
                await asyncio.sleep(0.5)
                model = service.model() or model
                if (
                    model is not None
                    and len(seen["predictions"]) >= len(records)
                    and model["labels_learned"] >= oracle_stats.answered
                    and oracle_stats.answered >= len(seen["label-requests"])
                    and len(seen["dead"]) >= report.malformed
                ):
                    await asyncio.sleep(1.0)  # anything still on its way
                    model = service.model() or model
                    break
        finally:
            stopping.set()
            code = service.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
    report.restarts = service.starts - 1
    report.predicted = len(seen["predictions"])
    report.repeated_predictions = sum(c - 1 for c in seen["predictions"].values())
    report.label_requests = len(seen["label-requests"])
    report.repeated_requests = sum(c - 1 for c in seen["label-requests"].values())
    report.labels_sent = oracle_stats.answered
    report.labels_learned = model["labels_learned"] if model else -1
    report.label_outcomes = model["outcomes"] if model else {}
    report.dead_lettered = len(seen["dead"])
    report.seconds = round(time.monotonic() - started, 1)
    if report.predicted != len(records):
        report.problems.append(f"{len(records) - report.predicted} samples without a prediction")
    if report.labels_learned != report.labels_sent:
        report.problems.append(f"labels learned {report.labels_learned} != labels sent {report.labels_sent}")
    if report.dead_lettered < report.malformed:
        report.problems.append(
            f"{report.malformed - report.dead_lettered} malformed messages without a dead letter"
        )
    if code != 0:
        report.problems.append(f"the last service exited with {code} on SIGTERM; see {service.log}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="image_segments", help="built-in data set or a .csv / .jsonl file")
    parser.add_argument("--target", default="label")
    parser.add_argument("--limit", type=int, default=None, help="use the first N samples")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0, help="samples per second")
    parser.add_argument(
        "--malformed", type=int, default=20, help="malformed messages mixed in (half samples)"
    )
    parser.add_argument("--delay", type=float, default=0.3, help="seconds before the annotator answers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=1.0,
        help="the service's checkpoint interval (30 by default in production; 1 here so kills land "
        "between checkpoints)",
    )
    parser.add_argument(
        "--checkpoint-labels", type=int, default=20, help="... and after this many labels (1,000 by default)"
    )
    parser.add_argument(
        "--kill-from", type=float, default=0.1, help="kill between this fraction of the stream and 90%%"
    )
    args = parser.parse_args()
    records = load(args.data, target=args.target, limit=args.limit)
    report = asyncio.run(
        run_chaos(
            records,
            kills=args.kills,
            rate=args.rate,
            malformed=args.malformed,
            delay=args.delay,
            seed=args.seed,
            wait_seconds=args.timeout,
            kill_from=args.kill_from,
            checkpoint_seconds=args.checkpoint_seconds,
            checkpoint_labels=args.checkpoint_labels,
        )
    )
    print(json.dumps(asdict(report), indent=2))
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
