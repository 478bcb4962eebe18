"""Model snapshots: what the learner publishes on the model topic and the scorers load, signed.

A snapshot is the pickled model sealed like a checkpoint (HMAC-SHA256 with ``STREAMAL_CHECKPOINT__KEY``):
a scorer refuses any message on the model topic whose signature does not match before it unpickles it.
"""

from __future__ import annotations

import pickle
import time

from streamal.checkpoint import CheckpointError, seal, unseal
from streamal.models.base import Model

MAGIC = b"streamal-model-snapshot\n"


def encode_snapshot(model: Model, version: int, key: bytes) -> bytes:
    return seal(
        pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL),
        key,
        magic=MAGIC,
        version=version,
        created_at=time.time(),
    )


def decode_snapshot(data: bytes, key: bytes, source: str) -> tuple[int, Model]:
    """The version and model of a snapshot, or :class:`CheckpointError` if it is not to be trusted."""
    header, payload = unseal(data, key, source, magic=MAGIC)
    model = pickle.loads(payload)  # noqa: S301 - signed with our key, verified by unseal()
    if not isinstance(model, Model):
        raise CheckpointError(f"{source}: unexpected content {type(model).__name__}")
    version = header.get("version")
    if not isinstance(version, int):
        raise CheckpointError(f"{source}: no version in the header")
    return version, model
