"""Fixtures of the tests that need the three-node Kafka cluster or Toxiproxy.

Both are started by their own scripts (``ops/kafka/cluster.sh``, ``ops/toxiproxy/
toxiproxy.sh``). A session that found them up leaves them up; one that started them
stops them at its end, so three idle JVMs do not outlive ``make test`` on two cores.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from ops.chaos.cluster import REPO, KafkaCluster, wait_for_leader
from ops.chaos.toxiproxy import ToxiproxyClient, ToxiproxyError


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    cluster = KafkaCluster()
    started = not cluster.running()
    if started:
        cluster.up()
    yield cluster
    if started:
        cluster.down()


@pytest.fixture
def cluster_topic(kafka_cluster: KafkaCluster) -> Iterator[Callable[..., str]]:
    """Factory: a uniquely named topic with three replicas; all are deleted after the test."""
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    created: list[str] = []

    def create(prefix: str = "chaos", partitions: int = 3, **config: str) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        new = NewTopic(name, num_partitions=partitions, replication_factor=3, config=config)
        admin.create_topics([new])[name].result(timeout=30)
        created.append(name)
        # Created is not yet known everywhere: every partition has a leader first.
        for partition in range(partitions):
            wait_for_leader(admin, name, partition, not_on=-1, timeout_s=30)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)


def _toxiproxy_script(command: str) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "ops" / "toxiproxy" / "toxiproxy.sh"), command],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"toxiproxy.sh {command} failed:\n{result.stderr[-4000:]}", pytrace=False)


@pytest.fixture(scope="session")
def toxiproxy() -> Iterator[ToxiproxyClient]:
    client = ToxiproxyClient()
    try:
        client.version()
        started = False
    except ToxiproxyError:
        _toxiproxy_script("up")
        started = True
    client.reset()
    yield client
    client.reset()
    if started:
        _toxiproxy_script("down")
