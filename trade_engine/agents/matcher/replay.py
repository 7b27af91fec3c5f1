"""Offline replay: re-match the input log through the core and compare with the pipeline.

The replay reads ``te.commands.accepted`` (read_committed) partition by
partition, runs the matcher's pure step (``match_record``) on fresh books, and
compares what it produces with what the pipeline recorded in
``te.executions`` and ``te.trades``: the same records, byte for byte, in the
same order. It also restores the pipeline's durable book state from the
changelog and compares state hashes at the same input position. The first
difference is reported; ``rebuild`` writes the replayed state as the durable
state of a partition (for when a changelog is lost).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from trade_engine.agents.matcher.step import (
    EXECUTIONS,
    TRADES,
    StageCounters,
    match_record,
)
from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.config import Settings
from trade_engine.streams import clients
from trade_engine.streams.records import ConsumedRecord, is_partition_eof
from trade_engine.streams.topics import partition_count
from trade_engine.tables.durable import POSITION_KEY, PartitionBooks
from trade_engine.tables.matching.rules import SymbolRules
from trade_engine.tables.symbols import rules_for


@dataclass
class PartitionReport:
    partition: int
    inputs: int = 0
    executions: int = 0
    trades: int = 0
    first_difference: str | None = None
    hash_equal: bool | None = None
    position: int = 0
    # The changelog's final entries equal, byte for byte, those the replay would write.
    changelog_equal: bool | None = None
    changelog_entries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "inputs": self.inputs,
            "executions": self.executions,
            "trades": self.trades,
            "first_difference": self.first_difference,
            "hash_equal": self.hash_equal,
            "changelog_equal": self.changelog_equal,
            "changelog_entries": self.changelog_entries,
            "position": self.position,
        }


@dataclass
class ReplayResult:
    partitions: list[PartitionReport] = field(default_factory=list)
    expected_trades: dict[int, list[bytes]] = field(default_factory=dict)
    actual_trades: dict[int, list[bytes]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(
            p.first_difference is None and p.hash_equal and p.changelog_equal
            for p in self.partitions
        )


def read_partition(
    settings: Settings, topic: str, partition: int, start: int = 0, end: int | None = None
) -> Iterator[ConsumedRecord]:
    """Every committed record of one partition from ``start`` up to ``end`` (default: now)."""
    consumer = clients.reader(
        settings, f"replay-{uuid.uuid4().hex}", **{"enable.partition.eof": True}
    )
    try:
        tp = TopicPartition(topic, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=30)
        stop = high if end is None else min(end, high)
        first = max(start, low)
        if first >= stop:
            return
        consumer.assign([TopicPartition(topic, partition, first)])
        while True:
            msg = consumer.poll(5.0)
            if msg is None:
                if consumer.position([tp])[0].offset >= stop:
                    return
                continue
            if is_partition_eof(msg):
                return
            record = ConsumedRecord.from_message(msg)
            if record.offset >= stop:
                return
            yield record
            if record.offset + 1 >= stop:
                return
    finally:
        consumer.close()


def replay_partition(
    settings: Settings,
    topics: MatcherTopics,
    rules: dict[str, SymbolRules],
    partition: int,
    end: int | None = None,
) -> tuple[PartitionBooks, dict[str, list[bytes]], int]:
    """Fresh books fed the input log of one partition: (books, outputs by role, inputs)."""
    books = PartitionBooks(partition, rules)
    outputs: dict[str, list[bytes]] = {EXECUTIONS: [], TRADES: []}
    counters = StageCounters()
    inputs = 0
    admin = clients.admin_client(settings)
    partitions = partition_count(admin, topics.input)
    for record in read_partition(settings, topics.input, partition, 0, end):
        books.position = record.offset + 1
        for out in match_record(books, record, counters, partitions=partitions):
            if out.role in outputs and out.value is not None:
                outputs[out.role].append(out.value)
        inputs += 1
    return books, outputs, inputs


def compare(settings: Settings, topics: MatcherTopics | None = None) -> ReplayResult:
    """Replay every partition and compare with the recorded outputs and durable state."""
    topics = topics or MatcherTopics.from_settings(settings)
    rules = {spec.symbol: rules_for(spec) for spec in settings.market.symbols}
    result = ReplayResult()
    for partition in range(settings.topics.partitions):
        # Compare at the position the durable state has reached, so a live
        # pipeline that is still catching up is not reported as different.
        durable = _durable_entries(settings, topics, partition)
        live = PartitionBooks.restore(partition, rules, durable.items())
        books, expected, inputs = replay_partition(
            settings, topics, rules, partition, end=live.position
        )
        report = PartitionReport(partition, inputs=inputs, position=live.position)
        actual = {
            EXECUTIONS: [
                r.value or b"" for r in read_partition(settings, topics.executions, partition)
            ],
            TRADES: [r.value or b"" for r in read_partition(settings, topics.trades, partition)],
        }
        report.executions = len(actual[EXECUTIONS])
        report.trades = len(actual[TRADES])
        for role in (EXECUTIONS, TRADES):
            difference = _first_difference(role, expected[role], actual[role])
            if difference and report.first_difference is None:
                report.first_difference = difference
        report.hash_equal = books.state_hashes() == live.state_hashes()
        if not report.hash_equal and report.first_difference is None:
            report.first_difference = "state hashes differ at the same input position"
        # No take_changes() ran during the replay: these are every entry it would have
        # written, so the changelog's last value per key must be exactly these bytes
        # (the symbol headers with their seq, every live order, the dedup window).
        replayed = {k: v for k, v in books.take_changes().items() if v is not None}
        if live.position == 0:
            replayed.pop(POSITION_KEY, None)  # nothing committed yet: no position written
        report.changelog_entries = len(durable)
        report.changelog_equal = replayed == durable
        if not report.changelog_equal and report.first_difference is None:
            report.first_difference = _changelog_difference(replayed, durable)
        result.partitions.append(report)
        result.expected_trades[partition] = expected[TRADES]
        result.actual_trades[partition] = actual[TRADES]
    return result


def _durable_entries(
    settings: Settings, topics: MatcherTopics, partition: int
) -> dict[bytes, bytes]:
    """The changelog's committed final value per key (tombstoned keys left out)."""
    entries: dict[bytes, bytes | None] = {}
    for record in read_partition(settings, topics.changelog, partition):
        if record.key is not None:
            entries[record.key] = record.value
    return {k: v for k, v in entries.items() if v is not None}


def _changelog_difference(replayed: dict[bytes, bytes], durable: dict[bytes, bytes]) -> str:
    for key in sorted(replayed.keys() | durable.keys()):
        want, got = replayed.get(key), durable.get(key)
        if want != got:
            return f"changelog[{key.decode()}]: expected {want!r} got {got!r}"
    return "changelog differs"


def _first_difference(role: str, expected: list[bytes], actual: list[bytes]) -> str | None:
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            return f"{role}[{index}]: expected {want.decode()} got {got.decode()}"
    if len(expected) != len(actual):
        return f"{role}: expected {len(expected)} records, the pipeline recorded {len(actual)}"
    return None


def rebuild(settings: Settings, partition: int, topics: MatcherTopics | None = None) -> int:
    """Rewrite one partition's durable book state from the input log; returns records written.

    For when the changelog is lost or suspect. Stop the matcher workers first: the
    replayed state is appended to the changelog (every key the replay touched, plus
    tombstones for keys the log does not justify), so workers that restart read it
    on top of whatever their local stores hold and end up with the replayed books.
    """
    topics = topics or MatcherTopics.from_settings(settings)
    rules = {spec.symbol: rules_for(spec) for spec in settings.market.symbols}
    books, _, _ = replay_partition(settings, topics, rules, partition)
    # No take_changes() ran during the replay, so this is every key it ever
    # touched: live orders, tombstones of ended ones, headers, window, position.
    entries = books.take_changes()
    for record in read_partition(settings, topics.changelog, partition):
        if record.key is not None and record.key not in entries:
            entries[record.key] = None
    producer = clients.producer(settings)
    for key, value in entries.items():
        producer.produce(topics.changelog, key=key, value=value, partition=partition)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} changelog records were not delivered")
    return len(entries)
