"""The Postgres sink: ``te.executions`` -> ``orders`` and ``trades``, exactly once.

Why confluent-kafka + asyncpg and not a Faust agent: the sink's correctness rests
on owning its positions. Faust commits offsets itself (and its exactly-once mode
is not relied upon, DESIGN §4); here the consumed offsets live in Postgres, in
``sink_offsets``, written in the same transaction as the rows, and the consumer
seeks to them on every assignment. A plain consumer makes that seek explicit,
batches as large as we like, and costs a fraction of Faust's per-event overhead.

One batch, in this order (the commit order is the guarantee):

1. poll up to ``batch_size`` messages (read_committed);
2. create any missing month/day partition the batch will write (own transaction);
3. BEGIN; lock the batch's partitions' rows in ``sink_offsets`` (FOR UPDATE) and
   drop messages below the stored positions (redelivery, a zombie instance after
   a rebalance); fold the rest into rows (``sinks.rows``);
4. COPY new orders and trades into temp staging tables, then
   ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``; update older orders from the
   batch's fills/ends/amends (guarded by ``last_seq``); advance ``sink_symbol_seq``
   and ``sink_offsets``; COMMIT;
5. only then commit the same offsets to the Kafka group (for lag monitoring; the
   positions that count are the database's): the at-least-once runtime
   (``streams.runtime.AtLeastOnceWorker``) does it after ``_process`` returns.

A crash anywhere before COMMIT leaves neither rows nor position; after it, both.
Offset gaps (transaction markers, compaction) are harmless: positions are
"next offset after the last message seen", never counted. Lost connections
(Postgres restarts) roll the transaction back; the batch is retried on a new
connection with backoff and nothing is consumed meanwhile. Any other database
error is a bug or bad data: the sink stops rather than skip a record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from trade_engine import tracing
from trade_engine.config import Settings
from trade_engine.migrations.partitions import PartitionCache, PartitionPolicy, maintain
from trade_engine.migrations.runner import validate_schema
from trade_engine.sinks import metrics
from trade_engine.sinks.kafka import FaultHook, decode, retrying, sink_consumer, traced_spans
from trade_engine.sinks.rows import ORDER_COLUMNS, TRADE_COLUMNS, BatchRows, fold, parse_time
from trade_engine.streams.execution_records import (
    AcceptedExecution,
    ExecutionRecord,
    TradeExecution,
)
from trade_engine.streams.runtime import AtLeastOnceWorker

log = logging.getLogger(__name__)

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TransactionRollbackError,
    # The server dying mid-COMMIT can leave asyncpg's protocol in an inconsistent
    # state ("cannot switch to state ..."). The connection is then useless, not the
    # batch: reconnect and retry. Retrying is safe because ``write`` re-reads the
    # stored positions under lock and skips what an ambiguous commit already applied.
    asyncpg.InternalClientError,
)

_STAGE_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS _stage_orders (LIKE orders INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS _stage_trades (LIKE trades INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS",
)
_ORDER_COLS = ", ".join(ORDER_COLUMNS)
_TRADE_COLS = ", ".join(TRADE_COLUMNS)
# Column lists are constants of this module, never input.
_INSERT_ORDERS = (
    f"INSERT INTO orders ({_ORDER_COLS}) SELECT {_ORDER_COLS} FROM _stage_orders "  # noqa: S608
    "ON CONFLICT DO NOTHING"
)
_INSERT_TRADES = (
    f"INSERT INTO trades ({_TRADE_COLS}) SELECT {_TRADE_COLS} FROM _stage_trades "  # noqa: S608
    "ON CONFLICT DO NOTHING"
)
_UPDATE_ORDERS = """
UPDATE orders o SET
  filled_quantity    = COALESCE(u.final_filled, o.filled_quantity + u.fill_quantity),
  quote_filled       = COALESCE(u.final_quote, o.quote_filled + u.fill_quote),
  cancelled_quantity = COALESCE(u.cancelled, o.cancelled_quantity),
  status             = COALESCE(u.status::order_status_enum, o.status),
  price              = COALESCE(u.price, o.price),
  quantity           = COALESCE(u.quantity, o.quantity),
  end_reason         = COALESCE(u.end_reason, o.end_reason),
  filled_at          = COALESCE(u.filled_at, o.filled_at),
  cancelled_at       = COALESCE(u.cancelled_at, o.cancelled_at),
  updated_at         = u.updated_at,
  last_seq           = u.last_seq
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[],
            $6::numeric[], $7::numeric[], $8::text[], $9::numeric[], $10::numeric[],
            $11::numeric[], $12::numeric[], $13::numeric[], $14::text[],
            $15::timestamptz[], $16::timestamptz[])
  AS u(order_id, symbol, first_seq, last_seq, updated_at, fill_quantity, fill_quote, status,
       price, quantity, final_filled, final_quote, cancelled, end_reason, filled_at,
       cancelled_at)
WHERE o.order_id = u.order_id AND o.symbol = u.symbol AND o.last_seq < u.first_seq
"""


@dataclass
class SinkStats:
    batches: int = 0
    messages: int = 0
    duplicates: int = 0
    orders_inserted: int = 0
    orders_updated: int = 0
    orders_missing: int = 0
    trades_inserted: int = 0


@dataclass(frozen=True, slots=True)
class Position:
    partition: int
    offset: int


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 12`` or ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresWriter:
    """The database half: one connection, one transaction per batch. Usable without Kafka."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        topic: str,
        *,
        fault: FaultHook | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.schema = validate_schema(schema)
        self.topic = topic
        self.fault = fault or FaultHook()
        self.connect_timeout_s = connect_timeout_s
        self.conn: asyncpg.Connection | None = None
        self.partitions = PartitionCache(schema)
        self.stats = SinkStats()
        self.first_write_at: float | None = None  # monotonic; for benchmarks
        self.last_write_at: float | None = None

    async def connect(self) -> asyncpg.Connection:
        if self.conn is not None and not self.conn.is_closed():
            return self.conn
        conn = await asyncpg.connect(
            self.dsn,
            timeout=self.connect_timeout_s,
            server_settings={"search_path": self.schema, "application_name": "te-sink-postgres"},
        )
        for ddl in _STAGE_TABLES:
            await conn.execute(ddl)
        self.conn = conn
        return conn

    async def reset(self) -> None:
        """Drop a connection that failed; the next call reconnects."""
        if self.conn is not None:
            self.conn.terminate()
        self.conn = None

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()
        self.conn = None

    async def positions(self, partitions: list[int]) -> dict[int, int]:
        conn = await self.connect()
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM sink_offsets "
            "WHERE topic = $1 AND partition = ANY($2::int[])",
            self.topic,
            partitions,
        )
        return {row["partition"]: row["next_offset"] for row in rows}

    async def maintain(self, policy: PartitionPolicy) -> dict[str, object]:
        conn = await self.connect()
        report = await maintain(conn, self.schema, policy)
        for name, rows in report.default_rows.items():
            metrics.DEFAULT_PARTITION_ROWS.labels(name).set(rows)
        return report.as_dict()

    async def write(self, batch: list[tuple[Position, ExecutionRecord | None]]) -> SinkStats:
        """Apply one batch (records in log order per partition) in one transaction.

        ``None`` records (undecodable) only advance the position.
        """
        conn = await self.connect()
        if self.first_write_at is None:
            self.first_write_at = time.monotonic()
        await self.partitions.ensure(conn, *_times(batch))
        ends: dict[int, int] = {}
        for pos, _ in batch:
            ends[pos.partition] = max(ends.get(pos.partition, 0), pos.offset + 1)
        stats = SinkStats(batches=1, messages=len(batch))
        async with conn.transaction():
            stored = await self._lock_positions(conn, sorted(ends))
            fresh = [m for pos, m in batch if m is not None and pos.offset >= stored[pos.partition]]
            stats.duplicates = sum(1 for pos, _ in batch if pos.offset < stored[pos.partition])
            symbols = sorted({m.symbol for m in fresh})
            last = dict(
                await conn.fetch(
                    "SELECT symbol, last_seq FROM sink_symbol_seq WHERE symbol = ANY($1::text[])",
                    symbols,
                )
            )
            rows = fold(fresh, last)
            stats.duplicates += rows.skipped
            await self._write_rows(conn, rows, stats)
            await self._advance(conn, rows, ends)
            await self.fault.before_commit()
        self._account(stats)
        self.last_write_at = time.monotonic()
        return stats

    async def _lock_positions(
        self, conn: asyncpg.Connection, partitions: list[int]
    ) -> dict[int, int]:
        await conn.execute(
            "INSERT INTO sink_offsets (topic, partition, next_offset) "
            "SELECT $1, p, 0 FROM unnest($2::int[]) AS p ON CONFLICT DO NOTHING",
            self.topic,
            partitions,
        )
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM sink_offsets "
            "WHERE topic = $1 AND partition = ANY($2::int[]) ORDER BY partition FOR UPDATE",
            self.topic,
            partitions,
        )
        return {row["partition"]: row["next_offset"] for row in rows}

    async def _write_rows(
        self, conn: asyncpg.Connection, rows: BatchRows, stats: SinkStats
    ) -> None:
        if rows.new_orders:
            await conn.copy_records_to_table(
                "_stage_orders",
                records=rows.order_rows(),
                columns=ORDER_COLUMNS,
                schema_name="pg_temp",
            )
            status = await conn.execute(_INSERT_ORDERS)
            stats.orders_inserted = _count(status)
        if rows.trades:
            await conn.copy_records_to_table(
                "_stage_trades", records=rows.trades, columns=TRADE_COLUMNS, schema_name="pg_temp"
            )
            status = await conn.execute(_INSERT_TRADES)
            stats.trades_inserted = _count(status)
        if rows.changes:
            changes = list(rows.changes.values())
            columns: list[Callable[[Any], Any]] = [
                lambda c: c.order_id,
                lambda c: c.symbol,
                lambda c: c.first_seq,
                lambda c: c.last_seq,
                lambda c: c.updated_at,
                lambda c: c.fill_quantity,
                lambda c: c.fill_quote,
                lambda c: c.status,
                lambda c: c.price,
                lambda c: c.quantity,
                lambda c: c.final_filled,
                lambda c: c.final_quote,
                lambda c: c.cancelled,
                lambda c: c.end_reason,
                lambda c: c.filled_at,
                lambda c: c.cancelled_at,
            ]
            status = await conn.execute(
                _UPDATE_ORDERS, *[[get(c) for c in changes] for get in columns]
            )
            stats.orders_updated = _count(status)
            # Orders accepted before the topic's retention (or already applied) match nothing.
            stats.orders_missing = len(changes) - stats.orders_updated

    async def _advance(
        self, conn: asyncpg.Connection, rows: BatchRows, ends: dict[int, int]
    ) -> None:
        if rows.last_seq:
            symbols = sorted(rows.last_seq)
            await conn.execute(
                "INSERT INTO sink_symbol_seq (symbol, last_seq, gaps) "
                "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) "
                "ON CONFLICT (symbol) DO UPDATE SET "
                "last_seq = GREATEST(sink_symbol_seq.last_seq, EXCLUDED.last_seq), "
                "gaps = sink_symbol_seq.gaps + EXCLUDED.gaps, updated_at = now()",
                symbols,
                [rows.last_seq[s] for s in symbols],
                [rows.seq_gaps.get(s, 0) for s in symbols],
            )
            for symbol, gaps in rows.seq_gaps.items():
                log.error("execution seq gap", extra={"symbol": symbol, "gaps": gaps})
        await conn.execute(
            "UPDATE sink_offsets s SET next_offset = GREATEST(s.next_offset, e.next_offset), "
            "updated_at = now() FROM unnest($2::int[], $3::bigint[]) AS e(partition, next_offset) "
            "WHERE s.topic = $1 AND s.partition = e.partition",
            self.topic,
            list(ends),
            list(ends.values()),
        )

    def _account(self, batch: SinkStats) -> None:
        total = self.stats
        for name in batch.__dataclass_fields__:
            setattr(total, name, getattr(total, name) + getattr(batch, name))
        metrics.MESSAGES.labels("postgres").inc(batch.messages)
        metrics.DUPLICATES.labels("postgres").inc(batch.duplicates)
        metrics.ROWS.labels("orders", "insert").inc(batch.orders_inserted)
        metrics.ROWS.labels("orders", "update").inc(batch.orders_updated)
        metrics.ROWS.labels("trades", "insert").inc(batch.trades_inserted)


def _times(
    batch: list[tuple[Position, ExecutionRecord | None]],
) -> tuple[set[datetime], set[datetime]]:
    """Timestamps of the rows the batch may insert: orders by month, trades by day."""
    orders: set[datetime] = set()
    trades: set[datetime] = set()
    for _, m in batch:
        if isinstance(m, AcceptedExecution):
            orders.add(parse_time(m.at))
        elif isinstance(m, TradeExecution):
            trades.add(parse_time(m.at))
    return orders, trades


class PostgresSink(AtLeastOnceWorker):
    """The Kafka half: consume ``te.executions``, hand batches to the writer, track positions.

    Runs on the at-least-once runtime; the Kafka commit after each batch is for lag
    monitoring only (the positions that count are in ``sink_offsets``), so it does not
    wait for the broker. With ``stop_at`` (partition -> offset) it assigns partitions
    itself (no group, no Kafka commits) and returns once every partition reached its stop
    offset: the rebuild mode.
    """

    def __init__(
        self,
        settings: Settings,
        schema: str,
        *,
        topic: str | None = None,
        group_id: str | None = None,
        batch_size: int = 5000,
        poll_timeout_s: float = 0.2,
        policy: PartitionPolicy | None = None,
        maintenance_interval_s: float = 3600.0,
        stop_at: dict[int, int] | None = None,
        fault: FaultHook | None = None,
    ) -> None:
        super().__init__(
            stage="sink.postgres",
            batch_size=batch_size,
            poll_timeout_s=poll_timeout_s,
            commit_asynchronously=True,
            # History, not the order path: a fuller batch per transaction, not latency.
            linger_s=poll_timeout_s,
        )
        self.settings = settings
        self.topic = topic or settings.topic_names["executions"]
        self.group_id = group_id or f"{settings.topics.prefix}sink.postgres"
        self.policy = policy or PartitionPolicy()
        self.maintenance_interval_s = maintenance_interval_s
        self.stop_at = stop_at
        self.writer = PostgresWriter(
            settings.postgres.dsn(),
            schema,
            self.topic,
            fault=fault,
            connect_timeout_s=settings.postgres.connect_timeout_s,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_maintenance = 0.0

    async def _db(self, action: Callable[[], Any], what: str) -> Any:
        return await retrying(action, TRANSIENT_DB_ERRORS, what, self.writer.reset)

    def _restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Runs in the polling thread: seek every new partition to its position in Postgres."""
        assert self._loop is not None
        wanted = [tp.partition for tp in partitions]
        future = asyncio.run_coroutine_threadsafe(
            self._db(lambda: self.writer.positions(wanted), "reading positions"), self._loop
        )
        stored: dict[int, int] = future.result()
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
        metrics.ASSIGNED.labels("postgres").set(len(partitions))
        log.info("partitions assigned", extra={"positions": {p: stored.get(p) for p in wanted}})

    async def run(self, exit_when_idle_s: float | None = None) -> SinkStats:
        self._loop = asyncio.get_running_loop()
        await self._db(self.writer.connect, "connecting to postgres")
        await self._maintain()
        self.consumer = sink_consumer(self.settings, self.group_id)
        try:
            if self.stop_at is None:
                self.subscribe([self.topic], restore=self._restore)
            elif not await self._assign_bounded(self.consumer):
                return self.writer.stats
            self._next_maintenance = time.monotonic() + self.maintenance_interval_s
            await self.run_batches(
                self._process, max_idle_s=exit_when_idle_s, after_batch=self._after_batch
            )
        finally:
            await self.close_consumer()
            await self.writer.close()
        return self.writer.stats

    async def _assign_bounded(self, consumer: Consumer) -> bool:
        assert self.stop_at is not None
        stored = await self._db(
            lambda: self.writer.positions(list(self.stop_at or {})), "positions"
        )
        todo = [
            TopicPartition(self.topic, p, stored.get(p, OFFSET_BEGINNING))
            for p, stop in sorted(self.stop_at.items())
            if stored.get(p, 0) < stop
        ]
        if todo:
            consumer.assign(todo)
        return bool(todo)

    async def _after_batch(self) -> bool:
        """Whether to go on: a rebuild stops at its offsets; maintenance runs now and then."""
        if self.stop_at is not None and self._reached():
            return False
        if time.monotonic() >= self._next_maintenance:
            ok = await self._maintain_periodic()
            # A failed run is tried again soon, not an interval later.
            delay = self.maintenance_interval_s if ok else min(self.maintenance_interval_s, 60.0)
            self._next_maintenance = time.monotonic() + delay
        return True

    def _reached(self) -> bool:
        assert self.stop_at is not None
        assert self.consumer is not None
        positions = self.consumer.position(self.consumer.assignment())
        return all(tp.offset >= self.stop_at[tp.partition] for tp in positions)

    async def _process(self, messages: list[Message]) -> bool:
        """Write one batch. True: commit its positions to the group, for lag monitoring;
        never in the rebuild mode."""
        if self.stop_at is not None:
            messages = [m for m in messages if (m.offset() or 0) < self.stop_at[m.partition() or 0]]
        batch = [(Position(m.partition() or 0, m.offset() or 0), decode(m)) for m in messages]
        if not batch:
            return False
        started = time.perf_counter()
        spans = traced_spans("sink.postgres.write", messages)
        try:
            await self._db(lambda: self.writer.write(batch), "writing a batch")
        except BaseException as exc:
            tracing.finish(spans, error=repr(exc))
            raise
        tracing.finish(spans)
        metrics.BATCH_SECONDS.labels("postgres").observe(time.perf_counter() - started)
        return self.stop_at is None

    async def _maintain(self) -> None:
        report = await self._db(lambda: self.writer.maintain(self.policy), "partition maintenance")
        metrics.MAINTENANCE_LAST_SUCCESS.set_to_current_time()
        log.info("partition maintenance", extra={"maintenance": report})

    async def _maintain_periodic(self) -> bool:
        """Maintenance while running: a failure (no privilege to create a partition, a
        lock timeout...) is counted and logged and must not stop the history from being
        written; ``PartitionMaintenanceFailing`` pages before the partitions run out."""
        try:
            await self._maintain()
        except (asyncpg.PostgresError, OSError) as exc:
            metrics.MAINTENANCE_FAILURES.inc()
            log.error("partition maintenance failed", extra={"error": repr(exc)})
            return False
        return True
