"""Recorded streams: a JSON-lines file, one record per line, and the two verbs that write and read it.

A line holds everything Kafka knows of a record::

    {"topic": "samples", "partition": 0, "offset": 12, "timestamp": 1700000000123,
     "key": "s-12", "value": "{\\"id\\": \\"s-12\\", ...}", "headers": [["h", "v"]]}

``key``, ``value`` and header values are text when they are valid UTF-8; otherwise the line says
``key_b64`` / ``value_b64`` / ``[name, null, base64]`` so that malformed bytes replay exactly as recorded.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamal.errors import StreamalError


@dataclass
class RecordedMessage:
    topic: str
    partition: int
    offset: int
    timestamp: int | None  # milliseconds since the epoch
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def to_json(self) -> bytes:
        line: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
        }
        _put(line, "key", self.key)
        _put(line, "value", self.value)
        headers: list[list[str | None]] = []
        for name, raw in self.headers:
            try:
                headers.append([name, raw.decode("utf-8")])
            except UnicodeDecodeError:
                headers.append([name, None, base64.b64encode(raw).decode()])
        line["headers"] = headers
        return orjson.dumps(line)

    @classmethod
    def from_json(cls, raw: bytes) -> RecordedMessage:
        """One line of a recording; ``ValueError`` (or ``TypeError``) says what is wrong with it."""
        line = orjson.loads(raw)
        if not isinstance(line, dict):
            raise TypeError(f"a JSON object was expected, not {type(line).__name__}")
        topic = line["topic"]
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, not {topic!r}")
        timestamp = line.get("timestamp")
        if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, int)):
            raise ValueError(f"timestamp must be milliseconds (an integer) or null, not {timestamp!r}")
        headers = []
        for h in line.get("headers") or []:
            if not isinstance(h, list) or len(h) not in (2, 3) or not isinstance(h[0], str):
                raise ValueError(f"a header is [name, text] or [name, null, base64], not {h!r}")
            name, text = h[0], h[1]
            if text is None and len(h) == 3 and isinstance(h[2], str):
                headers.append((name, base64.b64decode(h[2], validate=True)))
            elif isinstance(text, str):
                headers.append((name, text.encode()))
            else:
                raise ValueError(f"a header is [name, text] or [name, null, base64], not {h!r}")
        return cls(
            topic=topic,
            partition=int(line.get("partition", 0)),
            offset=int(line.get("offset", -1)),
            timestamp=timestamp,
            key=_get(line, "key"),
            value=_get(line, "value"),
            headers=headers,
        )


def _put(line: dict[str, Any], name: str, raw: bytes | None) -> None:
    if raw is None:
        line[name] = None
        return
    try:
        line[name] = raw.decode("utf-8")
    except UnicodeDecodeError:
        line[f"{name}_b64"] = base64.b64encode(raw).decode()


def _get(line: dict[str, Any], name: str) -> bytes | None:
    if f"{name}_b64" in line:
        return base64.b64decode(line[f"{name}_b64"], validate=True)
    text = line.get(name)
    return None if text is None else str(text).encode("utf-8")


def read_file(path: Path) -> Iterator[RecordedMessage]:
    """The messages of a recording, read as they are needed (a recording may not fit in memory); a line
    that is not a recorded message is a ``StreamalError`` naming the file and the line. Call
    :func:`check_file` first to refuse a bad file before anything of it is produced."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise StreamalError(f"{path}: cannot read the recording ({exc.strerror or exc})") from None
    with fh:
        for n, raw in enumerate(fh, 1):
            if raw.strip():
                try:
                    yield RecordedMessage.from_json(raw)
                except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
                    raise StreamalError(f"{path}:{n}: not a recorded message ({exc})") from None


def check_file(path: Path) -> int:
    """Read the whole recording once and return how many messages it holds; a line that is not a recorded
    message raises as in :func:`read_file`. ``streamal replay`` checks a file so before it connects, so
    that a bad line at its end does not leave the topics with half of it."""
    return sum(1 for _ in read_file(path))


async def record(
    options: dict[str, Any],
    topics: Sequence[str],
    out: IO[bytes],
    *,
    max_messages: int | None = None,
    idle_seconds: float = 5.0,
    until_end: bool = True,
) -> int:
    """Copy ``topics`` from their beginning to ``out``.

    Stops once caught up with every partition's high watermark (``until_end``), after ``idle_seconds``
    without a message, or after ``max_messages``. Joins no consumer group.
    """
    consumer = AIOKafkaConsumer(
        **options, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()  # (a client that failed to start holds connections all the same)
        raise
    n = 0
    try:
        await consumer.topics()  # refreshes the metadata
        partitions = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic) or set()
            partitions += [TopicPartition(topic, p) for p in sorted(parts)]
        if not partitions:
            raise StreamalError(f"no partitions found for {', '.join(topics)}")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        last = time.monotonic()
        while max_messages is None or n < max_messages:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    if max_messages is not None and n >= max_messages:
                        break
                    msg = RecordedMessage(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.timestamp,
                        r.key,
                        r.value,
                        [(k, bytes(v)) for k, v in (r.headers or ())],
                    )
                    out.write(msg.to_json() + b"\n")
                    n += 1
            now = time.monotonic()
            if batch:
                last = now
            elif now - last > idle_seconds:
                break
            if until_end and await _caught_up(consumer, partitions):
                break
        return n
    finally:
        await consumer.stop()


async def _caught_up(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    # the high watermark of the last fetch (end_offsets() is not reliable on every broker)
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True


async def replay(
    options: dict[str, Any],
    messages: Sequence[RecordedMessage] | Iterator[RecordedMessage],
    *,
    speed: float = 0.0,
    topic_map: dict[str, str] | None = None,
    keep_partitions: bool = False,
    keep_timestamps: bool = False,
) -> int:
    """Produce recorded messages again, in file order.

    ``speed`` 1.0 keeps the recorded gaps between timestamps, 2.0 halves them, 0 sends as fast as the broker
    takes them. Records are partitioned by key unless ``keep_partitions``. They get the time of their
    sending as their timestamp unless ``keep_timestamps``, which gives them the recorded one (so that a
    recording of the replay has the original timing; mind that a topic's retention counts from a record's
    timestamp, so old ones may be deleted at once).
    """
    topic_map = topic_map or {}
    producer = AIOKafkaProducer(**options, acks="all", linger_ms=5, enable_idempotence=False)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    n = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        first_ts: int | None = None
        started = time.monotonic()
        for msg in messages:
            if speed > 0 and msg.timestamp is not None:
                if first_ts is None:
                    first_ts = msg.timestamp
                due = started + (msg.timestamp - first_ts) / 1000.0 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(
                await producer.send(
                    topic_map.get(msg.topic, msg.topic),
                    msg.value,
                    key=msg.key,
                    partition=msg.partition if keep_partitions else None,
                    timestamp_ms=msg.timestamp if keep_timestamps else None,
                    headers=msg.headers or None,
                )
            )
            n += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return n
    finally:
        await producer.stop()
