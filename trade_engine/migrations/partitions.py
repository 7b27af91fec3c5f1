"""Partition maintenance: monthly ``orders_YYYY_MM``, daily ``trades_YYYY_MM_DD`` (UTC).

Partitions are created ahead of time (``ahead``), on demand for any month or day
a batch is about to write (``PartitionCache.ensure``), and detached once wholly
older than the retention. The SQL functions of migration 002 do the work, so an
operator can run the same from psql or pg_cron. Inserts never fail for want of
a partition: the DEFAULT partitions catch strays, and creating a partition later
moves them out (``monitoring_default_partition_rows`` shows what is there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import asyncpg

from trade_engine.migrations.runner import validate_schema

_TODAY = "COALESCE($3::date, (now() AT TIME ZONE 'UTC')::date)"


@dataclass(frozen=True, slots=True)
class PartitionPolicy:
    orders_months_ahead: int = 3
    trades_days_ahead: int = 14
    orders_retention_months: int = 0  # <= 0: keep forever
    trades_retention_days: int = 0


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    created: int
    detached: list[str]
    default_rows: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "created": self.created,
            "detached": self.detached,
            "default_rows": self.default_rows,
        }


async def default_rows(conn: asyncpg.Connection, schema: str) -> dict[str, int]:
    view = f'"{validate_schema(schema)}".monitoring_default_partition_rows'
    rows = await conn.fetch(f"SELECT parent, row_count FROM {view}")  # noqa: S608
    return {row["parent"]: int(row["row_count"]) for row in rows}


async def maintain(
    conn: asyncpg.Connection, schema: str, policy: PartitionPolicy, today: date | None = None
) -> MaintenanceReport:
    """Create the partitions ahead, detach those past retention, report the defaults' rows."""
    created = await conn.fetchval(
        f"SELECT create_future_order_partitions($1, $2, {_TODAY})"
        f" + create_future_trade_partitions($1, $4, {_TODAY})",
        schema,
        policy.orders_months_ahead,
        today,
        policy.trades_days_ahead,
    )
    detached = await conn.fetch(
        "SELECT name FROM detach_old_partitions($1, $2, $3, "
        "COALESCE($4::date, (now() AT TIME ZONE 'UTC')::date)) AS name",
        schema,
        policy.orders_retention_months,
        policy.trades_retention_days,
        today,
    )
    return MaintenanceReport(
        int(created), [row["name"] for row in detached], await default_rows(conn, schema)
    )


@dataclass
class PartitionCache:
    """The months and days known to have a partition; asks the database only for new ones."""

    schema: str
    months: set[date] = field(default_factory=set)
    days: set[date] = field(default_factory=set)

    async def ensure(
        self, conn: asyncpg.Connection, order_times: set[datetime], trade_times: set[datetime]
    ) -> int:
        """Create any missing partition for these timestamps (its own transaction)."""
        months = {date(t.year, t.month, 1) for t in order_times} - self.months
        days = {t.date() for t in trade_times} - self.days
        created = 0
        for month in sorted(months):
            created += await conn.fetchval(
                "SELECT create_future_order_partitions($1, 0, $2)", self.schema, month
            )
        for day in sorted(days):
            created += await conn.fetchval(
                "SELECT create_future_trade_partitions($1, 0, $2)", self.schema, day
            )
        self.months |= months
        self.days |= days
        return created
