"""Consumer lag per partition, in messages and seconds, and stall detection, on the real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from trade_engine.config import load_settings
from trade_engine.ops.lag import LAG, LagReader, export
from trade_engine.streams.topics import create_topics


@pytest.mark.broker
def test_lag_messages_seconds_and_stall() -> None:
    prefix = f"lag-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 1})
    create_topics(settings)
    topic = settings.topic_names["accepted"]
    group = f"{prefix}matcher"
    conf = settings.kafka.librdkafka()
    producer = Producer(conf)
    for i in range(10):
        producer.produce(topic, key=b"BTC/USDT", value=str(i).encode(), partition=0)
    producer.flush(30)
    committer = Consumer({**conf, "group.id": group, "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    committer.close()
    time.sleep(1.1)

    reader = LagReader(settings)
    try:
        first = reader.read(group, topic, with_seconds=True)[0]
        assert (first.committed, first.end, first.lag) == (4, 10, 6)
        assert first.lag_seconds >= 1.0
        assert not first.stalled

        for i in range(5):
            producer.produce(topic, key=b"BTC/USDT", value=str(i).encode(), partition=0)
        producer.flush(30)
        second = reader.read(group, topic)[0]
        assert second.lag == 11
        assert second.stalled  # lag grew, the group did not commit

        export([second])
        sample = LAG.labels(group, topic, "0")._value.get()
        assert sample == 11
    finally:
        reader.close()
