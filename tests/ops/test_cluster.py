"""The three-node cluster keeps what it acknowledged when the partition leader is killed.

Smoke test of ``ops/kafka/cluster.sh``: the engine's topics get three replicas there, and
an idempotent ``acks=all`` producer loses and duplicates nothing across a SIGKILL of the
leader it is writing to. The chaos scenarios (issue 15) build on the same fixtures.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource

from ops.chaos.cluster import KafkaCluster, leader, wait_for_leader, wait_in_sync
from trade_engine.config import load_settings
from trade_engine.streams.topics import create_topics

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_engine_topics_get_three_replicas_and_two_in_sync(kafka_cluster: KafkaCluster) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_cluster.bootstrap},
        topics={"prefix": f"rf3-{uuid.uuid4().hex[:8]}.", "replication_factor": 3},
    )
    outcome = create_topics(settings)
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    try:
        assert set(outcome.values()) == {"created"}
        # A topic just created reaches every broker's metadata a moment later (seen on
        # a freshly started cluster): wait for all of them before looking.
        deadline = time.monotonic() + 30
        topics = admin.list_topics(timeout=10).topics
        while not set(outcome) <= set(topics) and time.monotonic() < deadline:
            time.sleep(0.5)
            topics = admin.list_topics(timeout=10).topics
        for name in outcome:
            assert all(len(p.replicas) == 3 for p in topics[name].partitions.values()), name
        executions = settings.topic_names["executions"]
        resource = ConfigResource(ConfigResource.Type.TOPIC, executions)
        config = admin.describe_configs([resource])[resource].result(timeout=10)
        assert config["min.insync.replicas"].value == "2"
        assert config["unclean.leader.election.enable"].value == "false"
    finally:
        for future in admin.delete_topics(list(outcome)).values():
            future.result(timeout=30)


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            # Long enough to ride out the fencing of the dead leader and an election.
            "message.timeout.ms": 60_000,
        }
    )


def _read_partition(bootstrap: str, topic: str, partition: int, expect: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < expect and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None and (value := msg.value()) is not None:
                    values.append(value)
        # A little longer: records that should not be there get their chance to show.
        for msg in consumer.consume(1000, 1.0):
            if msg.error() is None and (value := msg.value()) is not None:
                values.append(value)
    finally:
        consumer.close()
    return values


@dataclass
class _Tally:
    """Delivery reports: what was acknowledged, and when acks resumed after the kill."""

    acked: list[bytes] = field(default_factory=list)
    errors: list[KafkaError] = field(default_factory=list)
    killed_at: float = 0.0
    produced_at_kill: int = 0
    resumed_at: float | None = None

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err)
            return
        value = msg.value()
        assert value is not None
        self.acked.append(value)
        # Reports are served by poll(), maybe after the kill for acks from before it:
        # acks resumed when a record produced after the kill is acknowledged.
        if self.resumed_at is None and self.killed_at and int(value) >= self.produced_at_kill:
            self.resumed_at = time.monotonic()


def test_killing_the_partition_leader_loses_nothing_acknowledged(
    kafka_cluster: KafkaCluster, cluster_topic: Callable[..., str]
) -> None:
    topic = cluster_topic(partitions=3)
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    producer = _producer(kafka_cluster.bootstrap)
    tally = _Tally()

    def produce(i: int) -> None:
        producer.produce(topic, value=b"%06d" % i, partition=0, on_delivery=tally.on_delivery)
        producer.poll(0)

    for i in range(2000):
        produce(i)
    assert producer.flush(30) == 0
    victim = leader(admin, topic, 0)
    assert victim in (1, 2, 3)

    # Keep producing at about 1,000/s: 1 s, then the leader is killed, then on until the
    # records produced after the kill have been acknowledged for 2 s.
    i = 2000
    acked_at_kill = 0
    start = time.monotonic()
    try:
        while tally.resumed_at is None or time.monotonic() - tally.resumed_at < 2.0:
            produce(i)
            i += 1
            producer.poll(0.001)
            if not tally.killed_at and time.monotonic() - start > 1.0:
                tally.produced_at_kill, acked_at_kill = i, len(tally.acked)
                kafka_cluster.kill(victim)  # returns once the process is gone
                tally.killed_at = time.monotonic()
            assert time.monotonic() - start < 60, "no acknowledgement within 60 s of the kill"
        assert producer.flush(60) == 0
        new_leader = wait_for_leader(admin, topic, 0, not_on=victim)

        # Nothing acknowledged is lost, nothing is written twice, and the order holds.
        assert tally.errors == []
        assert len(tally.acked) == i
        assert _read_partition(kafka_cluster.bootstrap, topic, 0, i) == tally.acked
    finally:
        if tally.killed_at:
            restart_began = time.monotonic()
            kafka_cluster.start(victim)
            restart_s = time.monotonic() - restart_began
    catch_up_s = wait_in_sync(admin, topic, 0, victim)

    assert acked_at_kill > 2000, "the kill must land while the producer is writing"
    assert new_leader != victim
    assert tally.resumed_at is not None
    print(
        json.dumps(
            {
                "killed_leader": victim,
                "new_leader": new_leader,
                "acked": len(tally.acked),
                "unconfirmed_at_kill": tally.produced_at_kill - acked_at_kill,
                "recovery_s": round(tally.resumed_at - tally.killed_at, 2),
                "restart_s": round(restart_s, 2),
                "catch_up_s": round(catch_up_s, 2),
            }
        )
    )


def test_a_broker_whose_disk_fills_halts_and_says_why_and_rejoins_when_space_returns(
    kafka_cluster: KafkaCluster, cluster_topic: Callable[..., str]
) -> None:
    """``cluster.sh fill N``: the node's own tmpfs is full, its next write fails, Kafka
    halts it (its only log dir failed); the other two keep acknowledging (min ISR 2);
    ``unfill`` and a start bring it back in sync. The chaos scenario ``disk-full`` builds
    on this with two nodes and the whole engine."""
    if not kafka_cluster.disks_on_tmpfs():
        pytest.skip("the cluster's log dirs are not on tmpfs (cluster.sh mounts them as root)")
    topic = cluster_topic(partitions=1)
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    producer = _producer(kafka_cluster.bootstrap)
    tally = _Tally()
    victim = next(n for n in (1, 2, 3) if n != leader(admin, topic, 0))  # a follower
    kafka_cluster.fill(victim)
    try:
        # Writes reach the follower's full disk: it halts within seconds.
        deadline = time.monotonic() + 60
        i = 0
        while kafka_cluster.node_up(victim):
            assert time.monotonic() < deadline, f"node {victim} still up with a full disk"
            for _ in range(50):
                producer.produce(
                    topic, value=b"%06d" % i, partition=0, on_delivery=tally.on_delivery
                )
                i += 1
            producer.poll(0.2)
        said = kafka_cluster.log_lines(victim, "No space left on device", "have failed")
        assert any("No space left on device" in line for line in said)
        assert any("have failed" in line for line in said)
        # Two in-sync replicas remain: every record is still acknowledged.
        for _ in range(200):
            producer.produce(topic, value=b"%06d" % i, partition=0, on_delivery=tally.on_delivery)
            i += 1
        assert producer.flush(60) == 0
        assert tally.errors == []
        assert len(tally.acked) == i
    finally:
        kafka_cluster.unfill(victim)
        kafka_cluster.start(victim)
    wait_in_sync(admin, topic, 0, victim, timeout_s=120)
    assert _read_partition(kafka_cluster.bootstrap, topic, 0, i) == tally.acked
