"""Consumer lag per partition, in messages and seconds, and stall detection, on the real broker;
the status of a group judged over made-up sample windows; ``trade-engine lag`` as a command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from trade_engine.config import Settings, load_settings
from trade_engine.operations.lag import (
    GroupInfo,
    LagCollector,
    LagReader,
    LagWindow,
    PartitionLag,
    Problem,
    Sample,
    Snapshot,
    Status,
    _error_text,
    engine_stages,
    frozen_and_growing,
    group_active,
    partition_status,
    render,
    stage_of,
)
from trade_engine.streams import clients
from trade_engine.streams.clients import transactional_producer_conf
from trade_engine.streams.topics import create_topics


@pytest.mark.broker
def test_lag_messages_seconds_and_stall() -> None:
    prefix = f"lag-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 1})
    created = create_topics(settings)
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

        registry = CollectorRegistry()
        collector = LagCollector()
        registry.register(collector)
        collector.update(
            LagWindow(settings, 3).add(
                Snapshot(time.time(), 1, {group: _info(group)}, [second], {topic: 1})
            )
        )
        labels = {"consumergroup": group, "topic": topic, "partition": "0"}
        assert registry.get_sample_value("kafka_consumergroup_lag", labels) == 11
    finally:
        reader.close()
        admin = AdminClient(conf)
        for future in admin.delete_topics(list(created)).values():
            future.result(timeout=30)
        _forget_groups(settings, prefix)


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
    _forget_groups(settings, settings.topics.prefix)


def _forget_groups(settings: Settings, prefix: str) -> None:
    """Delete the (memberless) consumer groups a test left under its own ``prefix``."""
    admin = clients.admin_client(settings)
    listed = admin.list_consumer_groups(request_timeout=10).result()
    names = [g.group_id for g in listed.valid or [] if g.group_id.startswith(prefix)]
    if names:
        for future in admin.delete_consumer_groups(names, request_timeout=10).values():
            with contextlib.suppress(Exception):
                future.result()


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
        [sys.executable, "-m", "trade_engine", "lag", "--json", "--group", f"^{re.escape(prefix)}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr  # sink.rabbitmq and market-data are behind
    groups = {g["group"]: g for g in json.loads(result.stdout)["groups"]}
    assert {name for name, g in groups.items() if g["lag"] == 0} >= {
        f"{prefix}matcher",
        f"{prefix}settlement",
        f"{prefix}sink.postgres",
    }
    assert groups[f"{prefix}sink.rabbitmq"]["status"] == "STOPPED"  # no members, behind
    assert groups[f"{prefix}matcher"]["stage"] == "matcher"
    assert elapsed < 5.0, elapsed


# ------------------------------------------------- partitions from the metadata


@pytest.mark.broker
def test_topics_with_another_partition_count_than_the_settings() -> None:
    """The regression: partitions come from the topics' metadata, not from settings."""
    prefix = f"lagparts-{uuid.uuid4().hex[:8]}."
    created = create_topics(load_settings(topics={"prefix": prefix, "partitions": 2}))
    try:
        settings = load_settings(topics={"prefix": prefix, "partitions": 4})
        committer = clients.consumer(settings, f"{prefix}settlement")
        committer.commit(
            offsets=[TopicPartition(settings.topic_names["executions"], 1, 0)], asynchronous=False
        )
        committer.close()
        reader = LagReader(settings)
        try:
            lags = reader.read_all()
            assert {lag.partition for lag in lags} == {0, 1}
            assert reader.end_offsets(settings.topic_names["executions"]) == 0
            snapshot = reader.snapshot(groups=re.compile(f"^{re.escape(prefix)}"))
            # Partition 0 not committed yet: a row all the same, the engine group's input.
            assert sorted((lag.group, lag.partition, lag.committed) for lag in snapshot.lags) == [
                (f"{prefix}settlement", 0, -1),
                (f"{prefix}settlement", 1, 0),
            ]
            # Every engine topic is described (and its end offsets exported), read or not.
            assert snapshot.topics == {t: 2 for t in settings.topic_names.values()}
            assert len(snapshot.ends) == 2 * len(settings.topic_names)
        finally:
            reader.close()
    finally:
        admin = clients.admin_client(load_settings())
        for future in admin.delete_topics(list(created)).values():
            future.result(timeout=30)
        _forget_groups(load_settings(), prefix)


def _info(group: str, members: int = 0, stage: str | None = None) -> GroupInfo:
    return GroupInfo(group, stage, "STABLE" if members else "EMPTY", members)


# ------------------------------------------------- status over a window (no broker)


def _window(*samples: tuple[int, int]) -> list[Sample]:
    return [Sample(committed, lag) for committed, lag in samples]


@pytest.mark.parametrize(
    ("samples", "active", "status"),
    [
        ([(10, 0)], True, Status.OK),  # caught up
        ([(10, 5)], True, Status.OK),  # one sample: movement cannot be judged
        ([(10, 5)], False, Status.STOPPED),  # one sample is enough for this one
        ([(10, 5), (10, 5), (10, 5)], False, Status.STOPPED),
        ([(10, 0), (10, 5), (10, 9)], False, Status.STOPPED),  # lag now, nobody consuming
        ([(10, 5), (10, 5), (10, 5)], True, Status.STALLED),  # members, no progress
        ([(10, 5), (10, 8), (10, 12)], True, Status.STALLED),
        ([(10, 5), (20, 8), (30, 12)], True, Status.LAGGING),  # moving, falling behind
        ([(10, 5), (20, 8), (30, 8)], True, Status.LAGGING),  # never shrinking, grew
        ([(10, 5), (20, 9), (30, 7)], True, Status.OK),  # shrank once: keeping up
        ([(10, 9), (20, 7), (30, 4)], True, Status.OK),  # catching up
        ([(10, 5), (20, 5), (30, 5)], True, Status.OK),  # steady lag while consuming
        ([(10, 5), (20, 0), (20, 3)], True, Status.OK),  # caught up within the window
        ([(10, 5), (20, 8), (20, 12)], True, Status.LAGGING),  # moved in the window
        ([], True, Status.OK),
    ],
)
def test_partition_status(samples: list[tuple[int, int]], active: bool, status: Status) -> None:
    assert partition_status(_window(*samples), active=active) is status


def test_a_group_without_members_whose_offsets_move_is_active() -> None:
    moving = [_window((10, 5), (12, 5))]
    frozen = [_window((10, 5), (10, 6))]
    assert group_active(0, moving)
    assert not group_active(0, frozen)
    assert group_active(1, frozen)
    assert frozen_and_growing(frozen[0])
    assert not frozen_and_growing(moving[0])


def _snapshot(at: float, groups: dict[str, GroupInfo], *lags: PartitionLag) -> Snapshot:
    topics = {lag.topic: 1 + max(x.partition for x in lags if x.topic == lag.topic) for lag in lags}
    return Snapshot(at, 1, groups, list(lags), topics)


def test_window_judges_each_group_and_exit_code(settings: Settings) -> None:
    prefix = settings.topics.prefix
    groups = {
        f"{prefix}settlement": _info(f"{prefix}settlement", 1, "settlement"),
        "outside.stuck": _info("outside.stuck", 2),
        "outside.slow": _info("outside.slow", 1),
        "outside.gone": _info("outside.gone", 0),
        "outside.empty": _info("outside.empty", 0),
    }
    window = LagWindow(settings, 3)
    view = None
    # (committed, end) per sample for every group's single partition.
    series = {
        f"{prefix}settlement": [(100, 100), (150, 150), (200, 200)],
        "outside.stuck": [(10, 20), (10, 25), (10, 30)],
        "outside.slow": [(10, 20), (15, 30), (20, 40)],
        "outside.gone": [(5, 9), (5, 9), (5, 12)],
    }
    for i in range(3):
        lags = [
            PartitionLag(g, f"{prefix}executions" if g.startswith(prefix) else "t", 0, *s[i])
            for g, s in series.items()
        ]
        view = window.add(_snapshot(1000.0 + i, groups, *lags))
    assert view is not None
    assert (view.samples, view.span_s) == (3, 2.0)
    statuses = {g.info.group: g.status for g in view.groups}
    assert statuses == {
        f"{prefix}settlement": Status.OK,
        "outside.stuck": Status.STALLED,
        "outside.slow": Status.LAGGING,
        "outside.gone": Status.STOPPED,
        "outside.empty": Status.OK,
    }
    # Engine groups first, by stage; then the others by name.
    assert [g.info.group for g in view.groups] == [
        f"{prefix}settlement",
        "outside.empty",
        "outside.gone",
        "outside.slow",
        "outside.stuck",
    ]
    by_name = {g.info.group: g for g in view.groups}
    assert by_name["outside.empty"].note == "no committed offsets"
    assert by_name["outside.stuck"].partitions[0].stalled
    assert by_name["outside.gone"].partitions[0].stalled  # stopped, and its lag grew
    assert not by_name["outside.slow"].partitions[0].stalled
    assert view.exit_code() == 1
    text = "\n".join(render(view))
    assert "judged over 3 samples in 2.0 s" in text
    assert "outside.stuck t[0]: committed 10 end 30 lag 20 (0.0 s) STALLED" in text
    assert view.as_dict()["groups"][0]["stage"] == "settlement"

    # The exporter: kafka_exporter's names, the status gauge, the stalled flag.
    registry = CollectorRegistry()
    collector = LagCollector()
    registry.register(collector)
    collector.update(view)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert (
        value("kafka_consumergroup_lag", consumergroup="outside.stuck", topic="t", partition="0")
        == 20
    )
    assert (
        value(
            "kafka_consumergroup_current_offset",
            consumergroup="outside.slow",
            topic="t",
            partition="0",
        )
        == 20
    )
    assert value("kafka_topic_partition_current_offset", topic="t", partition="0") is not None
    assert value("kafka_consumergroup_lag_sum", consumergroup="outside.gone", topic="t") == 7
    assert value("kafka_consumergroup_members", consumergroup="outside.stuck") == 2
    assert value("te_consumergroup_status", consumergroup="outside.stuck", stage="") == 2
    assert value("te_consumergroup_status", consumergroup="outside.gone", stage="") == 3
    assert (
        value("te_consumergroup_status", consumergroup=f"{prefix}settlement", stage="settlement")
        == 0
    )
    assert (
        value("te_consumergroup_stalled", consumergroup="outside.stuck", topic="t", partition="0")
        == 1
    )
    assert value("kafka_brokers") == 1

    # A group that disappears leaves the window and the exporter with the next sample.
    del groups["outside.stuck"]
    view = window.add(_snapshot(1003.0, groups))
    collector.update(view)
    assert value("kafka_consumergroup_members", consumergroup="outside.stuck") is None


def test_one_sample_says_so(settings: Settings) -> None:
    view = LagWindow(settings, 1).add(
        _snapshot(1.0, {"g": _info("g", 1)}, PartitionLag("g", "t", 0, 5, 9))
    )
    assert view.groups[0].status is Status.OK
    assert view.judged == "judged from one sample: only STOPPED or OK"
    assert view.exit_code() == 0


def test_problems_set_the_exit_code(settings: Settings) -> None:
    view = LagWindow(settings, 3).add(
        Snapshot(1.0, 1, {}, [], {}, [Problem("missing_topic", "topic x does not exist")])
    )
    assert view.exit_code() == 2
    informational = Problem("partition_gone", "...", exit_code=0)
    view = LagWindow(settings, 3).add(Snapshot(1.0, 1, {}, [], {}, [informational]))
    assert view.exit_code() == 0


def test_engine_groups_are_named_by_stage(settings: Settings) -> None:
    prefix = settings.topics.prefix
    stages = {
        "risk",
        "validation",
        "matcher",
        "settlement",
        "sink.postgres",
        "sink.rabbitmq",
        "market-data",
        "settlement-redrive",
    }
    assert {stage for stage, _ in engine_stages(settings).values()} == stages
    assert stage_of(settings, f"{prefix}validation") == "validation"
    assert stage_of(settings, f"{prefix}sink.rabbitmq.t1") == "sink.rabbitmq"
    assert stage_of(settings, "someone.else") is None


def test_an_error_of_the_group_listing_is_worded_whether_an_exception_or_not() -> None:
    """list_consumer_groups().errors holds KafkaError objects (seen when a broker died)."""
    error = KafkaError(KafkaError._TRANSPORT, "broker down")
    assert _error_text(error) == "broker down"
    assert _error_text(KafkaException(error)) == "broker down"
