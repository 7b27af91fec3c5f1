"""Reconciliation: the ledger's invariants, checked on one consistent snapshot.

Checked: per asset all postings sum to zero; every journal entry balances per
asset; postings carry their account's asset; each user account's cached balance
equals the sum of its postings and is not negative; system accounts cache
nothing; each user's held balance equals the sum of what remains of their
holds; no hold is negative. The open holds are reported per order so the engine
can compare them with its open orders. Read-only; never repairs anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from trade_engine.connectors.wallet.models import format_amount
from trade_engine.wallet.schema import check_schema_name

_MAX_LISTED = 20


@dataclass(frozen=True)
class AssetTotals:
    asset: str
    postings_sum: Decimal
    available: Decimal
    held: Decimal
    fees: Decimal
    external: Decimal  # minus what came in through deposits net of withdrawals


@dataclass(frozen=True)
class HoldRow:
    order_id: str
    reservation_id: str
    user_id: str
    asset: str
    reserved: Decimal
    settled: Decimal
    released: Decimal
    remaining: Decimal


@dataclass
class ReconcileReport:
    problems: list[str] = field(default_factory=list)
    assets: list[AssetTotals] = field(default_factory=list)
    open_holds: list[HoldRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Decimal):
                return format_amount(value) if value >= 0 else "-" + format_amount(-value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        return {"ok": self.ok, **plain(asdict(self))}


_CHECKS: tuple[tuple[str, str], ...] = (
    (
        "asset {0} postings sum to {1}, not 0",
        "SELECT asset, sum(amount) FROM postings GROUP BY asset HAVING sum(amount) <> 0",
    ),
    (
        "journal entry {0} does not balance in {1}",
        "SELECT entry_id, asset FROM postings GROUP BY entry_id, asset HAVING sum(amount) <> 0",
    ),
    (
        "posting {0} is in {1} but its account {2} is in {3}",
        "SELECT p.posting_id, p.asset, a.account_id, a.asset FROM postings p"
        " JOIN accounts a USING (account_id) WHERE p.asset <> a.asset",
    ),
    (
        "account {0} ({1} {2} {3}) caches {4} but its postings sum to {5}",
        "SELECT a.account_id, a.user_id, a.asset, a.kind, a.balance, coalesce(s.total, 0)"
        " FROM accounts a LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings"
        " GROUP BY account_id) s USING (account_id)"
        " WHERE a.user_id <> '@system' AND a.balance <> coalesce(s.total, 0)",
    ),
    (
        "account {0} ({1} {2} {3}) is negative: {4}",
        "SELECT account_id, user_id, asset, kind, balance FROM accounts"
        " WHERE user_id <> '@system' AND balance < 0",
    ),
    (
        "system account {0} ({1} {2}) caches a balance {3}",
        "SELECT account_id, asset, kind, balance FROM accounts"
        " WHERE user_id = '@system' AND balance <> 0",
    ),
    (
        "held {1} of user {0} is {2} but the holds' remaining sum to {3}",
        "SELECT coalesce(a.user_id, h.user_id), coalesce(a.asset, h.asset),"
        " coalesce(a.balance, 0), coalesce(h.total, 0)"
        " FROM (SELECT user_id, asset, balance FROM accounts WHERE kind = 'held') a"
        " FULL JOIN (SELECT user_id, asset, sum(remaining) AS total FROM holds"
        " GROUP BY user_id, asset) h ON a.user_id = h.user_id AND a.asset = h.asset"
        " WHERE coalesce(a.balance, 0) <> coalesce(h.total, 0)",
    ),
    (
        "hold of order {0} is negative: remaining {1}",
        "SELECT order_id, remaining FROM holds WHERE remaining < 0 OR settled < 0 OR released < 0",
    ),
)


async def reconcile(conn: asyncpg.Connection, schema: str | None = None) -> ReconcileReport:
    """Check the ledger on ``conn`` (its search_path, or ``schema`` when given)."""
    report = ReconcileReport()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if schema is not None:
            await conn.execute(f'SET LOCAL search_path TO "{check_schema_name(schema)}"')
        for template, sql in _CHECKS:
            rows = await conn.fetch(sql + f" LIMIT {_MAX_LISTED + 1}")
            for row in rows[:_MAX_LISTED]:
                report.problems.append(template.format(*(_text(v) for v in row.values())))
            if len(rows) > _MAX_LISTED:
                report.problems.append(f"... and more like: {template}")
        report.assets = [AssetTotals(*r.values()) for r in await conn.fetch(_TOTALS)]
        report.open_holds = [
            HoldRow(*r.values())
            for r in await conn.fetch(
                "SELECT order_id, reservation_id::text, user_id, asset, reserved, settled,"
                " released, remaining FROM holds WHERE remaining <> 0 ORDER BY order_id"
            )
        ]
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM accounts) AS accounts,"
            " (SELECT count(*) FROM journal_entries) AS entries,"
            " (SELECT count(*) FROM postings) AS postings,"
            " (SELECT count(*) FROM holds) AS holds"
        )
        report.counts = dict(counts)
    return report


_TOTALS = (
    "SELECT p.asset, sum(p.amount),"
    " coalesce(sum(p.amount) FILTER (WHERE a.kind = 'available'), 0),"
    " coalesce(sum(p.amount) FILTER (WHERE a.kind = 'held'), 0),"
    " coalesce(sum(p.amount) FILTER (WHERE a.kind = 'fee'), 0),"
    " coalesce(sum(p.amount) FILTER (WHERE a.kind = 'external'), 0)"
    " FROM postings p JOIN accounts a USING (account_id) GROUP BY p.asset ORDER BY p.asset"
)


def _text(value: Any) -> str:
    if isinstance(value, Decimal):
        return format_amount(value) if value >= 0 else "-" + format_amount(-value)
    return str(value)
