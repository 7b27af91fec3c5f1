"""Session fixtures shared by every test.

Tests marked ``broker``, ``postgres`` or ``rabbitmq`` run against the real local
servers; the first such test starts the local stack with the project's own
scripts (a no-op when it is already up). Fixtures are factories so each test
gets fresh topics, schemas and queues and tests never see each other's data.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from trade_engine.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
SERVICE_MARKERS = ("broker", "postgres", "rabbitmq")
_SCRIPT = {"broker": "kafka", "postgres": "postgres", "rabbitmq": "rabbitmq"}
_started: set[str] = set()


def _ensure_service(marker: str) -> None:
    if marker in _started:
        return
    name = _SCRIPT[marker]
    result = subprocess.run(
        ["bash", str(REPO / "ops" / name / f"{name}.sh"), "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"could not start local {name}:\n{result.stderr[-4000:]}", pytrace=False)
    _started.add(marker)


@pytest.fixture(autouse=True)
def _local_services(request: pytest.FixtureRequest) -> None:
    for marker in SERVICE_MARKERS:
        if request.node.get_closest_marker(marker):
            _ensure_service(marker)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def kafka_conf(settings: Settings) -> dict[str, object]:
    return settings.kafka.librdkafka()


@pytest.fixture
def new_topic(settings: Settings) -> Iterator[Callable[..., str]]:
    """Factory: create a uniquely named topic; all are deleted after the test."""
    _ensure_service("broker")
    admin = AdminClient(settings.kafka.librdkafka())
    created: list[str] = []

    def create(prefix: str = "test", partitions: int = 4, **config: str) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)]
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)
