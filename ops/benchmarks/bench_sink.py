"""Benchmark: the Postgres sink's rows/s against a raw COPY into the same tables, same run.

Seeded matcher output (``sinks.synthetic``) is published to a fresh
``<prefix>executions`` topic; then

- baseline: the same rows (as the sink would build them) COPYed straight into
  ``trades`` and ``orders`` of one fresh schema, no staging, no conflict checks;
- sink: ``PostgresSink`` consumes the topic (read_committed, batches, offsets in
  Postgres, staging + ON CONFLICT, order updates) into another fresh schema.

- rabbit: ``RabbitBridge`` (its own topology prefix, removed afterwards) publishes every
  trade and order event of the topic, persistent, and waits for the publisher confirms.
  ``--rabbit-only`` runs just this part.

rows = trades + orders inserted. The last stdout line is one JSON object:
pg_rows_per_s, raw_copy_rows_per_s, pg_ratio (sink / raw COPY), rabbit_confirmed_per_s
(confirmed messages per second, from the first publish to the last confirm),
rabbit_cpu_us_per_msg (the whole process's CPU over that span: the bridge as
bench-pipeline sees it, librdkafka's threads and the polls included),
rabbit_batch_cpu_us_per_msg (the event loop thread's CPU inside the batch handler:
decode, publish, confirms), and the sizes (the older names sink_rows_per_s,
copy_rows_per_s, ratio are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from trade_engine.config import Settings, load_settings
from trade_engine.migrations.runner import migrate_schema
from trade_engine.operations import synthetic
from trade_engine.sinks.postgres import PostgresSink
from trade_engine.sinks.rabbitmq import RabbitBridge, Topology
from trade_engine.sinks.rows import ORDER_COLUMNS, TRADE_COLUMNS, fold
from trade_engine.streams.execution_records import ExecutionRecord, decode_execution


async def _copy_baseline(
    dsn: str, schema: str, messages: list[ExecutionRecord]
) -> tuple[int, float]:
    rows = fold(messages)  # outside the timing: the baseline measures the database only
    orders, trades = rows.order_rows(), rows.trades
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table("orders", records=orders, columns=ORDER_COLUMNS)
            await conn.copy_records_to_table("trades", records=trades, columns=TRADE_COLUMNS)
        return len(orders) + len(trades), time.perf_counter() - started
    finally:
        await conn.close()


async def _drop(dsn: str, schemas: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class _MeteredBridge(RabbitBridge):
    """The bridge with CPU clocks: process time from the first batch to the last confirm,
    and the loop thread's time inside the batch handler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_cpu_first: float | None = None
        self.process_cpu_last = 0.0
        self.batch_cpu = 0.0

    async def _process(self, messages: list[Message]) -> bool:
        if self.process_cpu_first is None:
            self.process_cpu_first = time.process_time()
        started = time.thread_time()
        done = await super()._process(messages)
        self.batch_cpu += time.thread_time() - started
        self.process_cpu_last = time.process_time()
        return done


@dataclass(frozen=True, slots=True)
class RabbitRun:
    confirmed: int
    seconds: float
    process_cpu_s: float
    batch_cpu_s: float


async def _rabbit(settings: Settings, batch_size: int) -> RabbitRun:
    """Bridge the topic into a throwaway topology."""
    topology = Topology(prefix=f"bench-{uuid.uuid4().hex[:8]}.")
    bridge = _MeteredBridge(settings, topology, batch_size=batch_size)
    try:
        stats = await bridge.run(exit_when_idle_s=1.0)
    finally:
        connection = await aio_pika.connect(settings.rabbitmq.url())
        async with connection:
            channel = await connection.channel()
            for queue in (
                topology.wallet_queue,
                topology.notification_queue,
                topology.dead_letter_queue,
            ):
                await channel.queue_delete(queue)
            for exchange in (
                topology.trade_exchange,
                topology.order_exchange,
                topology.dead_letter_exchange,
            ):
                await channel.exchange_delete(exchange)
    assert bridge.first_publish_at is not None
    assert bridge.last_confirm_at is not None
    assert bridge.process_cpu_first is not None
    return RabbitRun(
        stats.published,
        bridge.last_confirm_at - bridge.first_publish_at,
        bridge.process_cpu_last - bridge.process_cpu_first,
        bridge.batch_cpu,
    )


def _rabbit_figures(rabbit: RabbitRun) -> dict[str, object]:
    return {
        "rabbit_confirmed": rabbit.confirmed,
        "rabbit_confirmed_per_s": round(rabbit.confirmed / rabbit.seconds),
        "rabbit_cpu_us_per_msg": round(rabbit.process_cpu_s / rabbit.confirmed * 1e6, 1),
        "rabbit_batch_cpu_us_per_msg": round(rabbit.batch_cpu_s / rabbit.confirmed * 1e6, 1),
    }


async def run(
    commands: int, batch_size: int, rabbit_batch_size: int, rabbit_only: bool = False
) -> dict[str, object]:
    prefix = f"bench-sink-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 4})
    dsn = settings.postgres.dsn()
    topic = settings.topic_names["executions"]
    admin = AdminClient(settings.kafka.librdkafka())
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    schemas = [f"bench_copy_{uuid.uuid4().hex[:8]}", f"bench_sink_{uuid.uuid4().hex[:8]}"]
    try:
        data = synthetic.executions(
            commands, 42, settings.market.symbols, 4, start_ms=int(time.time() * 1000)
        )
        published = synthetic.publish(settings, topic, data)
        print(f"[bench-sink] published {published} executions", file=sys.stderr)
        if rabbit_only:
            rabbit = await _rabbit(settings, rabbit_batch_size)
            return {
                "executions": published,
                "rabbit_batch_size": rabbit_batch_size,
                **_rabbit_figures(rabbit),
            }
        for schema in schemas:
            await migrate_schema(dsn, schema)
        messages = [decode_execution(v) for p in sorted(data) for v in data[p]]
        copy_rows, copy_s = await _copy_baseline(dsn, schemas[0], messages)

        sink = PostgresSink(settings, schemas[1], batch_size=batch_size)
        stats = await sink.run(exit_when_idle_s=1.0)
        # From the first batch to the last commit: the group join and the idle wait
        # at the end are not the sink's work.
        assert sink.writer.first_write_at is not None
        assert sink.writer.last_write_at is not None
        sink_s = sink.writer.last_write_at - sink.writer.first_write_at
        sink_rows = stats.orders_inserted + stats.trades_inserted
        rabbit = await _rabbit(settings, rabbit_batch_size)
        pg_rows_per_s = round(sink_rows / sink_s)
        raw_copy_rows_per_s = round(copy_rows / copy_s)
        pg_ratio = round((sink_rows / sink_s) / (copy_rows / copy_s), 3)
        return {
            "executions": published,
            "batch_size": batch_size,
            "rabbit_batch_size": rabbit_batch_size,
            "copy_rows": copy_rows,
            "sink_rows": sink_rows,
            "copy_rows_per_s": raw_copy_rows_per_s,
            "sink_rows_per_s": pg_rows_per_s,
            "sink_messages_per_s": round(stats.messages / sink_s),
            "ratio": pg_ratio,
            "pg_rows_per_s": pg_rows_per_s,
            "raw_copy_rows_per_s": raw_copy_rows_per_s,
            "pg_ratio": pg_ratio,
            **_rabbit_figures(rabbit),
        }
    finally:
        await _drop(dsn, schemas)
        admin.delete_topics([topic])[topic].result(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rabbit-batch-size", type=int, default=1000)
    parser.add_argument("--rabbit-only", action="store_true", help="skip the Postgres part")
    args = parser.parse_args(argv)
    figures = run(args.commands, args.batch_size, args.rabbit_batch_size, args.rabbit_only)
    print(json.dumps(asyncio.run(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
