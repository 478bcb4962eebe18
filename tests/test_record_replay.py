"""``streamal record`` and ``streamal replay`` at their edges: a recording out of time order, a topic the
cluster refuses, too few partitions, a recording stopped by SIGTERM, and the flags and files refused
before anything is sent."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamal.broker import EmbeddedBroker, free_port
from streamal.cli import main
from streamal.config import KafkaSettings
from streamal.errors import StreamalError
from streamal.kafka.client import connection_options, ensure_topics
from streamal.replay import RecordedMessage, scan
from tests.kafkatools import produce, read_all

T0 = 1_700_000_000_000


def _write(path: Path, messages: list[RecordedMessage]) -> Path:
    path.write_bytes(b"".join(m.to_json() + b"\n" for m in messages))
    return path


def _as_record_writes_it(
    n: int = 90, partitions: int = 3, gap_ms: int = 40, run: int = 5
) -> list[RecordedMessage]:
    """``n`` messages sent ``gap_ms`` apart, message i to partition i % ``partitions``, laid out as ``record``
    writes them: a fetched batch (``run`` lines) of one partition after another, the last partition first,
    so that most lines are stamped earlier than some line before them."""
    by_partition: dict[int, list[RecordedMessage]] = {p: [] for p in range(partitions)}
    for i in range(n):
        p = i % partitions
        by_partition[p].append(
            RecordedMessage(
                "samples", p, len(by_partition[p]), T0 + gap_ms * i, f"m{i:03d}".encode(), b"v", []
            )
        )
    lines: list[RecordedMessage] = []
    for start in range(0, n, run):
        for p in reversed(range(partitions)):
            lines += by_partition[p][start : start + run]
    assert len(lines) == n
    return lines


def _topic(broker: EmbeddedBroker, name: str, partitions: int) -> str:
    asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers), [name], partitions))
    return name


def test_time_order_merges_the_partitions_and_says_where_lines_without_a_time_go(tmp_path: Path) -> None:
    lines = _as_record_writes_it(n=30, run=4)
    path = _write(tmp_path / "rec.jsonl", lines)
    recording = scan(path)
    assert recording.count == 30
    assert recording.topics == {"samples": 2}
    stamps = [m.timestamp or 0 for m in lines]
    assert sum(1 for i in range(1, 30) if stamps[i] < max(stamps[:i])) > 15  # out of time order
    assert [m.key for m in recording.in_time_order()] == [f"m{i:03d}".encode() for i in range(30)]
    assert [m.key for m in recording.in_file_order()] == [m.key for m in lines]

    # no timestamp: right after the line before it in its (topic, partition), or at the start when none
    # there has one; stamped earlier than the line before it in its partition: right after that line too;
    # lines of the same time go in file order
    def m(key: str, partition: int, ts: int | None, topic: str = "samples") -> RecordedMessage:
        return RecordedMessage(topic, partition, 0, ts, key.encode(), b"v", [])

    tricky = [
        m("a0", 0, 100),
        m("a1", 0, None),
        m("a2", 0, 50),  # stamped before a0: goes right after a1
        m("a3", 0, 300),
        m("b0", 1, None),  # no time, first of its partition: at the start
        m("b1", 1, 200),
        m("b2", 1, 300),  # same time as a3, later in the file
        m("c0", 0, 100, topic="labels"),  # same time as a0, later in the file
    ]
    path = _write(tmp_path / "tricky.jsonl", tricky)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\n\n", 3))  # blank lines are skipped
    recording = scan(path)
    assert recording.topics == {"samples": 1, "labels": 0}
    assert [m.key.decode() for m in recording.in_time_order() if m.key] == [
        "b0",
        "a0",
        "a1",
        "a2",
        "c0",
        "b1",
        "a3",
        "b2",
    ]


def test_time_order_reads_many_partitions_interleaved_line_by_line(tmp_path: Path) -> None:
    # the worst layout for the readers (each line a run of its own), and lines longer than a reader's block
    lines = [
        RecordedMessage(
            "t",
            i % 7,
            i // 7,
            T0 + (i * 37) % 101 + 1000 * (i // 7),
            f"{i}".encode(),
            os.urandom(9000 if i % 5 == 0 else 10).hex().encode(),
            [],
        )
        for i in range(700)
    ]
    recording = scan(_write(tmp_path / "many.jsonl", lines))
    order = list(recording.in_time_order())
    assert sorted(m.key for m in order) == sorted(m.key for m in lines)  # type: ignore[type-var]
    assert [m.value for m in order if m.key == b"5"] == [lines[5].value]
    for p in range(7):  # each partition in its own order
        assert [m.key for m in order if m.partition == p] == [m.key for m in lines if m.partition == p]
    times = [m.timestamp or 0 for m in order]
    assert times == sorted(times)  # each partition's times go up, so the merge is in time order
    assert times != [m.timestamp for m in lines]


@pytest.mark.kafka
def test_replay_sends_a_recording_out_of_time_order_in_time_order_at_its_own_times(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path
) -> None:
    lines = _as_record_writes_it()  # 90 messages over 3.56 s
    path = _write(tmp_path / "rec.jsonl", lines)
    speed = 8.0  # 445 ms
    for dest, flags in ((f"{prefix}timed", ["--speed", str(speed)]), (f"{prefix}at-once", [])):
        _topic(broker, dest, 1)  # one partition: its offsets are the order of arrival
        started = time.monotonic()
        code = main(
            [
                "replay",
                "--bootstrap-servers",
                broker.bootstrap_servers,
                str(path),
                "--topic-map",
                f"samples={dest}",
                *flags,
            ]
        )
        assert code == 0
        assert time.monotonic() - started < 30
        got = read_all(broker.bootstrap_servers, dest, 90, timeout=30)
        assert [g.key() for g in got] == [f"m{i:03d}".encode() for i in range(90)], dest
        if flags:
            # each sent at its own time after the earliest one, divided by the speed
            sent = [g.timestamp()[1] for g in got]
            errors = [abs((s - sent[0]) - 40 * i / speed) for i, s in enumerate(sent)]
            # bounds a loaded 2-core machine meets, and a replay that ignores the timestamps does not: sent
            # at once, the span is near 0 and the median error near 220 ms (a replay that drifted: 171 ms)
            assert statistics.median(errors) <= 100, errors
            assert 445 / 2 <= sent[-1] - sent[0] <= 445 + 1500, sent[-1] - sent[0]


def test_replay_offline_refuses_the_flags_of_a_replay_into_kafka_and_mode_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--speed`` (even ``--speed 0``, the default of a replay into Kafka) has no meaning offline, nor has
    ``--mode`` without ``--offline``: each is one line, exit 2, before anything is read or sent."""
    path = _write(tmp_path / "rec.jsonl", [RecordedMessage("samples", 0, 0, T0, b"k", b"v", [])])
    for flags, says in (
        (["--offline", "--speed", "0"], "--speed: not with --offline"),
        (["--offline", "--speed", "2"], "--speed: not with --offline"),
        (["--mode", "faithful"], "--mode goes with --offline"),
    ):
        assert main(["replay", str(path), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert says in err, err
    with pytest.raises(SystemExit):
        main(["replay", "--offline", str(path), "--mode", "exact"])  # not a choice: argparse says so
    assert "invalid choice: 'exact'" in capsys.readouterr().err


def test_a_topic_name_kafka_refuses_is_one_line_before_anything_is_sent(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "rec.jsonl", [RecordedMessage("samples", 0, 0, T0, b"k", b"v", [])])
    bootstrap = f"127.0.0.1:{free_port()}"  # nobody listens: the name is refused before connecting
    for name, says in (("bad topic!", "characters"), ("x" * 250, "249"), ("..", "'.' or '..'")):
        assert (
            main(["replay", "--bootstrap-servers", bootstrap, str(path), "--topic-map", f"samples={name}"])
            == 2
        )
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert repr(name) in err
        assert says in err
    path = _write(tmp_path / "odd.jsonl", [RecordedMessage("my samples", 0, 0, T0, b"k", b"v", [])])
    assert main(["replay", "--bootstrap-servers", bootstrap, str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "'my samples'" in err
    assert "--topic-map" in err


@pytest.mark.kafka
def test_a_topic_the_cluster_refuses_is_one_line_naming_it_and_the_error(broker: EmbeddedBroker) -> None:
    from aiokafka import AIOKafkaProducer

    from streamal.replay import _partition_counts

    async def ask() -> dict[str, int]:
        producer = AIOKafkaProducer(
            **connection_options(KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
        )
        await producer.start()
        try:
            return await _partition_counts(producer, ["bad topic!"], seconds=5)
        finally:
            await producer.stop()

    started = time.monotonic()
    with pytest.raises(
        StreamalError, match=r"^cannot write to topic 'bad topic!': InvalidTopicError"
    ) as caught:
        asyncio.run(ask())
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 20


@pytest.mark.kafka
def test_keep_partitions_refuses_a_topic_with_fewer_partitions(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path, capsys
) -> None:
    path = _write(tmp_path / "rec.jsonl", _as_record_writes_it(n=9))  # partitions 0, 1, 2
    dest = _topic(broker, f"{prefix}narrow", 2)
    argv = [
        "replay",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        str(path),
        "--topic-map",
        f"samples={dest}",
    ]
    assert main([*argv, "--keep-partitions"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"'{dest}' has 2 partitions" in err
    assert "partition 2" in err
    assert read_all(broker.bootstrap_servers, dest, 1, timeout=2) == []  # nothing was sent
    assert main(argv) == 0  # partitioned by key, it fits
    assert len(read_all(broker.bootstrap_servers, dest, 9, timeout=30)) == 9


@pytest.mark.kafka
def test_record_follow_stopped_by_sigterm_keeps_every_message_and_says_so(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path
) -> None:
    topic = _topic(broker, f"{prefix}followed", 3)
    n = 600
    produce(broker.bootstrap_servers, topic, [(f"k{i}".encode(), b"x" * 100) for i in range(n)])
    out = tmp_path / "followed.jsonl"
    command = [
        sys.executable,
        "-m",
        "streamal",
        "record",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--topic",
        topic,
        "--out",
        str(out),
        "--follow",
        "--idle-seconds",
        "60",
    ]

    def lines() -> int:
        return out.read_bytes().count(b"\n") if out.exists() else 0

    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 20  # every fetched batch is on disk as soon as it is written
            while lines() < n and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            assert lines() == n, f"{lines()} of {n} lines on disk while recording"
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 0, stderr
    assert f"recorded {n} messages from {topic} to {out}" in stdout
    assert "SIGTERM" in stdout
    assert "Traceback" not in stderr
    assert scan(out).count == n


def test_record_to_a_file_that_cannot_be_written_is_a_configuration_error(tmp_path: Path, capsys) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    for out in (tmp_path / "missing" / "x.jsonl", tmp_path):
        assert (
            main(["record", "--bootstrap-servers", bootstrap, "--topic", "samples", "--out", str(out)]) == 2
        )
        err = capsys.readouterr().err
        assert err.startswith(f"streamal: configuration error: --out {out}: cannot write it"), err
        assert len(err.strip().splitlines()) == 1, err


def test_a_negative_speed_is_refused_and_an_empty_recording_is_a_warning(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "rec.jsonl", [RecordedMessage("samples", 0, 0, T0, b"k", b"v", [])])
    bootstrap = f"127.0.0.1:{free_port()}"  # nobody listens: these are refused before connecting
    for speed in ("-1", "nan", "inf"):
        assert main(["replay", "--bootstrap-servers", bootstrap, str(path), f"--speed={speed}"]) == 2
        assert f"--speed {float(speed)}: " in capsys.readouterr().err
    for content in (b"", b"\n  \n\n"):
        (tmp_path / "empty.jsonl").write_bytes(content)
        assert main(["replay", "--bootstrap-servers", bootstrap, str(tmp_path / "empty.jsonl")]) == 0
        captured = capsys.readouterr()
        assert "replayed 0 messages" in captured.out
        assert "warning:" in captured.err
        assert "nothing was replayed" in captured.err


def test_a_negative_partition_is_not_a_recorded_message(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_bytes(b'{"topic": "samples", "partition": -1, "value": "v"}\n')
    with pytest.raises(
        StreamalError, match=r"rec.jsonl:1: not a recorded message \(partition must be 0 or more"
    ):
        scan(path)


# -- replay --offline: the command line around streamal.offline.run_cli ----------------------------------
def _offline_recording(path: Path) -> Path:
    """Eight samples (x in 0..3) and three labels, stamped a second apart: a recording without Kafka."""
    samples = [
        RecordedMessage("samples", 0, i, T0 + 1000 * i, f"s{i}".encode(), f'{{"id": "s{i}", "features": '
                        f'{{"x": {i % 4}}}}}'.encode())
        for i in range(8)
    ]  # fmt: skip
    labels = [
        RecordedMessage(
            "labels", 0, n, T0 + at, f"s{i}".encode(), f'{{"id": "s{i}", "label": "{y}"}}'.encode()
        )
        for n, (i, y, at) in enumerate([(0, "low", 500), (1, "low", 1500), (3, "high", 3500)])
    ]
    return _write(path, samples + labels)


def test_replay_offline_from_the_command_line(tmp_path, capsys, monkeypatch):
    for name in [k for k in os.environ if k.startswith("STREAMAL_")]:
        monkeypatch.delenv(name)
    recording = _offline_recording(tmp_path / "run.jsonl")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["replay", "--offline", str(recording), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 of 8 samples decided" in printed
    assert "labels: applied 3" in printed
    # the same result on every run, byte for byte
    for name in ("summary.json", "decisions.jsonl"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    # flags of a replay into Kafka are refused with --offline, and --offline's own without it
    assert main(["replay", "--offline", str(recording), "--speed", "2", "--topic-map", "a=b"]) == 2
    assert "--speed, --topic-map: not with --offline" in capsys.readouterr().err
    assert main(["replay", str(recording), "--out", str(tmp_path / "c")]) == 2
    assert "--out and --config go with --offline" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
