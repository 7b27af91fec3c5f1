"""The transactional runtime on the real broker: a worker that dies before its commit.

A tiny copy stage (input value -> output value) runs on fresh topics. The first
instance dies inside its first commit, after its outputs reached the broker
(flushed: the crash provably lands between "produce" and "commit"). A second
instance under the same worker id fences the first, is re-delivered every input
the first one consumed, and commits. A ``read_committed`` reader then sees each
output exactly once, while a ``read_uncommitted`` reader also sees the dead
instance's aborted copies.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from trade_engine.config import Settings
from trade_engine.streams import clients
from trade_engine.streams.records import ConsumedRecord, is_partition_eof
from trade_engine.streams.runtime import Transaction, TransactionalWorker

pytestmark = pytest.mark.broker
PARTITIONS = 2
ABORTED = Counter("te_test_crash_aborted_total", "test", ["reason"], registry=CollectorRegistry())


class CrashError(Exception):
    """Stands for SIGKILL: nothing after it runs, the open transaction is left open."""


class Copy(TransactionalWorker):
    def __init__(
        self,
        settings: Settings,
        source: str,
        sink: str,
        group: str,
        worker_id: str,
        *,
        crash_before_commit: bool = False,
    ) -> None:
        self.sink = sink
        self.crash_before_commit = crash_before_commit
        self.next: dict[int, int] = {}
        self.applied: list[bytes] = []
        super().__init__(
            clients.exactly_once_consumer(settings, group, worker_id),
            clients.transactional_producer(settings, f"{group}-{worker_id}"),
            source,
            batch_size=100,
            poll_timeout_s=0.05,
            max_batch=1_000,
            commit_interval_s=0.25,
            aborted=ABORTED,
        )

    def apply(self, records: dict[int, list[ConsumedRecord]], txn: Transaction) -> None:
        for partition, batch in records.items():
            for record in batch:
                if record.offset < self.next.get(partition, 0):
                    continue
                self.producer.produce(self.sink, value=record.value, partition=partition)
                self.next[partition] = record.offset + 1
                self.applied.append(record.value or b"")

    def positions(self, txn: Transaction) -> list[TopicPartition]:
        if self.crash_before_commit:
            # The outputs are on the broker, in the open transaction: die now.
            assert self.producer.flush(30) == 0
            raise CrashError
        return [TopicPartition(self.input_topic, p, self.next[p]) for p in txn.partitions]

    def restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return partitions  # resume at the group's committed position

    def release(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.next.pop(tp.partition, None)

    def rewind(self, partitions: list[int]) -> list[TopicPartition]:
        owned = [TopicPartition(self.input_topic, p) for p in partitions if p in self.next]
        positions = self.consumer.committed(owned, timeout=30) if owned else []
        for tp in positions:
            self.next[tp.partition] = max(tp.offset, 0)
            tp.offset = self.next[tp.partition] or OFFSET_BEGINNING
        return list(positions)


def _read(settings: Settings, topic: str, isolation: str) -> list[bytes]:
    reader = clients.reader(
        settings,
        f"rt-check-{uuid.uuid4().hex[:8]}",
        **{"isolation.level": isolation, "enable.partition.eof": True},
    )
    values: list[bytes] = []
    at_end: set[int] = set()
    try:
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 30
        while len(at_end) < PARTITIONS:
            assert time.monotonic() < deadline, f"{topic}: no end of partition seen"
            msg = reader.poll(0.5)
            if msg is None:
                continue
            if is_partition_eof(msg):
                at_end.add(msg.partition() or 0)
                continue
            values.append(ConsumedRecord.from_message(msg).value or b"")
    finally:
        reader.close()
    return values


def test_a_crash_before_commit_redelivers_and_readers_see_each_output_once(
    settings: Settings, new_topic: Callable[..., str]
) -> None:
    source = new_topic("rt-in", partitions=PARTITIONS)
    sink = new_topic("rt-out", partitions=PARTITIONS)
    group = f"rt-{uuid.uuid4().hex[:8]}"
    inputs = [f"r{i}".encode() for i in range(40)]
    producer = clients.producer(settings)
    for i, value in enumerate(inputs):
        producer.produce(source, value=value, partition=i % PARTITIONS)
    assert producer.flush(30) == 0

    dead = Copy(settings, source, sink, group, "w1", crash_before_commit=True)
    with pytest.raises(CrashError):
        dead.run(max_idle_s=10)
    assert dead.applied, "the first instance died before producing anything"

    survivor = Copy(settings, source, sink, group, "w1")  # same id: fences the dead one
    survivor.run(max_idle_s=1.5)
    assert sorted(survivor.applied) == sorted(inputs)  # nothing was committed: all again

    committed = _read(settings, sink, "read_committed")
    assert sorted(committed) == sorted(inputs)
    assert len(set(committed)) == len(committed)
    everything = _read(settings, sink, "read_uncommitted")
    assert len(everything) == len(inputs) + len(dead.applied)  # the aborted copies
