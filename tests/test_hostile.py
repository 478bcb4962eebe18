"""Hostile input: a thousand malformed messages mixed into a real stream, and decoding's edge cases."""

from __future__ import annotations

import asyncio
import random
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamal.broker import EmbeddedBroker
from streamal.datasets import load
from streamal.errors import DecodeError
from streamal.messages import MAX_MESSAGE_BYTES, decode_label, decode_sample
from streamal.service import Service
from tests.kafkatools import produce, read_all, settings_for


def _corrupt(rng: random.Random, valid: bytes, i: int) -> bytes:
    """One malformed ``samples`` message of ten kinds, each with random content."""
    msg = orjson.loads(valid)
    kind = i % 10
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    if kind == 1:
        return valid[: rng.randint(1, len(valid) - 2)]  # truncated
    if kind == 2:
        name = rng.choice(list(msg["features"]))
        return valid.replace(f'"{name}":'.encode(), f'"{name}":NaN,"_{name}":'.encode(), 1)
    if kind == 3:
        msg["features"][rng.choice(list(msg["features"]))] = str(rng.random())
    elif kind == 4:
        msg["id"] = rng.randint(0, 10**6)
    elif kind == 5:
        del msg["features"]
    elif kind == 6:
        msg["features"] = [rng.random() for _ in range(3)]
    elif kind == 7:
        return b"[" * rng.randint(2_000, 20_000)  # deeper than any parser recurses
    elif kind == 8:
        return b'{"id": "big", "features": {"x": 1e' + str(rng.randint(309, 400)).encode() + b"}}"
    else:
        msg["features"][rng.choice(list(msg["features"]))] = rng.choice([True, None, {"x": 1}])
    return orjson.dumps(msg)


@pytest.mark.kafka
def test_a_thousand_malformed_messages_are_dead_lettered_and_every_valid_one_scored(
    broker: EmbeddedBroker, prefix: str
) -> None:
    rng = random.Random(1)
    records = load("image_segments")
    valid = [orjson.dumps({"id": r.id, "features": r.features}) for r in records]
    bad = [_corrupt(rng, valid[i % len(valid)], i) for i in range(1000)]
    for raw in bad:  # every one of them is refused, for a reason from the fixed set
        with pytest.raises(DecodeError):
            decode_sample(raw)
    stream: list[tuple[bytes | None, bytes | None]] = [
        (r.id.encode(), v) for r, v in zip(records, valid, strict=True)
    ]
    for raw in bad:
        stream.insert(rng.randint(0, len(stream)), (b"bad", raw))
    settings = settings_for(broker.bootstrap_servers, prefix)
    registry = CollectorRegistry()

    async def main() -> None:
        service = Service(settings, registry)
        run = asyncio.create_task(service.run())
        deadline = time.monotonic() + 30
        while not service.ready():
            assert time.monotonic() < deadline, "not ready"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(produce, broker.bootstrap_servers, f"{prefix}samples", stream)
        deadline = time.monotonic() + 60
        while (registry.get_sample_value("streamal_samples_total") or 0) < len(records) or sum(
            registry.get_sample_value("streamal_dead_letters_total", {"reason": r}) or 0
            for r in DecodeError.REASONS
        ) < len(bad):
            assert time.monotonic() < deadline, "not everything was processed"
            await asyncio.sleep(0.1)
        service.stop()
        assert await asyncio.wait_for(run, 15) == 0

    asyncio.run(main())
    predictions = read_all(broker.bootstrap_servers, f"{prefix}predictions", len(records))
    assert {orjson.loads(m.value())["id"] for m in predictions} == {r.id for r in records}
    dead = read_all(broker.bootstrap_servers, f"{prefix}dead-letters", len(bad))
    assert len(dead) == len(bad)
    assert sorted(m.value() or b"" for m in dead) == sorted(bad)
    headers = [dict(m.headers()) for m in dead]
    assert all(h["error"] and h["error.reason"].decode() in DecodeError.REASONS for h in headers)
    assert len({(h["source.partition"], h["source.offset"]) for h in headers}) == len(bad)


def test_deep_nesting_huge_numbers_and_oversized_messages_are_refused_with_a_reason() -> None:
    deep = b'{"id": "d", "features": {}, "meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(DecodeError) as exc:
        decode_sample(deep)
    assert exc.value.reason == "invalid_json"
    for raw, reason in [
        (b'{"id": "h", "features": {"x": 1e309}}', "non_finite"),
        (b'{"id": "h", "features": {"x": -1e999}}', "non_finite"),
        (b'{"id": "h", "features": {"x": 123456789012345678901234567890}}', None),  # a big, finite number
        # finite, but its square is not: a model that learned it would predict NaN for every sample after
        (b'{"id": "h", "features": {"x": 1.7976931348623157e308}}', "non_finite"),
        (b'{"id": "h", "features": {"x": 1e100}}', None),  # the largest magnitude taken
        (b'{"id": "' + b"x" * (MAX_MESSAGE_BYTES + 1) + b'", "features": {}}', "too_large"),
        (b'{"id": "' + b"x" * 600 + b'", "features": {}}', "invalid_schema"),
    ]:
        if reason is None:
            sample = decode_sample(raw)
            assert all(isinstance(v, float) for v in sample.features.values())
        else:
            with pytest.raises(DecodeError) as exc:
                decode_sample(raw)
            assert exc.value.reason == reason
    with pytest.raises(DecodeError) as exc:
        decode_label(b'{"id": "l", "label": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    assert exc.value.reason == "invalid_json"
