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
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from trade_engine.agents.matcher.replay import read_partition
from trade_engine.config import Settings
from trade_engine.connectors.wallet.models import format_amount
from trade_engine.streams.execution_records import decode_trade
from trade_engine.streams.records import ConsumedRecord
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
    return Reconciler(settings).engine_holds()


def trade_ids(settings: Settings) -> Multiset[str]:
    return Reconciler(settings).trade_ids()


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


def _symbols_of(settings: Settings) -> tuple[str, ...]:
    return tuple(spec.symbol for spec in settings.market.symbols)


class Reconciler:
    """The checks, reading only what was written since the previous run.

    The changelog's live order entries, the trade ids of ``te.trades`` and the
    wallet's settled trade ids are kept between runs, with the position each
    was read to: a loop that reconciles every few minutes reads each record
    once instead of every topic from the beginning on every run. The wallet's
    own invariants (sums per asset, balances against holds) are still checked
    in full by SQL each run.
    """

    def __init__(self, settings: Settings, schema: str = "wallet") -> None:
        self.settings = settings
        self.schema = check_schema_name(schema)
        self.rules = {spec.symbol: rules_for(spec) for spec in settings.market.symbols}
        self.symbols = _symbols_of(settings)
        self._orders: dict[bytes, bytes] = {}  # live ``o|`` changelog entries
        self._changelog_next: dict[int, int] = {}
        self._trades: Multiset[str] = Multiset()
        self._trades_next: dict[int, int] = {}
        self._settled: set[str] = set()
        # Settle entries are read from one run behind the highest id seen: an entry whose
        # id was taken before a later one's may commit after it.
        self._settled_seen: list[int] = [0, 0]

    def _read(self, topic: str, positions: dict[int, int]) -> Iterator[ConsumedRecord]:
        for partition in range(self.settings.topics.partitions):
            start = positions.get(partition, 0)
            for record in read_partition(self.settings, topic, partition, start):
                positions[partition] = record.offset + 1
                yield record

    def engine_holds(self) -> dict[str, EngineHold]:
        changelog = self.settings.topic_names["matcher_changelog"]
        for record in self._read(changelog, self._changelog_next):
            key = record.key
            if key is None or not key.startswith(b"o|"):
                continue
            if record.value is None:
                self._orders.pop(key, None)
            else:
                self._orders[key] = record.value
        out: dict[str, EngineHold] = {}
        for key, value in self._orders.items():
            symbol, _, _ = key.decode()[2:].partition("|")
            symbol_rules = self.rules.get(symbol)
            if symbol_rules is None:
                continue
            hold = hold_of(json.loads(value), symbol, symbol_rules)
            out[hold.order_id] = hold
        return out

    def trade_ids(self) -> Multiset[str]:
        for record in self._read(self.settings.topic_names["trades"], self._trades_next):
            if record.value is not None:
                self._trades[decode_trade(record.value).trade_id] += 1
        return self._trades

    async def _wallet_state(self) -> tuple[ReconcileReport, set[str]]:
        conn = await asyncpg.connect(self.settings.postgres.dsn())
        try:
            report = await reconcile(conn, self.schema)
            rows = await conn.fetch(
                f'SELECT entry_id, key FROM "{self.schema}".journal_entries'  # noqa: S608
                " WHERE op = 'settle' AND entry_id > $1",
                self._settled_seen[0],
            )
        finally:
            await conn.close()
        self._settled.update(row["key"] for row in rows)
        highest = max((row["entry_id"] for row in rows), default=self._settled_seen[1])
        self._settled_seen = [self._settled_seen[1], highest]
        return report, self._settled

    def check_once(self) -> EngineReport:
        report = EngineReport()
        wallet, settled = asyncio.run(self._wallet_state())
        report.wallet = wallet
        report.problems.extend(f"wallet ledger: {p}" for p in wallet.problems)
        engine = self.engine_holds()
        report.open_orders = len(engine)
        report.wallet_holds = len(wallet.open_holds)
        listed = compare_holds(engine, wallet.open_holds)
        report.problems.extend(listed[:_MAX_LISTED])
        if len(listed) > _MAX_LISTED:
            report.problems.append(f"... and {len(listed) - _MAX_LISTED} more hold differences")
        trades = self.trade_ids()
        # Only this engine's symbols: a wallet shared with other venues may settle others.
        mine = {t for t in settled if t.rpartition(":")[0] in self.symbols}
        report.trades = sum(trades.values())
        report.settled = len(mine)
        report.problems.extend(compare_trades(trades, mine))
        return report

    def check(self, wait_s: float = 0.0) -> EngineReport:
        """Run the checks; repeat (1 s apart) while they fail, for up to ``wait_s`` seconds."""
        deadline = time.monotonic() + wait_s
        while True:
            report = self.check_once()
            if report.ok or time.monotonic() >= deadline:
                return report
            time.sleep(1.0)


def check_once(settings: Settings, schema: str) -> EngineReport:
    return Reconciler(settings, schema).check_once()


def check(settings: Settings, schema: str = "wallet", wait_s: float = 0.0) -> EngineReport:
    """One reconciliation from the beginning of every topic (``Reconciler`` keeps its place)."""
    return Reconciler(settings, schema).check(wait_s)


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
