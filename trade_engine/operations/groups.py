"""Consumer groups: list them, describe one, move a stopped one's committed offsets.

``rewind`` is ``kafka-consumer-groups.sh --reset-offsets`` for one group and one
topic, with the AdminClient:

- the group must be inactive (no members; state EMPTY, or DEAD for a group that
  does not exist yet): a live member would overwrite the new offsets with its
  next commit, so the command refuses, dry run included;
- targets: an offset (``--to-offset N``), the first record at or after a time
  (``--to-time``: ListOffsets by timestamp, the admin side of ``offsets_for_times``),
  a shift from the committed offset (``--by -N``), the log start
  (``--to-earliest``) or the end a read_committed reader sees, the last stable
  offset (``--to-latest``); a target outside ``[earliest, latest]`` is clamped
  to it, as the Kafka tool does;
- a dry run by default: ``plan_rewind`` only reads, ``execute`` commits the plan
  with ``alter_consumer_group_offsets`` after checking the group once more.

The matcher's group is refused without ``force``: its position is part of its
durable state (``docs/runbooks/replay.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec

from trade_engine.config import Settings
from trade_engine.errors import TradeEngineError
from trade_engine.operations.lag import (
    REQUEST_TIMEOUT_S,
    GroupInfo,
    LagReader,
    LagWindow,
    PartitionView,
    stage_of,
)

#: States in which a group's offsets may be moved (kafka-consumer-groups.sh's rule).
INACTIVE = {"EMPTY", "DEAD"}

TargetKind = Literal["offset", "time", "by", "earliest", "latest"]


class GroupsError(TradeEngineError):
    """A request that cannot be carried out, in one line; ``exit_code`` says why
    (2: no such group or topic, or the broker failed; 1: refused)."""

    code = "GROUPS"

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _text(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else exc
    return str(error.str()) if hasattr(error, "str") else str(error)


def parse_time(text: str) -> int:
    """An ISO 8601 time (``2024-05-01T12:00:00Z``, ``...+02:00``; no zone: UTC) in ms."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    value: int = 0  # the offset, the time in ms, or the shift

    def describe(self) -> str:
        if self.kind == "offset":
            return f"to offset {self.value}"
        if self.kind == "time":
            at = datetime.fromtimestamp(self.value / 1000, UTC)
            return f"to time {at.isoformat(timespec='milliseconds')}"
        if self.kind == "by":
            return f"by {self.value:+d}"
        return f"to {self.kind}"


@dataclass(frozen=True, slots=True)
class Move:
    partition: int
    before: int | None  # None: the group committed nothing on the partition
    after: int
    note: str = ""

    @property
    def delta(self) -> int | None:
        return None if self.before is None else self.after - self.before

    def as_dict(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "before": self.before,
            "after": self.after,
            "delta": self.delta,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class RewindPlan:
    group: str
    topic: str
    target: Target
    state: str
    moves: list[Move]
    executed: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "topic": self.topic,
            "target": self.target.describe(),
            "state": self.state,
            "executed": self.executed,
            "partitions": [m.as_dict() for m in self.moves],
        }


@dataclass(frozen=True, slots=True)
class GroupListing:
    info: GroupInfo
    topics: list[str]

    def as_dict(self) -> dict[str, object]:
        info = self.info
        return {
            "group": info.group,
            "stage": info.stage,
            "state": info.state,
            "members": info.members,
            "simple": info.simple,
            "topics": self.topics,
        }


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: list[tuple[str, int]]

    def as_dict(self) -> dict[str, object]:
        return {
            "member_id": self.member_id,
            "client_id": self.client_id,
            "host": self.host,
            "instance_id": self.instance_id,
            "assignment": [f"{t}[{p}]" for t, p in self.assignment],
        }


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group: str
    stage: str | None
    state: str
    assignor: str
    coordinator: str
    members: list[Member]
    partitions: list[PartitionView] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "stage": self.stage,
            "state": self.state,
            "assignor": self.assignor,
            "coordinator": self.coordinator,
            "members": [m.as_dict() for m in self.members],
            "partitions": [p.as_dict() for p in self.partitions],
        }


def _wanted(target: Target, before: int, low: int, high: int, at_time: int) -> tuple[int, str]:
    """The offset ``target`` names for one partition (before clamping), and a note."""
    if target.kind == "offset":
        return target.value, ""
    if target.kind == "by":
        return before + target.value, ""
    if target.kind == "time":
        if at_time < 0:
            return high, "no record at or after the time: latest"
        return at_time, ""
    return (low if target.kind == "earliest" else high), ""


class Groups:
    """The admin side of consumer groups; one admin client (the lag reader's)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reader = LagReader(settings)

    def close(self) -> None:
        self.reader.close()

    # ------------------------------------------------------------------ reading
    def listing(self, pattern: re.Pattern[str] | None = None) -> list[GroupListing]:
        """Every group (matching ``pattern``): state, members, the topics it committed on."""
        self.reader.metadata()  # an unreachable broker is one line, here
        infos, errors = self.reader.groups(pattern)
        if errors:
            raise GroupsError(errors[0])
        committed, _ = self.reader.committed_offsets(dict.fromkeys(infos))
        topics: dict[str, set[str]] = {}
        for group, topic, _ in committed:
            topics.setdefault(group, set()).add(topic)
        return [GroupListing(info, sorted(topics.get(g, ()))) for g, info in infos.items()]

    def _describe(self, group: str) -> Any:
        futures = self.reader.admin().describe_consumer_groups(
            [group], request_timeout=REQUEST_TIMEOUT_S
        )
        try:
            return futures[group].result()
        except KafkaException as exc:
            raise GroupsError(f"describing group {group}: {_text(exc)}") from None

    def describe(self, group: str) -> GroupDescription:
        """Members and their assignment, and the lag of every committed partition
        (one sample: STOPPED or OK)."""
        self.reader.metadata()
        description = self._describe(group)
        state = str(getattr(description.state, "name", description.state))
        snapshot = self.reader.snapshot(groups=re.compile(f"^{re.escape(group)}$"))
        if state == "DEAD" or group not in snapshot.groups:
            raise GroupsError(f"no such group: {group}")
        view = LagWindow(self.settings, 1).add(snapshot)
        coordinator = description.coordinator
        members = [
            Member(
                str(m.member_id),
                str(m.client_id),
                str(m.host),
                m.group_instance_id,
                sorted(
                    (tp.topic, tp.partition)
                    for tp in (m.assignment.topic_partitions if m.assignment else [])
                ),
            )
            for m in description.members
        ]
        return GroupDescription(
            group,
            stage_of(self.settings, group),
            state,
            str(description.partition_assignor or ""),
            f"{coordinator.host}:{coordinator.port} (id {coordinator.id})" if coordinator else "",
            members,
            view.groups[0].partitions if view.groups else [],
        )

    # ------------------------------------------------------------------ rewinding
    def _check_inactive(self, group: str) -> str:
        description = self._describe(group)
        state = str(getattr(description.state, "name", description.state))
        members = len(description.members)
        if members or state not in INACTIVE:
            raise GroupsError(
                f"group {group} is active ({state}, {members} member(s)): offsets can be "
                f"moved only while no consumer is in the group; stop its workers first",
                exit_code=1,
            )
        return state

    def _offsets(
        self, tps: list[TopicPartition], spec: Any, isolation: Any = None
    ) -> dict[int, int]:
        kwargs: dict[str, Any] = {"request_timeout": REQUEST_TIMEOUT_S}
        if isolation is not None:
            kwargs["isolation_level"] = isolation
        futures = self.reader.admin().list_offsets(
            {TopicPartition(tp.topic, tp.partition): spec for tp in tps}, **kwargs
        )
        out = {}
        for tp, future in futures.items():
            try:
                out[tp.partition] = int(future.result().offset)
            except KafkaException as exc:
                raise GroupsError(f"offsets of {tp.topic}[{tp.partition}]: {_text(exc)}") from None
        return out

    def plan_rewind(
        self,
        group: str,
        topic: str,
        target: Target,
        *,
        partition: int | None = None,
        force: bool = False,
    ) -> RewindPlan:
        """Where each partition of ``topic`` would start for ``group``; changes nothing."""
        if group == f"{self.settings.topics.prefix}matcher" and not force:
            raise GroupsError(
                f"{group} is the matcher's group: its position is part of its durable state "
                f"and re-reading commands it answered is not suppressed; replay it offline "
                f"(docs/runbooks/replay.md), or pass --force",
                exit_code=1,
            )
        topics, _ = self.reader.metadata()
        if topic not in topics:
            raise GroupsError(f"no such topic: {topic}")
        partitions = range(topics[topic])
        if partition is not None and partition not in partitions:
            raise GroupsError(
                f"{topic} has no partition {partition} (partitions 0..{topics[topic] - 1})"
            )
        state = self._check_inactive(group)
        tps = [TopicPartition(topic, p) for p in partitions if partition in (None, p)]
        committed, errors = self.reader.committed_offsets({group: tps})
        if errors:
            raise GroupsError(f"committed offsets of {group}: {errors[group]}")
        earliest = self._offsets(tps, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        latest = self._offsets(
            tps,
            OffsetSpec.latest(),  # type: ignore[no-untyped-call]
            IsolationLevel.READ_COMMITTED,
        )
        by_time: dict[int, int] = {}
        if target.kind == "time":
            by_time = self._offsets(tps, OffsetSpec.for_timestamp(target.value))
        moves = []
        for tp in tps:
            p = tp.partition
            before = committed.get((group, topic, p), -1)
            if target.kind == "by" and before < 0:
                raise GroupsError(
                    f"{group} has no committed offset on {topic}[{p}]: --by needs one "
                    f"(use --to-offset, --to-time, --to-earliest or --to-latest)"
                )
            low, high = earliest[p], latest[p]
            wanted, note = _wanted(target, before, low, high, by_time.get(p, -1))
            after = min(max(wanted, low), high)
            if after != wanted:
                edge = "earliest" if after == low else "latest"
                note = f"{wanted} is out of range: clamped to the {edge} offset"
            moves.append(Move(p, before if before >= 0 else None, after, note))
        return RewindPlan(group, topic, target, state, moves)

    def execute(self, plan: RewindPlan) -> RewindPlan:
        """Commit the plan's offsets for its group (still inactive, checked again)."""
        self._check_inactive(plan.group)
        request = ConsumerGroupTopicPartitions(
            plan.group, [TopicPartition(plan.topic, m.partition, m.after) for m in plan.moves]
        )
        futures = self.reader.admin().alter_consumer_group_offsets(
            [request], request_timeout=REQUEST_TIMEOUT_S
        )
        try:
            result = futures[plan.group].result()
        except KafkaException as exc:
            raise GroupsError(f"moving the offsets of {plan.group}: {_text(exc)}") from None
        failed = [tp for tp in result.topic_partitions if tp.error is not None]
        if failed:
            tp = failed[0]
            raise GroupsError(
                f"moving the offsets of {plan.group}: {tp.topic}[{tp.partition}]: {tp.error.str()}"
            )
        return RewindPlan(plan.group, plan.topic, plan.target, plan.state, plan.moves, True)
