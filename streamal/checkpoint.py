"""Checkpoints: the engine (model, strategy, policy, pending requests) and the offsets it reflects.

A checkpoint is written atomically (temporary file, fsync, rename, fsync of the directory) and signed
with HMAC-SHA256, so a truncated, tampered or foreign file is refused with a clear error instead of being
unpickled. The key comes from ``STREAMAL_CHECKPOINT__KEY``; without one, a random key is created once in
``<dir>/checkpoint.key`` (mode 0600). Keep the key apart from the checkpoints in production.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamal.errors import ConfigError, StreamalError

FORMAT_VERSION = 1
_MAGIC = b"streamal-checkpoint\n"
_FILE = "checkpoint.bin"


class CheckpointError(StreamalError):
    """A checkpoint cannot be trusted or read."""


@dataclass
class Checkpoint:
    engine: Any
    #: topic -> partition -> next offset to read
    offsets: dict[str, dict[int, int]]
    created_at: float


def prepare(directory: Path) -> None:
    """Create the checkpoint directory if it is missing and check that this process can write there, so
    that a directory that cannot be used stops the service at start (``ConfigError``, exit 2) instead of
    failing every checkpoint later."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"checkpoint.dir (STREAMAL_CHECKPOINT__DIR) {str(directory)!r} cannot be created: "
            f"{exc.strerror or exc}; choose a directory this user can write"
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(
            f"checkpoint.dir (STREAMAL_CHECKPOINT__DIR) {str(directory)!r} is not writable by this user "
            f"(uid {os.getuid()}); choose a directory it can write"
        )


def key_for(directory: Path, configured: str | None) -> bytes:
    if configured:
        return configured.encode()
    prepare(directory)
    path = directory / "checkpoint.key"
    try:
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        return path.read_text().strip().encode()
    except OSError as exc:
        raise ConfigError(
            f"the checkpoint key file {str(path)!r} cannot be created or read: {exc.strerror or exc}; "
            "fix its permissions or set checkpoint.key (STREAMAL_CHECKPOINT__KEY)"
        ) from exc


def dumps(checkpoint: Checkpoint) -> bytes:
    """Serialise now (the engine must not change meanwhile); :func:`write` may then run in a thread."""
    return pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)


def save(directory: Path, checkpoint: Checkpoint, key: bytes) -> Path:
    return write(directory, dumps(checkpoint), checkpoint.created_at, key)


def seal(payload: bytes, key: bytes, magic: bytes = _MAGIC, **meta: Any) -> bytes:
    """``magic`` + a JSON header (format, size, HMAC-SHA256 of the payload, ``meta``) + the payload."""
    header = orjson.dumps(
        {
            "format": FORMAT_VERSION,
            **meta,
            "hmac_sha256": hmac.new(key, payload, hashlib.sha256).hexdigest(),
            "size": len(payload),
        }
    )
    return magic + header + b"\n" + payload


def unseal(data: bytes, key: bytes, source: str, magic: bytes = _MAGIC) -> tuple[dict[str, Any], bytes]:
    """The header and payload of what :func:`seal` made; :class:`CheckpointError` if not to be trusted."""
    if not data.startswith(magic):
        what = magic.decode().strip().removeprefix("streamal-").replace("-", " ")
        raise CheckpointError(f"{source} is not a streamal {what}")
    header_line, _, payload = data[len(magic) :].partition(b"\n")
    try:
        header = orjson.loads(header_line)
    except orjson.JSONDecodeError:
        raise CheckpointError(f"{source}: unreadable header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: unreadable header")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format {header.get('format')!r}, this streamal reads {FORMAT_VERSION}"
        )
    if header.get("size") != len(payload):
        raise CheckpointError(f"{source}: truncated ({len(payload)} of {header.get('size')} bytes)")
    expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(header.get("hmac_sha256", ""))):
        raise CheckpointError(
            f"{source}: the signature does not match; it was changed or signed with another key "
            "(STREAMAL_CHECKPOINT__KEY). Move it away to start from scratch."
        )
    return header, payload


def write(directory: Path, payload: bytes, created_at: float, key: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _FILE
    tmp = directory / f".{_FILE}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(seal(payload, key, created_at=created_at))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def stamp(directory: Path) -> tuple[int, int, int] | None:
    """The identity of the checkpoint file in ``directory`` (inode, size, modification time), or None if
    there is none: every :func:`write` renames a new file into place, so a write changes it."""
    try:
        st = (directory / _FILE).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def load(directory: Path, key: bytes) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None if there is none; raises if it is not to be trusted."""
    path = directory / _FILE
    if not path.exists():
        return None
    _, payload = unseal(path.read_bytes(), key, str(path))
    checkpoint = pickle.loads(payload)  # noqa: S301 - signed with our key, verified above
    if not isinstance(checkpoint, Checkpoint):
        raise CheckpointError(f"{path}: unexpected content {type(checkpoint).__name__}")
    return checkpoint
