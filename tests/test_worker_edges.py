"""Edges of the poll loop: a read error is no delivery failure, a label request that never went out does not
wait for its label, and a stop on a refusal for good leaves no acknowledgement unread.

The faults are injected by wrapping one Kafka call (``AIOKafkaConsumer.getmany``,
``AIOKafkaProducer.send_batch``) of a real service run against the embedded broker, as a real cluster would
answer (see tests/test_delivery_faults.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from streamal.broker import EmbeddedBroker
from streamal.engine import Engine
from streamal.kafka.outbox import Outbox
from streamal.messages import MAX_MESSAGE_BYTES, Label, Sample, label_message
from streamal.models import build_model
from streamal.pending import LabelOutcome, PendingRequests
from streamal.policies import FixedThreshold
from streamal.selection import build_selector
from streamal.service import EXIT_OUTPUT_REFUSED, Service
from streamal.strategies import Entropy
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


# -- helpers -------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _asking_engine(clock: Clock, window: int | None = None) -> Engine:
    """An engine whose policy asks for every sample (with a selector: every pick of a window)."""
    return Engine(
        build_model("knn"),
        Entropy(),
        FixedThreshold(budget=1.0, threshold=0.0, min_spend=0.0, warmup=0),
        PendingRequests(ttl_seconds=10.0, clock=clock),
        clock=clock,
        selector=build_selector("kcenter", window=window, seed=0) if window is not None else None,
    )


# -- 1: a read error is not a delivery failure --------------------------------------------------------------
@pytest.mark.kafka
def test_a_read_error_is_counted_apart_and_leaves_the_batches_in_flight_alone(
    broker: EmbeddedBroker, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The poll right after a batch of samples raises (as for a topic the service may not read) while that
    batch waits for its acknowledgement: counted as ``consume``, not ``produce``, and the batch is delivered
    and committed as usual, not processed again (which would publish its predictions twice)."""
    original_ship = Outbox.ship

    async def slow_ship(outbox: Outbox) -> asyncio.Future[Any]:
        """Acknowledged half a second late: the batch is surely in flight at the next poll."""
        acks = await original_ship(outbox)

        async def later() -> Any:
            result = await acks
            await asyncio.sleep(0.5)
            return result

        return asyncio.ensure_future(later())

    monkeypatch.setattr(Outbox, "ship", slow_ship)
    original_getmany = AIOKafkaConsumer.getmany
    state: dict[str, Any] = {"armed": False, "next": False, "raised": 0, "unsettled": None}
    running: list[Service] = []

    async def getmany(consumer: AIOKafkaConsumer, *partitions: Any, **kwargs: Any) -> Any:
        if state["next"]:
            state["next"] = False
            state["raised"] += 1
            worker = running[0]._worker
            state["unsettled"] = worker is not None and worker.unsettled
            raise TopicAuthorizationFailedError(f"injected: not allowed to read {prefix}samples")
        batch = await original_getmany(consumer, *partitions, **kwargs)
        if state["armed"] and any(tp.topic == f"{prefix}samples" for tp in batch):
            state["armed"], state["next"] = False, True
        return batch

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", getmany)
    settings = settings_for(broker.bootstrap_servers, prefix)
    registry = CollectorRegistry()
    seen: dict[str, Any] = {}

    async def main() -> None:
        service, run = await start_service(settings, registry)
        running.append(service)
        try:
            state["armed"] = True
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("s", 20)
            )
            await until(
                lambda: run.done() or (state["raised"] and metric(registry, "streamal_samples_total") >= 20),
                30,
                "the read error and 20 samples scored",
            )
            await asyncio.sleep(1.5)  # a batch processed again would be published by now
            # the service goes on: samples sent after the error are scored too
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("t", 10)
            )
            await until(
                lambda: run.done() or metric(registry, "streamal_samples_total") >= 30,
                30,
                "30 samples scored",
            )
            assert not run.done(), f"the service stopped: {run.exception()!r}"
            for kind in ("consume", "produce"):
                seen[kind] = metric(registry, "streamal_errors_total", kind=kind)
            seen["samples"] = metric(registry, "streamal_samples_total")
            service.stop()
            seen["code"] = await asyncio.wait_for(run, 20)
        finally:
            await finish_service(run)

    with caplog.at_level(logging.WARNING, logger="streamal"):
        asyncio.run(main())
    assert state["raised"] == 1
    assert state["unsettled"], "no batch was in flight when the read failed: the test shows nothing"
    predicted = Counter(
        orjson.loads(m.value())["id"]
        for m in read_all(broker.bootstrap_servers, f"{prefix}predictions", 31, timeout=5)
    )
    twice = sorted(i for i, n in predicted.items() if n > 1)
    assert not twice, f"predicted more than once: {twice}"
    assert set(predicted) == {f"{stem}{i}" for stem, n in (("s", 20), ("t", 10)) for i in range(n)}
    assert seen == {"consume": 1, "produce": 0, "samples": 30, "code": 0}
    said = [r.getMessage() for r in caplog.records if "reading the input failed" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert "TopicAuthorizationFailedError" in said[0]
    assert "delivery failed" not in caplog.text


# -- 2: a label request that never went out -----------------------------------------------------------------
def test_a_withdrawn_request_is_neither_pending_nor_timed_out_and_its_label_is_unknown() -> None:
    clock = Clock()
    engine = _asking_engine(clock)
    decisions = engine.score([Sample(id="a", features={"x": 1.0}), Sample(id="b", features={"x": 2.0})])
    assert [d.queried for d in decisions] == [True, True]
    spent = engine.policy.spending
    engine.withdraw("a")
    assert "a" not in engine.pending
    assert len(engine.pending) == 1
    clock.now = 20.0
    assert engine.expire() == 1  # b's, not a's
    assert engine.pending.timed_out == 1
    assert engine.learn(Label(id="a", label="cat")) is LabelOutcome.UNKNOWN
    assert engine.requests_made == 2  # the policy decided: its budget stays spent
    assert engine.policy.spending == spent


def test_with_a_selector_a_withdrawn_sample_is_neither_picked_nor_requested() -> None:
    clock = Clock()
    # withdrawn while its window is open: the window closes without it
    engine = _asking_engine(clock, window=2)
    engine.score([Sample(id="a", features={"x": 1.0})])
    engine.withdraw("a")
    engine.score([Sample(id="b", features={"x": 2.0}), Sample(id="c", features={"x": 3.0})])
    assert sorted(d.sample.id for d in engine.take_requests()) == ["b", "c"]
    assert sorted(engine.pending._pending) == ["b", "c"]
    # withdrawn after its window closed, before its request was taken: not requested, not pending
    engine = _asking_engine(clock, window=2)
    engine.score([Sample(id="a", features={"x": 1.0}), Sample(id="b", features={"x": 2.0})])
    engine.withdraw("a")
    assert [d.sample.id for d in engine.take_requests()] == ["b"]
    assert "a" not in engine.pending
    assert len(engine.pending) == 1


@pytest.mark.kafka
@pytest.mark.parametrize("selector", [None, "kcenter"])
def test_a_sample_asked_for_but_dead_lettered_leaves_no_request_waiting(
    broker: EmbeddedBroker, prefix: str, selector: str | None
) -> None:
    """The policy asks for every sample; one's label request would be over the size limit, so the sample is
    dead-lettered as too_large. Its request never went out: nothing waits for its label, nothing of it times
    out, and a label for it is unknown. With a selector (a window of two) the request is decided when the
    window closes, for both samples."""
    # integers in the features come back as floats in the label request ("1" -> "1.0"): 1.03 MB -> 1.22 MB
    wide = orjson.dumps({"id": "wide", "features": {f"f{i}": 1 for i in range(94_000)}})
    assert len(wide) <= MAX_MESSAGE_BYTES
    extra = {"STREAMAL_STRATEGY__SELECTOR": selector, "STREAMAL_STRATEGY__WINDOW": "2"} if selector else {}
    settings = settings_for(
        broker.bootstrap_servers,
        prefix,
        STREAMAL_POLICY__BUDGET="1.0",  # asks them all
        STREAMAL_PENDING__TTL_SECONDS="2",
        **extra,
    )
    registry = CollectorRegistry()
    seen: dict[str, Any] = {}

    def send_wide() -> None:
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "message.max.bytes": 2_000_000})
        producer.produce(f"{prefix}samples", key=b"wide", value=wide)
        assert producer.flush(30) == 0

    async def main() -> None:
        service, run = await start_service(settings, registry)
        try:
            bootstrap = broker.bootstrap_servers
            # one small sample first (with a selector: the window's first), then the wide one
            await asyncio.to_thread(produce, bootstrap, f"{prefix}samples", sample_records("a", 1))
            await until(lambda: metric(registry, "streamal_samples_total") >= 1, 30, "a0 scored")
            await asyncio.to_thread(send_wide)
            await until(
                lambda: (
                    run.done()
                    or (
                        metric(registry, "streamal_dead_letters_total", reason="too_large") >= 1
                        and metric(registry, "streamal_label_requests_total") >= 1
                    )
                ),
                40,
                "the wide sample dead-lettered and a0's request sent",
            )
            assert not run.done(), f"the service stopped: {run.exception()!r}"
            seen["pending"] = service.model_info()["pending_requests"]
            seen["wide pending"] = "wide" in service.engine.pending
            await asyncio.sleep(2.5)  # past the time to live of every request
            service.engine.expire()  # (the loop sweeps every 10 s)
            await asyncio.to_thread(
                produce, bootstrap, f"{prefix}labels", [(b"wide", label_message("wide", 1))]
            )
            await until(
                lambda: run.done() or sum(service.engine.outcomes.values()) >= 1, 30, "the label for wide"
            )
            seen["outcomes"] = {o.value: n for o, n in service.engine.outcomes.items() if n}
            seen["timed_out"] = metric(registry, "streamal_pending_dropped_total", cause="timed_out")
            seen["requests"] = metric(registry, "streamal_label_requests_total")
            service.stop()
            seen["code"] = await asyncio.wait_for(run, 20)
        finally:
            await finish_service(run)

    asyncio.run(main())
    assert seen == {
        "pending": 1,  # a0's
        "wide pending": False,
        "outcomes": {"unknown": 1},
        "timed_out": 1,  # a0's, not wide's
        "requests": 1,
        "code": 0,
    }
    requested = read_all(broker.bootstrap_servers, f"{prefix}label-requests", 2, timeout=3)
    assert [m.key() for m in requested] == [b"a0"]


# -- 3: a refusal for good leaves no acknowledgement unread -------------------------------------------------
@pytest.mark.kafka
def test_a_refusal_for_good_leaves_no_acknowledgement_unread(
    broker: EmbeddedBroker, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No permission to write the predictions topic, answered a moment after each batch is sent, with one
    sample a batch: when the service stops with exit code 4 the batches behind the refused one are in flight
    and refused too. Their outcome is read, so asyncio logs no "exception was never retrieved"."""
    original = AIOKafkaProducer.send_batch
    refused: list[str] = []

    async def send_batch(producer: AIOKafkaProducer, batch: Any, topic: str, *, partition: int) -> Any:
        if topic != f"{prefix}predictions":
            return await original(producer, batch, topic, partition=partition)
        refused.append(topic)
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[Any] = loop.create_future()

        def fail() -> None:
            if not failed.done():
                failed.set_exception(TopicAuthorizationFailedError())

        loop.call_later(0.3, fail)
        return failed

    monkeypatch.setattr(AIOKafkaProducer, "send_batch", send_batch)
    settings = settings_for(broker.bootstrap_servers, prefix, STREAMAL_KAFKA__MAX_BATCH_SIZE="1")
    registry = CollectorRegistry()

    async def main() -> int:
        _, run = await start_service(settings, registry)
        try:
            await asyncio.to_thread(
                produce, broker.bootstrap_servers, f"{prefix}samples", sample_records("s", 10)
            )
            return await asyncio.wait_for(asyncio.shield(run), 30)
        finally:
            await finish_service(run)

    # the service's log record of the refusal holds the exception, so its traceback and the worker: kept by
    # pytest's log capture, it would keep the acknowledgements from being collected (and reported) here
    streamal_log = logging.getLogger("streamal")
    level = streamal_log.level
    streamal_log.setLevel(logging.CRITICAL)
    try:
        with caplog.at_level(logging.ERROR):
            code = asyncio.run(main())
            gc.collect()  # an unread future is reported when it is collected
    finally:
        streamal_log.setLevel(level)
    assert code == EXIT_OUTPUT_REFUSED
    assert len(refused) >= 2, "one batch in flight: the test shows nothing"
    assert "never retrieved" not in caplog.text, caplog.text
