"""Toxiproxy between clients and the cluster: the faults land, and nothing is lost to them.

A client bootstrapped on the proxy ports is sent back to the proxy for every broker (the
PROXIED listener advertises Toxiproxy's address), so a toxic on ``kafka-N`` reaches all
of its traffic to node N while replication between the brokers stays untouched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from ops.chaos import toxiproxy as tp
from ops.chaos.cluster import KafkaCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
KAFKA_PROXIES = ["kafka-1", "kafka-2", "kafka-3"]


def _ack_seconds(producer: Producer, topic: str, value: bytes, timeout_s: float) -> float | None:
    """Produce one record; seconds until it is acknowledged, None if not within timeout_s."""
    done: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, _: Message) -> None:
        done.append(err)

    start = time.monotonic()
    producer.produce(topic, value=value, partition=0, on_delivery=on_delivery)
    while not done and time.monotonic() - start < timeout_s:
        producer.poll(0.01)
    if not done:
        return None
    assert done == [None]
    return time.monotonic() - start


def _all_values(bootstrap: str, topic: str) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    try:
        while batch := consumer.consume(100, 2.0):
            values += [v for m in batch if m.error() is None and (v := m.value()) is not None]
    finally:
        consumer.close()
    return values


def test_faults_reach_clients_on_the_proxied_listener(
    kafka_cluster: KafkaCluster,
    toxiproxy: tp.ToxiproxyClient,
    cluster_topic: Callable[..., str],
) -> None:
    kafka_cluster.install_proxies(toxiproxy)
    topic = cluster_topic(partitions=1)
    producer = Producer(
        {
            "bootstrap.servers": kafka_cluster.proxied_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
        }
    )
    brokers = producer.list_topics(timeout=10).brokers.values()
    assert sorted(b.port for b in brokers) == [kafka_cluster.proxy_port(n) for n in (1, 2, 3)]
    # The first record pays for connections and the producer id; the second is the baseline.
    assert _ack_seconds(producer, topic, b"0", 10) is not None
    baseline = _ack_seconds(producer, topic, b"1", 10)
    assert baseline is not None

    with toxiproxy.toxic(KAFKA_PROXIES, tp.latency("slow", ms=300)):
        slow = _ack_seconds(producer, topic, b"2", 10)
    assert slow is not None
    assert slow >= 0.3 > baseline

    # A silent partition (TCP stays up, bytes vanish): nothing is acknowledged during it,
    # and the record goes through once it heals, exactly once.
    with toxiproxy.toxic(KAFKA_PROXIES, tp.timeout("partition", ms=0)):
        assert _ack_seconds(producer, topic, b"3", 2.0) is None
    assert producer.flush(30) == 0

    # A hard partition: the proxies close every connection and refuse new ones.
    for name in KAFKA_PROXIES:
        assert not toxiproxy.set_enabled(name, False).enabled
    assert _ack_seconds(producer, topic, b"4", 2.0) is None
    for name in KAFKA_PROXIES:
        toxiproxy.set_enabled(name, True)
    assert producer.flush(30) == 0

    assert _all_values(kafka_cluster.bootstrap, topic) == [b"0", b"1", b"2", b"3", b"4"]
