"""Rebuild the Postgres sink's tables from ``te.executions`` into a fresh schema, then diff.

``trade-engine replay-sink postgres --schema NAME``: migrate NAME, run the sink
over the topic from the beginning up to the live sink's positions (or the
topic's end), then compare every row with the live schema. Rows are compared
as text, column by column, up to the rebuild's horizon: per symbol, the last
seq it applied; live orders that changed after that horizon are left out of
both sides (the live sink keeps moving while the rebuild runs).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg
from confluent_kafka import TopicPartition

from trade_engine.config import Settings
from trade_engine.migrations.runner import MigrationError, migrate_schema, validate_schema
from trade_engine.sinks.postgres import PostgresSink, SinkStats
from trade_engine.streams import clients


@dataclass
class RebuildReport:
    schema: str
    live_schema: str
    stats: SinkStats
    rows: dict[str, int] = field(default_factory=dict)
    only_live: dict[str, int] = field(default_factory=dict)
    only_rebuilt: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not any(self.only_live.values()) and not any(self.only_rebuilt.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "schema": self.schema,
            "live_schema": self.live_schema,
            "messages": self.stats.messages,
            "rows": self.rows,
            "only_live": self.only_live,
            "only_rebuilt": self.only_rebuilt,
            "samples": self.samples,
            "equal": self.equal,
        }


def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = clients.consumer(settings, f"te-rebuild-{uuid.uuid4()}")
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


async def _live_offsets(conn: asyncpg.Connection, live: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        f'SELECT partition, next_offset FROM "{live}".sink_offsets WHERE topic = $1',  # noqa: S608
        topic,
    )
    return {row["partition"]: row["next_offset"] for row in rows}


async def _columns(conn: asyncpg.Connection, schema: str, table: str) -> str:
    names = await conn.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        schema,
        table,
    )
    return ", ".join(f't."{row["column_name"]}"::text' for row in names)


_DIFF = """
WITH wm AS (SELECT symbol, last_seq FROM "{new}".sink_symbol_seq),
ahead AS (
  SELECT t.{key} FROM "{live}".{table} t JOIN wm USING (symbol) WHERE t.{seq} > wm.last_seq
),
live_rows AS (
  SELECT {cols} FROM "{live}".{table} t JOIN wm USING (symbol) WHERE t.{seq} <= wm.last_seq
),
new_rows AS (
  SELECT {cols} FROM "{new}".{table} t
  WHERE NOT EXISTS (SELECT 1 FROM ahead a WHERE a.{key} = t.{key})
),
only_live AS (SELECT * FROM live_rows EXCEPT SELECT * FROM new_rows),
only_new AS (SELECT * FROM new_rows EXCEPT SELECT * FROM live_rows)
SELECT (SELECT count(*) FROM new_rows) AS rows,
       (SELECT count(*) FROM only_live) AS only_live,
       (SELECT count(*) FROM only_new) AS only_new,
       ARRAY(SELECT {key} FROM only_live LIMIT 5) AS live_sample,
       ARRAY(SELECT {key} FROM only_new LIMIT 5) AS new_sample
"""


async def diff(conn: asyncpg.Connection, live: str, new: str, report: RebuildReport) -> None:
    for table, key, seq in (("orders", "order_id", "last_seq"), ("trades", "trade_id", "seq")):
        sql = _DIFF.format(
            new=new, live=live, table=table, key=key, seq=seq, cols=await _columns(conn, new, table)
        )
        row = await conn.fetchrow(sql)
        assert row is not None
        report.rows[table] = row["rows"]
        report.only_live[table] = row["only_live"]
        report.only_rebuilt[table] = row["only_new"]
        report.samples[table] = [f"live:{k}" for k in row["live_sample"]] + [
            f"rebuilt:{k}" for k in row["new_sample"]
        ]


async def rebuild(
    settings: Settings,
    schema: str,
    live_schema: str = "public",
    *,
    until: str = "live",
    replace: bool = False,
    topic: str | None = None,
) -> RebuildReport:
    validate_schema(schema)
    validate_schema(live_schema)
    if schema == live_schema:
        raise MigrationError("the rebuild schema must differ from the live one")
    topic = topic or settings.topic_names["executions"]
    dsn = settings.postgres.dsn()
    conn = await asyncpg.connect(dsn)
    try:
        if replace:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        elif await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".orders'):
            raise MigrationError(f"schema {schema} already has tables (use --replace)")
        await migrate_schema(dsn, schema)
        stop_at = (
            await _live_offsets(conn, live_schema, topic)
            if until == "live"
            else _end_offsets(settings, topic)
        )
        sink = PostgresSink(
            settings,
            schema,
            topic=topic,
            group_id=f"te-rebuild-{schema}-{uuid.uuid4().hex[:8]}",
            stop_at=stop_at,
            maintenance_interval_s=10**9,
        )
        stats = await sink.run()
        report = RebuildReport(schema, live_schema, stats)
        await diff(conn, live_schema, schema, report)
        return report
    finally:
        await conn.close()
