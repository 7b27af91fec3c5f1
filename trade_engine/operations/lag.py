"""Consumer lag: how far each of the engine's consumer groups is behind, per partition.

Lag in messages is what a ``read_committed`` consumer at the group's committed
offset can still read: the partition's last stable offset (the end a
read_committed reader sees) minus the committed offset. A topic written in
Kafka transactions carries a commit marker (a control record) after each
transaction's records; a drained group commits the offset after its last
*data* record, which is the marker's, so end minus committed never reaches
zero. When that difference is small (``probe_max_lag`` records or fewer) the
remaining records are read once, read_committed, and only data records are
counted: markers and aborted records are not lag. Lag in seconds is the age of
the oldest record the group has not consumed (the first readable record at its
committed offset), zero when it is caught up. A group is *stalled* on a
partition when, between two samples, its lag grew and its committed offset did
not move.

One ``read`` or ``read_all`` costs one batched end-offset query, one committed-
offset query per group (all in flight together) and at most one short probe
over every partition that needs it, whatever the number of groups.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import Gauge

from trade_engine.config import Settings
from trade_engine.streams import clients

LAG = Gauge(
    "kafka_consumergroup_lag",
    "Records a read_committed consumer at the committed offset can still read",
    ["consumergroup", "topic", "partition"],
)
LAG_SECONDS = Gauge(
    "kafka_consumergroup_lag_seconds",
    "Age of the oldest unconsumed record",
    ["consumergroup", "topic", "partition"],
)
CURRENT_OFFSET = Gauge(
    "kafka_consumergroup_current_offset",
    "Committed offset of the group",
    ["consumergroup", "topic", "partition"],
)
END_OFFSET = Gauge(
    "kafka_topic_partition_current_offset",
    "Last stable offset (the log end a read_committed consumer sees)",
    ["topic", "partition"],
)
STALLED = Gauge(
    "te_consumergroup_stalled",
    "1 when lag grew and the committed offset did not move between samples",
    ["consumergroup", "topic", "partition"],
)

LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]
# Partitions whose raw lag (end - committed) is at most this many records are
# probed to tell data records from transaction markers / aborted records.
PROBE_MAX_LAG = 16
# The whole probe of one sample (every partition at once) gives up after this.
PROBE_TIMEOUT_S = 2.0
# End offsets of a topic created a moment ago may not be served yet: retry this long.
END_OFFSET_RETRY_S = 3.0
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
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
    """group id -> the topic it consumes, for every stage of the pipeline."""
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


class LagReader:
    """One admin client and one probe consumer for every group and sample.

    ``read``/``read_all`` ask for the end offsets of every partition involved in
    one ListOffsets request (read_committed: the last stable offset), for every
    group's committed offsets concurrently, then probe, with a single
    read_committed consumer assigned to all of them at once, the partitions
    whose lag is small (transaction markers, or records still to read?) and,
    with ``with_seconds``, every lagging partition for the timestamp of its
    oldest unconsumed record.
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

    # ------------------------------------------------------------------ clients
    def _admin(self) -> AdminClient:
        if self._admin_client is None:
            self._admin_client = clients.admin_client(
                self.settings, **{"client.id": f"lag-reader-{uuid.uuid4().hex[:6]}"}
            )
        return self._admin_client

    def _prober(self) -> Consumer:
        if self._probe_consumer is None:
            # Never joins or commits: partitions are assigned by hand.
            self._probe_consumer = clients.reader(
                self.settings,
                f"lag-reader-{self.settings.topics.prefix}",
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
    def _ends(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Last stable offset of every partition, in one request (retried briefly
        for a topic created a moment ago)."""
        wanted = sorted(set(partitions))
        out: dict[tuple[str, int], int] = {}
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
                raise failed
            time.sleep(0.2)

    def _committed(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) -> committed offset (negative: none), every group at once."""
        partitions = self.settings.topics.partitions
        by_group: dict[str, list[TopicPartition]] = {}
        for group, topic in pairs:
            by_group.setdefault(group, []).extend(
                TopicPartition(topic, p) for p in range(partitions)
            )
        admin = self._admin()
        # The API takes one group per request; the requests run concurrently.
        pending = [
            admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, tps)], request_timeout=REQUEST_TIMEOUT_S
            )[group]
            for group, tps in by_group.items()
        ]
        out: dict[tuple[str, str, int], int] = {}
        for group, future in zip(by_group, pending, strict=True):
            result = future.result()
            for tp in result.topic_partitions:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                out[(group, tp.topic, tp.partition)] = int(tp.offset)
        return out

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
        further behind gets a pass that reads its first record only. One consumer
        reads one position per partition: further passes take the rest.
        """
        queues: dict[tuple[str, int], list[_Probe]] = {}
        for key, offsets in starts.items():
            end = ends[key]
            near = [s for s in offsets if 0 < end - s <= self.probe_max_lag]
            far = sorted(s for s in offsets if end - s > self.probe_max_lag) if with_seconds else []
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

    # ------------------------------------------------------------------ samples
    def read_many(
        self, pairs: Iterable[tuple[str, str]], *, with_seconds: bool = False
    ) -> list[PartitionLag]:
        """Lag of each (group, topic), every partition, in one batched sample."""
        pairs = list(dict.fromkeys(pairs))
        if not pairs:
            return []
        partitions = range(self.settings.topics.partitions)
        ends = self._ends((topic, p) for _, topic in pairs for p in partitions)
        committed = self._committed(pairs)
        starts: dict[tuple[str, int], set[int]] = {}
        for group, topic in pairs:
            for p in partitions:
                starts.setdefault((topic, p), set()).add(max(committed[(group, topic, p)], 0))
        probes = self._probe_all(ends, starts, with_seconds)

        now_ms = time.time() * 1000
        out = []
        for group, topic in pairs:
            for p in partitions:
                offset = committed[(group, topic, p)]
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
                seconds = 0.0
                if with_seconds and first_ms is not None and readable != 0:
                    seconds = max(now_ms - first_ms, 0.0) / 1000
                key = (group, topic, p)
                before = self._previous.get(key)
                lag = PartitionLag(group, topic, p, offset, end, seconds, readable=readable).lag
                stalled = (
                    before is not None
                    and lag > before.lag
                    and offset == before.committed
                    and lag > 0
                )
                current = PartitionLag(group, topic, p, offset, end, seconds, stalled, readable)
                self._previous[key] = current
                out.append(current)
        return out

    def read(self, group: str, topic: str, *, with_seconds: bool = False) -> list[PartitionLag]:
        return self.read_many([(group, topic)], with_seconds=with_seconds)

    def read_all(self, *, with_seconds: bool = True) -> list[PartitionLag]:
        return self.read_many(engine_groups(self.settings).items(), with_seconds=with_seconds)

    def end_offsets(self, topic: str) -> int:
        """Sum of the topic's last stable offsets (every partition, one request)."""
        ends = self._ends((topic, p) for p in range(self.settings.topics.partitions))
        return sum(ends.values())

    def close(self) -> None:
        if self._probe_consumer is not None:
            self._probe_consumer.close()
            self._probe_consumer = None
        self._admin_client = None


def export(lags: list[PartitionLag]) -> None:
    """Publish one sample as kafka_exporter-style gauges."""
    for item in lags:
        labels = (item.group, item.topic, str(item.partition))
        LAG.labels(*labels).set(item.lag)
        LAG_SECONDS.labels(*labels).set(item.lag_seconds)
        CURRENT_OFFSET.labels(*labels).set(max(item.committed, 0))
        END_OFFSET.labels(item.topic, str(item.partition)).set(item.end)
        STALLED.labels(*labels).set(1 if item.stalled else 0)
