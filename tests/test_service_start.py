"""What stops ``streamal run`` at start with a configuration error (exit 2, the setting named) rather than a
traceback: a checkpoint directory it cannot use, an HTTP port it cannot listen on. No broker is needed: both
are checked before the service connects to Kafka."""

from __future__ import annotations

import gc
import socket

import pytest

from streamal.broker import free_port
from streamal.cli import main


@pytest.fixture
def service_env(monkeypatch, tmp_path):
    # a bootstrap address nobody listens on: the run must stop before it is tried
    monkeypatch.setenv("STREAMAL_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("STREAMAL_HTTP__HOST", "127.0.0.1")
    monkeypatch.setenv("STREAMAL_HTTP__PORT", "0")
    monkeypatch.delenv("STREAMAL_CONFIG", raising=False)
    threshold = gc.get_threshold()
    yield monkeypatch
    gc.unfreeze()  # `streamal run` tunes the collector of its process: this process is pytest's
    gc.set_threshold(*threshold)


def test_a_checkpoint_dir_that_cannot_be_created_is_a_configuration_error(service_env, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    service_env.setenv("STREAMAL_CHECKPOINT__DIR", str(blocker / "checkpoints"))
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert "STREAMAL_CHECKPOINT__DIR" in err
    assert "Traceback" not in err


def test_a_checkpoint_dir_is_checked_with_a_configured_key_too(service_env, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    service_env.setenv("STREAMAL_CHECKPOINT__DIR", str(blocker / "checkpoints"))
    service_env.setenv("STREAMAL_CHECKPOINT__KEY", "k" * 32)
    assert main(["run"]) == 2
    assert "STREAMAL_CHECKPOINT__DIR" in capsys.readouterr().err


def test_an_http_port_in_use_is_a_configuration_error(service_env, tmp_path, capsys):
    service_env.setenv("STREAMAL_CHECKPOINT__DIR", str(tmp_path / "checkpoints"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service_env.setenv("STREAMAL_HTTP__PORT", str(taken.getsockname()[1]))
        assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "STREAMAL_HTTP__PORT" in err
    assert "cannot listen on 127.0.0.1" in err
