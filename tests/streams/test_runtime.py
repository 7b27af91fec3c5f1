"""The worker runtime's decisions, with fake clients: what one transaction holds, when it
commits, in which order, what an abort rewinds; and that the at-least-once loop commits a
batch only after its effects."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from trade_engine.streams.exceptions import AbortTransactionError
from trade_engine.streams.records import ConsumedRecord
from trade_engine.streams.runtime import (
    AtLeastOnceWorker,
    Transaction,
    TransactionalWorker,
    positions_after,
)

ABORTED = Counter("te_test_runtime_aborted_total", "test", ["reason"], registry=CollectorRegistry())


def _aborted(reason: str) -> float:
    return ABORTED.labels(reason)._value.get()


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def error(self) -> KafkaError | None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + self._offset)

    def headers(self) -> None:
        return None


class FakeConsumer:
    """A log per partition and a position per partition; rebalance callbacks are served
    inside the first consume/poll, as librdkafka does."""

    def __init__(self, log: list[str], topic: str = "in", partitions: int = 2) -> None:
        self.log = log
        self.topic = topic
        self.logs: dict[int, list[FakeMessage]] = {p: [] for p in range(partitions)}
        self.position: dict[int, int] = {}
        self.callbacks: dict[str, Any] = {}
        self.commits: list[tuple[list[tuple[int, int]], bool]] = []
        self.fail_commit: KafkaException | None = None
        self.closed = False

    def add(self, partition: int, *values: bytes) -> None:
        log = self.logs[partition]
        for value in values:
            log.append(FakeMessage(self.topic, partition, len(log), value))

    # -- the confluent-kafka surface the runtime uses
    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.position[tp.partition] = max(tp.offset, 0)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in self.position]

    def _rebalance(self) -> None:
        on_assign = self.callbacks.pop("on_assign", None)
        if on_assign is not None:
            on_assign(self, [TopicPartition(self.topic, p) for p in self.logs])

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self._rebalance()
        out: list[FakeMessage] = []
        for partition, position in sorted(self.position.items()):
            take = self.logs[partition][position : position + num_messages - len(out)]
            self.position[partition] = position + len(take)
            out.extend(take)
        return out

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        batch = self.consume(1)
        return batch[0] if batch else None

    def seek(self, tp: TopicPartition) -> None:
        self.log.append(f"seek p{tp.partition}@{tp.offset}")
        self.position[tp.partition] = tp.offset

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit
        self.commits.append(([(tp.partition, tp.offset) for tp in offsets], asynchronous))
        self.log.append("kafka commit")

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Records every call; what a committed transaction produced is ``visible``."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.open: list[tuple[str, bytes]] | None = None
        self.visible: list[tuple[str, bytes]] = []
        self.fail_commit: list[KafkaException] = []

    def init_transactions(self, timeout: float) -> None:
        self.log.append("init")

    def begin_transaction(self) -> None:
        assert self.open is None, "a transaction is already open"
        self.open = []
        self.log.append("begin")

    def produce(self, topic: str, value: bytes, partition: int) -> None:
        assert self.open is not None, "produce outside a transaction"
        self.open.append((topic, value))
        self.log.append(f"produce {topic}")

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: object, timeout: float
    ) -> None:
        assert metadata == "group-metadata"
        self.log.append("offsets " + ",".join(f"p{tp.partition}@{tp.offset}" for tp in offsets))

    def commit_transaction(self, timeout: float) -> None:
        if self.fail_commit:
            raise self.fail_commit.pop(0)
        assert self.open is not None
        self.visible.extend(self.open)
        self.open = None
        self.log.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.open = None
        self.log.append("abort")


class Echo(TransactionalWorker):
    """Each input value to ``out``; the changelog and the "local store" hold the position."""

    def __init__(
        self, consumer: FakeConsumer, producer: FakeProducer, log: list[str], **tuning: Any
    ) -> None:
        self.log = log
        self.next: dict[int, int] = {}
        self.store: dict[int, int] = {}
        settings: dict[str, Any] = {
            "batch_size": 2,
            "poll_timeout_s": 0.0,
            "max_batch": 1_000,
            "commit_interval_s": 60.0,
            **tuning,
        }
        super().__init__(
            cast(Consumer, consumer), cast(Producer, producer), "in", aborted=ABORTED, **settings
        )

    def apply(self, records: dict[int, list[ConsumedRecord]], txn: Transaction) -> None:
        for partition, batch in records.items():
            for record in batch:
                if record.offset < self.next.get(partition, 0):
                    continue  # re-delivered
                if record.value == b"poison":
                    raise AbortTransactionError("poison")
                self.producer.produce("out", value=record.value, partition=partition)
                self.next[partition] = record.offset + 1

    def produce_changelog(self, txn: Transaction) -> None:
        for partition in txn.partitions:
            if partition in self.next:
                value = str(self.next[partition]).encode()
                self.producer.produce("changelog", value=value, partition=partition)

    def positions(self, txn: Transaction) -> list[TopicPartition]:
        return [TopicPartition("in", p, self.next[p]) for p in txn.partitions if p in self.next]

    def committed(self, txn: Transaction) -> None:
        self.log.append("store")
        self.store.update({p: self.next[p] for p in txn.partitions if p in self.next})

    def restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        for tp in partitions:
            tp.offset = self.next[tp.partition] = self.store.get(tp.partition, 0)
        return partitions

    def release(self, partitions: list[TopicPartition]) -> None:
        self.log.append("release " + ",".join(f"p{tp.partition}" for tp in partitions))
        for tp in partitions:
            self.next.pop(tp.partition, None)

    def rewind(self, partitions: list[int]) -> list[TopicPartition]:
        owned = [p for p in partitions if p in self.next]
        for p in owned:
            self.next[p] = self.store.get(p, 0)
        return [TopicPartition("in", p, self.next[p]) for p in owned]


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def consumer(log: list[str]) -> FakeConsumer:
    return FakeConsumer(log)


@pytest.fixture
def producer(log: list[str]) -> FakeProducer:
    return FakeProducer(log)


def _values(n: int, prefix: str = "v") -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


def _commits(log: list[str]) -> list[str]:
    return [entry for entry in log if entry.startswith("offsets")]


class TimedConsumer(FakeConsumer):
    """Records every consume/poll call with its count and timeout; ``arrivals`` land on
    partition 0 during the first poll (a record that comes while the worker waits)."""

    def __init__(self, log: list[str], arrivals: list[bytes] | None = None) -> None:
        super().__init__(log)
        self.calls: list[tuple[str, int, float]] = []
        self.arrivals = arrivals or []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self.calls.append(("consume", num_messages, timeout))
        return super().consume(num_messages)

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        self.calls.append(("poll", 1, timeout))
        if self.arrivals:
            self.add(0, *self.arrivals)
            self.arrivals = []
        batch = FakeConsumer.consume(self, 1)
        return batch[0] if batch else None


# ------------------------------------------------------------------ exactly once


def test_one_transaction_holds_every_queued_record_and_commits_when_the_queue_runs_dry(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    consumer.add(0, *_values(3))
    consumer.add(1, *_values(2))
    worker = Echo(consumer, producer, log)
    worker.run(max_idle_s=0)
    assert log.count("begin") == 1
    assert _commits(log) == ["offsets p0@3,p1@2"]
    assert sorted(v for t, v in producer.visible if t == "out") == sorted(_values(3) + _values(2))
    assert worker.store == {0: 3, 1: 2}
    assert consumer.closed
    assert worker.transactions_ready()[0]
    assert worker.group_joined()[0]


def test_the_commit_order_is_outputs_changelog_offsets_commit_store(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    consumer.add(0, b"a")
    Echo(consumer, producer, log).run(max_idle_s=0)
    assert log == [
        "init",
        "begin",
        "produce out",
        "produce changelog",
        "offsets p0@1",
        "commit",
        "store",
    ]


def test_a_transaction_is_cut_at_max_batch_under_load(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    consumer.add(0, *_values(10))
    Echo(consumer, producer, log, batch_size=2, max_batch=4).run(max_idle_s=0)
    assert _commits(log) == ["offsets p0@4", "offsets p0@8", "offsets p0@10"]


def test_a_transaction_is_cut_after_the_commit_interval(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    consumer.add(0, *_values(5))
    Echo(consumer, producer, log, batch_size=2, commit_interval_s=0.0).run(max_idle_s=0)
    assert _commits(log) == ["offsets p0@2", "offsets p0@4", "offsets p0@5"]


def test_a_failed_commit_aborts_rewinds_and_the_retry_commits_each_output_once(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    consumer.add(0, *_values(3))
    producer.fail_commit.append(KafkaException(KafkaError(KafkaError._TIMED_OUT, "slow")))
    before = _aborted("kafka")
    worker = Echo(consumer, producer, log)
    worker.run(max_idle_s=0)
    assert _aborted("kafka") == before + 1
    assert log.index("abort") < log.index("seek p0@0") < log.index("commit")
    assert [v for t, v in producer.visible if t == "out"] == _values(3)
    assert worker.store == {0: 3}


def test_a_fatal_error_ends_the_worker(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    consumer.add(0, b"a")
    producer.fail_commit.append(KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True)))
    with pytest.raises(KafkaException):
        Echo(consumer, producer, log).run(max_idle_s=0)
    assert consumer.closed
    assert "abort" not in log
    assert producer.visible == []


def test_a_stage_abort_rewinds_the_batch_it_was_applying(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    worker = Echo(consumer, producer, log)
    consumer.add(0, b"a", b"poison")
    before = _aborted("poison")
    worker.consumer.subscribe(["in"], on_assign=worker._on_assign)
    worker.process(cast(list[Message], consumer.consume(10)))
    assert _aborted("poison") == before + 1
    assert worker.txn is None
    assert log[-2:] == ["abort", "seek p0@0"]
    assert producer.visible == []


def test_a_revoke_commits_the_open_transaction_before_giving_partitions_up(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    worker = Echo(consumer, producer, log)
    consumer.add(0, b"a")
    worker.consumer.subscribe(["in"], on_assign=worker._on_assign)
    worker.process(cast(list[Message], consumer.consume(10)))
    worker._on_revoke(cast(Consumer, consumer), [TopicPartition("in", 0)])
    assert log[-4:] == ["offsets p0@1", "commit", "store", "release p0"]
    assert worker.txn is None


def test_lost_partitions_abort_the_open_transaction_and_rewind_those_kept(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    worker = Echo(consumer, producer, log)
    consumer.add(0, b"a")
    consumer.add(1, b"b")
    worker.consumer.subscribe(["in"], on_assign=worker._on_assign)
    worker.process(cast(list[Message], consumer.consume(10)))
    worker._on_lost(cast(Consumer, consumer), [TopicPartition("in", 0)])
    assert "commit" not in log
    assert log[-3:] == ["release p0", "abort", "seek p1@0"]
    assert not worker.group_joined()[0]
    assert producer.visible == []


def test_stop_ends_the_loop_after_committing_what_is_open(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    class StopsAfterOneBatch(Echo):
        def apply(self, records: dict[int, list[ConsumedRecord]], txn: Transaction) -> None:
            super().apply(records, txn)
            self.stop()

    consumer.add(0, *_values(6))
    worker = StopsAfterOneBatch(consumer, producer, log, batch_size=2)
    worker.run()  # no idle limit: only stop() ends it
    assert _commits(log) == ["offsets p0@2"]
    assert consumer.closed


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("restore_signals")
def test_sigterm_stops_a_sync_worker(
    consumer: FakeConsumer, producer: FakeProducer, log: list[str]
) -> None:
    worker = Echo(consumer, producer, log)
    worker.install_signal_handlers()
    os.kill(os.getpid(), signal.SIGTERM)
    assert not worker.running


# ------------------------------------------------------------------ at least once


class Sink(AtLeastOnceWorker):
    def __init__(self, consumer: FakeConsumer, log: list[str], **options: Any) -> None:
        super().__init__(stage="test", batch_size=3, poll_timeout_s=0.0, **options)
        self.consumer = cast(Consumer, consumer)
        self.log = log

    async def handle(self, messages: list[Message]) -> bool:
        await asyncio.sleep(0)
        self.log.append(f"effects {len(messages)}")
        return True


async def test_a_batch_is_committed_only_after_its_effects(log: list[str]) -> None:
    consumer = FakeConsumer(log)
    consumer.add(0, *_values(4))
    consumer.add(1, b"x")
    sink = Sink(consumer, log)
    sink.subscribe(["in"])
    await sink.run_batches(sink.handle, max_idle_s=0)
    assert log == ["effects 3", "kafka commit", "effects 2", "kafka commit"]
    assert consumer.commits == [([(0, 3)], False), ([(0, 4), (1, 1)], False)]
    assert sink.group_joined()[0]


async def test_a_batch_whose_handler_declines_is_not_committed(log: list[str]) -> None:
    consumer = FakeConsumer(log)
    consumer.add(0, b"a")
    sink = Sink(consumer, log)
    sink.subscribe(["in"])

    async def decline(messages: list[Message]) -> bool:
        return False

    await sink.run_batches(decline, max_idle_s=0)
    assert consumer.commits == []


async def test_a_failed_commit_is_logged_and_the_loop_goes_on(log: list[str]) -> None:
    consumer = FakeConsumer(log)
    consumer.add(0, *_values(5))
    consumer.fail_commit = KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    sink = Sink(consumer, log)
    sink.subscribe(["in"])
    await sink.run_batches(sink.handle, max_idle_s=0)
    assert log == ["effects 3", "effects 2"]


async def test_an_asynchronous_commit_does_not_wait_for_the_broker(log: list[str]) -> None:
    consumer = FakeConsumer(log)
    consumer.add(0, b"a")
    sink = Sink(consumer, log, commit_asynchronously=True)
    sink.subscribe(["in"])
    await sink.run_batches(sink.handle, max_idle_s=0)
    assert consumer.commits == [([(0, 1)], True)]


async def test_after_batch_can_end_the_loop_and_restore_sets_start_offsets(
    log: list[str],
) -> None:
    consumer = FakeConsumer(log)
    consumer.add(0, *_values(6))
    sink = Sink(consumer, log)

    def restore(_: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = 2  # positions kept elsewhere (the Postgres sink's)

    async def once() -> bool:
        return False

    sink.subscribe(["in"], restore=restore)
    await sink.run_batches(sink.handle, after_batch=once)
    assert consumer.commits == [([(0, 5)], False)]


async def test_sigterm_stops_an_asyncio_worker(log: list[str]) -> None:
    sink = Sink(FakeConsumer(log), log)
    sink.install_signal_handlers()
    loop = asyncio.get_running_loop()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if not sink.running:
                break
            await asyncio.sleep(0.01)
        assert not sink.running
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def test_positions_after_are_the_next_offset_per_partition() -> None:
    messages = [
        FakeMessage("t", 0, 5, b""),
        FakeMessage("t", 1, 2, b""),
        FakeMessage("t", 0, 7, b""),
    ]
    assert [(tp.partition, tp.offset) for tp in positions_after(cast(list[Message], messages))] == [
        (0, 8),
        (1, 3),
    ]


# ------------------------------------------------------------------ how long a poll waits


def test_a_caught_up_transaction_commits_at_once_by_default(log: list[str]) -> None:
    consumer = TimedConsumer(log, arrivals=[b"late"])
    consumer.add(0, b"first")
    worker = Echo(consumer, FakeProducer(log), log, poll_timeout_s=0.5)
    worker.run(max_idle_s=0)
    assert log.count("begin") == 2  # "first" was visible before "late" came


def test_a_minimum_commit_interval_keeps_the_transaction_open_for_what_comes(
    log: list[str],
) -> None:
    consumer = TimedConsumer(log, arrivals=[b"late"])
    consumer.add(0, b"first")
    producer = FakeProducer(log)
    worker = Echo(consumer, producer, log, poll_timeout_s=0.5, min_commit_interval_s=0.2)
    worker.run(max_idle_s=0)
    assert log.count("begin") == 1
    assert [v for t, v in producer.visible if t == "out"] == [b"first", b"late"]
    waits = [timeout for call, _, timeout in consumer.calls if call == "poll"]
    assert waits
    assert all(0 < wait <= 0.2 for wait in waits)  # the interval's rest, not 0.5


async def test_a_batch_takes_what_is_queued_without_waiting_for_it_to_fill(
    log: list[str],
) -> None:
    consumer = TimedConsumer(log)
    consumer.add(0, b"a", b"b")
    sink = Sink(consumer, log)
    sink.poll_timeout_s = 5.0
    sink.subscribe(["in"])
    batch = await sink.poll_batch()
    assert [m.value() for m in batch] == [b"a", b"b"]
    assert consumer.calls == [("consume", 3, 0)]


async def test_an_empty_queue_waits_for_the_first_record_and_takes_what_came_with_it(
    log: list[str],
) -> None:
    consumer = TimedConsumer(log, arrivals=[b"a", b"b"])
    sink = Sink(consumer, log)
    sink.poll_timeout_s = 5.0
    sink.subscribe(["in"])
    batch = await sink.poll_batch()
    assert [m.value() for m in batch] == [b"a", b"b"]
    assert consumer.calls == [("consume", 3, 0), ("poll", 1, 5.0), ("consume", 2, 0)]


async def test_a_lingering_stage_waits_for_its_batch_to_fill(log: list[str]) -> None:
    consumer = TimedConsumer(log)
    consumer.add(0, b"a")
    sink = Sink(consumer, log, linger_s=0.2)
    sink.subscribe(["in"])
    await sink.poll_batch()
    assert consumer.calls == [("consume", 3, 0), ("consume", 2, 0.2)]
