"""Wallet fixtures: each test gets a ledger in a PostgreSQL schema of its own, dropped after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from trade_engine.config import Settings
from trade_engine.wallet.ledger import Ledger
from trade_engine.wallet.reconcile import reconcile
from trade_engine.wallet.schema import create_pool, migrate


@dataclass
class WalletDb:
    schema: str
    pool: asyncpg.Pool
    ledger: Ledger

    async def check(self) -> None:
        """The ledger's invariants hold (sums zero per asset, nothing negative, holds match)."""
        async with self.pool.acquire() as conn:
            report = await reconcile(conn)
        assert report.ok, report.problems
        for totals in report.assets:
            assert totals.postings_sum == 0


def new_schema() -> str:
    return f"wallet_test_{uuid.uuid4().hex[:12]}"


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def wallet_db(settings: Settings) -> AsyncIterator[WalletDb]:
    dsn = settings.postgres.dsn()
    schema = new_schema()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, schema)
    finally:
        await conn.close()
    pool = await create_pool(dsn, schema, min_size=1, max_size=20)
    try:
        yield WalletDb(schema, pool, Ledger(pool))
    finally:
        await pool.close()
        await drop_schema(dsn, schema)
