"""Faults on the delivery path: failed and refused deliveries, an outage while a checkpoint is due, output
over the size limit, a model that raises. None of them may stop the service (but a refusal no retry can
cure), skip a sample or count one twice.

The embedded broker cannot fail a delivery on purpose and enforces no size limit, so some tests inject the
fault by wrapping one Kafka call (``Outbox.ship``, ``AIOKafkaProducer.send_batch``), as a real cluster would
answer; the model's failure is injected in the engine, so that the test does not depend on a model bug.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from streamal import checkpoint, messages
from streamal.broker import EmbeddedBroker
from streamal.engine import Decision, Engine
from streamal.kafka.outbox import Outbox
from streamal.kafka.worker import Worker
from streamal.messages import MAX_MESSAGE_BYTES, Label, Sample, label_message
from streamal.pending import LabelOutcome
from streamal.service import EXIT_OUTPUT_REFUSED, Service
from tests.kafkatools import (
    finish_service,
    metric,
    produce,
    read_all,
    sample_records,
    settings_for,
    start_service,
    until,
)

pytestmark = pytest.mark.kafka

#: Apache Kafka's default ``message.max.bytes``: the largest record batch a topic takes
KAFKA_MESSAGE_MAX_BYTES = 1_048_588


# -- helpers -------------------------------------------------------------------------------------------------
def _ids(bootstrap: str, topic: str, expect: int, timeout: float = 10.0) -> Counter[str]:
    return Counter(orjson.loads(m.value())["id"] for m in read_all(bootstrap, topic, expect, timeout))


class _ShipFaults:
    """``Outbox.ship``, except that once ``armed`` the next batch with output is not acknowledged: its future
    fails with ``error`` ``after`` seconds. ``send=False``: nothing of it reaches the broker (a delivery that
    timed out); ``send=True``: it does, and only the acknowledgement fails."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, error: KafkaError, *, send: bool, after: float = 0.0
    ) -> None:
        self.armed = False
        self.failed = 0
        original = Outbox.ship

        async def ship(outbox: Outbox) -> asyncio.Future[Any]:
            if not self.armed or not outbox._open:
                return await original(outbox)
            self.armed = False
            self.failed += 1
            if send:
                await original(outbox)
            else:
                outbox._open.clear()
                outbox._sent.clear()
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            def fail() -> None:
                if not failed.done():
                    failed.set_exception(error)

            asyncio.get_running_loop().call_later(after, fail)
            return failed

        monkeypatch.setattr(Outbox, "ship", ship)


def _refuse_batches(
    monkeypatch: pytest.MonkeyPatch, refuse: Callable[[str, int], KafkaError | None]
) -> list[str]:
    """``AIOKafkaProducer.send_batch``, except that a record batch ``refuse(topic, size)`` returns an error
    for is not sent, and its delivery fails with that error (as the cluster answers). Returns the topics
    refused."""
    refused: list[str] = []
    original = AIOKafkaProducer.send_batch

    async def send_batch(producer: AIOKafkaProducer, batch: Any, topic: str, *, partition: int) -> Any:
        error = refuse(topic, batch.size())
        if error is None:
            return await original(producer, batch, topic, partition=partition)
        refused.append(topic)
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(error)
        return failed

    monkeypatch.setattr(AIOKafkaProducer, "send_batch", send_batch)
    return refused


# -- 2: a failed delivery while a checkpoint is due ---------------------------------------------------------
def test_a_delivery_failing_while_a_checkpoint_is_due_is_processed_again(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acknowledgement fails while the checkpoint (due at every turn) waits for it: the batch is processed
    again, the failure counted, and the checkpoint written later, with what was delivered."""
    faults = _ShipFaults(monkeypatch, KafkaTimeoutError("injected: batch expired"), send=True, after=0.3)
    settings = settings_for(
        broker.bootstrap_servers,
        prefix,
        STREAMAL_CHECKPOINT__DIR=str(tmp_path / "ckpt"),
        STREAMAL_CHECKPOINT__INTERVAL_SECONDS="0.01",
    )
    registry = CollectorRegistry()
    seen: dict[str, Any] = {}

    async def main() -> None:
        service, run = await start_service(settings, registry)
        try:
            faults.armed = True
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("s", 50)
            )
            await until(
                lambda: run.done() or metric(registry, "streamal_samples_total") >= 50,
                30,
                "50 samples scored",
            )
            await asyncio.sleep(1.0)
            assert not run.done(), f"the service stopped: {run.exception()!r}"
            seen["produce_errors"] = metric(registry, "streamal_errors_total", kind="produce")
            service.stop()
            seen["code"] = await asyncio.wait_for(run, 20)
        finally:
            await finish_service(run)

    asyncio.run(main())
    assert faults.failed == 1
    assert seen["produce_errors"] == 1
    assert seen["code"] == 0
    assert set(_ids(broker.bootstrap_servers, f"{prefix}predictions", 50)) == {f"s{i}" for i in range(50)}
    saved = checkpoint.load(tmp_path / "ckpt", checkpoint.key_for(tmp_path / "ckpt", None))
    assert saved is not None
    assert sum(saved.offsets[f"{prefix}samples"].values()) == 50


def test_a_batch_whose_output_could_not_be_handed_to_the_producer_is_read_again(
    broker: EmbeddedBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer raises while a batch is being produced (no room for it within its timeout, as at the
    start of an outage): the batch, not yet in flight, is read again rather than skipped."""
    original = AIOKafkaProducer.send_batch
    raised: list[str] = []

    async def send_batch(producer: AIOKafkaProducer, batch: Any, topic: str, *, partition: int) -> Any:
        if not raised and topic == f"{prefix}predictions":
            raised.append(topic)
            raise KafkaTimeoutError("injected: no room for the batch in time")
        return await original(producer, batch, topic, partition=partition)

    monkeypatch.setattr(AIOKafkaProducer, "send_batch", send_batch)
    settings = settings_for(broker.bootstrap_servers, prefix)
    registry = CollectorRegistry()

    async def main() -> None:
        service, run = await start_service(settings, registry)
        try:
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("s", 40)
            )
            await until(
                lambda: metric(registry, "streamal_errors_total", kind="produce") >= 1, 30, "the error"
            )
            await asyncio.sleep(3)
            service.stop()
            assert await asyncio.wait_for(run, 20) == 0
        finally:
            await finish_service(run)

    asyncio.run(main())
    assert raised
    assert set(_ids(broker.bootstrap_servers, f"{prefix}predictions", 40)) == {f"s{i}" for i in range(40)}


# -- 3: a broker outage with checkpoints on -----------------------------------------------------------------
@pytest.mark.parametrize("ending", ["max_outage_seconds", "sigterm"])
def test_an_outage_with_checkpoints_on_ends_as_documented(ending: str, prefix: str, tmp_path: Path) -> None:
    """The broker goes away under a steady stream, with commits and a checkpoint due: the service exits with 3
    after ``kafka.max_outage_seconds``, or stops when told to (what SIGTERM does), instead of waiting for the
    cluster for ever."""
    broker = EmbeddedBroker().start()
    settings = settings_for(
        broker.bootstrap_servers,
        prefix,
        STREAMAL_CHECKPOINT__DIR=str(tmp_path / "ckpt"),
        STREAMAL_CHECKPOINT__INTERVAL_SECONDS="0.5",
        STREAMAL_KAFKA__MAX_OUTAGE_SECONDS="6" if ending == "max_outage_seconds" else "0",
    )
    registry = CollectorRegistry()
    feeding = threading.Event()
    seen: dict[str, Any] = {}

    def feed() -> None:  # output and a commit are under way when the broker goes
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "message.timeout.ms": 3000})
        i = 0
        while feeding.is_set():
            producer.produce(
                f"{prefix}samples", key=f"s{i}".encode(), value=sample_records(f"s{i}-", 1)[0][1]
            )
            producer.poll(0)
            i += 1
            time.sleep(0.002)
        producer.flush(3)

    async def main() -> None:
        service, run = await start_service(settings, registry)
        feeder = threading.Thread(target=feed, daemon=True)
        try:
            feeding.set()
            feeder.start()
            await until(lambda: metric(registry, "streamal_samples_total") >= 500, 30, "500 samples scored")
            broker.stop()
            feeding.clear()
            stopped_at = time.monotonic()
            if ending == "sigterm":
                await asyncio.sleep(8)
                assert not run.done(), f"the service stopped by itself: {run.exception()!r}"
                stopped_at = time.monotonic()
                service.stop()  # what the SIGTERM handler does
            try:
                seen["code"] = await asyncio.wait_for(asyncio.shield(run), 45)
            except TimeoutError:
                raise AssertionError(f"still running {time.monotonic() - stopped_at:.0f} s later") from None
            seen["seconds"] = time.monotonic() - stopped_at
        finally:
            feeding.clear()
            await finish_service(run)
            await asyncio.to_thread(feeder.join, 10)

    try:
        asyncio.run(main())
    finally:
        broker.stop()
    assert seen["code"] == (3 if ending == "max_outage_seconds" else 0)


# -- 4: a checkpoint after a failed delivery ----------------------------------------------------------------
def test_a_checkpoint_after_a_failed_delivery_records_no_position_past_it(
    broker: EmbeddedBroker, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery fails and SIGTERM arrives during the retry's backoff: the shutdown checkpoint must not
    record the failed batch as taken in, or the restart (which resumes from the checkpoint) skips it."""
    faults = _ShipFaults(monkeypatch, KafkaTimeoutError("injected: the delivery timed out"), send=False)
    settings = settings_for(broker.bootstrap_servers, prefix, STREAMAL_CHECKPOINT__DIR=str(tmp_path / "ckpt"))
    running: list[Service] = []
    original = Worker._recover

    async def recover(worker: Worker, exc: KafkaError, *args: Any, **kwargs: Any) -> None:
        running[-1].stop()  # SIGTERM, while the batch waits to be processed again
        await original(worker, exc, *args, **kwargs)

    monkeypatch.setattr(Worker, "_recover", recover)
    codes: list[int] = []

    async def first() -> None:
        registry = CollectorRegistry()
        service, run = await start_service(settings, registry)
        running.append(service)
        try:
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("a", 30)
            )
            await until(lambda: metric(registry, "streamal_samples_total") >= 30, 30, "the first samples")
            await asyncio.sleep(0.5)
            faults.armed = True
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("b", 30)
            )
            codes.append(await asyncio.wait_for(run, 30))
        finally:
            await finish_service(run)

    async def second() -> None:
        registry = CollectorRegistry()
        service, run = await start_service(settings, registry)
        running.append(service)
        try:
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("c", 5)
            )
            await until(lambda: metric(registry, "streamal_samples_total") >= 5, 30, "the last samples")
            await asyncio.sleep(3)  # and the failed batch's, if they are read again
            service.stop()
            codes.append(await asyncio.wait_for(run, 20))
        finally:
            await finish_service(run)

    asyncio.run(first())
    assert faults.failed == 1
    asyncio.run(second())
    assert codes == [0, 0]
    predicted = _ids(broker.bootstrap_servers, f"{prefix}predictions", 65)
    missing = {f"b{i}" for i in range(30)} - set(predicted)
    assert not missing, f"{len(missing)} samples never predicted"
    assert set(predicted) == {f"{stem}{i}" for stem, n in (("a", 30), ("b", 30), ("c", 5)) for i in range(n)}


# -- 5: output over the size limit, and refusals no retry cures ---------------------------------------------
def test_output_over_the_size_limit_is_dead_lettered_once_and_nothing_is_retried(
    broker: EmbeddedBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Kafka's default size limit (emulated: the embedded broker has none): a sample over it becomes a
    dead letter that fits (a prefix, and its size in a header); a valid sample whose label request would be
    over it is dead-lettered as too_large. No delivery fails, so nothing is processed or published twice."""
    refused = _refuse_batches(
        monkeypatch,
        lambda topic, size: (
            MessageSizeTooLargeError(f"{topic}: a record batch of {size} bytes")
            if size > KAFKA_MESSAGE_MAX_BYTES
            else None
        ),
    )
    # integers in the features come back as floats in the label request ("1" -> "1.0"): 1.03 MB -> 1.22 MB
    wide = orjson.dumps({"id": "wide", "features": {f"f{i}": 1 for i in range(94_000)}})
    big = orjson.dumps({"id": "big", "features": {f"f{i}": 1.5 for i in range(110_000)}})
    assert len(wide) <= MAX_MESSAGE_BYTES < len(big)
    settings = settings_for(broker.bootstrap_servers, prefix, STREAMAL_POLICY__BUDGET="1.0")  # asks them all
    registry = CollectorRegistry()
    seen: dict[str, float] = {}

    def send() -> None:
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "message.max.bytes": 2_000_000})
        for key, value in [(b"wide", wide), *sample_records("a", 5), (b"big", big), *sample_records("b", 5)]:
            producer.produce(f"{prefix}samples", key=key, value=value)
        assert producer.flush(30) == 0

    async def main() -> None:
        service, run = await start_service(settings, registry)
        try:
            await asyncio.to_thread(send)
            await until(
                lambda: (
                    metric(registry, "streamal_samples_total") >= 10
                    and metric(registry, "streamal_dead_letters_total", reason="too_large") >= 2
                ),
                40,
                "10 samples scored and 2 dead letters",
            )
            await asyncio.sleep(2)
            for kind in ("produce", "model"):
                seen[kind] = metric(registry, "streamal_errors_total", kind=kind)
            seen["samples"] = metric(registry, "streamal_samples_total")
            seen["too_large"] = metric(registry, "streamal_dead_letters_total", reason="too_large")
            seen["requests"] = metric(registry, "streamal_label_requests_total")
            service.stop()
            seen["code"] = await asyncio.wait_for(run, 20)
        finally:
            await finish_service(run)

    asyncio.run(main())
    assert refused == []
    assert seen == {"produce": 0, "model": 0, "samples": 10, "too_large": 2, "requests": 10, "code": 0}
    valid = {f"{stem}{i}" for stem in "ab" for i in range(5)}
    assert _ids(broker.bootstrap_servers, f"{prefix}predictions", 11, timeout=5) == Counter(valid)
    assert _ids(broker.bootstrap_servers, f"{prefix}label-requests", 11, timeout=5) == Counter(valid)
    dead = read_all(broker.bootstrap_servers, f"{prefix}dead-letters", 3, timeout=5)
    assert len(dead) == 2
    by_key = {m.key(): m for m in dead}
    for key, original in ((b"wide", wide), (b"big", big)):
        headers = dict(by_key[key].headers())
        assert headers["error.reason"] == b"too_large"
        assert int(headers["error.original_size"]) == len(original)
        assert by_key[key].value() == original[:65_536]
    assert b"label request" in dict(by_key[b"wide"].headers())["error"]


@pytest.mark.parametrize("role", ["all", "scorer"])
def test_a_delivery_the_cluster_refuses_for_good_stops_the_service(
    broker: EmbeddedBroker,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    role: str,
) -> None:
    """No permission to write the predictions topic: a retry cannot cure it, so the service stops with exit
    code 4 and a log line that names the topic, instead of processing (and publishing the rest of) the same
    batch for ever."""
    refused = _refuse_batches(
        monkeypatch,
        lambda topic, size: TopicAuthorizationFailedError() if topic == f"{prefix}predictions" else None,
    )
    settings = settings_for(
        broker.bootstrap_servers,
        prefix,
        STREAMAL_TOPICS__MODELS=f"{prefix}models",
        STREAMAL_CHECKPOINT__KEY="k" * 32,  # (scale-out signs its model snapshots)
    )
    registry = CollectorRegistry()

    async def main() -> int:
        _, run = await start_service(settings, registry, role)
        try:
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("s", 5)
            )
            return await asyncio.wait_for(asyncio.shield(run), 20)
        finally:
            await finish_service(run)

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(main()) == EXIT_OUTPUT_REFUSED
    said = "refuses the service's output for good"
    refusal = [r.getMessage() for r in caplog.records if said in r.getMessage()]
    assert refusal, caplog.text
    assert f"{prefix}predictions" in refusal[0]
    assert "TopicAuthorizationFailedError" in refusal[0]
    assert metric(registry, "streamal_errors_total", kind="produce") == 1
    assert set(refused) == {f"{prefix}predictions"}


# -- 7: the model raises ------------------------------------------------------------------------------------
def test_an_exception_of_the_model_dead_letters_its_input_and_the_loop_goes_on(
    broker: EmbeddedBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What river's HoeffdingTreeClassifier does given labels of mixed types (scoring raises TypeError), and
    a label whose learning raises: counted as model errors, dead-lettered as model_error, and the service goes
    on scoring what it can; the other samples of a batch the model fails on are scored one by one. A sample
    whose output cannot be encoded goes to the dead letters too (invalid_schema)."""
    failure = TypeError("'<' not supported between instances of 'str' and 'int'")
    score, learn = Engine.score, Engine.learn

    def scoring(engine: Engine, samples: list[Sample]) -> list[Decision]:
        if any(s.id.startswith("poison") for s in samples):
            raise failure
        return score(engine, samples)

    def learning(engine: Engine, label: Label) -> LabelOutcome:
        if label.id == "boom":
            raise failure
        return learn(engine, label)

    monkeypatch.setattr(Engine, "score", scoring)
    monkeypatch.setattr(Engine, "learn", learning)
    encode = messages.prediction_message

    def predicting(sample_id: str, *args: Any) -> bytes:
        if sample_id == "unsendable":
            raise TypeError("Recursion limit reached")  # what orjson says of a value nested too deep
        return encode(sample_id, *args)

    monkeypatch.setattr(messages, "prediction_message", predicting)  # (the worker's encode_outputs calls it)
    settings = settings_for(broker.bootstrap_servers, prefix)
    registry = CollectorRegistry()
    seen: dict[str, Any] = {}

    async def main() -> None:
        service, run = await start_service(settings, registry)
        try:
            seen["at_start"] = (
                registry.get_sample_value("streamal_errors_total", {"kind": "model"}),
                registry.get_sample_value("streamal_dead_letters_total", {"reason": "model_error"}),
            )
            bootstrap = broker.bootstrap_servers
            # one batch: the model fails on two of its five samples
            poisoned = sample_records("poison", 2) + sample_records("mix", 3)
            await asyncio.to_thread(produce, bootstrap, f"{prefix}samples", poisoned)
            await until(
                lambda: (
                    run.done()
                    or (
                        metric(registry, "streamal_dead_letters_total", reason="model_error") >= 2
                        and metric(registry, "streamal_samples_total") >= 3
                    )
                ),
                30,
                "the samples dead-lettered",
            )
            labels = [(b"boom", label_message("boom", "a")), (b"other", label_message("other", 1))]
            await asyncio.to_thread(produce, bootstrap, f"{prefix}labels", labels)
            unsendable: list[tuple[bytes | None, bytes | None]] = [
                (b"unsendable", orjson.dumps({"id": "unsendable", "features": {"x": 1.0}}))
            ]
            await asyncio.to_thread(
                produce, bootstrap, f"{prefix}samples", sample_records("n", 5) + unsendable
            )
            await until(
                lambda: (
                    run.done()
                    or (
                        metric(registry, "streamal_samples_total") >= 8
                        and metric(registry, "streamal_labels_total", outcome="unknown") >= 1
                        and metric(registry, "streamal_dead_letters_total", reason="model_error") >= 3
                        and metric(registry, "streamal_dead_letters_total", reason="invalid_schema") >= 1
                    )
                ),
                30,
                "the label dead-lettered and the next samples scored",
            )
            assert not run.done(), f"the service stopped: {run.exception()!r}"
            seen["errors"] = metric(registry, "streamal_errors_total", kind="model")
            seen["dead"] = metric(registry, "streamal_dead_letters_total", reason="model_error")
            service.stop()
            seen["code"] = await asyncio.wait_for(run, 20)
        finally:
            await finish_service(run)

    asyncio.run(main())
    assert seen["at_start"] == (0.0, 0.0)  # exported from the start, like the other kinds and reasons
    assert seen["errors"] == 3  # each poison sample (scored alone, after its batch), and the label
    assert seen["dead"] == 3
    assert seen["code"] == 0
    assert _ids(broker.bootstrap_servers, f"{prefix}predictions", 9, timeout=5) == Counter(
        [f"n{i}" for i in range(5)] + [f"mix{i}" for i in range(3)]
    )
    dead = read_all(broker.bootstrap_servers, f"{prefix}dead-letters", 5, timeout=5)
    reasons = {m.key(): dict(m.headers()) for m in dead}
    assert sorted(reasons) == [b"boom", b"poison0", b"poison1", b"unsendable"]
    assert reasons.pop(b"unsendable")["error.reason"] == b"invalid_schema"
    headers = list(reasons.values())
    assert [h["error.reason"] for h in headers] == [b"model_error"] * 3
    assert all(b"TypeError" in h["error"] for h in headers)
    assert Counter(h["source.topic"] for h in headers) == {
        f"{prefix}samples".encode(): 2,
        f"{prefix}labels".encode(): 1,
    }


# -- 9: counted once ----------------------------------------------------------------------------------------
def test_a_batch_processed_again_after_a_failed_delivery_is_counted_once(
    broker: EmbeddedBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = _ShipFaults(monkeypatch, KafkaTimeoutError("injected: the delivery timed out"), send=False)
    settings = settings_for(broker.bootstrap_servers, prefix, STREAMAL_POLICY__BUDGET="0.5")
    registry = CollectorRegistry()
    seen: dict[str, float] = {}

    async def main() -> None:
        service, run = await start_service(settings, registry)
        try:
            faults.armed = True
            stream = [*sample_records("s", 20), (b"bad", b"not json"), (b"bad", b"{")]
            await asyncio.to_thread(produce, broker.bootstrap_servers, f"{prefix}samples", stream)
            await until(
                lambda: (
                    metric(registry, "streamal_errors_total", kind="produce") >= 1
                    and metric(registry, "streamal_samples_total") >= 20
                    and metric(registry, "streamal_dead_letters_total", reason="invalid_json") >= 2
                ),
                30,
                "the batch processed again",
            )
            await asyncio.sleep(1.5)
            for name in ("samples", "predictions", "label_requests"):
                seen[name] = metric(registry, f"streamal_{name}_total")
            seen["dead"] = metric(registry, "streamal_dead_letters_total", reason="invalid_json")
            service.stop()
            assert await asyncio.wait_for(run, 20) == 0
        finally:
            await finish_service(run)

    asyncio.run(main())
    assert faults.failed == 1
    requests = read_all(
        broker.bootstrap_servers, f"{prefix}label-requests", int(seen["label_requests"]) + 1, 5
    )
    assert seen == {"samples": 20, "predictions": 20, "dead": 2, "label_requests": len(requests)}
