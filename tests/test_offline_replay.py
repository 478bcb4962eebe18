"""Offline replay of recordings (``streamal.offline``): deterministic in recording time, and faithful to a
real service run on the embedded broker.

The faithful tests run the service in-process on the embedded broker, feed a real data set at a steady rate
while an oracle answers its label requests, record the topics with ``streamal.replay.record`` and check that
the offline replay makes the same label requests and the same predictions.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamal.broker import EmbeddedBroker
from streamal.cli import main
from streamal.config import Settings, load_settings
from streamal.datasets import load
from streamal.errors import ConfigError, DecodeError, StreamalError
from streamal.kafka.client import connection_options
from streamal.messages import decode_label, decode_sample, encode_outputs, label_request_message
from streamal.offline import EXIT_DIFFERS, OfflineRun, replay_offline, run_cli
from streamal.oracle import OracleStats
from streamal.replay import RecordedMessage, read_file, record, replay
from streamal.service import Service, build_engine
from tests.kafkatools import oracle_for, settings_for

T0 = 1_700_000_000_000  # ms: the recordings' first timestamp
DEFAULTS = load_settings(env={})  # the default settings, whatever STREAMAL_* variables say


@pytest.fixture
def no_streamal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_cli`` reads STREAMAL_* variables, as the service does: none here."""
    for name in list(os.environ):
        if name.startswith("STREAMAL_"):
            monkeypatch.delenv(name)


def _sample(i: int, record_id: str, features: dict[str, float], at: int) -> RecordedMessage:
    value = orjson.dumps({"id": record_id, "features": features})
    return RecordedMessage("samples", 0, i, at, record_id.encode(), value)


def _label(offset: int, record_id: str, label: Any, at: int) -> RecordedMessage:
    value = orjson.dumps({"id": record_id, "label": label})
    return RecordedMessage("labels", 0, offset, at, record_id.encode(), value)


def _write(path: Path, messages: list[RecordedMessage], extra_lines: tuple[bytes, ...] = ()) -> Path:
    with path.open("wb") as fh:
        for m in messages:
            fh.write(m.to_json() + b"\n")
        for line in extra_lines:
            fh.write(line + b"\n")
    return path


def _phishing_recording(path: Path, n: int = 400, gap: int = 50, delay: int = 1500) -> Path:
    """A recording of a real data set in the file format: a sample every ``gap`` ms, the true label of every
    sample ``delay`` ms after it (only those asked for can be applied), and bad input of every kind."""
    records = load("phishing", limit=n)
    samples = [_sample(i, r.id, r.features, T0 + gap * i) for i, r in enumerate(records)]
    labels = [_label(i, r.id, r.label, T0 + gap * i + delay) for i, r in enumerate(records)]
    bad_samples = [
        RecordedMessage("samples", 0, n, T0 + gap * n, b"bad-1", b'{"id": "bad-1", "features": {"x": NaN}}'),
        RecordedMessage("samples", 0, n + 1, T0 + gap * n, b"bad-2", b"\xff\xfe not utf-8"),
        RecordedMessage("samples", 0, n + 2, T0 + gap * n, b"bad-3", None),  # a tombstone
        RecordedMessage("samples", 0, n + 3, T0 + gap * n, b"bad-4", b'{"id": "bad-4", "features": [1]}'),
    ]
    bad_labels = [RecordedMessage("labels", 0, n, T0 + gap * n, b"x", b'{"id": "x", "label": 1.5}')]
    others = [RecordedMessage("dead-letters", 0, 0, T0, b"k", b"whatever", [("error", b"invalid_json: x")])]
    return _write(path, samples + labels + bad_samples + bad_labels + others, (b"not a record", b"[1, 2]"))


# -- recorded mode: deterministic in recording time ------------------------------------------------------
def test_recorded_mode_is_deterministic_and_follows_the_recording_time(tmp_path: Path) -> None:
    n, gap, delay = 400, 50, 1500
    path = _phishing_recording(tmp_path / "phishing.jsonl", n, gap, delay)
    first = replay_offline(path, DEFAULTS)
    again = replay_offline(path, DEFAULTS)
    assert first.mode == "recorded"
    assert first.decisions == again.decisions
    assert first.asked == again.asked
    assert first.summary() == again.summary()
    # each sample scored on its own, every valid one decided; the labels of the samples asked applied
    assert len(first.decisions) == n
    assert first.batches == n
    assert 0.05 * n <= len(first.asked) <= 0.2 * n
    assert first.outcomes["applied"] == len(first.asked) == first.labels_learned == first.model_version
    assert first.outcomes["unknown"] == n - len(first.asked)
    assert first.prequential_accuracy is not None
    assert first.prequential_accuracy > 0.6  # phishing: a model that learns (0.5 is chance)
    # the clock is the recording's: sample j was scored with the labels stamped before it, and only those
    asked_offsets = [d.offset for d in first.decisions if d.queried]
    for d in first.decisions:
        learned = sum(1 for i in asked_offsets if T0 + gap * i + delay < T0 + gap * d.offset)
        assert d.model_version == learned, d
        assert d.ts == (T0 + gap * d.offset) / 1000.0
    # bad input: the service's dead-letter reasons, with where each came from; bad lines listed, not raised
    reasons = {(d.topic, d.offset): d.reason for d in first.dead_letters}
    assert reasons == {
        ("samples", n): "non_finite",
        ("samples", n + 1): "invalid_encoding",
        ("samples", n + 2): "invalid_json",
        ("samples", n + 3): "invalid_schema",
        ("labels", n): "invalid_schema",
    }
    assert all(d.line is not None for d in first.dead_letters)
    assert [b.line for b in first.bad_lines] == [2 * n + 6 + 1, 2 * n + 6 + 2]
    assert first.ignored == {"dead-letters": 1}


def test_recorded_mode_gives_the_same_files_in_other_processes(tmp_path: Path) -> None:
    """The same recording, replayed by ``run_cli`` in two processes with other hash seeds: the same bytes."""
    path = _phishing_recording(tmp_path / "phishing.jsonl", n=300)
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out-{seed}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAL_")}
        env["PYTHONHASHSEED"] = seed
        code = f"from streamal.offline import run_cli; raise SystemExit(run_cli({str(path)!r}, {str(out)!r}))"
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert b"recorded replay: 300 of 304 samples decided" in done.stdout
        outs.append(out)
    for name in ("summary.json", "decisions.jsonl"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    lines = (outs[0] / "decisions.jsonl").read_bytes().splitlines()
    assert len(lines) == 300
    summary = orjson.loads((outs[0] / "summary.json").read_bytes())
    assert summary["mode"] == "recorded"
    assert summary["asked"] == len(summary["asked_ids"]) == sum(orjson.loads(x)["queried"] for x in lines)
    assert summary["dead_letters"] == {
        "non_finite": 1,
        "invalid_encoding": 1,
        "invalid_json": 1,
        "invalid_schema": 2,
    }


def test_time_to_live_ties_and_rate_limit_read_the_recording_time() -> None:
    settings = load_settings(env={"STREAMAL_PENDING__TTL_SECONDS": "1"})
    recording = [_sample(i, f"s{i}", {"x": float(i)}, T0 + 100 * i) for i in range(4)]
    recording += [
        _label(0, "s1", "a", T0 + 100),  # at the very time of its sample: samples come first, so applied
        _label(1, "s2", "b", T0 + 1100),  # 0.9 s after its request: applied
        _label(2, "s0", "a", T0 + 2000),  # 2 s after its request: expired (the wall clock saw milliseconds)
        _label(3, "s3", "b", T0 + 50),  # stamped before the label before it: at that one's time, expired
    ]
    run = replay_offline(recording, settings)
    assert run.asked == ["s0", "s1", "s2", "s3"]  # the warm start asks for the first ones
    assert run.outcomes["expired"] == 2
    assert run.outcomes["applied"] == 2
    assert [d.model_version for d in run.decisions] == [0, 0, 1, 1]
    # a labels-per-hour limit of one a second with a burst of one: samples 2 s apart are never held back by
    # it in recording time (the replay itself takes milliseconds: on the wall clock only the first would go)
    limited = load_settings(
        env={
            "STREAMAL_POLICY__NAME": "rate_limit",
            "STREAMAL_POLICY__BUDGET": "0.5",
            "STREAMAL_POLICY__PARAMS": '{"labels_per_hour": 3600, "burst": 1}',
        }
    )
    spaced = [_sample(i, f"s{i}", {"x": float(i % 7)}, T0 + 2000 * i) for i in range(60)]
    assert len(replay_offline(spaced, limited).asked) >= 20
    dense = [_sample(i, f"s{i}", {"x": float(i % 7)}, T0 + 10 * i) for i in range(60)]  # 0.6 s in all
    assert len(replay_offline(dense, limited).asked) == 1


def test_an_output_over_the_size_limit_is_a_dead_letter_and_its_request_withdrawn() -> None:
    big = RecordedMessage(
        "samples",
        0,
        0,
        T0,
        b"big",
        orjson.dumps({"id": "big", "features": {"x": 1.0}, "meta": {"blob": "x" * 1_048_000}}),
    )
    run = replay_offline(
        [big, _sample(1, "s1", {"x": 2.0}, T0 + 10), _label(0, "big", "a", T0 + 20)], DEFAULTS
    )
    assert [(d.offset, d.reason) for d in run.dead_letters] == [(0, "too_large")]
    assert [d.id for d in run.decisions] == ["s1"]
    assert run.asked == ["s1"]  # the request for "big" never went out
    assert run.outcomes["unknown"] == 1  # so its label answers nothing


# -- faithful mode, offline: a recorded replay's decisions published as predictions ----------------------
def _as_predictions(run: OfflineRun) -> list[RecordedMessage]:
    out = []
    for n, d in enumerate(run.decisions):
        value = orjson.dumps(
            {
                "id": d.id,
                "prediction": d.prediction,
                "proba": d.proba,
                "uncertainty": d.uncertainty,
                "model_version": d.model_version,
                "queried": d.queried,
                "ts": d.ts,
            },
            option=orjson.OPT_NON_STR_KEYS,
        )
        out.append(RecordedMessage("predictions", 0, n, int(d.ts * 1000), d.id.encode(), value))
    return out


@pytest.mark.usefixtures("no_streamal_env")
def test_faithful_mode_reproduces_published_decisions_and_says_where_they_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = _phishing_recording(tmp_path / "phishing.jsonl", n=300)
    original = replay_offline(recording, DEFAULTS)
    published = _as_predictions(original)
    with_predictions = tmp_path / "with-predictions.jsonl"
    with_predictions.write_bytes(recording.read_bytes() + b"".join(m.to_json() + b"\n" for m in published))
    run = replay_offline(with_predictions, DEFAULTS)
    assert run.mode == "faithful"
    assert run.comparison is not None
    assert run.comparison.reproduced, run.comparison.first_difference
    assert run.asked == original.asked
    assert [(d.id, d.prediction, d.queried, d.model_version) for d in run.decisions] == [
        (d.id, d.prediction, d.queried, d.model_version) for d in original.decisions
    ]
    assert run.comparison.requests_recorded is None  # no label-requests topic recorded: not compared
    assert run_cli(with_predictions, tmp_path / "out") == 0
    assert "reproduced" in capsys.readouterr().out
    # one prediction changed: the comparison finds it, and the command line says so with its exit code
    flipped = 7
    tampered = orjson.loads(published[flipped].value or b"")
    tampered["queried"] = not tampered["queried"]
    published[flipped].value = orjson.dumps(tampered)
    tampered_file = tmp_path / "tampered.jsonl"
    tampered_file.write_bytes(recording.read_bytes() + b"".join(m.to_json() + b"\n" for m in published))
    again = replay_offline(tampered_file, DEFAULTS)
    assert again.comparison is not None
    assert not again.comparison.reproduced
    assert again.comparison.predictions_equal == 299
    assert again.comparison.first_difference is not None
    assert repr(original.decisions[flipped].id) in again.comparison.first_difference
    assert run_cli(tampered_file) == EXIT_DIFFERS
    assert "NOT reproduced" in capsys.readouterr().out


@pytest.mark.usefixtures("no_streamal_env")
def test_run_cli_reports_a_wrong_setting_and_a_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [_sample(0, "s0", {"x": 1.0}, T0)])
    config = tmp_path / "c.yaml"
    config.write_text("topics:\n  samples: elsewhere\n")
    with pytest.raises(ConfigError, match="no record of the samples topic 'elsewhere'"):
        run_cli(path, None, config)
    with pytest.raises(StreamalError, match="cannot read the recording"):
        run_cli(tmp_path / "missing.jsonl")


# -- faithful mode against real service runs on the embedded broker ---------------------------------------
def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _service_run(broker: EmbeddedBroker, prefix: str, out: Path, partitions: int, n: int) -> dict[str, float]:
    """Run the service in-process on ``n`` image segments fed at a steady rate (a sample every 15 ms), answer
    its label requests after 0.1 s, stop it once everything is answered, and record its four topics."""
    settings = settings_for(broker.bootstrap_servers, prefix, STREAMAL_KAFKA__PARTITIONS=str(partitions))
    options = connection_options(settings.kafka)
    records = load("image_segments", limit=n)
    truth = {r.id: r.label for r in records}
    stream = [_sample(i, r.id, r.features, T0 + 15 * i) for i, r in enumerate(records)]
    registry = CollectorRegistry()

    def settled() -> bool:
        asked = _value(registry, "streamal_label_requests_total")
        return (
            _value(registry, "streamal_samples_total") == n
            and asked > 0
            and _value(registry, "streamal_labels_total", outcome="applied") == asked
        )

    async def main() -> int:
        service = Service(settings, registry)
        run = asyncio.create_task(service.run())
        deadline = time.monotonic() + 30
        while not service.ready():
            assert time.monotonic() < deadline, "the service was not ready in 30 s"
            assert not run.done(), run
            await asyncio.sleep(0.1)
        stopping, ready = asyncio.Event(), asyncio.Event()
        oracle = oracle_for(options, prefix, truth, stopping, OracleStats(), delay_seconds=0.1, ready=ready)
        try:
            await asyncio.wait_for(ready.wait(), 30)  # answering from the first request on
            # keyed by id: the producer spreads them over the partitions (the recorded ones are ignored)
            await replay(options, stream, speed=1.0, topic_map={"samples": f"{prefix}samples"})
            deadline = time.monotonic() + 30
            while not settled():
                assert time.monotonic() < deadline, "not every sample scored and request answered in 30 s"
                await asyncio.sleep(0.1)
        finally:
            # the oracle first: an assertion of the run's exit code must not leave it running, nor hide the
            # error that brought us here
            stopping.set()
            service.stop()
            await asyncio.wait_for(oracle, 15)
            code = await asyncio.wait_for(run, 15)
        assert code == 0
        topics = [f"{prefix}{t}" for t in ("samples", "labels", "predictions", "label-requests")]
        with out.open("wb") as fh:
            return await record(options, topics, fh, idle_seconds=5)

    recorded = asyncio.run(main())
    asked = _value(registry, "streamal_label_requests_total")
    assert recorded == 2 * n + 2 * asked
    return {"asked": asked, "version": _value(registry, "streamal_model_version")}


def _prefixed(prefix: str) -> Settings:
    settings: Settings = settings_for("127.0.0.1:9", prefix)  # the topics' names; no broker is contacted
    return settings


@pytest.mark.kafka
def test_faithful_replay_reproduces_a_one_partition_service_run(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path
) -> None:
    n = 300
    path = tmp_path / "run.jsonl"
    live = _service_run(broker, prefix, path, partitions=1, n=n)
    predictions = [orjson.loads(m.value or b"") for m in read_file(path) if m.topic == f"{prefix}predictions"]
    requested = [orjson.loads(m.value or b"")["id"] for m in read_file(path) if m.topic.endswith("requests")]
    # the run learned while it scored: many batches, scored with many model versions
    assert len({p["ts"] for p in predictions}) >= 10
    assert len({p["model_version"] for p in predictions}) >= 10

    run = replay_offline(path, _prefixed(prefix))
    c = run.comparison
    assert run.mode == "faithful"
    assert c is not None
    assert c.requests_order == "exact"
    assert c.reproduced, (c.as_dict(), run.notes)
    assert run.asked == requested  # every label request, in order
    assert c.requests_recorded == live["asked"]
    assert c.predictions_equal == c.predictions_recorded == n  # class, queried flag and model version
    assert [d.id for d in run.decisions] == [p["id"] for p in predictions]
    assert [(d.prediction, d.queried) for d in run.decisions] == [
        (p["prediction"], p["queried"]) for p in predictions
    ]
    assert c.max_proba_difference < 1e-9  # the same batches: the same float32 products
    assert run.batches == len({p["ts"] for p in predictions})
    assert run.model_version == live["version"]
    assert run.outcomes["applied"] == live["asked"]
    assert not run.dead_letters
    assert not run.unscored


@pytest.mark.kafka
def test_faithful_replay_reproduces_a_three_partition_service_run(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path
) -> None:
    """With three partitions a fetched batch holds samples of several partitions, and the labels come from
    several: the worker processes a batch's partitions in ascending order (whatever order the consumer
    returns them in), so the replay scores each recorded batch in that order and reproduces every request,
    in order, and every prediction, with no search and nothing taken from the recorded decisions."""
    n = 300
    path = tmp_path / "run.jsonl"
    live = _service_run(broker, prefix, path, partitions=3, n=n)
    messages = list(read_file(path))
    where = {m.key: (m.partition, m.offset) for m in messages if m.topic == f"{prefix}samples"}
    assert {p for p, _ in where.values()} == {0, 1, 2}
    assert len({m.partition for m in messages if m.topic == f"{prefix}labels"}) > 1
    predictions = [orjson.loads(m.value or b"") for m in messages if m.topic == f"{prefix}predictions"]
    # the batches of several partitions: the service scored each in ascending order of partition
    batches: dict[float, set[int]] = {}
    for p in predictions:
        batches.setdefault(p["ts"], set()).add(where[p["id"].encode()][0])
    assert sum(len(parts) > 1 for parts in batches.values()) >= 5
    # the recorded requests in the order the service made them: by time, then by where their sample is
    requests = [orjson.loads(m.value or b"") for m in messages if m.topic == f"{prefix}label-requests"]
    requests.sort(key=lambda r: (r["requested_at"], where[r["id"].encode()]))
    requested = [r["id"] for r in requests]

    run = replay_offline(path, _prefixed(prefix))
    c = run.comparison
    assert run.mode == "faithful"
    assert c is not None
    assert c.reproduced, (c.as_dict(), run.notes)
    assert run.asked == requested  # every label request, in the order made
    assert c.requests_order == "by time"
    assert c.requests_recorded == c.requests_in_order == live["asked"]
    assert c.predictions_equal == c.predictions_recorded == n  # class, queried flag and model version
    recorded = {p["id"]: (p["prediction"], p["queried"], p["model_version"]) for p in predictions}
    assert {d.id: (d.prediction, d.queried, d.model_version) for d in run.decisions} == recorded
    assert c.max_proba_difference < 1e-9  # the same batches, in the same order: the same float32 products
    assert run.batches == len(batches)
    assert run.model_version == live["version"]
    assert run.outcomes["applied"] == live["asked"]
    assert not run.dead_letters
    assert not run.unscored


def test_damaged_recordings_are_reported_never_raised(tmp_path: Path) -> None:
    """Lines cut short, bytes changed, records repeated: every damaged file is replayed (or refused for
    having no samples at all), its damage counted; none raises anything else."""
    recording = _phishing_recording(tmp_path / "phishing.jsonl", n=40)
    original = replay_offline(recording, DEFAULTS)
    published = b"".join(m.to_json() + b"\n" for m in _as_predictions(original))
    requests = b"".join(
        RecordedMessage(
            "label-requests", 0, n, None, i.encode(), orjson.dumps({"id": i, "requested_at": t})
        ).to_json()
        + b"\n"
        for n, (i, t) in enumerate(zip(original.asked, original.asked_at, strict=True))
    )
    lines = (recording.read_bytes() + published + requests).splitlines()
    rng = random.Random(7)
    damaged = tmp_path / "damaged.jsonl"
    replayed = bad_lines = 0
    for _ in range(60):
        out = []
        for line in lines:
            roll = rng.random()
            if roll < 0.05:
                line = line[: rng.randrange(len(line))]
            elif roll < 0.1:
                at = rng.randrange(len(line))
                line = line[:at] + bytes([rng.randrange(256)]) + line[at + 1 :]
            elif roll < 0.13:
                out.append(line)  # repeated
            out.append(line)
        damaged.write_bytes(b"\n".join(out) + b"\n")
        try:
            run = replay_offline(damaged, DEFAULTS)
        except ConfigError:  # no sample left at all
            continue
        replayed += 1
        bad_lines += len(run.bad_lines)
        assert run.mode == "faithful"
        assert run.comparison is not None
        # every sample record accounted for once: decided, not scored (no prediction), or a dead letter
        dead = sum(d.topic == "samples" for d in run.dead_letters)
        assert len(run.decisions) + len(run.unscored) + dead == run.samples
        summary = orjson.loads((run.write(tmp_path / "out") / "summary.json").read_bytes())
        assert summary["samples"] == run.samples
    assert replayed >= 50
    assert bad_lines > 0


# -- faithful mode: its edges ----------------------------------------------------------------------------
def _big_meta_stream(n: int, big: set[int]) -> tuple[list[RecordedMessage], list[RecordedMessage]]:
    """``n`` phishing samples 50 ms apart, those of ``big`` with a meta that makes a label request over the
    size limit (the sample itself is not), and every sample's label 1.5 s after it."""
    records = load("phishing", limit=n)
    samples, labels = [], []
    for i, r in enumerate(records):
        value: dict[str, Any] = {"id": r.id, "features": r.features}
        if i in big:
            value["meta"] = {"blob": "x" * 1_047_400}
        samples.append(RecordedMessage("samples", 0, i, T0 + 50 * i, r.id.encode(), orjson.dumps(value)))
        labels.append(_label(i, r.id, r.label, T0 + 50 * i + 1500))
    return samples, labels


def _service_like(
    samples: list[RecordedMessage], labels: list[RecordedMessage], settings: Settings, size: int
) -> list[RecordedMessage]:
    """What an all-in-one service publishes for ``samples`` fetched ``size`` at a time (each fetch with the
    labels stamped before its last sample), driven as ``Worker._handle`` drives the engine: the labels
    learned, the batch scored, each output checked (``encode_outputs``) and dead-lettered with its headers
    (the request withdrawn), the requests of a window taken. Its predictions, label requests, dead letters."""
    now = [0.0]
    engine = build_engine(settings, clock=lambda: now[0], role="all")
    strategy, windowed = engine.strategy.name, engine.selector is not None
    out: list[RecordedMessage] = []
    offsets: Counter[str] = Counter()

    def publish(topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        stamp = int(now[0] * 1000) + 1  # a millisecond after the batch's clock reading
        out.append(RecordedMessage(topic, 0, offsets[topic], stamp, key, value, headers or []))
        offsets[topic] += 1

    learned = 0
    for start in range(0, len(samples), size):
        fetch = samples[start : start + size]
        at = fetch[-1].timestamp or 0
        now[0] = at / 1000.0 + 0.0004
        while learned < len(labels) and (labels[learned].timestamp or 0) < at:
            engine.learn(decode_label(labels[learned].value))
            learned += 1
        for d, m in zip(engine.score([decode_sample(m.value) for m in fetch]), fetch, strict=True):
            key = d.sample.id.encode()
            try:
                prediction, request = encode_outputs(d, len(m.value or b""), strategy, windowed)
            except DecodeError as exc:
                headers = [
                    ("error.reason", exc.reason.encode()),
                    ("source.topic", m.topic.encode()),
                    ("source.partition", str(m.partition).encode()),
                    ("source.offset", str(m.offset).encode()),
                ]
                publish("dead-letters", key, (m.value or b"")[:65_536], headers)
                if d.queried or windowed:
                    engine.withdraw(d.sample.id)
                continue
            publish("predictions", key, prediction)
            if d.queried and request is not None:
                publish("label-requests", key, request)
        for d in engine.take_requests():
            request = label_request_message(
                d.sample, d.prediction, d.proba, d.utility, strategy, d.model_version, d.ts
            )
            publish("label-requests", d.sample.id.encode(), request)
    return out


WINDOWED = load_settings(env={"STREAMAL_STRATEGY__SELECTOR": "kcenter", "STREAMAL_STRATEGY__WINDOW": "5"})


@pytest.mark.parametrize("settings", [DEFAULTS, WINDOWED], ids=["biqf", "kcenter-window"])
def test_faithful_scores_the_samples_the_original_dead_lettered_after_scoring_them(
    settings: Settings,
) -> None:
    """The worker scores a batch (spending the policy's budget, filling a window) and only then dead-letters
    a sample whose output is over the size limit: the replay scores it in its batch, and dead-letters it
    again. Before, it was left out ("unscored") and the policy's state went another way from there on."""
    # fetches of five: 22 and 24 at the end of a fetch, 37 and 64 inside one, 40 at the start of one
    big = {22, 24, 37, 40, 64}
    samples, labels = _big_meta_stream(300, big)
    published = _service_like(samples, labels, settings, size=5)
    dead = [m for m in published if m.topic == "dead-letters"]
    assert dead, "the service dead-letters some output"
    dead_offsets = sorted(int(dict(m.headers)["source.offset"]) for m in dead)
    # with its dead letters recorded; then without them (where each is between the samples of its partition)
    for recording, exact in ((samples + labels + published, True), (samples + labels, False)):
        if not exact:
            recording += [m for m in published if m.topic != "dead-letters"]
        run = replay_offline(recording, settings)
        c = run.comparison
        assert run.mode == "faithful"
        assert c is not None
        assert [(d.offset, d.reason) for d in run.dead_letters] == [(o, "too_large") for o in dead_offsets]
        assert not run.unscored
        assert run.ignored == {}
        if exact or 40 not in dead_offsets:  # without its dead letter, 40 is taken to be in the fetch before
            assert c.reproduced, (c.as_dict(), run.notes)
            assert c.requests_order == "exact"
            assert c.max_proba_difference < 1e-9


def test_faithful_scores_a_dead_lettered_sample_of_a_recorded_run_between_its_neighbours() -> None:
    """The reviewer's big.py: a recorded-mode replay (each sample a batch of its own) stands for the
    original; one of its ten samples with a large meta was asked for, and its request was too large."""
    samples, labels = _big_meta_stream(300, set(range(20, 30)))
    original = replay_offline(samples + labels, DEFAULTS)
    assert [d.reason for d in original.dead_letters] == ["too_large"]
    run = replay_offline(samples + labels + _as_predictions(original), DEFAULTS)
    assert run.comparison is not None
    assert run.comparison.reproduced, run.comparison.as_dict()
    assert [(d.offset, d.reason) for d in run.dead_letters] == [(23, "too_large")]  # as the original's
    assert run.asked == original.asked
    # a sample after the last one scored in its partition, with no dead letter: the recording ended first
    late = _sample(300, "late", {"x": 1.0}, T0 + 50 * 300)
    ended = replay_offline(samples + labels + [late] + _as_predictions(original), DEFAULTS)
    assert ended.unscored == ["late"]
    assert ended.comparison is not None
    assert ended.comparison.reproduced


def _early_label_recording() -> list[RecordedMessage]:
    recording = [
        _sample(i, f"s{i}", {"x": x}, T0 + 1000 * i) for i, x in enumerate((0.0, 5.0, 10.0, 9.0, 1.0))
    ]
    # s2's label comes before s2 is scored (unknown in the original), s0's after
    return [*recording, _label(0, "s2", "high", T0 + 1500), _label(1, "s0", "low", T0 + 2500)]


def test_faithful_learns_a_label_that_came_before_its_sample_where_it_came() -> None:
    recording = _early_label_recording()
    original = replay_offline(recording, DEFAULTS)
    assert original.outcomes["unknown"] == 1  # s2's label: its sample was not scored yet
    run = replay_offline(recording + _as_predictions(original), DEFAULTS)
    assert run.outcomes == original.outcomes  # before: s2's label applied later, and s3, s4 predicted "high"
    assert run.comparison is not None
    assert run.comparison.reproduced, run.comparison.as_dict()
    assert [d.prediction for d in run.decisions] == [d.prediction for d in original.decisions]


def test_faithful_tells_a_sample_id_sent_twice_apart_by_where_it_is() -> None:
    """The reviewer's dup.py: s1 sent twice, predicted "a" then "b"; keyed by id, the two were one."""
    recording = [
        _sample(0, "s0", {"x": 0.0}, T0),
        _sample(1, "s1", {"x": 5.0}, T0 + 1000),
        _sample(2, "s1", {"x": 5.0}, T0 + 3000),
        _sample(3, "s3", {"x": 5.0}, T0 + 4000),
        _label(0, "s0", "a", T0 + 500),
        _label(1, "s1", "b", T0 + 2000),
    ]
    original = replay_offline(recording, DEFAULTS)
    assert [(d.id, d.prediction) for d in original.decisions][1:3] == [("s1", "a"), ("s1", "b")]
    run = replay_offline(recording + _as_predictions(original), DEFAULTS)
    assert run.comparison is not None
    assert run.comparison.reproduced, run.comparison.listed
    assert run.comparison.predictions_equal == 4


@pytest.mark.usefixtures("no_streamal_env")
def test_faithful_with_no_prediction_compared_is_not_reproduced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Predictions that cannot be read, or of another run's samples: 0 of 0 compared is no reproduction."""
    samples = [_sample(i, f"s{i}", {"x": float(i % 3)}, T0 + 100 * i) for i in range(5)]
    unreadable = RecordedMessage("predictions", 0, 0, T0, b"k", b"garbage")
    others = _as_predictions(replay_offline([_sample(0, "other", {"x": 1.0}, T0)], DEFAULTS))
    for predictions in ([unreadable], others):
        path = _write(tmp_path / "r.jsonl", samples + predictions)
        run = replay_offline(path, DEFAULTS)
        assert run.mode == "faithful"
        assert run.comparison is not None
        assert run.comparison.predictions_recorded == 0
        assert not run.comparison.reproduced  # before: reproduced, exit 0
        assert run_cli(path) == EXIT_DIFFERS
        assert "NOT reproduced" in capsys.readouterr().out
        assert "no recorded prediction was compared" in (run.comparison.first_difference or "")


@pytest.mark.usefixtures("no_streamal_env")
def test_run_cli_refuses_an_out_it_cannot_write_before_replaying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "r.jsonl", [_sample(0, "s0", {"x": 1.0}, T0)])
    a_file = tmp_path / "a-file"
    a_file.write_text("")

    def no_replay(*args: object, **kwargs: object) -> OfflineRun:
        raise AssertionError("replayed before --out was checked")

    monkeypatch.setattr("streamal.offline.replay_offline", no_replay)
    for out in (a_file, a_file / "below", Path("/proc/streamal-out")):
        with pytest.raises(ConfigError, match=rf"^--out {out}: cannot write it \("):
            run_cli(path, out)  # before: a traceback, after the whole replay


@pytest.mark.usefixtures("no_streamal_env")
def test_a_predictions_topic_of_another_name_is_reported_and_mode_decides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reviewer's ign.py: predictions recorded as ``dev-predictions`` while the settings say
    ``predictions``: silently a recorded replay, exit 0, before."""
    samples = [_sample(i, f"s{i}", {"x": float(i)}, T0 + 100 * i) for i in range(3)]
    renamed = [
        RecordedMessage("dev-predictions", m.partition, m.offset, m.timestamp, m.key, m.value)
        for m in _as_predictions(replay_offline(samples, DEFAULTS))
    ]
    path = _write(tmp_path / "r.jsonl", samples + renamed)
    assert run_cli(path) == 0
    out = capsys.readouterr().out
    assert out.startswith("recorded replay")
    assert "ignored: dev-predictions 3\n" in out
    with pytest.raises(ConfigError, match=r"predictions topic 'predictions'.*STREAMAL_TOPICS__PREDICTIONS"):
        run_cli(path, mode="faithful")
    assert main(["replay", "--offline", str(path), "--mode", "faithful"]) == 2
    assert "topics.predictions" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("topics:\n  predictions: dev-predictions\n")
    assert main(["replay", "--offline", str(path), "--config", str(config), "--mode", "faithful"]) == 0
    assert "reproduced" in capsys.readouterr().out
    assert main(["replay", "--offline", str(path), "--config", str(config), "--mode", "recorded"]) == 0
    assert "ignored: dev-predictions 3\n" in capsys.readouterr().out


@pytest.mark.usefixtures("no_streamal_env")
def test_a_file_with_no_recorded_message_is_one_error_naming_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(b"\n" + b'{"x": 1}\n' + b"not json\n")
    with pytest.raises(StreamalError, match=rf"^{path}: no line is a recorded message .*line 2: ") as caught:
        replay_offline(path, DEFAULTS)
    assert not isinstance(caught.value, ConfigError)  # before: "no record of the samples topic"
