"""The service end to end on the embedded broker.

A recorded stream goes in; predictions, label requests, labels, dead letters and metrics come out. Outputs
are read back with librdkafka (confluent-kafka), a client independent of ours.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from streamal.broker import EmbeddedBroker, free_port
from streamal.datasets import load
from streamal.errors import DecodeError
from streamal.kafka.client import connection_options
from streamal.messages import label_message
from streamal.oracle import OracleStats
from streamal.replay import read_file, replay
from streamal.service import Service
from tests.kafkatools import oracle_for, produce, read_all, settings_for

pytestmark = pytest.mark.kafka

DATA = Path(__file__).parent / "data" / "image_segments_stream.jsonl"


async def _until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.1)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _all_answered(registry: CollectorRegistry, samples: int) -> Callable[[], bool]:
    """Whether ``samples`` samples were scored and every label request made was answered and applied."""

    def settled() -> bool:
        asked = _value(registry, "streamal_label_requests_total")
        return (
            _value(registry, "streamal_samples_total") == samples
            and asked > 0
            and _value(registry, "streamal_labels_total", outcome="applied") == asked
        )

    return settled


def test_recorded_stream_through_the_service(broker: EmbeddedBroker, prefix: str, tmp_path: Path) -> None:
    stream = list(read_file(DATA))
    valid = [m for m in stream if m.key != b"bad"]
    malformed = [m for m in stream if m.key == b"bad"]
    assert len(valid) == 600
    assert len(malformed) == 12
    truth = {r.id: r.label for r in load("image_segments", limit=600)}
    settings = settings_for(broker.bootstrap_servers, prefix, STREAMAL_CHECKPOINT__DIR=str(tmp_path / "ckpt"))
    options = connection_options(settings.kafka)
    registry = CollectorRegistry()
    stats = OracleStats()
    seen: dict[str, Any] = {}

    async def main() -> None:
        service = Service(settings, registry)
        run = asyncio.create_task(service.run())
        await _until(service.ready, 30, "readiness")
        stopping = asyncio.Event()
        oracle = oracle_for(options, prefix, truth, stopping, stats, delay_seconds=0.1)
        sent = await replay(options, stream, topic_map={"samples": f"{prefix}samples"})
        assert sent == 612

        await _until(_all_answered(registry, 600), 60, "every sample scored and every request answered")
        # the outcomes other than "applied", and malformed labels, through the labels topic
        answered = next(iter(service.engine.pending._answered))
        label = service.engine.pending._answered[answered]
        other = next(c for c in service.engine.model.classes if c != label)
        assert label is not None
        bad_labels = [b'{"id": "x"}', b'{"id": "x", "label": 1.5}', b"nope", b'{"id": "x", "label": null}']
        produce(
            broker.bootstrap_servers,
            f"{prefix}labels",
            [
                (answered.encode(), label_message(answered, label)),
                (answered.encode(), label_message(answered, other)),
                (b"never-asked", label_message("never-asked", "sky")),
            ]
            + [(b"bad", raw) for raw in bad_labels],
        )
        await _until(
            lambda: (
                _value(registry, "streamal_labels_total", outcome="unknown") == 1
                and sum(
                    _value(registry, "streamal_dead_letters_total", reason=r) for r in DecodeError.REASONS
                )
                == 16
            ),
            30,
            "label outcomes",
        )
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{service.http_port}"
            async with http.get(f"{base}/v1/model") as r:
                seen["model"] = await r.json()
            async with http.get(f"{base}/metrics") as r:
                seen["metrics"] = await r.text()
            async with http.get(f"{base}/healthz") as r:
                seen["healthz"] = r.status
            async with http.get(f"{base}/readyz") as r:
                seen["readyz"] = r.status
        service.stop()
        assert await asyncio.wait_for(run, 15) == 0
        stopping.set()
        await oracle

    asyncio.run(main())

    requests_made = int(_value(registry, "streamal_label_requests_total"))
    # every valid sample has a prediction, read back by an independent client
    predictions = read_all(broker.bootstrap_servers, f"{prefix}predictions", 600)
    predicted = [orjson.loads(m.value()) for m in predictions]
    assert sorted(p["id"] for p in predicted) == sorted(m.key.decode() for m in valid if m.key)
    assert all(m.key().decode() == p["id"] for m, p in zip(predictions, predicted, strict=True))
    assert sum(p["queried"] for p in predicted) == requests_made
    assert all(
        set(p) == {"id", "prediction", "proba", "uncertainty", "model_version", "queried", "ts"}
        for p in predicted
    )
    # label requests: within the budget band, with the features as they were sent
    requests = read_all(broker.bootstrap_servers, f"{prefix}label-requests", requests_made)
    assert len(requests) == requests_made
    assert 0.6 * 0.1 <= requests_made / 600 <= 1.25 * 0.1
    features = {orjson.loads(m.value)["id"]: orjson.loads(m.value)["features"] for m in valid if m.value}
    for m in requests:
        req = orjson.loads(m.value())
        assert req["features"] == features[req["id"]]
        assert req["strategy"] == "least_confidence"
        assert 0.0 <= req["utility"] <= 1.0
        assert isinstance(req["model_version"], int)
    # labels: every request answered once, and learned once
    assert stats.answered == requests_made
    assert seen["model"]["labels_learned"] == requests_made
    assert seen["model"]["version"] == requests_made
    assert set(seen["model"]["classes"]) <= set(truth.values())
    assert {"version", "labels_learned", "classes", "model", "strategy", "policy"} <= set(seen["model"])
    assert _value(registry, "streamal_labels_total", outcome="duplicate") == 1
    assert _value(registry, "streamal_labels_total", outcome="conflicting") == 1
    assert _value(registry, "streamal_labels_total", outcome="unknown") == 1
    assert _value(registry, "streamal_model_version") == requests_made
    # dead letters: every malformed sample and label, with where it came from and why
    dead = read_all(broker.bootstrap_servers, f"{prefix}dead-letters", 16)
    assert len(dead) == 16
    headers = [dict(m.headers()) for m in dead]
    assert all(
        h["error"] and h["source.topic"] in (f"{prefix}samples".encode(), f"{prefix}labels".encode())
        for h in headers
    )
    sample_dead = [
        (m, h) for m, h in zip(dead, headers, strict=True) if h["source.topic"] == f"{prefix}samples".encode()
    ]
    assert sorted((m.value() or b"") for m, _ in sample_dead) == sorted((m.value or b"") for m in malformed)
    reasons = Counter(h["error.reason"].decode() for h in headers)
    for reason, count in reasons.items():
        assert _value(registry, "streamal_dead_letters_total", reason=reason) == count
    # the HTTP endpoints
    assert seen["healthz"] == 200
    assert seen["readyz"] == 200
    for name in (
        "streamal_samples_total",
        "streamal_budget_spent_ratio",
        "streamal_prequential_accuracy_ratio",
        "streamal_processing_seconds_bucket",
        "streamal_consumer_lag_messages",
        "streamal_decision_seconds_total",
    ):
        assert name in seen["metrics"]
    assert _value(registry, "streamal_decision_seconds_total") > 0  # the strategy and policy were timed
    assert (tmp_path / "ckpt" / "checkpoint.bin").exists()


def _service_env(broker: EmbeddedBroker, prefix: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAL_")}
    env.update(
        {
            "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "STREAMAL_KAFKA__GROUP_ID": f"{prefix}streamal",
            "STREAMAL_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "STREAMAL_HTTP__PORT": str(port),
            "STREAMAL_TOPICS__SAMPLES": f"{prefix}samples",
            "STREAMAL_TOPICS__PREDICTIONS": f"{prefix}predictions",
            "STREAMAL_TOPICS__LABEL_REQUESTS": f"{prefix}label-requests",
            "STREAMAL_TOPICS__LABELS": f"{prefix}labels",
            "STREAMAL_TOPICS__DEAD_LETTERS": f"{prefix}dead-letters",
            **extra,
        }
    )
    return env


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the service exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the service was not ready in time")


def test_sigterm_finishes_in_flight_work_commits_and_exits_zero(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    log = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamal", "run"],
        env=_service_env(broker, prefix, port),
        stdout=log,
        stderr=log,
    )
    try:
        _wait_ready(port, proc)
        records = load("shuttle", limit=20_000)
        produce(
            broker.bootstrap_servers,
            f"{prefix}samples",
            [(r.id.encode(), orjson.dumps({"id": r.id, "features": r.features})) for r in records],
        )
        time.sleep(0.3)  # mid-stream
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert code == 0, (tmp_path / "service.log").read_text()[-3000:]
    assert elapsed < 10
    # every committed sample offset has its prediction (commit only after the broker acknowledged it)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": f"{prefix}streamal"})
    try:
        meta = consumer.list_topics(f"{prefix}samples", timeout=10)
        parts = [TopicPartition(f"{prefix}samples", p) for p in meta.topics[f"{prefix}samples"].partitions]
        committed = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()
    assert committed > 0
    predictions = read_all(broker.bootstrap_servers, f"{prefix}predictions", committed, timeout=20)
    assert len({m.key() for m in predictions}) >= committed


def test_a_wrong_setting_fails_at_start_and_names_it(broker: EmbeddedBroker, prefix: str) -> None:
    env = _service_env(broker, prefix, free_port(), STREAMAL_POLICY__BUDGET="1.5")
    done = subprocess.run(
        [sys.executable, "-m", "streamal", "run"], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert b"STREAMAL_POLICY__BUDGET" in done.stderr
    env = _service_env(broker, prefix, free_port(), STREAMAL_STRATEGY__NAME="clairvoyant")
    done = subprocess.run(
        [sys.executable, "-m", "streamal", "run"], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert b"strategy.name" in done.stderr
    assert b"clairvoyant" in done.stderr


def test_record_and_replay_round_trip(broker: EmbeddedBroker, prefix: str, tmp_path: Path) -> None:
    stream = list(read_file(DATA))[:100]
    options = connection_options(settings_for(broker.bootstrap_servers, prefix).kafka)
    out = tmp_path / "recorded.jsonl"

    async def main() -> int:
        from streamal.kafka.client import ensure_topics

        await ensure_topics(
            settings_for(broker.bootstrap_servers, prefix).kafka, [f"{prefix}copy"], partitions=1
        )
        await replay(options, stream, topic_map={"samples": f"{prefix}copy"}, keep_timestamps=True)
        from streamal.replay import record

        with out.open("wb") as fh:
            return await record(options, [f"{prefix}copy"], fh, idle_seconds=5)

    assert asyncio.run(main()) == 100
    again = list(read_file(out))
    assert [(m.key, m.value) for m in again] == [(m.key, m.value) for m in stream]
    assert [m.offset for m in again] == list(range(100))
    assert all(m.topic == f"{prefix}copy" for m in again)
    assert [m.timestamp for m in again] == [m.timestamp for m in stream]  # keep_timestamps


def test_demo_runs_end_to_end_and_stops_what_it_started(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamal",
            "demo",
            "--data",
            "phishing",
            "--rate",
            "400",
            "--delay",
            "0.2",
            "--out",
            str(out),
            "--max-seconds",
            "90",
        ],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["samples"] == 1250
    assert summary["predicted"] is True
    assert 0.6 * 0.1 * 1250 <= summary["labels_used"] <= 1.25 * 0.1 * 1250
    assert summary["accuracy"] > 0.6
    assert summary["random_sampling"]["accuracy"] > 0.5
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert b"summary" in done.stdout


def test_a_checkpoint_that_cannot_be_written_at_start_stops_the_service_before_it_reads(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The starting point's checkpoint is what a crash would restart from: without it nothing is read."""
    from streamal import checkpoint

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "write", full_disk)
    produce(broker.bootstrap_servers, f"{prefix}samples", [(b"s1", b'{"id": "s1", "features": {"x": 1}}')])
    settings = settings_for(
        broker.bootstrap_servers, prefix, STREAMAL_CHECKPOINT__DIR=str(tmp_path / "checkpoints")
    )
    registry = CollectorRegistry()
    service = Service(settings, registry)
    code = asyncio.run(asyncio.wait_for(service.run(), 60))
    assert code == 2
    assert _value(registry, "streamal_errors_total", kind="checkpoint") == 1
    assert _value(registry, "streamal_samples_total") == 0


def test_windowed_selection_asks_for_samples_of_earlier_batches(broker: EmbeddedBroker, prefix: str) -> None:
    """With a selector, every prediction goes out with ``queried: false`` at once; the requests of a window
    are published when it fills (often in a later batch), and their labels are learned like any other."""
    stream = [m for m in read_file(DATA) if m.key != b"bad"][:400]
    truth = {r.id: r.label for r in load("image_segments", limit=400)}
    settings = settings_for(
        broker.bootstrap_servers,
        prefix,
        STREAMAL_STRATEGY__SELECTOR="kcenter",
        STREAMAL_STRATEGY__WINDOW="50",
        STREAMAL_KAFKA__MAX_BATCH_SIZE="20",  # windows span batches
    )
    options = connection_options(settings.kafka)
    registry = CollectorRegistry()
    stats = OracleStats()

    async def main() -> None:
        service = Service(settings, registry)
        run = asyncio.create_task(service.run())
        await _until(service.ready, 30, "readiness")
        stopping = asyncio.Event()
        oracle = oracle_for(options, prefix, truth, stopping, stats, delay_seconds=0.05)
        await replay(options, stream, topic_map={"samples": f"{prefix}samples"})

        await _until(_all_answered(registry, 400), 60, "every sample scored and every request answered")
        stopping.set()
        await oracle
        service.stop()
        assert await asyncio.wait_for(run, 30) == 0

    asyncio.run(main())
    predictions = [
        orjson.loads(m.value()) for m in read_all(broker.bootstrap_servers, f"{prefix}predictions", 400)
    ]
    asked_total = int(_value(registry, "streamal_label_requests_total"))
    requests = [
        orjson.loads(m.value())
        for m in read_all(broker.bootstrap_servers, f"{prefix}label-requests", asked_total + 1, timeout=5)
    ]
    assert len(predictions) == 400
    assert not any(p["queried"] for p in predictions)  # decided later, per window
    asked = {r["id"] for r in requests}
    assert len(asked) == len(requests) == asked_total  # each once, and nothing more within 5 s
    # 8 windows of 50 at budget 0.1: 5 picks per window; the policy gates them and may add one while its
    # spending is under its floor, within its budget estimate (10% slack for the estimate's window)
    assert 400 * 0.1 * 0.8 <= len(asked) <= 400 * 0.1 * 1.1
    assert asked <= {p["id"] for p in predictions}
    assert stats.answered == len(asked)
