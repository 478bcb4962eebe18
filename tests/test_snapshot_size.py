"""A learner's model snapshot larger than a Kafka client's default request (1 MiB) is published: the
learner's producer takes requests as large as the model topic does. Against the embedded broker."""

from __future__ import annotations

import asyncio
import random

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamal.broker import EmbeddedBroker
from streamal.kafka.client import connection_options, ensure_topics
from streamal.kafka.models import publish
from streamal.models import build_model
from streamal.service import FOLLOWER_OPTIONS, MODEL_SNAPSHOT_MAX_BYTES, MODEL_TOPIC_CONFIG, producer_options
from streamal.snapshot import decode_snapshot, encode_snapshot
from tests.kafkatools import settings_for

KEY = b"k" * 32


def test_a_snapshot_over_a_mebibyte_is_published_and_read_back(broker: EmbeddedBroker, prefix: str) -> None:
    rng = random.Random(0)
    model = build_model("committee", {"seed": 0})  # five kNNs: the largest snapshots of the built-in models
    for i in range(600):
        x = {f"f{j}": rng.gauss(0.0, 1.0) for j in range(64)}
        model.learn_one(x, i % 3)
    size = len(encode_snapshot(model, 600, KEY))
    assert 1024 * 1024 < size < MODEL_SNAPSHOT_MAX_BYTES  # over the client's default, under the topic's
    settings = settings_for(broker.bootstrap_servers, prefix)
    topic = f"{prefix}models"
    options = connection_options(settings.kafka)
    assert "max_request_size" not in producer_options(settings, "scorer")  # only the learner publishes

    async def main() -> int:
        await ensure_topics(settings.kafka, [topic], partitions=1, configs=MODEL_TOPIC_CONFIG)
        producer = AIOKafkaProducer(**options, **producer_options(settings, "learner"))
        await producer.start()
        try:
            await publish(producer, topic, model, 600, KEY)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**options, **FOLLOWER_OPTIONS)  # as a scorer reads the model topic
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            record = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
        version, restored = decode_snapshot(record.value, KEY, topic)
        assert restored.predict_proba_one({"f0": 0.0}) == model.predict_proba_one({"f0": 0.0})
        return version

    assert asyncio.run(main()) == 600
