"""The read repository: keyset pages equal a plain query; plans use indexes and prune partitions."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from trade_engine.config import Settings
from trade_engine.operations import synthetic
from trade_engine.sinks.postgres import Position, PostgresWriter
from trade_engine.sinks.repository import Repository

pytestmark = pytest.mark.postgres
START_MS = 1_767_225_600_000  # 2026-01-01
DAY_MS = 86_400_000


async def _load(settings: Settings, schema: str) -> None:
    # 6000 commands over ~75 days: ~75 daily trade partitions, 3 monthly order partitions.
    messages = synthetic.executions(
        6000, 5, settings.market.symbols[:2], 2, start_ms=START_MS, step_ms=75 * DAY_MS // 6000
    )
    writer = PostgresWriter(settings.postgres.dsn(), schema, "synthetic")
    batch = [(Position(p, i), json.loads(v)) for p in messages for i, v in enumerate(messages[p])]
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
