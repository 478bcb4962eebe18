"""Scale-out: three scorers and one learner, one scorer killed mid-stream; a standby learner takes over."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from scripts.bench_scale import run_cluster
from streamal.broker import EmbeddedBroker
from streamal.config import KafkaSettings
from streamal.datasets import load
from streamal.http import answers_ok
from streamal.kafka.client import ensure_topics
from streamal.messages import Sample, label_message, label_request_message
from streamal.testing import TOPICS, ServiceProcess
from tests.kafkatools import produce, wait_until

pytestmark = pytest.mark.kafka


def test_three_scorers_one_learner_one_scorer_killed(tmp_path: Path) -> None:
    records = load("image_segments", limit=1500)
    report = asyncio.run(
        run_cluster(
            records, scorers=3, kill_one_at=0.3, rate=250.0, delay=0.2, wait_seconds=120, workdir=tmp_path
        )
    )
    assert report.killed == 1
    assert report.predicted == report.samples == 1500, report
    assert report.labels_sent > 0
    assert report.labels_learned == report.labels_sent, report
    assert len(report.scorer_versions) == 2
    assert report.scorer_versions == [report.learner_version] * 2, report
    assert report.learner_version == report.labels_learned


def test_a_standby_learner_takes_over_from_the_checkpoint_of_the_one_it_replaces(tmp_path: Path) -> None:
    """Two learners share checkpoint.dir. When the active one is killed, the standby continues from the newest
    checkpoint the active one wrote, not from the one it found when it started: it learns only the labels
    after it, and every label is in the model it goes on with once."""
    key = "standby-test-key-0123456789abcdef"
    env = {
        "STREAMAL_CHECKPOINT__KEY": key,
        "STREAMAL_CHECKPOINT__DIR": str(tmp_path / "checkpoints"),
        "STREAMAL_CHECKPOINT__INTERVAL_SECONDS": "1",
        # a member that does not poll for 3 s leaves its group: the standby must keep polling while it waits
        "STREAMAL_KAFKA__MAX_POLL_INTERVAL_MS": "3000",
    }
    truth = {f"s{i}": ("a" if i % 3 else "b") for i in range(120)}

    def send(ids: list[str]) -> None:
        requests = [
            (
                i.encode(),
                label_request_message(
                    Sample(id=i, features={"x": float(i[1:])}),
                    None,
                    {},
                    1.0,
                    "least_confidence",
                    0,
                    time.time(),
                ),
            )
            for i in ids
        ]
        produce(broker.bootstrap_servers, "label-requests", requests)
        produce(broker.bootstrap_servers, "labels", [(i.encode(), label_message(i, truth[i])) for i in ids])

    with EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers), TOPICS, 3))
        active = ServiceProcess(broker.bootstrap_servers, tmp_path / "active.log", env, role="learner")
        standby = ServiceProcess(broker.bootstrap_servers, tmp_path / "standby.log", env, role="learner")
        try:
            active.start()
            wait_until(lambda: answers_ok(f"http://127.0.0.1:{active.port}/readyz"), 60, "the active learner")
            standby.start()
            wait_until(lambda: standby.model() is not None, 60, "the standby")
            ids = sorted(truth)
            send(ids[:60])
            wait_until(lambda: (active.model() or {}).get("labels_learned") == 60, 60, "60 labels learned")
            time.sleep(5.0)  # a checkpoint (every second) covers them; the standby has waited > 3 s
            active.kill()
            send(ids[60:])
            wait_until(lambda: (standby.model() or {}).get("labels_learned", 0) >= 120, 90, "the takeover")
            time.sleep(1.0)
            model = standby.model() or {}
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{standby.port}/metrics", timeout=5).read()
        finally:
            active.kill()
            code = standby.stop()
    assert model["labels_learned"] == 120
    assert model["outcomes"]["unknown"] == 0
    assert model["outcomes"]["duplicate"] == 0
    # the standby learned only the labels after the checkpoint it took over from, not all of them again
    assert b'streamal_labels_total{outcome="applied"} 60.0' in metrics
    assert code == 0
