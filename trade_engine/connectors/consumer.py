"""The consumer SDK for the trade topics: ``te.trades`` (and ``te.executions``).

What every downstream consumer of trades must get right, in one place:

- **read_committed**: only records of committed matcher transactions;
- **typed records**: ``PublicTrade`` (``te.trades``) or an execution record
  (``te.executions``) with ``Decimal`` prices and quantities, decoded by the
  topic's one decoder (``streams.execution_records``);
- **at-least-once, in order per symbol**: a record's offset is committed only
  after the caller's handler returned for it (``run``), or once the caller asked
  for the next record (iteration); after a crash the records whose handling was
  not acknowledged come again;
- **deduplication** (optional, persistent): for consumers that cannot be
  idempotent, the trade ids already handled are kept in a small SQLite file and
  skipped when they come again (after a crash, or a rewind). An id is marked
  right after its handler returned, before its offset is committed; a crash
  between the two can repeat that one record, so a consumer that must never see
  a repeat keeps its effect and its own record of the id in one transaction
  (``trade_id`` is ``<symbol>:<seq>``, stable across replays);
- **a starting point**: ``start`` = ``"earliest"``, ``"latest"``, an offset (every
  partition) or a ``datetime`` (the first record at or after it); it applies to
  a group without committed positions, or to every partition when
  ``reset=True`` (an explicit replay).

A runnable example is in ``docs/consumers.md``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    Message,
    TopicPartition,
)

from trade_engine.config import Settings
from trade_engine.streams import clients
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.execution_records import (
    ExecutionRecord,
    PublicTrade,
    decode_execution,
    decode_trade,
)
from trade_engine.streams.records import without_errors

log = logging.getLogger(__name__)

Start = Literal["earliest", "latest"] | int | datetime
Record = PublicTrade | ExecutionRecord


class SeenIds:
    """Trade ids already handled, in SQLite, the newest ``window`` kept."""

    def __init__(self, path: Path, window: int = 1_000_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, n INTEGER NOT NULL)"
        )
        self.window = window
        row = self._db.execute("SELECT coalesce(max(n), 0) FROM seen").fetchone()
        self._next = int(row[0]) + 1

    def __contains__(self, record_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM seen WHERE id = ?", (record_id,)).fetchone()
        return row is not None

    def add(self, record_id: str) -> None:
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (record_id, self._next))
            if self._next % 1000 == 0:
                self._db.execute("DELETE FROM seen WHERE n <= ?", (self._next - self.window,))
        self._next += 1

    def close(self) -> None:
        self._db.close()


def record_id(record: Record) -> str:
    """What deduplicates a record: the trade id, else ``<symbol>:<seq>`` (both per symbol
    and stable across replays)."""
    trade_id = getattr(record, "trade_id", None)
    return trade_id if isinstance(trade_id, str) else f"{record.symbol}:{record.seq}"


class TradeConsumer:
    """A group member of one trade topic, yielding typed records (see the module)."""

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        *,
        topic: Literal["trades", "executions"] = "trades",
        start: Start | None = None,
        reset: bool = False,
        dedup_path: Path | None = None,
        poll_timeout_s: float = 0.5,
        **overrides: Any,
    ) -> None:
        """``overrides``: librdkafka settings of the consumer (e.g. ``session.timeout.ms``:
        how long a crashed member's partitions wait before another member takes them)."""
        self.topic = settings.topic_names[topic]
        self._decode: Callable[[bytes | None], Record] = (
            decode_trade if topic == "trades" else decode_execution
        )
        self.start = start
        self.reset = reset
        self.poll_timeout_s = poll_timeout_s
        self.seen = SeenIds(dedup_path) if dedup_path is not None else None
        self._consumer: Consumer = clients.committing_consumer(
            settings,
            group_id,
            **{"enable.partition.eof": False, "session.timeout.ms": 10_000, **overrides},
        )
        self.assigned_at: float | None = None  # idle time counts from the first assignment
        self._consumer.subscribe([self.topic], on_assign=self._on_assign)
        self._handled: dict[int, int] = {}  # partition -> offset after the last handled

    # ------------------------------------------------------------ positions

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.start is not None:
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, 30)}
            fresh = [tp for tp in partitions if self.reset or committed[tp.partition] < 0]
            for tp, offset in zip(fresh, self._start_offsets(consumer, fresh), strict=True):
                tp.offset = offset
        consumer.assign(partitions)
        self.assigned_at = time.monotonic()

    def _start_offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[int]:
        start = self.start
        if start == "earliest":
            return [OFFSET_BEGINNING] * len(partitions)
        if start == "latest":
            return [OFFSET_END] * len(partitions)
        if isinstance(start, int):
            return [start] * len(partitions)
        assert isinstance(start, datetime)
        ms = int(start.timestamp() * 1000)
        query = [TopicPartition(tp.topic, tp.partition, ms) for tp in partitions]
        found = consumer.offsets_for_times(query, 30)
        # No record at or after the time: start at the end.
        return [tp.offset if tp.offset != OFFSET_INVALID else OFFSET_END for tp in found]

    def commit(self) -> None:
        """Commit the positions after every record handled so far."""
        if not self._handled:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in self._handled.items()]
        self._consumer.commit(offsets=offsets, asynchronous=False)
        self._handled.clear()

    def _done(self, msg: Message, record: Record | None) -> None:
        if record is not None and self.seen is not None:
            self.seen.add(record_id(record))
        partition, offset = msg.partition(), msg.offset()
        if partition is not None and offset is not None:
            self._handled[partition] = offset + 1

    # -------------------------------------------------------------- reading

    def _batch(self, max_records: int = 500) -> list[tuple[Message, Record | None]]:
        """Decoded records of one poll; a record already handled (dedup) or one that does
        not decode comes back as None (skipped, its offset still committed)."""
        out: list[tuple[Message, Record | None]] = []
        for msg in without_errors(self._consumer.consume(max_records, self.poll_timeout_s)):
            try:
                record: Record | None = self._decode(msg.value())
            except DecodeError as exc:  # a record this SDK version cannot read: skipped
                log.warning(
                    "record skipped",
                    extra={
                        "topic": msg.topic(),
                        "partition": msg.partition(),
                        "offset": msg.offset(),
                        "error": str(exc),
                    },
                )
                record = None
            if record is not None and self.seen is not None and record_id(record) in self.seen:
                record = None
            out.append((msg, record))
        return out

    def run(
        self,
        handler: Callable[[Record], None],
        *,
        max_records: int | None = None,
        idle_s: float | None = None,
    ) -> int:
        """Call ``handler`` for each record; commit after each poll's records were handled.
        Stops after ``max_records`` handled, or ``idle_s`` without a record once the group
        assigned partitions. Returns the count."""
        handled, last = 0, time.monotonic()
        try:
            while max_records is None or handled < max_records:
                batch = self._batch()
                if not batch:
                    since = max(last, self.assigned_at or time.monotonic())
                    if idle_s is not None and time.monotonic() - since >= idle_s:
                        break
                    continue
                last = time.monotonic()
                for msg, record in batch:
                    if record is not None:
                        handler(record)
                        handled += 1
                    self._done(msg, record)
                    if max_records is not None and handled >= max_records:
                        break
                self.commit()
        finally:
            self.commit()
        return handled

    def __iter__(self) -> Iterator[Record]:
        """Records one by one; a record counts as handled when the next one is asked for
        (its offset is committed with the next poll's)."""
        while True:
            batch = self._batch()
            for msg, record in batch:
                if record is not None:
                    yield record
                self._done(msg, record)
            self.commit()

    async def records(self) -> AsyncIterator[Record]:
        """``__iter__`` for asyncio: the poll runs in a worker thread."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await loop.run_in_executor(None, self._batch)
            for msg, record in batch:
                if record is not None:
                    yield record
                self._done(msg, record)
            await loop.run_in_executor(None, self.commit)

    def close(self) -> None:
        """Commit what was handled, leave the group."""
        try:
            self.commit()
        finally:
            self._consumer.close()
            if self.seen is not None:
                self.seen.close()

    def __enter__(self) -> TradeConsumer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
