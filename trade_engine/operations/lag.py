"""Consumer lag of every consumer group, judged over a window of samples.

What one sample reads, the way kafka_exporter, KMinion and Burrow read it:

- the groups from their coordinators: ``list_consumer_groups``,
  ``describe_consumer_groups`` (state, members) and ``list_consumer_group_offsets``
  (every partition a group committed; the requests of every group in flight
  together);
- partition counts from the cluster's topic metadata, never from the settings
  (a topic may have been created with another count);
- each partition's end: its last stable offset (the end a ``read_committed``
  consumer sees), every partition in one ListOffsets request.

Lag in messages is what a ``read_committed`` consumer at the group's committed
offset can still read: the partition's last stable offset minus the committed
offset. A topic written in Kafka transactions carries a commit marker (a
control record) after each transaction's records; a drained group commits the
offset after its last *data* record, which is the marker's, so end minus
committed never reaches zero. When that difference is small (``probe_max_lag``
records or fewer) the remaining records are read once, read_committed, and only
data records are counted: markers and aborted records are not lag. Lag in
seconds is the age of the oldest record the group has not consumed (the first
readable record at its committed offset), zero when it is caught up.

Status, Burrow-style, is judged per partition over a window of samples
(``partition_status``) and a group takes its worst partition's:

- ``OK``: caught up now or at some point in the window, or not judged (one sample);
- ``STOPPED``: lag, and nobody consuming: no member in the group and no committed
  offset of it moved within the window;
- ``STALLED``: lag all along the window and the committed offset did not move;
- ``LAGGING``: the committed offset moves but the lag grew over the window (never
  shrinking between two samples).

``LagWindow`` keeps the last samples (``--watch``/``--serve``: the recent ones;
one ``trade-engine lag``: a few taken a second apart) and turns each new one
into a ``LagView``; ``LagCollector`` exports the latest view with
kafka_exporter's metric names.

The engine's own groups are named by their stage (``engine_stages``); the
gateway's followers assign partitions by hand and never commit, so they have no
group on the broker.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trade_engine.config import Settings
from trade_engine.errors import TradeEngineError
from trade_engine.streams import clients

LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]
# Partitions whose raw lag (end - committed) is at most this many records are
# probed to tell data records from transaction markers / aborted records.
PROBE_MAX_LAG = 16
# The whole probe of one sample (every partition at once) gives up after this.
PROBE_TIMEOUT_S = 2.0
# End offsets of a topic created a moment ago may not be served yet: retry this long.
END_OFFSET_RETRY_S = 3.0
REQUEST_TIMEOUT_S = 10.0
#: Exit codes of ``trade-engine lag``.
EXIT_OK, EXIT_BEHIND, EXIT_UNAVAILABLE = 0, 1, 2


class LagError(TradeEngineError):
    """The broker could not be read (unreachable, or a request failed): one line."""

    code = "LAG_UNAVAILABLE"
    retriable = True


class Status(enum.IntEnum):
    """A partition's or a group's verdict; ordered by severity (the gauge's value)."""

    OK = 0
    LAGGING = 1
    STALLED = 2
    STOPPED = 3


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int  # negative: the group committed nothing on this partition
    end: int
    lag_seconds: float = 0.0
    stalled: bool = False
    # Data records a read_committed consumer at ``committed`` can read before
    # ``end``, when a probe counted them; None: not probed, lag is end - committed.
    readable: int | None = None

    @property
    def lag(self) -> int:
        raw = max(self.end - max(self.committed, 0), 0)
        return raw if self.readable is None else min(self.readable, raw)

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "lag_seconds": round(self.lag_seconds, 3),
            "stalled": self.stalled,
        }


def engine_groups(settings: Settings) -> dict[str, str]:
    """group id -> the topic it consumes, for every stage of the running pipeline
    (the demo's status line; ``engine_stages`` adds the optional ones)."""
    prefix = settings.topics.prefix
    names = settings.topic_names
    return {
        f"{prefix}risk": names["commands"],
        f"{prefix}matcher": names["accepted"],
        f"{prefix}settlement": names["executions"],
        f"{prefix}sink.postgres": names["executions"],
        f"{prefix}sink.rabbitmq": names["executions"],
        f"{prefix}market-data": names["executions"],
    }


def engine_stages(settings: Settings) -> dict[str, tuple[str, str]]:
    """group id -> (stage, the topic it consumes) for every stage that uses a group,
    in pipeline order. The validation stage is the risk stage without a wallet."""
    prefix = settings.topics.prefix
    names = settings.topic_names
    return {
        f"{prefix}risk": ("risk", names["commands"]),
        f"{prefix}validation": ("validation", names["commands"]),
        f"{prefix}matcher": ("matcher", names["accepted"]),
        f"{prefix}settlement": ("settlement", names["executions"]),
        f"{prefix}sink.postgres": ("sink.postgres", names["executions"]),
        f"{prefix}sink.rabbitmq": ("sink.rabbitmq", names["executions"]),
        f"{prefix}market-data": ("market-data", names["executions"]),
        f"{prefix}settlement-redrive": ("settlement-redrive", names["dead_letter"]),
    }


def stage_of(settings: Settings, group: str) -> str | None:
    """The engine stage a group id belongs to (a bridge started with ``--name-prefix``
    P uses ``<prefix>sink.rabbitmq.P``), None for any other group."""
    stages = engine_stages(settings)
    if group in stages:
        return stages[group][0]
    if group.startswith(f"{settings.topics.prefix}sink.rabbitmq."):
        return "sink.rabbitmq"
    return None


# ------------------------------------------------------------------ snapshots


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group: str
    stage: str | None
    state: str  # the coordinator's: STABLE, EMPTY, PREPARING_REBALANCE, DEAD, ...
    members: int
    simple: bool = False  # partitions assigned by hand: never has members
    assignor: str = ""


@dataclass(frozen=True, slots=True)
class Problem:
    """Something to tell the operator in one line. ``exit_code``: what it makes of the run."""

    kind: str  # missing_topic, no_such_topic, no_such_group, group_error, partition_gone
    message: str
    exit_code: int = EXIT_UNAVAILABLE

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One sample of the cluster: every group of interest, every partition it committed."""

    at: float  # wall clock, seconds
    brokers: int
    groups: dict[str, GroupInfo]
    lags: list[PartitionLag]
    topics: dict[str, int]  # topic -> partitions: the topics in ``lags`` and the engine's
    problems: list[Problem] = field(default_factory=list)
    # Last stable offset of every partition of ``topics`` (empty: those of ``lags``).
    ends: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Probe:
    """One read_committed pass over ``[start, end)`` of a partition."""

    start: int
    end: int
    # Stop after this many data records (1: the first record's timestamp is all we need).
    limit: int
    records: list[tuple[int, int | None]] = field(default_factory=list)  # (offset, ms)
    reached_end: bool = False

    def readable_from(self, offset: int) -> int | None:
        """Data records in ``[offset, end)``; None when the pass did not get to the end."""
        if not self.reached_end:
            return None
        return sum(1 for o, _ in self.records if o >= offset)

    def first_ms_from(self, offset: int) -> int | None:
        return next((ms for o, ms in self.records if o >= offset), None)


_END_RETRY_CODES = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
}

# (group, topic, partition) -> committed offset (negative: none)
Committed = dict[tuple[str, str, int], int]


def _error_text(exc: BaseException | KafkaError) -> str:
    # list_consumer_groups().errors holds KafkaError objects, not exceptions: a broker
    # dying mid-listing made this raise AttributeError and the exporter exit.
    error = exc if isinstance(exc, KafkaError) else (exc.args[0] if exc.args else exc)
    if isinstance(error, KafkaError):
        return str(error.str())
    return str(error)


def _state_name(state: Any) -> str:
    return str(getattr(state, "name", state) or "UNKNOWN")


class LagReader:
    """One admin client and one probe consumer for every group and sample.

    A sample asks for the end offsets of every partition involved in one
    ListOffsets request (read_committed: the last stable offset), for every
    group's committed offsets concurrently, then probes, with a single
    read_committed consumer assigned to all of them at once, the partitions
    whose lag is small (transaction markers, or records still to read?) and,
    with ``with_seconds``, every lagging partition for the timestamp of its
    oldest unconsumed record.

    ``snapshot`` covers every group on the cluster (filtered by regular
    expressions); ``read``/``read_many``/``read_all`` measure given
    (group, topic) pairs, every partition of the topic.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        probe_max_lag: int = PROBE_MAX_LAG,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.probe_max_lag = probe_max_lag
        self.probe_timeout_s = probe_timeout_s
        self._admin_client: AdminClient | None = None
        self._probe_consumer: Consumer | None = None
        self._previous: dict[tuple[str, str, int], PartitionLag] = {}
        # (topic, partition, offset) -> timestamp (ms) of the first readable record at or
        # after the offset, found by an earlier probe: a decided record never changes, so
        # a group that stays where it is costs one probe, not one a sample.
        self._first_ms: dict[tuple[str, int, int], int] = {}

    # ------------------------------------------------------------------ clients
    def admin(self) -> AdminClient:
        """The reader's admin client (``operations.groups`` shares it)."""
        return self._admin()

    def _admin(self) -> AdminClient:
        if self._admin_client is None:
            self._admin_client = clients.admin_client(
                self.settings,
                # An unreachable broker is one line from us, not librdkafka's retries on stderr.
                log_level=0,
                **{"client.id": f"lag-reader-{uuid.uuid4().hex[:6]}"},
            )
        return self._admin_client

    def _prober(self) -> Consumer:
        if self._probe_consumer is None:
            # Never joins or commits: partitions are assigned by hand.
            self._probe_consumer = clients.reader(
                self.settings,
                f"lag-reader-{self.settings.topics.prefix}",
                log_level=0,
                **{
                    "client.id": f"lag-reader-{uuid.uuid4().hex[:6]}",
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": True,
                    # An empty fetch at the end must come back at once, not after 500 ms.
                    "fetch.wait.max.ms": 10,
                    # Only a few records per partition are wanted.
                    "max.partition.fetch.bytes": 65536,
                    "queued.max.messages.kbytes": 4096,
                },
            )
        return self._probe_consumer

    # ------------------------------------------------------------------ queries
    def metadata(self) -> tuple[dict[str, int], int]:
        """(topic -> partition count, number of brokers), from the cluster's metadata."""
        timeout = self.settings.kafka.connect_timeout_s
        try:
            md = self._admin().list_topics(timeout=timeout)
        except KafkaException as exc:
            raise LagError(
                f"kafka.bootstrap_servers: no broker answered at "
                f"{self.settings.kafka.bootstrap_servers} within {timeout:g}s "
                f"({_error_text(exc)})"
            ) from None
        topics = {
            name: len(meta.partitions)
            for name, meta in md.topics.items()
            if meta.error is None and meta.partitions
        }
        return topics, len(md.brokers)

    def _ends(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Last stable offset of every partition, in one request (retried briefly
        for a topic created a moment ago)."""
        wanted = sorted(set(partitions))
        out: dict[tuple[str, int], int] = {}
        if not wanted:
            return out
        deadline = time.monotonic() + END_OFFSET_RETRY_S
        while True:
            missing = [key for key in wanted if key not in out]
            futures = self._admin().list_offsets(
                {TopicPartition(t, p): LATEST for t, p in missing},
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=REQUEST_TIMEOUT_S,
            )
            failed: KafkaException | None = None
            for tp, future in futures.items():
                try:
                    out[(tp.topic, tp.partition)] = int(future.result().offset)
                except KafkaException as exc:
                    failed = exc
            if failed is None:
                return out
            error = failed.args[0]
            if time.monotonic() >= deadline or not (
                error.retriable() or error.code() in _END_RETRY_CODES
            ):
                raise LagError(f"end offsets: {_error_text(failed)}") from None
            time.sleep(0.2)

    def committed_offsets(
        self, requests: Mapping[str, list[TopicPartition] | None]
    ) -> tuple[Committed, dict[str, str]]:
        """Committed offsets of each group (of the given partitions; None: of every
        partition it committed), every group's request in flight at once.
        Returns the offsets and, per group that could not be read, why."""
        admin = self._admin()
        pending: list[tuple[str, Future[Any]]] = []
        for group, tps in requests.items():
            # The API takes one group per request; the requests run concurrently.
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, tps)], request_timeout=REQUEST_TIMEOUT_S
            )
            pending.append((group, futures[group]))
        out: Committed = {}
        errors: dict[str, str] = {}
        for group, future in pending:
            try:
                result = future.result()
            except KafkaException as exc:
                errors[group] = _error_text(exc)
                continue
            for tp in result.topic_partitions:
                if tp.error is not None:
                    errors[group] = f"{tp.topic}[{tp.partition}]: {tp.error.str()}"
                    continue
                out[(group, tp.topic, tp.partition)] = int(tp.offset) if tp.offset >= 0 else -1
        return out, errors

    def _committed(self, pairs: list[tuple[str, str]], topics: Mapping[str, int]) -> Committed:
        """(group, topic, partition) -> committed offset (negative: none), every group at once."""
        by_group: dict[str, list[TopicPartition]] = {}
        for group, topic in pairs:
            by_group.setdefault(group, []).extend(
                TopicPartition(topic, p) for p in range(topics[topic])
            )
        out, errors = self.committed_offsets(by_group)
        if errors:
            group, why = next(iter(errors.items()))
            raise LagError(f"committed offsets of {group}: {why}")
        return out

    def groups(self, pattern: re.Pattern[str] | None) -> tuple[dict[str, GroupInfo], list[str]]:
        """Every group on the cluster whose id matches ``pattern``, described."""
        admin = self._admin()
        try:
            listing = admin.list_consumer_groups(request_timeout=REQUEST_TIMEOUT_S).result()
        except KafkaException as exc:
            raise LagError(f"listing consumer groups: {_error_text(exc)}") from None
        problems = [f"listing consumer groups: {_error_text(e)}" for e in listing.errors or []]
        valid = listing.valid or []
        ids = sorted(g.group_id for g in valid if pattern is None or pattern.search(g.group_id))
        simple = {g.group_id: bool(g.is_simple_consumer_group) for g in valid}
        out: dict[str, GroupInfo] = {}
        if not ids:
            return out, problems
        futures = admin.describe_consumer_groups(ids, request_timeout=REQUEST_TIMEOUT_S)
        for group in ids:
            stage = stage_of(self.settings, group)
            try:
                description = futures[group].result()
            except KafkaException as exc:
                problems.append(f"group {group}: {_error_text(exc)}")
                out[group] = GroupInfo(group, stage, "UNKNOWN", 0, simple.get(group, False))
                continue
            out[group] = GroupInfo(
                group,
                stage,
                _state_name(description.state),
                len(description.members),
                bool(description.is_simple_consumer_group),
                str(description.partition_assignor or ""),
            )
        return out, problems

    def _probe(self, probes: dict[tuple[str, int], _Probe]) -> None:
        """Read every probed partition from its start, read_committed, all at once,
        until each reached its end (EOF) or its limit, or the time is up."""
        if not probes:
            return
        consumer = self._prober()
        assigned = [TopicPartition(t, p, probe.start) for (t, p), probe in probes.items()]
        consumer.assign(assigned)
        pending = set(probes)

        def finish(key: tuple[str, int], *, reached_end: bool) -> None:
            probes[key].reached_end = reached_end
            pending.discard(key)
            consumer.pause([TopicPartition(*key)])

        deadline = time.monotonic() + self.probe_timeout_s
        try:
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # consume() waits out its timeout unless the batch fills: keep it short.
                for msg in consumer.consume(1000, min(remaining, 0.02)):
                    key = (str(msg.topic()), int(msg.partition() or 0))
                    if key not in pending:
                        continue
                    probe = probes[key]
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            finish(key, reached_end=True)
                        continue
                    offset = int(msg.offset() or 0)
                    if offset >= probe.end:  # written after the end offsets were read
                        finish(key, reached_end=True)
                        continue
                    kind, ms = msg.timestamp()
                    probe.records.append((offset, ms if kind else None))
                    if offset + 1 >= probe.end:
                        finish(key, reached_end=True)
                    elif len(probe.records) >= probe.limit:
                        finish(key, reached_end=False)
        finally:
            # A pause outlives the assignment: the next sample would read nothing.
            consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in assigned])
            consumer.unassign()

    def _probe_all(
        self,
        ends: dict[tuple[str, int], int],
        starts: dict[tuple[str, int], set[int]],
        with_seconds: bool,
    ) -> dict[tuple[str, int], list[_Probe]]:
        """Probes covering every (partition, committed offset) that needs one.

        Every committed offset within ``probe_max_lag`` of the end is served by one
        pass from the lowest of them to the end; with ``with_seconds`` an offset
        further behind gets a pass that reads its first record only, unless an earlier
        sample found that record. One consumer reads one position per partition:
        further passes take the rest.
        """
        queues: dict[tuple[str, int], list[_Probe]] = {}
        for key, offsets in starts.items():
            end = ends[key]
            near = [s for s in offsets if 0 < end - s <= self.probe_max_lag]
            far = (
                sorted(
                    s
                    for s in offsets
                    if end - s > self.probe_max_lag and (*key, s) not in self._first_ms
                )
                if with_seconds
                else []
            )
            queue = [_Probe(s, end, 1) for s in far]
            if near:
                queue.insert(0, _Probe(min(near), end, self.probe_max_lag + 1))
            if queue:
                queues[key] = queue
        done: dict[tuple[str, int], list[_Probe]] = {}
        while queues:
            batch = {key: queue.pop(0) for key, queue in queues.items()}
            self._probe(batch)
            for key, probe in batch.items():
                done.setdefault(key, []).append(probe)
            queues = {key: queue for key, queue in queues.items() if queue}
        return done

    def _measure(
        self,
        committed: Committed,
        *,
        with_seconds: bool,
        ends: dict[tuple[str, int], int] | None = None,
    ) -> list[PartitionLag]:
        """Lag of every (group, topic, partition) -> committed offset, in one batched pass
        (``ends``: the end offsets, when already read)."""
        if ends is None:
            ends = self._ends((topic, p) for _, topic, p in committed)
        starts: dict[tuple[str, int], set[int]] = {}
        for (_, topic, p), offset in committed.items():
            starts.setdefault((topic, p), set()).add(max(offset, 0))
        probes = self._probe_all(ends, starts, with_seconds)
        first_ms_at = {
            k: ms for k, ms in self._first_ms.items() if k[2] in starts.get((k[0], k[1]), ())
        }
        for (topic, p), passes in probes.items():
            for probe in passes:
                if probe.limit == 1 and probe.records and probe.records[0][1] is not None:
                    first_ms_at[(topic, p, probe.start)] = int(probe.records[0][1])
        self._first_ms = first_ms_at

        now_ms = time.time() * 1000
        out = []
        for (group, topic, p), offset in committed.items():
            start, end = max(offset, 0), ends[(topic, p)]
            readable: int | None = None
            first_ms: int | None = None
            for probe in probes.get((topic, p), []):
                # The pass from this very offset, or the one that read to the end
                # from at or below it.
                if probe.start == start or (probe.limit > 1 and probe.start <= start):
                    readable = probe.readable_from(start)
                    first_ms = probe.first_ms_from(start)
                    break
            if first_ms is None and readable is None:
                first_ms = first_ms_at.get((topic, p, start))
            seconds = 0.0
            if with_seconds and first_ms is not None and readable != 0:
                seconds = max(now_ms - first_ms, 0.0) / 1000
            out.append(PartitionLag(group, topic, p, offset, end, seconds, readable=readable))
        return out

    # ------------------------------------------------------------------ samples
    def read_many(
        self, pairs: Iterable[tuple[str, str]], *, with_seconds: bool = False
    ) -> list[PartitionLag]:
        """Lag of each (group, topic), every partition, in one batched sample. A pair
        whose topic does not exist is left out. ``stalled``: between this sample and
        this reader's previous one, the lag grew and the committed offset did not move."""
        topics, _ = self.metadata()
        pairs = [(g, t) for g, t in dict.fromkeys(pairs) if t in topics]
        if not pairs:
            return []
        out = []
        for item in self._measure(self._committed(pairs, topics), with_seconds=with_seconds):
            key = (item.group, item.topic, item.partition)
            before = self._previous.get(key)
            stalled = (
                before is not None
                and item.lag > before.lag
                and item.committed == before.committed
                and item.lag > 0
            )
            current = dataclasses.replace(item, stalled=stalled)
            self._previous[key] = current
            out.append(current)
        return out

    def read(self, group: str, topic: str, *, with_seconds: bool = False) -> list[PartitionLag]:
        return self.read_many([(group, topic)], with_seconds=with_seconds)

    def read_all(self, *, with_seconds: bool = True) -> list[PartitionLag]:
        return self.read_many(engine_groups(self.settings).items(), with_seconds=with_seconds)

    def end_offsets(self, topic: str) -> int:
        """Sum of the topic's last stable offsets (every partition, one request); 0 when
        the topic does not exist."""
        topics, _ = self.metadata()
        ends = self._ends((topic, p) for p in range(topics.get(topic, 0)))
        return sum(ends.values())

    def snapshot(
        self,
        *,
        groups: re.Pattern[str] | None = None,
        topics: re.Pattern[str] | None = None,
        with_seconds: bool = True,
    ) -> Snapshot:
        """Every consumer group whose id matches ``groups`` and every partition it
        committed on a topic matching ``topics``, measured in one batched sample.

        An engine group also gets a row for every partition of its input topic it
        has not committed yet (its workers would start there from the earliest
        offset). Without filters, the engine's input topics must exist.
        """
        at = time.time()
        existing, brokers = self.metadata()
        problems: list[Problem] = []
        if topics is not None and not any(topics.search(t) for t in existing):
            problems.append(
                Problem("no_such_topic", f"no topic matches --topic '{topics.pattern}'")
            )
        if groups is None and topics is None:
            problems += self._missing_engine_topics(existing)
        infos, errors = self.groups(groups)
        problems += [Problem("group_error", e) for e in errors]
        if groups is not None and not infos:
            problems.append(
                Problem("no_such_group", f"no consumer group matches --group '{groups.pattern}'")
            )

        committed, failures = self.committed_offsets(dict.fromkeys(infos))
        problems += [
            Problem("group_error", f"committed offsets of {g}: {why}")
            for g, why in failures.items()
        ]
        stages = engine_stages(self.settings)
        for group in infos:
            if group in stages:
                topic = stages[group][1]
                for p in range(existing.get(topic, 0)):
                    committed.setdefault((group, topic, p), -1)

        wanted: Committed = {}
        gone: dict[tuple[str, str], list[int]] = {}
        for (group, topic, p), offset in committed.items():
            if topics is not None and not topics.search(topic):
                continue
            if p >= existing.get(topic, 0):
                gone.setdefault((group, topic), []).append(p)
                continue
            wanted[(group, topic, p)] = offset
        for (group, topic), parts in sorted(gone.items()):
            where = (
                f"topic {topic} does not exist"
                if topic not in existing
                else f"{topic} has {existing[topic]} partition(s)"
            )
            problems.append(
                Problem(
                    "partition_gone",
                    f"group {group} has offsets on {topic}"
                    f"[{','.join(map(str, sorted(parts)))}], but {where}",
                    exit_code=EXIT_OK,
                )
            )
        if topics is not None:
            # A group with nothing on the topics asked for is not part of the answer.
            keep = {group for group, _, _ in wanted}
            infos = {g: info for g, info in infos.items() if g in keep}
        # The engine's topics are exported whether a group reads them or not (the
        # MatchingStalled alert watches te.commands.accepted's end offsets).
        used = {topic for _, topic, _ in wanted} | {
            t
            for t in self.settings.topic_names.values()
            if t in existing and (topics is None or topics.search(t))
        }
        described = {t: existing[t] for t in sorted(used)}
        ends = self._ends((t, p) for t, n in described.items() for p in range(n))
        lags = self._measure(wanted, with_seconds=with_seconds, ends=ends)
        return Snapshot(at, brokers, infos, lags, described, problems, ends)

    def _missing_engine_topics(self, existing: Mapping[str, int]) -> list[Problem]:
        consumers: dict[str, list[str]] = {}
        for stage, topic in engine_stages(self.settings).values():
            consumers.setdefault(topic, []).append(stage)
        missing = [t for t in consumers if t not in existing]
        if not missing:
            return []
        where = self.settings.kafka.bootstrap_servers
        if len(missing) == len(consumers):
            return [
                Problem(
                    "missing_topic",
                    f"none of the engine's topics exist on {where} ({', '.join(missing)}): "
                    f"check topics.prefix ({self.settings.topics.prefix!r}) or declare them "
                    f"with `trade-engine topics create`",
                )
            ]
        return [
            Problem(
                "missing_topic",
                f"topic {t} does not exist on {where} (input of {', '.join(consumers[t])})",
            )
            for t in missing
        ]

    def close(self) -> None:
        if self._probe_consumer is not None:
            self._probe_consumer.close()
            self._probe_consumer = None
        self._admin_client = None


# ------------------------------------------------------------------ status


@dataclass(frozen=True, slots=True)
class Sample:
    """A partition's position in one sample: what the status is judged on."""

    committed: int
    lag: int


def partition_status(window: Sequence[Sample], *, active: bool) -> Status:
    """Burrow's evaluation of one partition over its window (oldest first).

    ``active``: the group has members, or one of its committed offsets moved
    within the window (a group whose consumers assign partitions by hand has no
    members). One sample judges only STOPPED (lag, nobody consuming) or OK.
    """
    if not window or window[-1].lag == 0:
        return Status.OK
    if not active:
        return Status.STOPPED
    first, last = window[0], window[-1]
    if len(window) < 2 or any(s.lag == 0 for s in window):
        return Status.OK
    if all(s.committed == first.committed for s in window):
        return Status.STALLED
    growing = all(b >= a for a, b in itertools.pairwise(s.lag for s in window))
    return Status.LAGGING if growing and last.lag > first.lag else Status.OK


def group_active(members: int, windows: Iterable[Sequence[Sample]]) -> bool:
    """Someone consumes for the group: it has members, or a committed offset moved."""
    return members > 0 or any(w and w[0].committed != w[-1].committed for w in windows)


def frozen_and_growing(window: Sequence[Sample]) -> bool:
    """The committed offset did not move while the lag grew (``te_consumergroup_stalled``)."""
    return (
        len(window) >= 2
        and all(s.committed == window[0].committed for s in window)
        and window[-1].lag > window[0].lag
    )


@dataclass(frozen=True, slots=True)
class PartitionView:
    lag: PartitionLag
    status: Status
    # Exported as te_consumergroup_stalled: STALLED, or STOPPED while its lag grows.
    stalled: bool

    def as_dict(self) -> dict[str, object]:
        item = self.lag
        return {
            "topic": item.topic,
            "partition": item.partition,
            "committed": item.committed,
            "end": item.end,
            "lag": item.lag,
            "lag_seconds": round(item.lag_seconds, 3),
            "status": self.status.name,
        }


@dataclass(frozen=True, slots=True)
class GroupView:
    info: GroupInfo
    status: Status
    partitions: list[PartitionView]

    @property
    def lag(self) -> int:
        return sum(p.lag.lag for p in self.partitions)

    @property
    def lag_seconds(self) -> float:
        return max((p.lag.lag_seconds for p in self.partitions), default=0.0)

    @property
    def topics(self) -> list[str]:
        return sorted({p.lag.topic for p in self.partitions})

    @property
    def note(self) -> str | None:
        return None if self.partitions else "no committed offsets"

    def as_dict(self) -> dict[str, object]:
        info = self.info
        return {
            "group": info.group,
            "stage": info.stage,
            "state": info.state,
            "members": info.members,
            "status": self.status.name,
            "lag": self.lag,
            "lag_seconds": round(self.lag_seconds, 3),
            "topics": self.topics,
            "note": self.note,
            "partitions": [p.as_dict() for p in self.partitions],
        }


@dataclass(frozen=True, slots=True)
class LagView:
    """Every group's verdict over the window, as of the latest sample."""

    at: float
    samples: int
    span_s: float
    brokers: int
    topics: dict[str, int]
    groups: list[GroupView]
    problems: list[Problem]
    ends: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def judged(self) -> str:
        if self.samples < 2:
            return "judged from one sample: only STOPPED or OK"
        return f"judged over {self.samples} samples in {self.span_s:.1f} s"

    def exit_code(self) -> int:
        """2: broker unreachable or missing topics/groups; 1: a group not OK; 0: all OK."""
        codes = [p.exit_code for p in self.problems]
        codes += [EXIT_BEHIND for g in self.groups if g.status is not Status.OK]
        return max(codes, default=EXIT_OK)

    def as_dict(self) -> dict[str, object]:
        return {
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds"),
            "window": {"samples": self.samples, "seconds": round(self.span_s, 3)},
            "groups": [g.as_dict() for g in self.groups],
            "problems": [p.as_dict() for p in self.problems],
        }


class LagWindow:
    """The last ``size`` samples of every partition, and the view they make."""

    def __init__(self, settings: Settings, size: int) -> None:
        if size < 1:
            raise ValueError("a window holds at least one sample")
        self.settings = settings
        self.size = size
        self._times: deque[float] = deque(maxlen=size)
        self._samples: dict[tuple[str, str, int], deque[Sample]] = {}

    def add(self, snapshot: Snapshot) -> LagView:
        self._times.append(snapshot.at)
        seen = set()
        by_group: dict[str, list[PartitionLag]] = {}
        for item in snapshot.lags:
            key = (item.group, item.topic, item.partition)
            seen.add(key)
            window = self._samples.setdefault(key, deque(maxlen=self.size))
            window.append(Sample(item.committed, item.lag))
            by_group.setdefault(item.group, []).append(item)
        for key in [k for k in self._samples if k not in seen]:
            del self._samples[key]  # the group or the topic is gone

        views = []
        for group, info in snapshot.groups.items():
            items = sorted(by_group.get(group, []), key=lambda i: (i.topic, i.partition))
            windows = [self._samples[(i.group, i.topic, i.partition)] for i in items]
            active = group_active(info.members, windows)
            partitions = []
            for item, window in zip(items, windows, strict=True):
                status = partition_status(window, active=active)
                stalled = status is Status.STALLED or (
                    status is Status.STOPPED and frozen_and_growing(window)
                )
                partitions.append(PartitionView(item, status, stalled))
            status = max((p.status for p in partitions), default=Status.OK)
            views.append(GroupView(info, status, partitions))
        order = {group: i for i, group in enumerate(engine_stages(self.settings))}
        views.sort(key=lambda v: (order.get(v.info.group, len(order)), v.info.group))
        return LagView(
            snapshot.at,
            len(self._times),
            self._times[-1] - self._times[0],
            snapshot.brokers,
            snapshot.topics,
            views,
            snapshot.problems,
            snapshot.ends or {(i.topic, i.partition): i.end for i in snapshot.lags},
        )


# ------------------------------------------------------------------ output


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows of cells as aligned text; columns in ``right`` are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def render(view: LagView, *, every_partition: bool = False) -> list[str]:
    """The view as text: one row per group and topic, then the partitions that are
    not OK (every partition with ``every_partition``)."""
    lines = [f"consumer groups: {len(view.groups)} ({view.judged})"]
    if not view.groups:
        return lines
    rows = [["GROUP", "STAGE", "STATE", "MEMBERS", "TOPIC", "PARTS", "LAG", "LAG_S", "STATUS"]]
    details: list[str] = []
    for group in view.groups:
        info = group.info
        head = [info.group, info.stage or "-", info.state, str(info.members)]
        if not group.partitions:
            rows.append([*head, "-", "0", "-", "-", f"{group.status.name} ({group.note})"])
            continue
        for topic in group.topics:
            parts = [p for p in group.partitions if p.lag.topic == topic]
            lag = sum(p.lag.lag for p in parts)
            seconds = max(p.lag.lag_seconds for p in parts)
            status = max(p.status for p in parts)
            rows.append([*head, topic, str(len(parts)), str(lag), f"{seconds:.1f}", status.name])
            for p in parts:
                if every_partition or p.status is not Status.OK:
                    item = p.lag
                    committed = str(item.committed) if item.committed >= 0 else "none"
                    details.append(
                        f"  {info.group} {item.topic}[{item.partition}]: committed {committed}"
                        f" end {item.end} lag {item.lag} ({item.lag_seconds:.1f} s)"
                        f" {p.status.name}"
                    )
    lines += _table(rows, right={3, 5, 6, 7})
    if details:
        lines.append("partitions:" if every_partition else "partitions not OK:")
        lines += details
    return lines


class LagCollector(Collector):
    """The latest ``LagView`` as kafka_exporter's metrics (and the engine's own), read at
    scrape time: a group or partition that is gone disappears with the next sample."""

    def __init__(self) -> None:
        self._view: LagView | None = None
        self._lock = threading.Lock()

    def update(self, view: LagView) -> None:
        with self._lock:
            self._view = view

    def collect(self) -> list[GaugeMetricFamily]:
        with self._lock:
            view = self._view
        part = ["consumergroup", "topic", "partition"]
        brokers = GaugeMetricFamily("kafka_brokers", "Brokers in the cluster's metadata")
        partitions = GaugeMetricFamily(
            "kafka_topic_partitions", "Partitions of the topic", labels=["topic"]
        )
        end = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "Last stable offset (the log end a read_committed consumer sees)",
            labels=["topic", "partition"],
        )
        current = GaugeMetricFamily(
            "kafka_consumergroup_current_offset", "Committed offset of the group", labels=part
        )
        current_sum = GaugeMetricFamily(
            "kafka_consumergroup_current_offset_sum",
            "Sum of the group's committed offsets on the topic",
            labels=["consumergroup", "topic"],
        )
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Records a read_committed consumer at the committed offset can still read",
            labels=part,
        )
        lag_sum = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum",
            "The group's lag on the topic, every partition",
            labels=["consumergroup", "topic"],
        )
        lag_seconds = GaugeMetricFamily(
            "kafka_consumergroup_lag_seconds", "Age of the oldest unconsumed record", labels=part
        )
        members = GaugeMetricFamily(
            "kafka_consumergroup_members", "Members of the group", labels=["consumergroup"]
        )
        stalled = GaugeMetricFamily(
            "te_consumergroup_stalled",
            "1 when the committed offset did not move over the window while lag stayed "
            "(group STALLED) or grew (group STOPPED)",
            labels=part,
        )
        status = GaugeMetricFamily(
            "te_consumergroup_status",
            "Status over the window: 0 OK, 1 LAGGING, 2 STALLED, 3 STOPPED",
            labels=["consumergroup", "stage"],
        )
        families = [
            brokers, partitions, end, current, current_sum, lag, lag_sum, lag_seconds,
            members, stalled, status,
        ]  # fmt: skip
        if view is None:
            return families
        brokers.add_metric([], view.brokers)
        for topic, count in view.topics.items():
            partitions.add_metric([topic], count)
        for group in view.groups:
            name = group.info.group
            members.add_metric([name], group.info.members)
            status.add_metric([name, group.info.stage or ""], int(group.status))
            sums: dict[str, tuple[int, int]] = {}
            for p in group.partitions:
                item = p.lag
                labels = [name, item.topic, str(item.partition)]
                current.add_metric(labels, max(item.committed, 0))
                lag.add_metric(labels, item.lag)
                lag_seconds.add_metric(labels, item.lag_seconds)
                stalled.add_metric(labels, 1 if p.stalled else 0)
                offsets, lags = sums.get(item.topic, (0, 0))
                sums[item.topic] = (offsets + max(item.committed, 0), lags + item.lag)
            for topic, (offsets, lags) in sums.items():
                current_sum.add_metric([name, topic], offsets)
                lag_sum.add_metric([name, topic], lags)
        for (topic, partition), offset in sorted(view.ends.items()):
            end.add_metric([topic, str(partition)], offset)
        return families
