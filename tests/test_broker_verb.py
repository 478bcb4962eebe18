"""``streamal broker``: the embedded broker in the foreground, for trying ``streamal run`` on one machine;
and the Kafka tools' errors at the command line (``record``, ``replay``) without a traceback."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamal.broker import free_port
from streamal.cli import main
from streamal.replay import RecordedMessage


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_the_broker_verb_serves_kafka_until_interrupted_and_stops_its_broker() -> None:
    port = free_port()
    command = [sys.executable, "-m", "streamal", "broker", "--port", str(port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # printed once the broker listens
            assert f"on 127.0.0.1:{port}" in line, line
            found = re.search(r"pid (\d+)", line)
            assert found, line
            broker_pid = int(found.group(1))
            assert asyncio.run(_round_trip(f"127.0.0.1:{port}")) == b"world"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0
            assert _gone(broker_pid, within=10), "the broker process outlived the verb"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


async def _round_trip(bootstrap: str) -> bytes | None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("hello", b"world")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer("hello", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    value: bytes | None = record.value
    return value


def test_the_broker_verb_refuses_a_port_in_use(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["broker", "--port", str(taken.getsockname()[1])]) == 2
    assert "is already in use" in capsys.readouterr().err


def test_a_bad_recording_is_refused_before_anything_is_sent(tmp_path: Path, capsys) -> None:
    good = RecordedMessage("samples", 0, 0, 1, b"k", b"v", []).to_json()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(good + b"\n" + b'{"topic": "samples", "headers": [["h"]]}\n')
    # nobody listens there: had the file been accepted, the error would be the unreachable cluster
    assert main(["replay", "--bootstrap-servers", f"127.0.0.1:{free_port()}", str(path)]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2: not a recorded message" in err
    assert "Traceback" not in err


def test_an_unreachable_cluster_is_one_line_for_record_and_replay(tmp_path: Path, capsys) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    path = tmp_path / "ok.jsonl"
    path.write_bytes(RecordedMessage("samples", 0, 0, 1, b"k", b"v", []).to_json() + b"\n")
    assert main(["replay", "--bootstrap-servers", bootstrap, str(path)]) == 1
    assert (
        main(["record", "--bootstrap-servers", bootstrap, "--topic", "samples", "--out", str(tmp_path / "o")])
        == 1
    )
    err = capsys.readouterr().err
    assert err.count(f"cannot reach the Kafka cluster at {bootstrap}") == 2
