"""Helpers for the connectors' tests: read a topic back completely."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from trade_engine.config import Settings


@pytest.fixture
def read_topic(settings: Settings) -> Callable[..., list[Message]]:
    """Factory: the first ``n`` messages of every partition of a topic (read_committed)."""

    def read(topic: str, n: int, timeout_s: float = 30.0) -> list[Message]:
        conf = settings.kafka.librdkafka() | {
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
        consumer = Consumer(conf)
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            consumer.assign(
                [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
            )
            out: list[Message] = []
            deadline = time.monotonic() + timeout_s
            while len(out) < n and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                out.append(msg)
            assert len(out) == n, f"read {len(out)} of {n} messages from {topic}"
            return out
        finally:
            consumer.close()

    return read
