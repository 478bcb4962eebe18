"""TLS for real: stunnel (Debian's stunnel4) terminates TLS in front of the embedded broker, whose advertised
listener is the TLS port, so every connection the service makes goes through TLS with a CA made here.

The embedded broker's own TLS listener does not work, hence the terminator. SASL cannot be tested against
this broker at all (docs/security.md says so); its settings are validated at start.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from streamal.broker import EmbeddedBroker, free_port
from streamal.config import KafkaSettings, load_settings
from streamal.errors import BrokerUnavailableError
from streamal.kafka.client import connection_options, ensure_topics
from streamal.service import Service

pytestmark = pytest.mark.kafka


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_certificates(d: Path) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=streamal test CA",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=d,
    )


def test_the_service_talks_tls_through_a_terminator_and_plaintext_is_refused(tmp_path: Path) -> None:
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    assert stunnel, "stunnel is missing: make test installs Debian's stunnel4"
    _make_certificates(tmp_path)
    tls_port = free_port()
    broker = EmbeddedBroker(advertised_port=tls_port)
    conf = tmp_path / "stunnel.conf"
    conf.write_text(
        f"foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\n"
        f"connect = 127.0.0.1:{broker.port}\n"
        f"cert = {tmp_path / 'server.pem'}\nkey = {tmp_path / 'server.key'}\n"
    )
    log = (tmp_path / "stunnel.log").open("wb")
    terminator = subprocess.Popen([stunnel, str(conf)], stdout=log, stderr=log)
    try:
        broker.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "stunnel.log").read_text()
                time.sleep(0.05)
        bootstrap = f"127.0.0.1:{tls_port}"
        env = {
            "STREAMAL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "STREAMAL_KAFKA__SECURITY_PROTOCOL": "SSL",
            "STREAMAL_KAFKA__SSL_CAFILE": str(tmp_path / "ca.pem"),
            "STREAMAL_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "STREAMAL_HTTP__PORT": "0",
        }
        settings = load_settings(env=env)
        options = connection_options(settings.kafka)

        async def main() -> list[dict[str, object]]:
            # a plaintext client on the TLS port gets nowhere
            with pytest.raises(BrokerUnavailableError):
                await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), ["plain"], timeout_seconds=3)
            registry = CollectorRegistry()
            service = Service(settings, registry)
            run = asyncio.create_task(service.run())
            deadline = time.monotonic() + 30
            while not service.ready():
                assert not run.done(), "the service stopped"
                assert time.monotonic() < deadline, "not ready over TLS"
                await asyncio.sleep(0.1)
            producer = AIOKafkaProducer(**options, enable_idempotence=False)
            await producer.start()
            for i in range(20):
                value = orjson.dumps({"id": f"tls-{i}", "features": {"x": float(i)}})
                await producer.send_and_wait("samples", value, key=f"tls-{i}".encode())
            await producer.stop()
            consumer = AIOKafkaConsumer("predictions", **options, group_id=None, auto_offset_reset="earliest")
            await consumer.start()
            got: list[dict[str, object]] = []
            deadline = time.monotonic() + 30
            while len(got) < 20 and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got += [orjson.loads(r.value) for r in records]
            await consumer.stop()
            service.stop()
            assert await asyncio.wait_for(run, 15) == 0
            return got

        predictions = asyncio.run(main())
    finally:
        terminator.terminate()
        terminator.wait(timeout=10)
        log.close()
        broker.stop()
    assert sorted(str(p["id"]) for p in predictions) == sorted(f"tls-{i}" for i in range(20))
