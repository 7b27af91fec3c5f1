"""Creates and upgrades the wallet's PostgreSQL schema from ``sql/NNN_*.sql``.

A tiny versioned runner: each file runs once, in name order, inside one
transaction that also records it in ``schema_migrations``; an advisory lock keeps
two services starting at once from racing. Files never change once released; a
change is a new file.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import asyncpg

DEFAULT_SCHEMA = "wallet"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r} (lower-case letters, digits, _)")
    return schema


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("trade_engine.wallet").joinpath("sql")
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


async def migrate(conn: asyncpg.Connection, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """Bring ``schema`` up to date; returns the files applied now (empty when current)."""
    check_schema_name(schema)
    applied_now: list[str] = []
    lock_id = int.from_bytes(
        hashlib.sha256(f"wallet:{schema}".encode()).digest()[:8], "big", signed=True
    )
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_id)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # The schema name is checked against a strict pattern above.
        rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')  # noqa: S608
        done = {r["version"] for r in rows}
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for name, sql in migration_files():
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
            applied_now.append(name)
    return applied_now


async def create_pool(
    dsn: str, schema: str = DEFAULT_SCHEMA, *, min_size: int = 2, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose connections have ``search_path`` set to the wallet's schema."""
    check_schema_name(schema)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": "trade-engine-wallet"},
    )
    assert pool is not None
    return pool
