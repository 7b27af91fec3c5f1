"""Warm standby: keep local book stores of partitions this worker does not own up to date.

A matcher worker follows the changelog of every partition it does not own
(read_committed, so only committed state), writing it into the same local
RocksDB stores it would use if it owned them. When a rebalance hands it one of
those partitions, the restore reads only the changelog tail written since the
last standby poll instead of the whole history.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from confluent_kafka import TopicPartition

from trade_engine.config import Settings
from trade_engine.streams import clients
from trade_engine.streams.records import ConsumedRecord, without_errors
from trade_engine.tables.durable import Changes
from trade_engine.tables.store import LocalStore

log = logging.getLogger(__name__)


class StandbyReplicator:
    def __init__(self, settings: Settings, changelog_topic: str, state_root: Path) -> None:
        self.changelog_topic = changelog_topic
        self.state_root = state_root
        self.stores: dict[int, LocalStore] = {}
        # Never commits: the positions live in the stores themselves.
        self._consumer = clients.reader(
            settings, f"standby-{uuid.uuid4().hex}", **{"enable.partition.eof": False}
        )

    @property
    def partitions(self) -> set[int]:
        return set(self.stores)

    def follow(self, partitions: set[int]) -> None:
        """Start following ``partitions`` (those the worker does not own)."""
        new = partitions - set(self.stores)
        if not new:
            return
        for partition in sorted(new):
            self.stores[partition] = LocalStore(self.state_root / f"p{partition}")
        self._reassign()

    def unfollow(self, partitions: set[int]) -> None:
        """Stop following ``partitions`` and close their stores (the worker takes them)."""
        gone = partitions & set(self.stores)
        if not gone:
            return
        for partition in gone:
            self.stores.pop(partition).close()
        self._reassign()

    def _reassign(self) -> None:
        self._consumer.assign(
            [
                TopicPartition(self.changelog_topic, p, store.changelog_offset() + 1)
                for p, store in sorted(self.stores.items())
            ]
        )

    def poll(self, max_records: int = 5000, timeout_s: float = 0.0) -> int:
        """Apply up to ``max_records`` committed changelog records; returns how many."""
        if not self.stores:
            return 0
        messages = self._consumer.consume(max_records, timeout_s)
        changes: dict[int, Changes] = {}
        last: dict[int, int] = {}
        # A fatal consumer error (a fenced static member) ends the standby too.
        for msg in without_errors(messages):
            record = ConsumedRecord.from_message(msg)
            if record.partition not in self.stores or record.key is None:
                continue
            changes.setdefault(record.partition, {})[record.key] = record.value
            last[record.partition] = record.offset
        for partition, partition_changes in changes.items():
            self.stores[partition].write(partition_changes, last[partition])
        return sum(len(c) for c in changes.values())

    def close(self) -> None:
        self._consumer.close()
        for store in self.stores.values():
            store.close()
        self.stores.clear()
