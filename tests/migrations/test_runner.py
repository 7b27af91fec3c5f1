"""Migrations: migrate/rollback/migrate round trip; partition maintenance, the DEFAULT net."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import asyncpg
import pytest

from trade_engine.config import Settings
from trade_engine.migrations.partitions import PartitionCache, PartitionPolicy, maintain
from trade_engine.migrations.runner import MigrationRunner, connect, discover

pytestmark = pytest.mark.postgres


@pytest.fixture
async def conn_schema(settings: Settings) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    schema = f"m_{uuid.uuid4().hex[:12]}"
    conn = await connect(settings.postgres.dsn(), schema)
    try:
        yield conn, schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _objects(conn: asyncpg.Connection, schema: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname NOT LIKE 'schema_migrations%' "
        "UNION SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = $1 AND t.typtype = 'e' "
        "UNION SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = $1",
        schema,
    )
    return {r[0] for r in rows}


async def test_migrate_rollback_migrate_round_trip(conn_schema) -> None:
    conn, schema = conn_schema
    runner = MigrationRunner(conn, schema)
    assert [m.version for m in await runner.migrate()] == [m.version for m in discover()]
    assert await runner.migrate() == []  # idempotent
    first = await _objects(conn, schema)
    assert {"orders", "trades", "orders_default", "order_status_enum"} <= first
    assert all(s.applied and not s.drifted for s in await runner.status())

    assert len(await runner.rollback(steps=1)) == 1
    assert not (await runner.status())[-1].applied
    await runner.rollback(target=0)
    assert await _objects(conn, schema) == set()
    assert not any(s.applied for s in await runner.status())

    await runner.migrate()
    assert await _objects(conn, schema) == first


async def test_partitions_ahead_default_net_and_retention(conn_schema) -> None:
    conn, schema = conn_schema
    await MigrationRunner(conn, schema).migrate()
    today = date(2026, 3, 15)
    report = await maintain(conn, schema, PartitionPolicy(2, 3), today)
    assert report.created == 3 + 4  # orders 2026_03..05, trades 03_15..03_18
    assert report.default_rows == {"orders": 0, "trades": 0}

    # A trade for a day without partition lands in DEFAULT instead of failing ...
    await conn.execute(
        "INSERT INTO trades VALUES ('X/Y:1','X/Y',1,'b','s','u1','u2',1,1,1,0,0,'X','Y',true,"
        "$1,0,0)",
        datetime(2026, 6, 1, 12, tzinfo=UTC),
    )
    assert (await maintain(conn, schema, PartitionPolicy(0, 0), today)).default_rows["trades"] == 1
    # ... and creating that day's partition moves it out.
    cache = PartitionCache(schema)
    assert await cache.ensure(conn, set(), {datetime(2026, 6, 1, 1, tzinfo=UTC)}) == 1
    assert await conn.fetchval("SELECT count(*) FROM trades_2026_06_01") == 1
    assert await conn.fetchval("SELECT count(*) FROM trades_default") == 0

    later = await maintain(conn, schema, PartitionPolicy(0, 0, 1, 30), date(2026, 7, 1))
    assert "orders_2026_03" in later.detached
    assert "orders_2026_05" in later.detached
    assert "trades_2026_03_15" in later.detached
    assert "trades_2026_06_01" not in later.detached
    assert await conn.fetchval("SELECT to_regclass('archived_orders_2026_03') IS NOT NULL")
