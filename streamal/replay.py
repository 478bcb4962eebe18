"""Recorded streams: a JSON-lines file, one record per line, and the two verbs that write and read it.

A line holds everything Kafka knows of a record::

    {"topic": "samples", "partition": 0, "offset": 12, "timestamp": 1700000000123,
     "key": "s-12", "value": "{\\"id\\": \\"s-12\\", ...}", "headers": [["h", "v"]]}

``key``, ``value`` and header values are text when they are valid UTF-8; otherwise the line says
``key_b64`` / ``value_b64`` / ``[name, null, base64]`` so that malformed bytes replay exactly as recorded.

``record`` writes a fetched batch of one partition after another, so a recording is in offset order within
each (topic, partition) but not in time order across them. ``replay`` sends a checked recording
(:func:`scan`) in time order: a merge of its (topic, partition) runs, read through one file handle.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import math
import re
import time
from array import array
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.protocol.metadata import MetadataRequest

from streamal.errors import ConfigError, InvalidArgument, StreamalError


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
        partition = int(line.get("partition", 0))
        if partition < 0:
            raise ValueError(f"partition must be 0 or more, not {partition}")
        return cls(
            topic=topic,
            partition=partition,
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


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """Every line of ``path``: its number (from 1), the byte it starts at, and its bytes."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise StreamalError(f"{path}: cannot read the recording ({exc.strerror or exc})") from None
    with fh:
        at = 0
        for n, raw in enumerate(fh, 1):
            yield n, at, raw
            at += len(raw)


def _parse(path: Path, where: int | str, raw: bytes) -> RecordedMessage:
    try:
        return RecordedMessage.from_json(raw)
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
        raise StreamalError(f"{path}:{where}: not a recorded message ({exc})") from None


def read_file(path: Path) -> Iterator[RecordedMessage]:
    """The messages of a recording in file order, read as they are needed (a recording may not fit in
    memory); a line that is not a recorded message is a ``StreamalError`` naming the file and the line.
    Call :func:`check_file` (or :func:`scan`) first to refuse a bad file before anything of it is produced."""
    for n, _, raw in _lines(path):
        if raw.strip():
            yield _parse(path, n, raw)


def check_file(path: Path) -> int:
    """Read the whole recording once and return how many messages it holds; a line that is not a recorded
    message raises as in :func:`read_file`. ``streamal replay`` checks a file so before it connects, so
    that a bad line at its end does not leave the topics with half of it."""
    return scan(path).count


#: the bytes of lines the reader of one (topic, partition) holds at a time in :meth:`Recording.in_time_order`
_BLOCK = 1 << 16

_Runs = tuple["array[int]", "array[int]"]  # the byte each run of lines starts at, and how many lines it has


class Recording:
    """A recording that :func:`scan` read through once: how many messages it holds, its topics and
    partitions, and where the lines of each (topic, partition) are, so that it can be read in time order
    without being held in memory.

    A run is a stretch of consecutive lines of one (topic, partition): a recording written by ``record``
    has one per fetched batch, so the index is small; the worst case, a file that changes partition at
    every line, costs 16 bytes a line.
    """

    def __init__(self, path: Path, count: int, runs: dict[tuple[str, int], _Runs]) -> None:
        self.path = path
        #: how many messages (lines that are not blank)
        self.count = count
        self._runs = runs

    @property
    def topics(self) -> dict[str, int]:
        """Each topic of the recording and the highest partition its lines name."""
        highest: dict[str, int] = {}
        for topic, partition in self._runs:
            highest[topic] = max(partition, highest.get(topic, partition))
        return highest

    def in_file_order(self) -> Iterator[RecordedMessage]:
        return read_file(self.path)

    def in_time_order(self) -> Iterator[RecordedMessage]:
        """The messages by timestamp, each (topic, partition) kept in its file (offset) order.

        A stable merge of the (topic, partition) runs: lines of the same time come in file order. A line
        stamped earlier than the line before it in its (topic, partition), or without a timestamp, comes
        right after that line (a line without one and with none before it in its partition, at the start).
        One file handle, and a block of at most 64 KiB of lines (or one line) per (topic, partition).
        """
        try:
            fh = self.path.open("rb")
        except OSError as exc:
            raise StreamalError(f"{self.path}: cannot read the recording ({exc.strerror or exc})") from None
        with fh:
            readers = [self._timed(fh, starts, counts) for starts, counts in self._runs.values()]
            for _, _, message in heapq.merge(*readers, key=lambda item: (item[0], item[1])):
                yield message

    def _timed(
        self, fh: IO[bytes], starts: array[int], counts: array[int]
    ) -> Iterator[tuple[float, int, RecordedMessage]]:
        """(the time it is due at, the byte it starts at, the message) for the lines of one (topic,
        partition): the time never goes back (see :meth:`in_time_order`), so the runs merge."""
        latest: float = -math.inf
        for start, count in zip(starts, counts, strict=True):
            at, left = start, count
            while left:
                fh.seek(at)  # the handle is shared: another reader may have moved it
                block: list[tuple[int, bytes]] = []
                size = 0
                while left and size < _BLOCK:
                    raw = fh.readline()
                    block.append((at + size, raw))
                    size += len(raw)
                    left -= 1
                at += size
                for where, raw in block:
                    message = _parse(self.path, f"byte {where} (changed since it was checked?)", raw)
                    if message.timestamp is not None and message.timestamp > latest:
                        latest = message.timestamp
                    yield latest, where, message


def scan(path: Path) -> Recording:
    """Read the whole recording once, check every line as :func:`read_file` does, and index it.

    >>> import tempfile
    >>> lines = [RecordedMessage("samples", p, 0, ts, None, b"{}") for p, ts in ((1, 20), (0, 10))]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = Path(d) / "rec.jsonl"
    ...     _ = path.write_bytes(b"".join(m.to_json() + b"\\n" for m in lines))
    ...     recording = scan(path)
    ...     print(recording.count, recording.topics, [m.timestamp for m in recording.in_time_order()])
    2 {'samples': 1} [10, 20]
    """
    runs: dict[tuple[str, int], _Runs] = {}
    count = 0
    current: tuple[str, int] | None = None  # the (topic, partition) of the line before, if it was one
    for n, at, raw in _lines(path):
        if not raw.strip():
            current = None
            continue
        message = _parse(path, n, raw)
        count += 1
        here = (message.topic, message.partition)
        if here == current:
            runs[here][1][-1] += 1
        else:
            starts, counts = runs.setdefault(here, (array("q"), array("q")))
            starts.append(at)
            counts.append(1)
            current = here
    return Recording(path, count, runs)


_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")


def topic_name_problem(name: str) -> str | None:
    """What makes ``name`` no topic name Kafka accepts, or None when it is one.

    >>> topic_name_problem("samples") is None
    True
    >>> topic_name_problem("bad topic!")
    "has characters other than ASCII letters, digits, '.', '_' and '-'"
    """
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is '.' or '..'"
    if len(name) > 249:
        return f"is {len(name)} characters long; Kafka takes at most 249"
    if not _TOPIC.fullmatch(name):
        return "has characters other than ASCII letters, digits, '.', '_' and '-'"
    return None


async def record(
    options: dict[str, Any],
    topics: Sequence[str],
    out: IO[bytes],
    *,
    max_messages: int | None = None,
    idle_seconds: float = 5.0,
    until_end: bool = True,
    stopping: asyncio.Event | None = None,
) -> int:
    """Copy ``topics`` from their beginning to ``out``; returns how many messages were written.

    Stops once caught up with every partition's high watermark (``until_end``), after ``idle_seconds``
    without a message, after ``max_messages``, or within 0.2 s of ``stopping`` being set. ``out`` is
    flushed after every fetched batch, so what was fetched is in the file whenever the process ends. Joins
    no consumer group.
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
        while (max_messages is None or n < max_messages) and not (stopping and stopping.is_set()):
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
                out.flush()
                last = now
            elif now - last > idle_seconds:
                break
            if until_end and await _caught_up(consumer, partitions):
                break
        return n
    finally:
        out.flush()
        await consumer.stop()


async def _caught_up(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    # the high watermark of the last fetch (end_offsets() is not reliable on every broker)
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True


def _destination(topic: str, topic_map: dict[str, str]) -> str:
    """The topic a recorded ``topic`` goes to; one Kafka would refuse is a ``ConfigError``."""
    dest = topic_map.get(topic, topic)
    if problem := topic_name_problem(dest):
        if topic in topic_map:
            raise ConfigError(f"--topic-map {topic}={dest}: {dest!r} {problem}")
        raise ConfigError(
            f"the recording's topic {topic!r} {problem}, so Kafka takes no topic of that name: map it to "
            f"one with --topic-map {topic}=NEW"
        )
    return dest


async def _partition_counts(
    producer: AIOKafkaProducer, topics: Collection[str], seconds: float = 10.0
) -> dict[str, int]:
    """How many partitions each topic has, asked of the cluster (which creates a missing one when it
    creates topics on demand, as a producer's request would). A topic the cluster refuses, or that does
    not exist after ``seconds``, is a ``StreamalError`` naming it and the cluster's error."""
    client = producer.client
    counts: dict[str, int] = {}
    waiting = list(dict.fromkeys(topics))
    deadline = time.monotonic() + seconds
    pause = 0.1
    while waiting:
        node = client.get_random_node()
        if node is None:
            raise StreamalError("the Kafka cluster named no broker in its metadata")
        response = await client.send(node, MetadataRequest(waiting))
        errors: dict[str, type[kafka_errors.KafkaError]] = {}
        for entry in response.to_object()["topics"]:
            topic, error = entry["topic"], kafka_errors.for_code(entry["error_code"])
            if error is kafka_errors.NoError and entry["partitions"]:
                counts[topic] = len(entry["partitions"])
            elif error is not kafka_errors.NoError and not error.retriable:
                raise StreamalError(
                    f"cannot write to topic {topic!r}: {error.__name__} ({error.description})"
                )
            else:
                errors[topic] = error
        waiting = [t for t in waiting if t not in counts]
        if waiting and time.monotonic() + pause > deadline:
            topic = waiting[0]
            error = errors.get(topic, kafka_errors.UnknownTopicOrPartitionError)
            raise StreamalError(
                f"cannot write to topic {topic!r}: {error.__name__} after {seconds:g} s (does it exist? does "
                f"the cluster create topics on demand?)"
            )
        if waiting:
            await asyncio.sleep(pause)
            pause = min(2 * pause, 1.0)
    return counts


def _check_partitions(dest: str, partitions: int, highest: int, source: str) -> None:
    if highest >= partitions:
        raise ConfigError(
            f"--keep-partitions: topic {dest!r} has {partitions} partition{'s' if partitions != 1 else ''}, "
            f"but the recording writes to partition {highest} (of {source!r}); give it at least "
            f"{highest + 1}, or replay without --keep-partitions (records then go by key)"
        )


async def replay(
    options: dict[str, Any],
    messages: Recording | Iterable[RecordedMessage],
    *,
    speed: float = 0.0,
    topic_map: dict[str, str] | None = None,
    keep_partitions: bool = False,
    keep_timestamps: bool = False,
) -> int:
    """Produce recorded messages again; returns how many were sent.

    A :class:`Recording` (:func:`scan`) is sent in time order (:meth:`Recording.in_time_order`), at every
    speed, and every topic it goes to is checked before the first message is sent: a name Kafka refuses or
    too few partitions for ``keep_partitions`` is a ``ConfigError``, a topic the cluster refuses a
    ``StreamalError``. Other messages are sent in the order given, each topic checked when it first comes.

    ``speed`` 1.0 sends each message at its timestamp's distance from the first one, 2.0 at half of it,
    0 as fast as the broker takes them; one stamped earlier than a message before it, or without a
    timestamp, goes right after that message. Records are partitioned by key unless ``keep_partitions``.
    They get the time of their sending as their timestamp unless ``keep_timestamps``, which gives them the
    recorded one (so that a recording of the replay has the original timing; mind that a topic's retention
    counts from a record's timestamp, so old ones may be deleted at once).
    """
    if not (math.isfinite(speed) and speed >= 0):
        raise InvalidArgument(f"speed {speed}: must be 0 (as fast as possible) or more (1: as recorded)")
    topic_map = topic_map or {}
    highest: dict[str, tuple[int, str]] = {}  # topic sent to -> the highest recorded partition, and of which
    if isinstance(messages, Recording):
        for topic, partition in messages.topics.items():
            dest = _destination(topic, topic_map)
            if partition >= highest.get(dest, (-1, ""))[0]:
                highest[dest] = (partition, topic)
        stream: Iterator[RecordedMessage] = messages.in_time_order()
    else:
        stream = iter(messages)
    producer = AIOKafkaProducer(**options, acks="all", linger_ms=5, enable_idempotence=False)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    n = 0
    pending: list[tuple[str, asyncio.Future[Any]]] = []
    try:
        partitions = await _partition_counts(producer, highest) if highest else {}
        if keep_partitions:
            for dest, (partition, topic) in highest.items():
                _check_partitions(dest, partitions[dest], partition, topic)
        first: int | None = None  # the first timestamp, and when it was sent
        latest = 0
        started = 0.0
        for msg in stream:
            dest = topic_map.get(msg.topic, msg.topic)
            if dest not in partitions:
                partitions.update(await _partition_counts(producer, [_destination(msg.topic, topic_map)]))
            if keep_partitions:
                _check_partitions(dest, partitions[dest], msg.partition, msg.topic)
            if speed > 0 and msg.timestamp is not None and (first is None or msg.timestamp > latest):
                latest = msg.timestamp
                if first is None:
                    first, started = latest, time.monotonic()
                delay = started + (latest - first) / 1000.0 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                sent = await producer.send(
                    dest,
                    msg.value,
                    key=msg.key,
                    partition=msg.partition if keep_partitions else None,
                    timestamp_ms=msg.timestamp if keep_timestamps else None,
                    headers=msg.headers or None,
                )
            except kafka_errors.KafkaError as exc:
                raise StreamalError(f"cannot write to topic {dest!r}: {exc}") from None
            pending.append((dest, sent))
            n += 1
            if len(pending) >= 5000:
                await _delivered(pending)
        await _delivered(pending)
        return n
    finally:
        await producer.stop()


async def _delivered(pending: list[tuple[str, asyncio.Future[Any]]]) -> None:
    """Wait for every send of ``pending`` (and empty it); a refused one is a ``StreamalError`` naming its
    topic."""
    outcomes = await asyncio.gather(*(sent for _, sent in pending), return_exceptions=True)
    for (dest, _), outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, kafka_errors.KafkaError):
            raise StreamalError(f"cannot write to topic {dest!r}: {outcome}")
        if isinstance(outcome, BaseException):
            raise outcome
    pending.clear()
