"""Engine-side reconciliation: hold and trade comparisons (pure), and reading each record once.

The whole check against a real pipeline (Kafka changelog, te.trades, the wallet's
ledger), including a drift it must catch: ``tests/agents/settlement/test_worker.py``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import pytest

from trade_engine.agents import reconcile
from trade_engine.agents.reconcile import EngineHold, compare_holds, compare_trades, hold_of
from trade_engine.cli.money import add_money_commands
from trade_engine.config import SymbolSettings, load_settings
from trade_engine.streams.execution_records import InputRef, PublicTrade, trade_wire
from trade_engine.streams.executions import dumps
from trade_engine.streams.records import ConsumedRecord
from trade_engine.tables.symbols import rules_for
from trade_engine.wallet.reconcile import HoldRow

RULES = rules_for(SymbolSettings(symbol="BTC/USDT", tick_size="0.01", step_size="0.00001"))


def _state(side: str, reserved: int, spent: int, filled: int) -> dict[str, object]:
    return {
        "order_id": "o1",
        "user_id": "u1",
        "side": side,
        "reserved": reserved,
        "spent": spent,
        "filled": filled,
    }


def test_remaining_hold_of_an_order() -> None:
    buy = hold_of(_state("BUY", 250_000_000_000, 50_000_000_000, 10_000), "BTC/USDT", RULES)
    assert (buy.asset, buy.remaining) == ("USDT", Decimal(20_000))
    sell = hold_of(_state("SELL", 50_000, 0, 20_000), "BTC/USDT", RULES)
    assert (sell.asset, sell.remaining) == ("BTC", Decimal("0.3"))


def _hold(order_id: str, remaining: str, asset: str = "USDT", user: str = "u1") -> HoldRow:
    amount = Decimal(remaining)
    return HoldRow(order_id, "r", user, asset, amount, Decimal(0), Decimal(0), amount)


def _engine(order_id: str, remaining: str) -> EngineHold:
    return EngineHold(order_id, "u1", "BTC/USDT", "BUY", "USDT", Decimal(remaining))


def test_holds_compared_both_ways() -> None:
    engine = {"a": _engine("a", "10"), "b": _engine("b", "5"), "c": _engine("c", "0")}
    assert compare_holds(engine, [_hold("a", "10.000"), _hold("b", "5")]) == []
    problems = compare_holds(
        engine, [_hold("a", "9"), _hold("x", "1"), _hold("c", "1", asset="BTC")]
    )
    assert any("order a" in p and "wallet holds 9 USDT" in p for p in problems)
    assert any("order b" in p and "holds nothing" in p for p in problems)
    assert any("order c" in p and "BTC" in p for p in problems)
    assert any("order x" in p and "not open in the engine" in p for p in problems)
    assert len(problems) == 4


def test_trades_settled_exactly_once() -> None:
    assert compare_trades(Counter({"S:1": 1, "S:2": 1}), {"S:1", "S:2"}) == []
    problems = compare_trades(Counter({"S:1": 2, "S:2": 1}), {"S:1", "S:9"})
    assert problems == [
        "trade S:1 appears more than once on te.trades",
        "trade S:2 was not settled",
        "trade S:9 was settled but is not on te.trades",
    ]


def test_cli_parses() -> None:
    parser = argparse.ArgumentParser(prog="trade-engine")
    add_money_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["reconcile", "--schema", "w1", "--wait", "5"])
    assert (args.schema, args.wait) == ("w1", 5.0)
    args = parser.parse_args(["settlement", "run", "--retry-budget-s", "30"])
    assert args.retry_budget_s == 30.0
    assert parser.parse_args(["settlement", "redrive", "--dry-run"]).dry_run
    assert parser.parse_args(["risk", "run", "--batch-size", "100"]).batch_size == 100


def _trade(seq: int) -> bytes:
    """A te.trades record (``streams.execution_records.PublicTrade``) of BTC/USDT."""
    trade = PublicTrade(
        trade_id=f"BTC/USDT:{seq}",
        seq=seq,
        symbol="BTC/USDT",
        price=Decimal("50000.00"),
        quantity=Decimal("0.10000"),
        quote_quantity=Decimal("5000.0000000"),
        buyer_order_id="b",
        seller_order_id="s",
        buyer_user_id="u1",
        seller_user_id="u2",
        buyer_fee=Decimal("0.00000"),
        seller_fee=Decimal("0.0000000"),
        buyer_fee_asset="BTC",
        seller_fee_asset="USDT",
        is_buyer_maker=True,
        executed_at="2026-12-03T10:00:00.000Z",
        input=InputRef(0, seq),
    )
    return dumps(trade_wire(trade))


def test_a_reconciler_reads_each_record_once_across_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reconcile loop keeps its place: a second run reads only what came after the
    first, and what it keeps (live orders, trade ids) is what a full read would give."""
    settings = load_settings(topics={"partitions": 1})
    names = settings.topic_names
    state = _state("BUY", reserved=1000, spent=0, filled=0)
    logs: dict[str, list[tuple[bytes | None, bytes | None]]] = {
        names["matcher_changelog"]: [
            (b"o|BTC/USDT|o1", json.dumps(state).encode()),
            (b"h|BTC/USDT", b"{}"),
        ],
        names["trades"]: [(b"BTC/USDT", _trade(3))],
    }
    starts: list[tuple[str, int]] = []

    def read_partition(
        settings: object, topic: str, partition: int, start: int = 0
    ) -> Iterator[ConsumedRecord]:
        starts.append((topic, start))
        for offset, (key, value) in enumerate(logs[topic][start:], start):
            yield ConsumedRecord(topic, partition, offset, 0, key, value)

    monkeypatch.setattr(reconcile, "read_partition", read_partition)
    reconciler = reconcile.Reconciler(settings)
    assert set(reconciler.engine_holds()) == {"o1"}
    assert reconciler.trade_ids() == Counter({"BTC/USDT:3": 1})
    logs[names["matcher_changelog"]].append((b"o|BTC/USDT|o1", None))  # o1 ended
    logs[names["trades"]].append((b"BTC/USDT", _trade(5)))
    starts.clear()
    assert reconciler.engine_holds() == {}
    assert reconciler.trade_ids() == Counter({"BTC/USDT:3": 1, "BTC/USDT:5": 1})
    assert starts == [(names["matcher_changelog"], 2), (names["trades"], 1)]
