"""Session fixtures shared by every test.

Tests marked ``broker``, ``postgres`` or ``rabbitmq`` run against the real local
servers; the first such test starts the local stack with the project's own
scripts (a no-op when it is already up). Fixtures are factories so each test
gets fresh topics, schemas and queues and tests never see each other's data.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from trade_engine.agents.matcher.replay import replay_partition
from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.config import Settings, load_settings
from trade_engine.streams import clients
from trade_engine.tables.matching import Side
from trade_engine.tables.symbols import rules_for

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


@pytest.fixture
def forget(settings: Settings) -> Iterator[Callable[[str], str]]:
    """``forget(group)``: the consumer group is deleted after the test (members gone)."""
    names: list[str] = []

    def add(group: str) -> str:
        names.append(group)
        return group

    yield add
    if names:
        admin = clients.admin_client(settings)
        for future in admin.delete_consumer_groups(names, request_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result()


@pytest.fixture
def until_stable(settings: Settings) -> Callable[..., None]:
    """``until_stable(member, group)``: poll ``member`` (records it reads are dropped) until
    it holds an assignment and the group's coordinator describes the group as STABLE with
    one member, assigned, within ``timeout_s``. That description is what a live group's
    refusal and ``groups describe`` read, not the member's own view: a member keeps its
    assignment while a rebalance that started after it was assigned waits, and the
    rebalance completes only while the member polls."""
    admin = clients.admin_client(settings)

    def wait(member: Consumer, group: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        seen: object = "no assignment yet"
        while True:
            member.poll(0.1)
            if member.assignment():
                future = admin.describe_consumer_groups([group], request_timeout=10)[group]
                try:
                    description = future.result()
                except KafkaException as exc:  # e.g. the coordinator still loading: ask again
                    seen = exc
                else:
                    state = str(getattr(description.state, "name", description.state))
                    members = description.members
                    seen = (state, len(members))
                    if (
                        state == "STABLE"
                        and len(members) == 1
                        and members[0].assignment is not None
                        and members[0].assignment.topic_partitions
                    ):
                        return
            assert time.monotonic() < deadline, f"group {group} never settled: {seen}"

    return wait


EngineDepth = dict[str, dict[str, list[list[str]]]]


def _engine_depth(settings: Settings) -> EngineDepth:
    """Every symbol's full depth, ``{"bids": [[price, qty], ...], "asks": ...}``,
    from an offline replay of the matcher's log: the truth a depth feed must match."""
    topics = MatcherTopics.from_settings(settings)
    rules = {s.symbol: rules_for(s) for s in settings.market.symbols}
    out: EngineDepth = {}
    for p in range(settings.topics.partitions):
        books, _, _ = replay_partition(settings, topics, rules, p)
        for symbol, book in books.books.items():
            engine = book.engine
            price, qty = engine.rules.price_scale.format, engine.rules.qty_scale.format
            out[symbol] = {
                name: [[price(px), qty(q)] for px, q, _ in engine.depth(side, 10**9)]
                for name, side in (("bids", Side.BUY), ("asks", Side.SELL))
            }
    return out


@pytest.fixture
def engine_depth() -> Callable[[Settings], EngineDepth]:
    """``_engine_depth`` as a fixture (test modules cannot import conftest)."""
    return _engine_depth


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
