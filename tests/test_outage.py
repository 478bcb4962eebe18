"""Broker outages: the service keeps running, says it is not ready, resumes, and gives up after a limit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamal.broker import EmbeddedBroker, free_port
from streamal.service import Service
from tests.kafkatools import produce, read_all, settings_for

pytestmark = pytest.mark.kafka


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return -1


def _samples(prefix: str, start: int, n: int) -> list[tuple[bytes | None, bytes | None]]:
    return [
        (
            f"{prefix}{i}".encode(),
            orjson.dumps({"id": f"{prefix}{i}", "features": {"x": float(i % 7), "y": 1.0}}),
        )
        for i in range(start, start + n)
    ]


def test_the_service_rides_out_a_broker_outage(prefix: str) -> None:
    broker = EmbeddedBroker().start()
    settings = settings_for(broker.bootstrap_servers, prefix, STREAMAL_KAFKA__MAX_OUTAGE_SECONDS="0")
    registry = CollectorRegistry()
    seen: dict[str, object] = {}

    async def main() -> None:
        service = Service(settings, registry)
        run = asyncio.create_task(service.run())
        try:
            deadline = time.monotonic() + 30
            while not service.ready():
                assert time.monotonic() < deadline, "not ready"
                await asyncio.sleep(0.1)
            http = service.http_port
            assert http is not None
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", _samples("a", 0, 300)
            )
            while (registry.get_sample_value("streamal_samples_total") or 0) < 300:
                assert time.monotonic() < deadline + 30, "the first samples were not scored"
                await asyncio.sleep(0.1)
            broker.stop()
            # readiness turns 503 while liveness stays 200
            deadline = time.monotonic() + 20
            while await asyncio.to_thread(_status, http, "/readyz") != 503:
                assert time.monotonic() < deadline, "/readyz stayed 200 without a broker"
                await asyncio.sleep(0.2)
            seen["healthz_down"] = await asyncio.to_thread(_status, http, "/healthz")
            seen["broker_up_down"] = registry.get_sample_value("streamal_broker_up")
            await asyncio.sleep(3)
            assert not run.done(), "the service stopped without a broker"
            # the same broker address comes back, empty (the embedded broker keeps nothing on disk): its new
            # partitions end before where the service was, so it reads them from their beginning
            await asyncio.to_thread(broker.start)
            deadline = time.monotonic() + 60
            while await asyncio.to_thread(_status, http, "/readyz") != 200:
                assert time.monotonic() < deadline, "/readyz did not come back with the broker"
                await asyncio.sleep(0.2)
            seen["broker_up_again"] = registry.get_sample_value("streamal_broker_up")
            before = registry.get_sample_value("streamal_samples_total") or 0
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", _samples("b", 0, 40)
            )
            deadline = time.monotonic() + 60
            while (registry.get_sample_value("streamal_samples_total") or 0) < before + 40:
                assert time.monotonic() < deadline, "samples after the outage were not scored"
                await asyncio.sleep(0.2)
            service.stop()
            seen["code"] = await asyncio.wait_for(run, 20)
        finally:
            if not run.done():
                run.cancel()

    try:
        asyncio.run(main())
        predictions = read_all(broker.bootstrap_servers, f"{prefix}predictions", 40)
    finally:
        broker.stop()
    assert seen["healthz_down"] == 200
    assert seen["broker_up_down"] == 0
    assert seen["broker_up_again"] == 1
    assert seen["code"] == 0
    assert {orjson.loads(m.value())["id"] for m in predictions} >= {f"b{i}" for i in range(40)}


def test_without_a_broker_for_too_long_it_exits_non_zero_without_flooding_the_log(
    prefix: str, tmp_path: Path
) -> None:
    broker = EmbeddedBroker().start()
    http = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAL_")}
    env.update(
        {
            "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "STREAMAL_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "STREAMAL_KAFKA__MAX_OUTAGE_SECONDS": "6",
            "STREAMAL_HTTP__PORT": str(http),
        }
    )
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamal", "run"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while _status(http, "/readyz") != 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.1)
        broker.stop()
        lines_before = len(log.read_text().splitlines())
        code = proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        broker.stop()
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert "exiting so that the service is restarted" in text
    # errors are reported, not flooded: aiokafka alone would log ten connection errors a second
    assert len(text.splitlines()) - lines_before < 60, text[-5000:]
