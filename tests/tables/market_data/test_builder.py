"""Market data from executions equals the core's own state, for random command streams.

Each stream is applied to a ``MatchingEngine``; its records are turned into wire
messages exactly as the matcher does (``execution_message``), decoded as the
agent does (``decode_execution``) and fed to the builders. After every command:
the depth equals the engine's aggregated levels, update ids are gap-free, and a
reader that follows the documented resync procedure from a snapshot taken at a
random point holds the same book. Candles and tickers are compared with a naive
fold over the trades.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trade_engine.config import MarketSettings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams.commands import to_core
from trade_engine.streams.execution_records import ExecutionRecord, decode_execution
from trade_engine.streams.executions import dumps, execution_message
from trade_engine.streams.market_data import MESSAGES
from trade_engine.tables.market_data import (
    DepthSync,
    MarketDataError,
    ResyncNeededError,
    SymbolMarketData,
)
from trade_engine.tables.market_data.builder import CANDLES, DEPTH, TICKERS, Output
from trade_engine.tables.market_data.candles import MINUTE_MS, iso, minute_of
from trade_engine.tables.matching import (
    Amend,
    Cancel,
    Command,
    MassCancel,
    MatchingEngine,
    OrderType,
    Place,
    SetTradingState,
    Side,
    StpMode,
    SymbolRules,
    TimeInForce,
    TimeTick,
    TradingState,
)
from trade_engine.tables.symbols import rules_for

RULES = SymbolRules("T/Q", "0.5", "0.1", maker_fee_ppm=1_000, taker_fee_ppm=2_000)
T0 = 1_794_999_960_000  # 2026-11-18T11:06:00Z, on a minute boundary
USERS = st.sampled_from(["u0", "u1", "u2"])
PRICES = st.integers(95, 105)
QTYS = st.integers(1, 6)
SIDES = st.sampled_from([Side.BUY, Side.SELL])


@dataclass
class Run:
    """An engine and the builders fed from its records, with everything they published."""

    rules: SymbolRules
    engine: MatchingEngine = field(init=False)
    md: SymbolMarketData = field(init=False)
    outputs: list[Output] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    offset: int = 0

    def __post_init__(self) -> None:
        self.engine = MatchingEngine(self.rules)
        self.md = SymbolMarketData(self.rules, snapshot_every=0)

    def apply(self, command: Command, timestamp_ms: int) -> None:
        self.offset += 1
        for record in self.engine.apply(command):
            msg = execution_message(record, self.rules, 0, self.offset, timestamp_ms)
            if msg["kind"] == "TRADE":
                self.trades.append(msg)
            self.outputs.extend(self.md.apply(decode_execution(dumps(msg))))
        self.outputs.extend(self.md.flush())

    def engine_levels(self, side: Side) -> list[tuple[int, int]]:
        return [(p, q) for p, q, _ in self.engine.depth(side, 10**9)]

    def of(self, role: str) -> list[dict[str, Any]]:
        return [o.value for o in self.outputs if o.role == role]


def _place(data: st.DataObject, n: int) -> Place:
    kind = data.draw(st.sampled_from(["limit", "limit", "limit", "market", "stop", "stop_limit"]))
    side = data.draw(SIDES)
    user = data.draw(USERS)
    stp = data.draw(st.sampled_from(list(StpMode)))
    oid = f"o{n}"
    if kind == "limit":
        tif = data.draw(st.sampled_from(list(TimeInForce)))
        return Place(
            oid, user, side, OrderType.LIMIT, data.draw(QTYS), data.draw(PRICES),
            tif=tif, stp=stp, post_only=data.draw(st.booleans()) and tif not in ("IOC", "FOK"),
            expire_at=T0 + 5_000 if tif is TimeInForce.GTD else None,
        )  # fmt: skip
    if kind == "market":
        by_funds = side is Side.BUY and data.draw(st.booleans())
        return Place(
            oid, user, side, OrderType.MARKET, None if by_funds else data.draw(QTYS), None,
            funds=data.draw(st.integers(50, 800)) if side is Side.BUY else None,
            tif=TimeInForce.IOC, stp=stp,
        )  # fmt: skip
    stop = data.draw(PRICES)
    if kind == "stop":
        return Place(
            oid, user, side, OrderType.STOP, data.draw(QTYS), None, stop_price=stop,
            funds=data.draw(st.integers(50, 800)) if side is Side.BUY else None,
            tif=TimeInForce.IOC, stp=stp,
        )  # fmt: skip
    return Place(
        oid, user, side, OrderType.STOP_LIMIT, data.draw(QTYS), data.draw(PRICES),
        stop_price=stop, tif=data.draw(st.sampled_from([TimeInForce.GTC, TimeInForce.IOC])),
        stp=stp,
    )  # fmt: skip


def _command(data: st.DataObject, n: int, now: int) -> Command:
    what = data.draw(
        st.sampled_from(["place"] * 6 + ["cancel", "amend", "amend", "mass", "admin", "tick"])
    )
    pick = f"o{data.draw(st.integers(0, max(n - 1, 0)))}"
    user = data.draw(USERS)
    if what == "place":
        return _place(data, n)
    if what == "cancel":
        return Cancel(user, order_id=pick)
    if what == "amend":
        qty = data.draw(st.one_of(st.none(), st.integers(1, 8)))
        price = data.draw(st.one_of(st.none(), PRICES))
        return Amend(pick, user, qty, price)
    if what == "mass":
        return MassCancel(user, data.draw(st.one_of(st.none(), SIDES)))
    if what == "admin":
        return SetTradingState(data.draw(st.sampled_from(list(TradingState))))
    return TimeTick(now + data.draw(st.integers(0, 3_000)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_depth_equals_the_engine_after_every_command(data: st.DataObject) -> None:
    run = Run(RULES)
    now = T0
    n_commands = data.draw(st.integers(1, 80))
    join_at = data.draw(st.integers(0, n_commands))
    reader = DepthSync(RULES.symbol)
    snapshot_taken = False
    for n in range(n_commands):
        if n == join_at:
            # A late reader: it starts buffering now, and fetches a snapshot a bit later.
            run.outputs.clear()
        command = _command(data, n, now)
        if isinstance(command, TimeTick):
            now = command.now
        before = len(run.outputs)
        run.apply(command, now)
        now += data.draw(st.integers(0, 40_000))
        if n >= join_at:
            for out in run.outputs[before:]:
                if out.role == DEPTH:
                    reader.on_update(out.value)
            if not snapshot_taken and data.draw(st.booleans()):
                reader.on_snapshot(run.md.snapshot().value)
                snapshot_taken = True
        assert run.md.depth.levels("BUY") == run.engine_levels(Side.BUY)
        assert run.md.depth.levels("SELL") == run.engine_levels(Side.SELL)
        run.engine.validate()
    updates = run.of(DEPTH)
    for before_u, after in itertools.pairwise(updates):
        assert after["U"] == before_u["u"] + 1
    for update in updates:
        assert update["U"] <= update["u"]
        bids = [Decimal(p) for p, _ in update["bids"]]
        assert bids == sorted(bids, reverse=True)
    if not snapshot_taken:
        reader.on_snapshot(run.md.snapshot().value)
    _assert_same_book(reader, run)


def _assert_same_book(reader: DepthSync, run: Run) -> None:
    price, qty = run.rules.price_scale.format, run.rules.qty_scale.format
    for side, name in ((Side.BUY, "bids"), (Side.SELL, "asks")):
        want = [[price(p), qty(q)] for p, q in run.engine_levels(side)]
        assert reader.levels(name) == want
    # Published books are never crossed, even though a taker rests provisionally.
    bids, asks = reader.levels("bids", 1), reader.levels("asks", 1)
    if bids and asks:
        assert Decimal(bids[0][0]) < Decimal(asks[0][0])


def _loadgen_runs(n: int, seed: int) -> Iterator[Run]:
    specs = MarketSettings().symbols[:3]
    runs = {s.symbol: Run(rules_for(s)) for s in specs}
    ts = T0
    for i, command in enumerate(generate(n, seed, specs, users=5)):
        ts += (i * 7919) % 1500
        run = runs[command.symbol]
        run.apply(to_core(command, run.rules), ts)
    yield from runs.values()


@pytest.mark.parametrize("seed", [1, 7])
def test_loadgen_flow_depth_candles_and_tickers(seed: int) -> None:
    for run in _loadgen_runs(4000, seed):
        assert run.md.depth.levels("BUY") == run.engine_levels(Side.BUY)
        assert run.md.depth.levels("SELL") == run.engine_levels(Side.SELL)
        reader = DepthSync(run.rules.symbol)
        for update in run.of(DEPTH):
            reader.on_update(update)
        reader.on_snapshot(
            {"lastUpdateId": 0, "bids": [], "asks": []}
        )  # from the very start: no snapshot needed beyond the empty book
        _assert_same_book(reader, run)
        assert len(run.trades) > 50
        _check_candles(run)
        _check_ticker(run)
        # Every message matches its documented contract (streams/schemas/md_*.json).
        for out in [*run.outputs, run.md.snapshot()]:
            MESSAGES[out.value["type"]].model_validate(out.value)


def _naive_candles(run: Run) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    current = None
    for t in run.trades:
        minute = minute_of(t["at"])
        current = minute if current is None or minute > current else current
        price, qty = Decimal(t["price"]), Decimal(t["quantity"])
        c = out.setdefault(
            current,
            {"open": price, "high": price, "low": price, "volume": Decimal(0), "trades": 0},
        )
        c["high"], c["low"], c["close"] = max(c["high"], price), min(c["low"], price), price
        c["volume"] += qty
        c["trades"] += 1
    return out


def _check_candles(run: Run) -> None:
    naive = _naive_candles(run)
    last: dict[str, dict[str, Any]] = {}
    for candle in run.of(CANDLES):
        if candle["open_time"] in last:
            assert not last[candle["open_time"]]["closed"], "a closed candle changed"
        last[candle["open_time"]] = candle
    assert set(last) == {iso(m) for m in naive}
    for minute, want in naive.items():
        got = last[iso(minute)]
        assert Decimal(got["open"]) == want["open"]
        assert Decimal(got["high"]) == want["high"]
        assert Decimal(got["low"]) == want["low"]
        assert Decimal(got["close"]) == want["close"]
        assert Decimal(got["volume"]) == want["volume"]
        assert got["trades"] == want["trades"]
    assert sum(c["closed"] for c in last.values()) == len(naive) - 1


def _check_ticker(run: Run) -> None:
    ticker = run.of(TICKERS)[-1]
    naive = _naive_candles(run)
    newest = max(naive)
    window = {m: c for m, c in naive.items() if m > newest - 1440 * MINUTE_MS}
    first = window[min(window)]
    assert Decimal(ticker["open"]) == first["open"]
    assert Decimal(ticker["last"]) == naive[newest]["close"]
    assert Decimal(ticker["high"]) == max(c["high"] for c in window.values())
    assert Decimal(ticker["low"]) == min(c["low"] for c in window.values())
    assert Decimal(ticker["volume"]) == sum(c["volume"] for c in window.values())
    assert ticker["trades"] == sum(c["trades"] for c in window.values())
    change = Decimal(ticker["last"]) - Decimal(ticker["open"])
    assert Decimal(ticker["price_change"]) == change
    bid = run.engine.best_bid()
    assert ticker["best_bid"] == (None if bid is None else run.rules.price_scale.format(bid))


def test_ticker_window_rolls_after_a_day() -> None:
    run = Run(RULES)
    run.apply(Place("a", "u1", Side.SELL, OrderType.LIMIT, 1, 100), T0)
    run.apply(Place("b", "u2", Side.BUY, OrderType.LIMIT, 1, 100), T0)  # trade at 100
    run.apply(Place("c", "u1", Side.SELL, OrderType.LIMIT, 5, 104), T0 + MINUTE_MS)
    run.apply(Place("d", "u2", Side.BUY, OrderType.LIMIT, 2, 104), T0 + 1440 * MINUTE_MS)
    ticker = run.of(TICKERS)[-1]
    # The minute of the first trade left the window: only the 104 trade counts.
    assert (ticker["open"], ticker["high"], ticker["low"], ticker["trades"]) == (
        "52.0",
        "52.0",
        "52.0",
        1,
    )
    assert ticker["volume"] == "0.2"
    candles = run.of(CANDLES)
    assert candles[-2]["closed"] is True
    assert candles[-2]["open_time"] == iso(T0)
    assert candles[-1]["open_time"] == iso(T0 + 1440 * MINUTE_MS)


def test_records_are_idempotent_and_gaps_are_errors() -> None:
    engine = MatchingEngine(RULES)
    md = SymbolMarketData(RULES, snapshot_every=0)
    msgs: list[ExecutionRecord] = [
        decode_execution(dumps(execution_message(r, RULES, 0, i, T0)))
        for i, cmd in enumerate(
            [
                Place("a", "u1", Side.SELL, OrderType.LIMIT, 5, 100),
                Place("b", "u2", Side.BUY, OrderType.LIMIT, 2, 100),
            ]
        )
        for r in engine.apply(cmd)
    ]
    for msg in msgs:
        md.apply(msg)
    for msg in msgs:  # a replayed prefix changes nothing
        md.apply(msg)
    md.flush()
    assert md.depth.levels("SELL") == [(100, 3)]
    later = msgspec.structs.replace(msgs[-1], seq=md.seq + 2)
    with pytest.raises(MarketDataError) as info:
        md.apply(later)
    assert info.value.code == "MD_SEQ_GAP"
    with pytest.raises(MarketDataError) as bad:
        md.apply(msgspec.structs.replace(msgs[0], seq=md.seq + 1, price=Decimal("0.3")))
    assert bad.value.code == "MD_BAD_RECORD"
    assert md.depth.levels("SELL") == [(100, 3)]


def test_updates_group_one_input_and_fold_empty_ranges() -> None:
    run = Run(RULES)
    run.apply(Place("a", "u1", Side.SELL, OrderType.LIMIT, 5, 100), T0)  # seq 1
    run.apply(Cancel("u1", order_id="zz"), T0)  # seq 2: a reject, no depth change
    # seq 3 accepted, 4 trade, 5 maker ends(no: partial) ... one input, one update
    run.apply(Place("b", "u2", Side.BUY, OrderType.LIMIT, 7, 100), T0)
    updates = run.of(DEPTH)
    assert [(u["U"], u["u"]) for u in updates] == [(1, 1), (2, run.md.seq)]
    # The taker rested at 100 after taking all 5: never shown crossed.
    assert updates[1]["asks"] == [["50.0", "0.0"]]
    assert updates[1]["bids"] == [["50.0", "0.2"]]
    snap = run.md.snapshot().value
    assert snap["lastUpdateId"] == run.md.seq
    assert snap["bids"] == [["50.0", "0.2"]]
    assert snap["asks"] == []


def test_reader_rules() -> None:
    sync = DepthSync("T/Q")
    sync.on_update({"U": 5, "u": 6, "bids": [["1", "2"]], "asks": []})
    with pytest.raises(ResyncNeededError):
        sync.on_snapshot({"lastUpdateId": 3, "bids": [], "asks": []})  # older than the buffer
    sync.on_snapshot({"lastUpdateId": 5, "bids": [["1", "1"], ["0.5", "3"]], "asks": []})
    assert sync.levels("bids") == [["1", "2"], ["0.5", "3"]]
    assert sync.on_update({"U": 6, "u": 6, "bids": [], "asks": []}) is False  # already have it
    assert sync.on_update({"U": 7, "u": 9, "bids": [["0.5", "0"]], "asks": [["2", "1"]]})
    assert sync.levels("bids") == [["1", "2"]]
    assert sync.levels("asks") == [["2", "1"]]
    with pytest.raises(ResyncNeededError):
        sync.on_update({"U": 11, "u": 12, "bids": [], "asks": []})
    assert not sync.synced
    assert sync.levels("bids") == []
