"""Consumer lag per partition, in messages and seconds, and stall detection, on the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from trade_engine.config import Settings, load_settings
from trade_engine.operations.lag import LAG, LagReader, export
from trade_engine.streams.clients import transactional_producer_conf
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


# ------------------------------------------------- transactional topics (markers)

GROUP_ROLES = {
    "matcher": "accepted",
    "settlement": "executions",
    "sink.postgres": "executions",
    "sink.rabbitmq": "executions",
    "market-data": "executions",
}


@pytest.fixture
def engine_prefix() -> Iterator[Settings]:
    """Settings with the engine's topics under a fresh prefix; deleted after the test."""
    settings = load_settings(topics={"prefix": f"lagtx-{uuid.uuid4().hex[:8]}.", "partitions": 2})
    created = create_topics(settings)
    yield settings
    admin = AdminClient(settings.kafka.librdkafka())
    for future in admin.delete_topics(list(created)).values():
        future.result(timeout=30)


def _transactions(settings: Settings, topic: str, batches: int, per_batch: int) -> None:
    """``batches`` committed transactions of ``per_batch`` records over every partition."""
    producer = Producer(transactional_producer_conf(settings, f"lagtx-{uuid.uuid4().hex}"))
    producer.init_transactions(30)
    for _ in range(batches):
        producer.begin_transaction()
        for i in range(per_batch):
            producer.produce(topic, value=b"x", partition=i % settings.topics.partitions)
        producer.commit_transaction(30)


def _drain(settings: Settings, group: str, topic: str, *, leave: int = 0) -> dict[int, int]:
    """Read the topic read_committed as ``group`` and commit like the engine's stages
    (the offset after the last record applied), leaving the last ``leave`` records of
    each partition unconsumed. Returns partition -> committed offset."""
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    partitions = range(settings.topics.partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    offsets: dict[int, list[int]] = {p: [] for p in partitions}
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while len(at_end) < len(offsets):
            assert time.monotonic() < deadline, "the topic was not read to its end"
            for msg in consumer.consume(100, 0.05):
                partition, error = int(msg.partition() or 0), msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(partition)
                    continue
                offsets[partition].append(int(msg.offset() or 0))
        commit = {
            p: seen[len(seen) - leave - 1] + 1 for p, seen in offsets.items() if len(seen) > leave
        }
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in commit.items()], asynchronous=False
        )
    finally:
        consumer.close()
    return commit


@pytest.mark.broker
def test_drained_groups_on_a_transactional_topic_have_no_lag(engine_prefix: Settings) -> None:
    settings = engine_prefix
    prefix, names = settings.topics.prefix, settings.topic_names
    for role in ("accepted", "executions"):
        _transactions(settings, names[role], batches=5, per_batch=6)
    committed = {
        group: _drain(settings, f"{prefix}{group}", names[role])
        for group, role in GROUP_ROLES.items()
    }
    reader = LagReader(settings)
    try:
        lags = [lag for lag in reader.read_all() if not lag.group.endswith("risk")]
        assert len(lags) == len(GROUP_ROLES) * settings.topics.partitions
        for lag in lags:
            group = lag.group.removeprefix(prefix)
            assert lag.committed == committed[group][lag.partition]
            # The regression: the commit marker after the last record is not lag.
            assert lag.end == lag.committed + 1, lag.as_dict()
            assert (lag.lag, lag.lag_seconds, lag.stalled) == (0, 0.0, False), lag.as_dict()
        assert reader.read(f"{prefix}matcher", names["accepted"])[0].lag == 0  # idem, one group
    finally:
        reader.close()


@pytest.mark.broker
def test_lag_counts_records_not_markers_or_aborted(engine_prefix: Settings) -> None:
    settings = engine_prefix
    topic = settings.topic_names["executions"]
    group = f"{settings.topics.prefix}settlement"
    _transactions(settings, topic, batches=3, per_batch=4)  # 2 records a partition each
    aborted = Producer(transactional_producer_conf(settings, f"lagtx-{uuid.uuid4().hex}"))
    aborted.init_transactions(30)
    aborted.begin_transaction()
    for i in range(6):
        aborted.produce(topic, value=b"never", partition=i % settings.topics.partitions)
    aborted.flush(30)
    aborted.abort_transaction(30)
    # Three records unread on each partition (the last two transactions' records
    # minus one), behind two commit markers, an aborted batch and its marker.
    _drain(settings, group, topic, leave=3)
    time.sleep(1.1)
    reader = LagReader(settings)
    try:
        for lag in reader.read(group, topic, with_seconds=True):
            assert lag.end - lag.committed == 3 + 2 + 3 + 1, lag.as_dict()
            assert lag.lag == 3, lag.as_dict()
            assert lag.lag_seconds >= 1.0, lag.as_dict()
    finally:
        reader.close()


@pytest.mark.broker
def test_one_lag_call_is_fast(engine_prefix: Settings) -> None:
    """Every engine group in one call: drained transactional partitions (markers
    only), a group far behind and groups that never committed, in ~a second."""
    settings = engine_prefix
    prefix, names = settings.topics.prefix, settings.topic_names
    for role in ("accepted", "executions"):
        _transactions(settings, names[role], batches=20, per_batch=4)
    for group in ("matcher", "settlement", "sink.postgres"):
        _drain(settings, f"{prefix}{group}", names[GROUP_ROLES[group]])
    _drain(settings, f"{prefix}sink.rabbitmq", names["executions"], leave=30)  # far behind
    env = {**os.environ, "TE_TOPICS__PREFIX": prefix, "TE_TOPICS__PARTITIONS": "2"}
    reader = LagReader(settings)
    try:
        reader.read_all()  # connections up
        started = time.monotonic()
        lags = reader.read_all(with_seconds=True)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, elapsed
        by_group = {
            g.removeprefix(prefix): sum(lag.lag for lag in lags if lag.group == g)
            for g in {lag.group for lag in lags}
        }
        assert by_group["matcher"] == by_group["settlement"] == by_group["sink.postgres"] == 0
        assert by_group["sink.rabbitmq"] >= 30 * settings.topics.partitions
        assert by_group["market-data"] > 0  # never committed: the whole topic
        assert all(lag.lag_seconds > 0 for lag in lags if lag.group.endswith("sink.rabbitmq"))
    finally:
        reader.close()
    # The command itself, as an operator runs it (interpreter start-up included).
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "trade_engine", "lag", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    elapsed = time.monotonic() - started
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {row["group"] for row in rows if row["lag"] == 0} >= {
        f"{prefix}matcher",
        f"{prefix}settlement",
        f"{prefix}sink.postgres",
    }
    assert elapsed < 5.0, elapsed
