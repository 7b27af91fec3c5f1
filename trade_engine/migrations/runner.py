"""The migration runner: ordered SQL files applied and rolled back over asyncpg.

Migrations are the files ``NNN_<name>.up.sql`` / ``NNN_<name>.down.sql`` beside
this module, applied in version order into one schema (``public`` in
production, a fresh one per test or rebuild). The SQL is unqualified: the runner
sets ``search_path`` to the target schema, so the same files build any schema.

Guarantees:

- each migration runs in its own transaction together with its row in
  ``schema_migrations`` (version, name, sha256 of the up file, applied_at), so
  a failed migration leaves nothing half-applied;
- a session advisory lock per schema serialises concurrent runners (two
  deployments starting at once apply each migration once);
- ``status`` flags an applied migration whose file changed since (checksum drift):
  migrations are append-only, a change needs a new version.

Why not a migration tool: alembic needs SQLAlchemy, yoyo/dbmate/flyway need
another driver or binary; the whole runner is the few dozen lines below.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent
_FILE = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    integer     PRIMARY KEY,
  name       text        NOT NULL,
  checksum   text        NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migration files or the database's migration history are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up_sql: str
    down_sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationState:
    version: int
    name: str
    applied_at: datetime | None
    drifted: bool

    @property
    def applied(self) -> bool:
        return self.applied_at is not None


def validate_schema(schema: str) -> str:
    """Schema names are plain identifiers: no quoting games in DDL or search_path."""
    if not _SCHEMA.match(schema):
        raise MigrationError(f"schema name {schema!r} must match {_SCHEMA.pattern}")
    return schema


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in ``directory``, by version; each needs both its up and down file."""
    files: dict[int, dict[str, Path]] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: expected NNN_name.up.sql or NNN_name.down.sql")
        version = int(match["version"])
        if names.setdefault(version, match["name"]) != match["name"]:
            raise MigrationError(f"version {version} has two names")
        files.setdefault(version, {})[match["direction"]] = path
    migrations = []
    for version in sorted(files):
        pair = files[version]
        if set(pair) != {"up", "down"}:
            raise MigrationError(f"migration {version:03d} needs both .up.sql and .down.sql")
        migrations.append(
            Migration(version, names[version], pair["up"].read_text(), pair["down"].read_text())
        )
    return migrations


async def connect(dsn: str, schema: str, *, create: bool = True) -> asyncpg.Connection:
    """A connection whose search_path is ``schema`` (created if missing and ``create``)."""
    validate_schema(schema)
    if create:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        finally:
            await conn.close()
    return await asyncpg.connect(dsn, server_settings={"search_path": schema})


class MigrationRunner:
    """Applies, rolls back and reports migrations for one schema on one connection."""

    def __init__(
        self, conn: asyncpg.Connection, schema: str, migrations: list[Migration] | None = None
    ) -> None:
        self.conn = conn
        self.schema = validate_schema(schema)
        self.migrations = migrations if migrations is not None else discover()

    async def _lock(self) -> None:
        await self.conn.execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))", f"te.migrations.{self.schema}"
        )
        await self.conn.execute(_CREATE_TABLE)

    async def _unlock(self) -> None:
        await self.conn.execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))", f"te.migrations.{self.schema}"
        )

    async def _applied(self) -> dict[int, asyncpg.Record]:
        rows = await self.conn.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations"
        )
        return {row["version"]: row for row in rows}

    async def migrate(self, target: int | None = None) -> list[Migration]:
        """Apply every pending migration up to ``target`` (default: all). Returns those applied."""
        done: list[Migration] = []
        await self._lock()
        try:
            applied = await self._applied()
            for migration in self.migrations:
                if migration.version in applied:
                    continue
                if target is not None and migration.version > target:
                    break
                async with self.conn.transaction():
                    await self.conn.execute(migration.up_sql)
                    await self.conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                done.append(migration)
        finally:
            await self._unlock()
        return done

    async def rollback(self, steps: int = 1, target: int | None = None) -> list[Migration]:
        """Undo the last ``steps`` migrations, or every one above ``target`` (0 = all)."""
        done: list[Migration] = []
        by_version = {m.version: m for m in self.migrations}
        await self._lock()
        try:
            applied = sorted(await self._applied(), reverse=True)
            chosen = [v for v in applied if v > target] if target is not None else applied[:steps]
            for version in chosen:
                migration = by_version.get(version)
                if migration is None:
                    raise MigrationError(f"migration {version:03d} is applied but has no files")
                async with self.conn.transaction():
                    await self.conn.execute(migration.down_sql)
                    await self.conn.execute(
                        "DELETE FROM schema_migrations WHERE version = $1", version
                    )
                done.append(migration)
        finally:
            await self._unlock()
        return done

    async def status(self) -> list[MigrationState]:
        """One entry per known or applied migration, by version."""
        await self.conn.execute(_CREATE_TABLE)
        applied = await self._applied()
        states = []
        for migration in self.migrations:
            row = applied.pop(migration.version, None)
            states.append(
                MigrationState(
                    migration.version,
                    migration.name,
                    row["applied_at"] if row else None,
                    bool(row) and row["checksum"] != migration.checksum,
                )
            )
        for version, row in sorted(applied.items()):
            states.append(MigrationState(version, row["name"], row["applied_at"], True))
        return states


async def migrate_schema(dsn: str, schema: str) -> list[Migration]:
    """Create ``schema`` if needed and apply every pending migration to it."""
    conn = await connect(dsn, schema)
    try:
        return await MigrationRunner(conn, schema).migrate()
    finally:
        await conn.close()
