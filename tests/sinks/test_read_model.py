"""The gateway's read model: keyset pages equal a plain query; plans use indexes and prune
partitions; open orders and client order ids are the caller's and the open ones."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from trade_engine.config import Settings
from trade_engine.operations import synthetic
from trade_engine.sinks.postgres import Position, PostgresWriter
from trade_engine.sinks.read_model import Repository
from trade_engine.streams.execution_records import decode_execution

pytestmark = pytest.mark.postgres
START_MS = 1_767_225_600_000  # 2026-01-01
DAY_MS = 86_400_000


async def _load(settings: Settings, schema: str) -> None:
    # 6000 commands over ~75 days: ~75 daily trade partitions, 3 monthly order partitions.
    messages = synthetic.executions(
        6000, 5, settings.market.symbols[:2], 2, start_ms=START_MS, step_ms=75 * DAY_MS // 6000
    )
    writer = PostgresWriter(settings.postgres.dsn(), schema, "synthetic")
    batch = [
        (Position(p, i), decode_execution(v)) for p in messages for i, v in enumerate(messages[p])
    ]
    try:
        for i in range(0, len(batch), 5000):
            await writer.write(batch[i : i + 5000])
    finally:
        await writer.close()


async def test_pages_and_plans(settings: Settings, pg_schema) -> None:
    schema = pg_schema()
    await _load(settings, schema)
    conn = await asyncpg.connect(settings.postgres.dsn(), server_settings={"search_path": schema})
    try:
        await conn.execute("ANALYZE orders; ANALYZE trades")
        repo = Repository(conn, schema)
        user = await conn.fetchval(
            "SELECT buyer_user_id FROM trades GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        symbol = "BTC/USDT"
        since = datetime(2026, 1, 20, tzinfo=UTC)
        until = since + timedelta(days=10)

        pages, cursor = [], None
        while True:
            page = await repo.list_trades(user, symbol, since, until, limit=7, cursor=cursor)
            pages.extend(t.trade_id for t in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        expected = await conn.fetch(
            "SELECT trade_id FROM trades WHERE $1 IN (buyer_user_id, seller_user_id) "
            "AND symbol = $2 AND executed_at >= $3 AND executed_at < $4 "
            "ORDER BY executed_at DESC, trade_id DESC",
            user,
            symbol,
            since,
            until,
        )
        assert pages == [r["trade_id"] for r in expected]
        assert pages

        orders, cursor = [], None
        while True:
            opage = await repo.list_orders(user, symbol, since, until, limit=9, cursor=cursor)
            orders.extend(o.order_id for o in opage.items)
            if opage.next_cursor is None:
                break
            cursor = opage.next_cursor
        assert len(orders) == len(set(orders)) > 0
        first = await repo.get_order(orders[0], user)
        assert first is not None
        assert first.user_id == user
        assert await repo.get_order(orders[0], "someone-else") is None

        # A few dozen rows per partition make a seq scan cheapest; forbid it to see
        # which index the query shape uses (on production volumes the planner picks it).
        await conn.execute("SET enable_seqscan = off")
        args = [user, symbol, since, until, datetime(9999, 12, 31, tzinfo=UTC), "", 50]
        for sql, table in ((repo.trades_sql(), "trades"), (repo.orders_sql(), "orders")):
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
            assert "Index" in plan, plan
            assert "Seq Scan" not in plan, plan
            scanned = set(re.findall(rf"\bon ({table}_(?:\d{{4}}(?:_\d{{2}})+|default))\b", plan))
            total = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass", table
            )
            assert 0 < len(scanned) < total, (scanned, total)
            if table == "trades":  # ten days, at most eleven daily partitions
                assert len(scanned - {"trades_default"}) <= 11, scanned
    finally:
        await conn.close()


async def _insert_orders(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """(order_id, user_id, symbol, status, client_order_id, created_at) rows."""
    await conn.executemany(
        "INSERT INTO orders (order_id, user_id, symbol, status, client_order_id, side, "
        "order_type, quantity, price, created_at, updated_at, accepted_seq, last_seq) "
        "VALUES ($1, $2, $3, $4, $5, 'BUY', 'LIMIT', 1, 50000, $6, $6, 1, 1)",
        rows,
    )


async def test_open_orders_and_client_order_ids(settings: Settings, pg_schema) -> None:
    schema = pg_schema()
    base = datetime(2026, 1, 31, 23, tzinfo=UTC)  # two monthly partitions
    at = [base + timedelta(minutes=30 * i) for i in range(6)]
    conn = await asyncpg.connect(settings.postgres.dsn(), server_settings={"search_path": schema})
    try:
        await _insert_orders(
            conn,
            [
                ("o1", "u1", "BTC/USDT", "OPEN", "c1", at[0]),
                ("o2", "u1", "ETH/USDT", "PARTIALLY_FILLED", None, at[1]),
                ("o3", "u1", "BTC/USDT", "FILLED", "c2", at[2]),
                ("o4", "u1", "BTC/USDT", "PENDING", None, at[3]),
                ("o5", "u2", "BTC/USDT", "OPEN", "c2", at[4]),
                ("o6", "u1", "BTC/USDT", "CANCELLED", "c1", at[5]),
            ],
        )
        repo = Repository(conn, schema)

        assert [o.order_id for o in await repo.open_orders("u1")] == ["o4", "o2", "o1"]
        assert [o.order_id for o in await repo.open_orders("u1", "BTC/USDT")] == ["o4", "o1"]
        assert await repo.open_orders("nobody") == []
        assert await repo.count_open_orders("u1") == 3
        assert await repo.count_open_orders("nobody") == 0

        assert await repo.has_open_client_order_id("c1", "u1")  # o1, though o6 ended
        assert not await repo.has_open_client_order_id("c2", "u1")  # o3 ended
        assert await repo.has_open_client_order_id("c2", "u2")

        newest = await repo.order_by_client_id("c1", "u1")
        assert newest is not None
        assert (newest.order_id, newest.status) == ("o6", "CANCELLED")
        assert await repo.order_by_client_id("c1", "u2") is None  # not another user's
        mine = await repo.order_by_client_id("c2", "u2")
        assert mine is not None
        assert mine.order_id == "o5"
    finally:
        await conn.close()
