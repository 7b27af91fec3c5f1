"""Kafka's default partitioning in pure Python, checked against librdkafka's murmur2_random."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from trade_engine.streams.partitioning import (
    WRONG_PARTITION,
    murmur2,
    partition_for,
    wrong_partition,
)


def test_murmur2_known_values() -> None:
    # Values of Kafka's Java ``Utils.murmur2`` (its unit test vectors), as unsigned ints.
    assert murmur2(b"21") & 0xFFFFFFFF == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == (-985981536) & 0xFFFFFFFF
    assert murmur2(b"") & 0xFFFFFFFF == 275646681


def test_wrong_partition_names_the_right_one() -> None:
    right = partition_for(b"BTC/USDT", 8)
    assert wrong_partition(b"BTC/USDT", right, 8) is None
    problem = wrong_partition(b"BTC/USDT", (right + 1) % 8, 8)
    assert problem is not None
    assert problem[0] == WRONG_PARTITION
    assert f"partition {right} of 8" in problem[1]
    assert wrong_partition(None, 3, 8) is None


@pytest.mark.broker
def test_partition_for_agrees_with_the_engines_producers(
    kafka_conf: dict[str, Any], new_topic: Callable[..., str]
) -> None:
    """Every key lands where ``partition_for`` says, with the producer settings the
    engine's producers use (murmur2_random)."""
    partitions = 7
    topic = new_topic("partitioning", partitions=partitions)
    rng = random.Random(7)
    keys = [b"BTC/USDT", b"ETH/USDT", b"BNB/USDT", b"SOL/USDT", b"x", b"ab", b"abc"]
    keys += [rng.randbytes(rng.randint(1, 40)) for _ in range(200)]
    landed: dict[bytes, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None
        landed[msg.key()] = msg.partition()

    producer = Producer({**kafka_conf, "partitioner": "murmur2_random"})
    for key in keys:
        producer.produce(topic, key=key, value=b"{}", on_delivery=delivered)
    assert producer.flush(30) == 0
    assert landed == {key: partition_for(key, partitions) for key in keys}
