"""The chaos harness in the suite: SIGKILL the service twice mid-stream; nothing is lost or learned twice."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from scripts.chaos import chaos_service, run_chaos
from streamal.broker import EmbeddedBroker
from streamal.config import KafkaSettings
from streamal.datasets import load
from streamal.kafka.client import ensure_topics
from streamal.messages import encode, label_message
from streamal.testing import TOPICS
from tests.kafkatools import produce, read_all, wait_until

pytestmark = pytest.mark.kafka


def test_two_sigkills_lose_nothing_and_learn_every_label_once(tmp_path: Path) -> None:
    records = load("image_segments", limit=1500)
    report = asyncio.run(
        run_chaos(
            records, kills=2, rate=300.0, malformed=12, delay=0.2, seed=7, wait_seconds=90, workdir=tmp_path
        )
    )
    assert report.problems == [], report
    assert report.restarts == 2
    assert report.predicted == report.samples == 1500
    assert report.labels_learned == report.labels_sent > 0
    assert report.label_outcomes["unknown"] == 0
    assert report.dead_lettered >= report.malformed == 12


def test_sigkills_before_the_first_periodic_checkpoint_lose_nothing(tmp_path: Path) -> None:
    """With the production intervals (30 s, 1,000 labels) no periodic checkpoint is written in this 3 s
    stream: every restart begins from the checkpoint of where the first start began, and reads it again."""
    records = load("image_segments", limit=900)
    report = asyncio.run(
        run_chaos(
            records,
            kills=2,
            rate=300.0,
            malformed=8,
            delay=0.2,
            seed=1,
            wait_seconds=90,
            workdir=tmp_path,
            checkpoint_seconds=30.0,
            checkpoint_labels=1000,
        )
    )
    assert report.problems == [], report
    assert report.restarts == 2
    assert report.predicted == report.samples == 900
    assert report.labels_learned == report.labels_sent > 0
    assert report.label_outcomes["unknown"] == 0


def test_labels_wait_until_every_label_request_partition_is_read(tmp_path: Path) -> None:
    """After a restart the service may share its group for a while (with its killed self, until that member's
    session expires) and be given only part of the partitions. Labels for requests in the part it does not
    have must wait for it: none may be called unknown. Another member of the group stands in for the killed
    one here, so the partial assignment is certain and lasts until that member leaves."""
    records = load("image_segments", limit=300)
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), TOPICS, partitions=3))
        produce(
            bootstrap,
            "samples",
            [(r.id.encode(), encode({"id": r.id, "features": r.features})) for r in records],
        )
        service = chaos_service(bootstrap, tmp_path, checkpoint_seconds=30.0, checkpoint_labels=1000)
        service.start()
        other = _Member(bootstrap, "streamal", ["samples", "labels", "label-requests"])
        try:
            wait_until(lambda: (service.model() or {}).get("samples_scored") == len(records), 60)
            asked = (service.model() or {})["label_requests"]
            requests = read_all(bootstrap, "label-requests", asked)
            assert len(requests) == asked > 10
            service.kill()
            other.start()
            wait_until(lambda: other.assigned > 0, 30)
            service.start()
            wait_until(lambda: other.generations >= 2, 30)  # the service joined: the partitions are shared
            truth = {r.id: r.label for r in records}
            ids = {orjson.loads(m.value())["id"] for m in requests}
            produce(bootstrap, "labels", [(i.encode(), label_message(i, truth[i])) for i in sorted(ids)])
            time.sleep(3.0)  # the labels are there; the label requests the other member holds are not read
            held = service.model() or {}
            other.leave()
            wait_until(lambda: sum((service.model() or {}).get("outcomes", {}).values()) >= len(ids), 60)
            model = service.model() or {}
        finally:
            other.leave()
            code = service.stop()
    assert held["outcomes"]["unknown"] == 0, held["outcomes"]
    assert model["outcomes"]["unknown"] == 0, model["outcomes"]
    assert model["labels_learned"] == len(ids)
    assert code == 0


class _Member:
    """A librdkafka consumer in the service's group, polled in a thread; it keeps partitions until closed."""

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        self.assigned = 0
        self.generations = 0
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "partition.assignment.strategy": "roundrobin",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )
        self._topics = topics
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = len(partitions)
        self.generations += 1

    def _poll(self) -> None:
        self._consumer.subscribe(self._topics, on_assign=self._on_assign)
        while not self._stop.is_set():
            self._consumer.poll(0.2)
        self._consumer.close()

    def start(self) -> None:
        self._thread.start()

    def leave(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
