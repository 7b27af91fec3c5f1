"""Consumer groups on the real broker: list, describe, and rewind a stopped group
(``operations.groups``); the commands are in ``tests/cli/test_groups.py``."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import TopicPartition

from trade_engine.config import Settings
from trade_engine.operations.groups import Groups, GroupsError, Target, parse_time
from trade_engine.operations.lag import Status
from trade_engine.streams import clients

PARTITIONS = 2
PER_PARTITION = 10
COMMITTED = 8


class Stopped:
    """A topic of PARTITIONS x PER_PARTITION records, the i-th of each partition stamped
    ``start_ms + i`` seconds, and a group without members that committed COMMITTED on each."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.group = f"rewind-{uuid.uuid4().hex[:8]}"
        self.start_ms = int(time.time() * 1000) - 3_600_000
        producer = clients.producer(settings)
        for i in range(PER_PARTITION):
            for p in range(PARTITIONS):
                producer.produce(topic, value=b"x", partition=p, timestamp=self.start_ms + i * 1000)
        producer.flush(30)
        consumer = clients.consumer(settings, self.group, **{"enable.auto.commit": False})
        consumer.commit(
            offsets=[TopicPartition(topic, p, COMMITTED) for p in range(PARTITIONS)],
            asynchronous=False,
        )
        consumer.close()

    def time(self, seconds: float) -> int:
        return self.start_ms + int(seconds * 1000)


@pytest.fixture
def groups(settings: Settings) -> Iterator[Groups]:
    admin = Groups(settings)
    yield admin
    admin.close()


@pytest.fixture
def stopped(
    new_topic: Callable[..., str], settings: Settings, forget: Callable[[str], str]
) -> Stopped:
    made = Stopped(settings, new_topic("rewind", partitions=PARTITIONS))
    forget(made.group)
    return made


def _committed(groups: Groups, group: str, topic: str) -> dict[int, int]:
    offsets, errors = groups.reader.committed_offsets(
        {group: [TopicPartition(topic, p) for p in range(PARTITIONS)]}
    )
    assert not errors
    return {p: o for (_, _, p), o in offsets.items()}


@pytest.mark.broker
def test_a_plan_changes_nothing_and_execute_moves(groups: Groups, stopped: Stopped) -> None:
    plan = groups.plan_rewind(stopped.group, stopped.topic, Target("by", -5))
    assert (plan.state, plan.executed) == ("EMPTY", False)
    assert [(m.partition, m.before, m.after, m.delta) for m in plan.moves] == [
        (0, 8, 3, -5),
        (1, 8, 3, -5),
    ]
    assert _committed(groups, stopped.group, stopped.topic) == {0: 8, 1: 8}
    done = groups.execute(plan)
    assert done.executed
    assert _committed(groups, stopped.group, stopped.topic) == {0: 3, 1: 3}


END = PER_PARTITION


@pytest.mark.broker
@pytest.mark.parametrize(
    ("target", "partition", "expected", "note"),
    [
        (Target("offset", 2), None, {0: 2, 1: 2}, ""),
        (Target("offset", 2), 1, {0: 8, 1: 2}, ""),
        (Target("offset", 99), None, {0: END, 1: END}, "clamped to the latest offset"),
        (Target("offset", -3), None, {0: 0, 1: 0}, "clamped to the earliest offset"),
        (Target("earliest"), None, {0: 0, 1: 0}, ""),
        (Target("latest"), None, {0: END, 1: END}, ""),
        (Target("by", -100), None, {0: 0, 1: 0}, "clamped to the earliest offset"),
        (Target("by", 1), None, {0: 9, 1: 9}, ""),
        (Target("time", 4), None, {0: 4, 1: 4}, ""),  # seconds after start: resolved below
        (Target("time", 3.5), None, {0: 4, 1: 4}, ""),  # the first record at or after it
        (Target("time", -(10**6)), None, {0: 0, 1: 0}, ""),
        (Target("time", 10**6), None, {0: END, 1: END}, "no record at or after the time"),
    ],
)
def test_each_target(
    groups: Groups,
    stopped: Stopped,
    target: Target,
    partition: int | None,
    expected: dict[int, int],
    note: str,
) -> None:
    if target.kind == "time":
        target = Target("time", stopped.time(target.value))
    plan = groups.plan_rewind(stopped.group, stopped.topic, target, partition=partition)
    moved = {m.partition: m.after for m in plan.moves}
    assert moved == {p: o for p, o in expected.items() if partition in (None, p)}
    assert all(note in m.note for m in plan.moves)
    groups.execute(plan)
    assert _committed(groups, stopped.group, stopped.topic) == expected


@pytest.mark.broker
def test_a_live_group_is_refused(
    groups: Groups,
    new_topic: Callable[..., str],
    settings: Settings,
    forget: Callable[[str], str],
    until_stable: Callable[..., None],
) -> None:
    topic = new_topic("rewind-live", partitions=1)
    group = forget(f"rewind-live-{uuid.uuid4().hex[:8]}")
    before_it_joined = groups.plan_rewind(group, topic, Target("earliest"))
    assert before_it_joined.state == "DEAD"  # no such group yet: allowed
    member = clients.committing_consumer(settings, group)
    member.subscribe([topic])
    try:
        # Its own assignment is not enough: the refusal reads the coordinator's description.
        until_stable(member, group)
        with pytest.raises(GroupsError, match=r"is active \(STABLE, 1 member\(s\)\)") as refused:
            groups.plan_rewind(group, topic, Target("earliest"))
        assert refused.value.exit_code == 1
        # A plan made while it was stopped is checked again when executed.
        with pytest.raises(GroupsError, match="is active") as refused:
            groups.execute(before_it_joined)
        assert refused.value.exit_code == 1
        description = groups.describe(group)
        assert (description.state, len(description.members)) == ("STABLE", 1)
        assert description.members[0].assignment == [(topic, 0)]
    finally:
        member.close()


@pytest.mark.broker
def test_what_cannot_be_rewound(groups: Groups, stopped: Stopped, settings: Settings) -> None:
    with pytest.raises(GroupsError, match=r"no such topic: no\.such\.topic") as error:
        groups.plan_rewind(stopped.group, "no.such.topic", Target("latest"))
    assert error.value.exit_code == 2
    with pytest.raises(GroupsError, match=r"has no partition 7 \(partitions 0..1\)"):
        groups.plan_rewind(stopped.group, stopped.topic, Target("latest"), partition=7)
    matcher = f"{settings.topics.prefix}matcher"
    with pytest.raises(GroupsError, match="is the matcher's group") as error:
        groups.plan_rewind(matcher, stopped.topic, Target("latest"))
    assert error.value.exit_code == 1
    fresh = f"never-committed-{uuid.uuid4().hex[:8]}"
    with pytest.raises(GroupsError, match="has no committed offset"):
        groups.plan_rewind(fresh, stopped.topic, Target("by", -1))
    plan = groups.plan_rewind(fresh, stopped.topic, Target("offset", 5))
    assert [(m.before, m.after, m.delta) for m in plan.moves] == [(None, 5, None)] * PARTITIONS
    with pytest.raises(GroupsError, match=f"no such group: {fresh}"):
        groups.describe(fresh)


@pytest.mark.broker
def test_listing_and_description(groups: Groups, stopped: Stopped) -> None:
    (listed,) = groups.listing(re.compile(f"^{stopped.group}$"))
    assert (listed.info.state, listed.info.members, listed.topics) == ("EMPTY", 0, [stopped.topic])
    description = groups.describe(stopped.group)
    assert (description.state, description.members) == ("EMPTY", [])
    rows = [
        (p.lag.partition, p.lag.committed, p.lag.end, p.lag.lag) for p in description.partitions
    ]
    assert rows == [(0, 8, 10, 2), (1, 8, 10, 2)]
    assert {p.status for p in description.partitions} == {Status.STOPPED}


def test_times_and_targets() -> None:
    assert parse_time("1970-01-01T00:00:01Z") == 1000
    assert parse_time("1970-01-01T02:00:01+02:00") == 1000
    assert parse_time("1970-01-01T00:00:01") == 1000  # no zone: UTC
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_time("yesterday")
    assert Target("by", -5).describe() == "by -5"
    at = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert Target("time", 1000).describe() == f"to time {at.isoformat(timespec='milliseconds')}"
    assert Target("latest").describe() == "to latest"
    assert GroupsError("x").exit_code == 2
