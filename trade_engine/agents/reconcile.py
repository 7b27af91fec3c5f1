"""Engine-side reconciliation: the wallet's ledger against the engine's durable state.

Three checks, each reported as ``DRIFT: ...`` lines:

1. the wallet's own invariants (``connectors.wallet.reconcile``: per asset the
   postings sum to zero, nothing negative, held balances equal their holds);
2. each open order's hold in the wallet equals what the engine still needs
   held for it: the books are restored from the matcher's changelog (the
   durable state, as ``trade-engine replay`` does) and an order's remaining
   hold is ``reserved - spent`` (buy, quote units) or ``reserved - filled``
   (sell, lots); a wallet hold for an order the engine does not have open is
   drift too;
3. every trade on ``te.trades`` was settled exactly once: the wallet's settle
   journal entries (unique on ``trade_id``) against the trade ids of
   ``te.trades`` (read_committed), both ways.

The comparison is meaningful when the pipeline is idle: holds of orders still
in flight between the stages differ for a moment. ``wait_s`` repeats the
check until it passes or the time is up, so only drift that persists is
reported.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter as Multiset
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from trade_engine.agents.matcher.replay import read_partition
from trade_engine.config import Settings
from trade_engine.connectors.wallet.models import format_amount
from trade_engine.tables.matching.rules import SymbolRules
from trade_engine.tables.symbols import rules_for
from trade_engine.wallet.reconcile import HoldRow, ReconcileReport, reconcile
from trade_engine.wallet.schema import check_schema_name

_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class EngineHold:
    order_id: str
    user_id: str
    symbol: str
    side: str
    asset: str
    remaining: Decimal


@dataclass
class EngineReport:
    problems: list[str] = field(default_factory=list)
    open_orders: int = 0
    wallet_holds: int = 0
    trades: int = 0
    settled: int = 0
    wallet: ReconcileReport | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "open_orders": self.open_orders,
            "wallet_holds": self.wallet_holds,
            "trades": self.trades,
            "settled": self.settled,
            "wallet_assets": (self.wallet.to_dict()["assets"] if self.wallet is not None else []),
        }


def hold_of(state: dict[str, Any], symbol: str, rules: SymbolRules) -> EngineHold:
    """What the wallet must still hold for one live order (its per-order state dict)."""
    base, _, quote = symbol.partition("/")
    if state["side"] == "BUY":
        units = int(state["reserved"]) - int(state["spent"])
        asset, text = quote, rules.quote_scale.format(units)
    else:
        units = int(state["reserved"]) - int(state["filled"])
        asset, text = base, rules.qty_scale.format(units)
    return EngineHold(
        state["order_id"], state["user_id"], symbol, state["side"], asset, Decimal(text)
    )


def engine_holds(settings: Settings) -> dict[str, EngineHold]:
    """The live orders of every partition, from the matcher's changelog (last value per key)."""
    rules = {spec.symbol: rules_for(spec) for spec in settings.market.symbols}
    changelog = settings.topic_names["matcher_changelog"]
    out: dict[str, EngineHold] = {}
    for partition in range(settings.topics.partitions):
        entries: dict[bytes, bytes | None] = {}
        for record in read_partition(settings, changelog, partition):
            if record.key is not None:
                entries[record.key] = record.value
        for key, value in entries.items():
            if value is None or not key.startswith(b"o|"):
                continue
            symbol, _, _ = key.decode()[2:].partition("|")
            symbol_rules = rules.get(symbol)
            if symbol_rules is None:
                continue
            hold = hold_of(json.loads(value), symbol, symbol_rules)
            out[hold.order_id] = hold
    return out


def trade_ids(settings: Settings) -> Multiset[str]:
    topic = settings.topic_names["trades"]
    ids: Multiset[str] = Multiset()
    for partition in range(settings.topics.partitions):
        for record in read_partition(settings, topic, partition):
            if record.value is not None:
                ids[json.loads(record.value)["trade_id"]] += 1
    return ids


def compare_holds(engine: dict[str, EngineHold], wallet: list[HoldRow]) -> list[str]:
    problems: list[str] = []
    holds = {h.order_id: h for h in wallet}
    for order_id, want in sorted(engine.items()):
        got = holds.get(order_id)
        if got is None:
            if want.remaining != 0:
                problems.append(
                    f"order {order_id} ({want.symbol} {want.side}) needs"
                    f" {format_amount(want.remaining)} {want.asset} held; the wallet holds nothing"
                )
            continue
        if (got.user_id, got.asset) != (want.user_id, want.asset):
            problems.append(
                f"order {order_id}: the wallet holds {got.asset} of {got.user_id}, the engine"
                f" expects {want.asset} of {want.user_id}"
            )
        elif got.remaining != want.remaining:
            problems.append(
                f"order {order_id} ({want.symbol} {want.side}): wallet holds"
                f" {format_amount(got.remaining)} {got.asset}, engine expects"
                f" {format_amount(want.remaining)}"
            )
    for order_id, got in sorted(holds.items()):
        if order_id not in engine and got.remaining != 0:
            problems.append(
                f"the wallet holds {format_amount(got.remaining)} {got.asset} of {got.user_id}"
                f" for order {order_id}, which is not open in the engine"
            )
    return problems


def compare_trades(trades: Multiset[str], settled: set[str]) -> list[str]:
    problems: list[str] = []
    twice = sorted(t for t, n in trades.items() if n > 1)
    missing = sorted(set(trades) - settled)
    unknown = sorted(settled - set(trades))
    for label, ids in (
        ("appears more than once on te.trades", twice),
        ("was not settled", missing),
        ("was settled but is not on te.trades", unknown),
    ):
        for trade_id in ids[:_MAX_LISTED]:
            problems.append(f"trade {trade_id} {label}")
        if len(ids) > _MAX_LISTED:
            problems.append(f"... {len(ids) - _MAX_LISTED} more trades that {label}")
    return problems


async def _wallet_state(settings: Settings, schema: str) -> tuple[ReconcileReport, set[str]]:
    conn = await asyncpg.connect(settings.postgres.dsn())
    try:
        report = await reconcile(conn, schema)
        rows = await conn.fetch(
            f"SELECT key FROM \"{check_schema_name(schema)}\".journal_entries WHERE op = 'settle'"  # noqa: S608
        )
    finally:
        await conn.close()
    return report, {row["key"] for row in rows}


def _symbols_of(settings: Settings) -> tuple[str, ...]:
    return tuple(spec.symbol for spec in settings.market.symbols)


def check_once(settings: Settings, schema: str) -> EngineReport:
    report = EngineReport()
    wallet, settled = asyncio.run(_wallet_state(settings, schema))
    report.wallet = wallet
    report.problems.extend(f"wallet ledger: {p}" for p in wallet.problems)
    engine = engine_holds(settings)
    report.open_orders = len(engine)
    report.wallet_holds = len(wallet.open_holds)
    listed = compare_holds(engine, wallet.open_holds)
    report.problems.extend(listed[:_MAX_LISTED])
    if len(listed) > _MAX_LISTED:
        report.problems.append(f"... and {len(listed) - _MAX_LISTED} more hold differences")
    trades = trade_ids(settings)
    symbols = _symbols_of(settings)
    # Only this engine's symbols: a wallet shared with other venues may settle others.
    settled = {t for t in settled if t.rpartition(":")[0] in symbols}
    report.trades = sum(trades.values())
    report.settled = len(settled)
    report.problems.extend(compare_trades(trades, settled))
    return report


def check(settings: Settings, schema: str = "wallet", wait_s: float = 0.0) -> EngineReport:
    """Run the checks; repeat (1 s apart) while they fail, for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        report = check_once(settings, schema)
        if report.ok or time.monotonic() >= deadline:
            return report
        time.sleep(1.0)


# ------------------------------------------------------------------ exporter

DRIFT = Gauge(
    "te_reconcile_drift",
    "Problems found by two reconcile runs in a row (persistent drift), by check",
    ["check"],
)
PROBLEMS = Gauge("te_reconcile_problems", "Problems found by the last reconcile run", ["check"])
RUNS = Counter("te_reconcile_runs_total", "Reconcile runs by result: ok, drift, error", ["result"])
LAST_RUN = Gauge("te_reconcile_last_run_timestamp_seconds", "Unix time of the last finished run")
CHECKS = ("ledger", "holds", "trades")


def check_of(problem: str) -> str:
    """Which of the three checks a ``DRIFT`` line comes from."""
    if problem.startswith("wallet ledger:"):
        return "ledger"
    if problem.startswith("trade ") or (problem.startswith("... ") and " more trades " in problem):
        return "trades"
    return "holds"


class DriftTracker:
    """Only drift that persists counts: an order in flight between the stages makes a
    hold differ for a moment, a trade not settled yet is missing for a moment. A
    problem reported by two runs in a row (the same line: same order, same amounts)
    is drift, and it is what ``te_reconcile_drift`` and ``ReconcileDrift`` watch."""

    def __init__(self) -> None:
        self._previous: set[str] = set()

    def update(self, problems: list[str]) -> dict[str, int]:
        current = set(problems)
        persistent = current & self._previous
        self._previous = current
        counts = dict.fromkeys(CHECKS, 0)
        for problem in persistent:
            counts[check_of(problem)] += 1
        return counts


def export(report: EngineReport, tracker: DriftTracker) -> dict[str, int]:
    found = dict.fromkeys(CHECKS, 0)
    for problem in report.problems:
        found[check_of(problem)] += 1
    drift = tracker.update(report.problems)
    for name in CHECKS:
        PROBLEMS.labels(name).set(found[name])
        DRIFT.labels(name).set(drift[name])
    RUNS.labels("ok" if report.ok else "drift").inc()
    LAST_RUN.set_to_current_time()
    return drift
