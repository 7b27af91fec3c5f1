"""replay-sink: rebuilding from te.executions gives the live tables; a tampered row is reported."""

from __future__ import annotations

import asyncpg
import pytest

from trade_engine.config import Settings
from trade_engine.sinks.postgres import PostgresSink
from trade_engine.sinks.rebuild import rebuild

pytestmark = [pytest.mark.postgres, pytest.mark.broker]


async def test_rebuild_matches_live_then_finds_a_missing_trade(
    settings: Settings, feed, pg_schema
) -> None:
    f = feed(commands=2000, seed=31)
    live = pg_schema()
    stats = await PostgresSink(f.settings, live, batch_size=700).run(exit_when_idle_s=1.5)
    assert stats.trades_inserted == len(f.trade_ids())

    target = pg_schema()  # exists already: --replace semantics
    report = await rebuild(f.settings, target, live, replace=True)
    assert report.equal, report.as_dict()
    assert report.rows["trades"] == len(f.trade_ids())

    conn = await asyncpg.connect(settings.postgres.dsn())
    try:
        gone = await conn.fetchval(
            f'DELETE FROM "{live}".trades WHERE trade_id = '
            f'(SELECT min(trade_id) FROM "{live}".trades) RETURNING trade_id'
        )
    finally:
        await conn.close()
    report = await rebuild(f.settings, target, live, replace=True)
    assert not report.equal
    assert report.only_rebuilt == {"orders": 0, "trades": 1}
    assert report.samples["trades"] == [f"rebuilt:{gone}"]
