"""``trade-engine wallet ...`` commands: parsing, and reconcile's exit codes on a real ledger."""

from __future__ import annotations

import argparse
import asyncio
import json

import asyncpg
import pytest

from trade_engine.cli.wallet import add_wallet_commands
from trade_engine.config import Settings
from trade_engine.connectors.wallet.models import ReserveRequest, TransferRequest
from trade_engine.wallet.ledger import Ledger
from trade_engine.wallet.schema import create_pool, migrate

from ..wallet.conftest import drop_schema, new_schema


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trade-engine")
    add_wallet_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_parser() -> None:
    args = parse("wallet", "deposit", "--user", "u1", "--asset", "usdt", "--amount", "10")
    assert (args.user, args.asset, args.amount, args.transfer) == ("u1", "USDT", "10", "deposit")
    assert parse("wallet", "serve", "--port", "9000").port == 9000
    assert parse("wallet", "reconcile").schema == "wallet"


async def _seed(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    await migrate(conn, schema)
    await conn.close()
    pool = await create_pool(dsn, schema, min_size=1, max_size=2)
    ledger = Ledger(pool)
    await ledger.deposit(TransferRequest(user_id="u", asset="BTC", amount="2", idempotency_key="d"))  # type: ignore[arg-type]
    await ledger.reserve(ReserveRequest(user_id="u", asset="BTC", amount="0.5", order_id="o1"))  # type: ignore[arg-type]
    await pool.close()


async def _corrupt(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    await conn.execute("UPDATE accounts SET balance = 3 WHERE user_id = 'u' AND kind = 'available'")
    await conn.close()


@pytest.mark.postgres
def test_reconcile_exit_codes(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    dsn, schema = settings.postgres.dsn(), new_schema()
    asyncio.run(_seed(dsn, schema))
    try:
        args = parse("wallet", "reconcile", "--schema", schema, "--holds")
        assert args.handler(args, settings) == 0
        out = capsys.readouterr().out
        report, _ = json.JSONDecoder().raw_decode(out)
        assert report["ok"]
        assert report["open_holds_count"] == 1
        assert json.loads(out.splitlines()[-1])["order_id"] == "o1"
        asyncio.run(_corrupt(dsn, schema))
        assert args.handler(args, settings) == 1
        assert "DRIFT: account" in capsys.readouterr().err
    finally:
        asyncio.run(drop_schema(dsn, schema))
