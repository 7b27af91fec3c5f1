"""Golden tests: every order type, time in force and STP mode, with exact records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from trade_engine.tables.matching import (
    Amend,
    Cancel,
    EndReason,
    Execution,
    MassCancel,
    MatchingEngine,
    OrderEnded,
    OrderStatus,
    OrderType,
    Place,
    PlaceRequest,
    RejectCode,
    SetTradingState,
    Side,
    StpMode,
    TimeInForce,
    TimeTick,
    Trade,
    TradingState,
)

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET, STOP, STOP_LIMIT = (
    OrderType.LIMIT,
    OrderType.MARKET,
    OrderType.STOP,
    OrderType.STOP_LIMIT,
)
Shorts = Callable[[Sequence[Execution]], list[tuple[Any, ...]]]


def lim(oid: str, user: str, side: Side, qty: int, price: int, **kw: Any) -> Place:
    return Place(oid, user, side, LIMIT, quantity=qty, price=price, **kw)


def test_price_time_priority_and_maker_price(make_engine: Any, shorts: Shorts) -> None:
    e: MatchingEngine = make_engine()
    e.apply(lim("a", "u1", SELL, 2, 100))
    e.apply(lim("b", "u2", SELL, 2, 100))
    e.apply(lim("c", "u3", SELL, 2, 99))
    out = e.apply(lim("t", "u4", BUY, 5, 105))
    assert shorts(out) == [
        ("ACC", "t"),
        ("TRADE", 99, 2, "t", "c"),
        ("END", "c", "FILLED", "FILLED", 0),
        ("TRADE", 100, 2, "t", "a"),
        ("END", "a", "FILLED", "FILLED", 0),
        ("TRADE", 100, 1, "t", "b"),
        # buyer held 5*105 = 525, spent 198 + 300 = 498: 27 is price improvement
        ("END", "t", "FILLED", "FILLED", 27),
    ]
    assert [r.seq for r in out] == list(range(out[0].seq, out[0].seq + len(out)))
    trade = out[1]
    assert isinstance(trade, Trade)
    assert trade.trade_id == f"BTC/USDT:{trade.seq}"
    assert e.depth(SELL, 5) == [(100, 1, 1)]
    e.validate()


def test_fees_in_received_asset_floor(make_engine: Any) -> None:
    e: MatchingEngine = make_engine(maker_fee_ppm=1_000, taker_fee_ppm=2_500)
    e.apply(lim("m", "u1", SELL, 1_999, 12_345))
    out = e.apply(lim("t", "u2", BUY, 1_999, 12_345))
    trade = out[1]
    assert isinstance(trade, Trade)
    assert trade.quote_quantity == 12_345 * 1_999
    assert trade.buyer_fee == 1_999 * 2_500 // 1_000_000  # taker buyer pays in base lots
    assert trade.seller_fee == 12_345 * 1_999 * 1_000 // 1_000_000  # maker seller, quote
    assert trade.buyer_order_id == "t"
    assert trade.seller_user_id == "u1"
    assert not trade.is_buyer_maker


def test_market_sell_by_quantity_runs_out(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("b1", "u1", BUY, 3, 100))
    out = e.apply(Place("m", "u2", SELL, MARKET, quantity=5, tif=TimeInForce.IOC))
    assert shorts(out)[1:] == [
        ("TRADE", 100, 3, "m", "b1"),
        ("END", "b1", "FILLED", "FILLED", 0),
        ("END", "m", "EXPIRED", "NO_LIQUIDITY", 2),
    ]


def test_market_buy_by_funds_runs_out_mid_level(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("a1", "u1", SELL, 3, 100))
    e.apply(lim("a2", "u1", SELL, 5, 101))
    out = e.apply(Place("m", "u2", BUY, MARKET, funds=500, tif=TimeInForce.IOC))
    assert shorts(out)[1:] == [
        ("TRADE", 100, 3, "m", "a1"),
        ("END", "a1", "FILLED", "FILLED", 0),
        ("TRADE", 101, 1, "m", "a2"),
        ("END", "m", "FILLED", "FILLED", 500 - 300 - 101),
    ]
    assert e.depth(SELL, 1) == [(101, 4, 1)]


def test_market_buy_by_quantity_with_funds_cap(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("a1", "u1", SELL, 3, 100))
    e.apply(lim("a2", "u1", SELL, 5, 200))
    out = e.apply(Place("m", "u2", BUY, MARKET, quantity=4, funds=10_000, tif=TimeInForce.IOC))
    assert shorts(out)[-1] == ("END", "m", "FILLED", "FILLED", 10_000 - 300 - 200)
    out = e.apply(Place("n", "u2", BUY, MARKET, quantity=4, funds=300, tif=TimeInForce.IOC))
    assert shorts(out)[1:] == [
        ("TRADE", 200, 1, "n", "a2"),
        ("END", "n", "EXPIRED", "FUNDS_EXHAUSTED", 100),
    ]


def test_ioc_remainder_expires(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("a", "u1", SELL, 2, 100))
    out = e.apply(lim("t", "u2", BUY, 5, 101, tif=TimeInForce.IOC))
    assert shorts(out)[-1] == ("END", "t", "EXPIRED", "IOC_REMAINDER", 5 * 101 - 200)
    assert e.best_bid() is None


def test_fok_fills_or_rejects_without_effects(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("a", "u1", SELL, 2, 100))
    e.apply(lim("b", "u1", SELL, 2, 101))
    before = e.state_hash()
    out = e.apply(lim("t", "u2", BUY, 5, 101, tif=TimeInForce.FOK))
    assert shorts(out) == [("REJ", "MATCHING_FOK_NOT_FILLABLE")]
    assert out[0].release == 5 * 101  # type: ignore[union-attr]
    after = e.snapshot()
    assert after["seq"] == e.seq
    assert e.state_hash() != before  # only the seq and the dedup window moved
    assert list(e.recent)[-1] == "t"  # an answered id is never accepted again
    e.seq -= 1
    e.recent.pop()
    e.recent_set.discard("t")
    assert e.state_hash() == before
    e.seq += 1
    out = e.apply(lim("t2", "u2", BUY, 4, 101, tif=TimeInForce.FOK))
    assert shorts(out)[-1] == ("END", "t2", "FILLED", "FILLED", 4 * 101 - 402)


def test_fok_against_stp_blocked_liquidity(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("own", "u1", SELL, 3, 100))
    e.apply(lim("other", "u2", SELL, 3, 101))
    for mode in (StpMode.EXPIRE_TAKER, StpMode.EXPIRE_BOTH, StpMode.DECREMENT):
        out = e.apply(lim(f"t-{mode}", "u1", BUY, 3, 101, tif=TimeInForce.FOK, stp=mode))
        assert shorts(out) == [("REJ", "MATCHING_FOK_NOT_FILLABLE")]
    # EXPIRE_MAKER: own liquidity does not count, but others' can fill it all.
    out = e.apply(lim("t4", "u1", BUY, 4, 101, tif=TimeInForce.FOK, stp=StpMode.EXPIRE_MAKER))
    assert shorts(out) == [("REJ", "MATCHING_FOK_NOT_FILLABLE")]
    assert e.depth(SELL, 5) == [(100, 3, 1), (101, 3, 1)]
    out = e.apply(lim("t5", "u1", BUY, 3, 101, tif=TimeInForce.FOK, stp=StpMode.EXPIRE_MAKER))
    assert shorts(out) == [
        ("ACC", "t5"),
        ("STP", "t5", "own", 3),
        ("END", "own", "EXPIRED", "STP", 3),
        ("TRADE", 101, 3, "t5", "other"),
        ("END", "other", "FILLED", "FILLED", 0),
        ("END", "t5", "FILLED", "FILLED", 0),
    ]
    e.validate()


@pytest.mark.parametrize(
    ("mode", "expected", "rest_ask"),
    [
        (
            StpMode.NONE,
            [("TRADE", 100, 2, "t", "own"), ("END", "own", "FILLED", "FILLED", 0)],
            [],
        ),
        (
            StpMode.EXPIRE_TAKER,
            [("STP", "t", "own", 2), ("END", "t", "EXPIRED", "STP", 200)],
            [(100, 2, 1)],
        ),
        (
            StpMode.EXPIRE_MAKER,
            [
                ("STP", "t", "own", 2),
                ("END", "own", "EXPIRED", "STP", 2),
                ("END", "t", "EXPIRED", "IOC_REMAINDER", 200),
            ],
            [],
        ),
        (
            StpMode.EXPIRE_BOTH,
            [
                ("STP", "t", "own", 2),
                ("END", "own", "EXPIRED", "STP", 2),
                ("END", "t", "EXPIRED", "STP", 200),
            ],
            [],
        ),
        (
            StpMode.DECREMENT,
            [
                ("STP", "t", "own", 2),
                ("END", "own", "EXPIRED", "STP", 2),
                ("END", "t", "EXPIRED", "STP", 200),
            ],
            [],
        ),
    ],
)
def test_stp_modes(
    make_engine: Any,
    shorts: Shorts,
    mode: StpMode,
    expected: list[tuple[Any, ...]],
    rest_ask: list[tuple[int, int, int]],
) -> None:
    e = make_engine()
    e.apply(lim("own", "u1", SELL, 2, 100))
    out = e.apply(lim("t", "u1", BUY, 2, 100, stp=mode, tif=TimeInForce.IOC))
    assert shorts(out)[1:] == (
        expected + ([("END", "t", "FILLED", "FILLED", 0)] if mode is StpMode.NONE else [])
    )
    assert e.depth(SELL, 5) == rest_ask
    e.validate()


def test_stp_decrement_partial(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("own", "u1", SELL, 2, 100))
    e.apply(lim("other", "u2", SELL, 5, 100))
    out = e.apply(lim("t", "u1", BUY, 5, 100, stp=StpMode.DECREMENT))
    assert shorts(out)[1:] == [
        ("STP", "t", "own", 2),
        ("END", "own", "EXPIRED", "STP", 2),
        ("TRADE", 100, 3, "t", "other"),
        ("END", "t", "FILLED", "FILLED", 200),
    ]
    ended = out[-1]
    assert isinstance(ended, OrderEnded)
    assert (ended.filled, ended.cancelled) == (3, 2)
    assert e.depth(SELL, 1) == [(100, 2, 1)]


def test_post_only(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("a", "u1", SELL, 2, 100))
    assert shorts(e.apply(lim("p", "u2", BUY, 1, 100, post_only=True))) == [
        ("REJ", "MATCHING_POST_ONLY_WOULD_TAKE")
    ]
    assert shorts(e.apply(lim("q", "u2", BUY, 1, 99, post_only=True))) == [("ACC", "q")]
    assert e.best_bid() == 99


def test_day_and_gtd_expiry(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine(day_session_ms=1_000)
    e.apply(TimeTick(250))
    acc = e.apply(lim("d", "u1", BUY, 1, 90, tif=TimeInForce.DAY))[0]
    assert acc.expire_at == 1_000  # type: ignore[union-attr]
    e.apply(lim("g", "u1", BUY, 1, 91, tif=TimeInForce.GTD, expire_at=800))
    assert shorts(e.apply(lim("x", "u1", BUY, 1, 91, tif=TimeInForce.GTD, expire_at=250))) == [
        ("REJ", "VALIDATION_EXPIRE_AT_IN_PAST")
    ]
    assert e.apply(TimeTick(700)) == []
    assert shorts(e.apply(TimeTick(800))) == [("END", "g", "EXPIRED", "GTD_EXPIRY", 91)]
    assert shorts(e.apply(TimeTick(5_000))) == [("END", "d", "EXPIRED", "DAY_EXPIRY", 90)]
    assert shorts(e.apply(TimeTick(4_000))) == [("REJ", "VALIDATION_TIME_BACKWARDS")]
    e.validate()


def test_stop_chain(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("b1", "u9", BUY, 1, 100))
    e.apply(lim("a1", "u8", SELL, 1, 100))  # last price 100
    e.apply(lim("b2", "u9", BUY, 1, 99))
    e.apply(lim("b3", "u9", BUY, 1, 98))
    e.apply(lim("b4", "u9", BUY, 5, 97))
    e.apply(Place("s1", "u1", SELL, STOP, quantity=1, stop_price=99, tif=TimeInForce.IOC))
    e.apply(
        Place(
            "s2", "u2", SELL, STOP_LIMIT, quantity=2, price=97, stop_price=98, tif=TimeInForce.GTC
        )
    )
    out = e.apply(Place("m", "u3", SELL, MARKET, quantity=1, tif=TimeInForce.IOC))
    assert shorts(out)[1:] == [
        ("TRADE", 99, 1, "m", "b2"),
        ("END", "b2", "FILLED", "FILLED", 0),
        ("END", "m", "FILLED", "FILLED", 0),
        ("TRIG", "s1", 99),
        ("TRADE", 98, 1, "s1", "b3"),
        ("END", "b3", "FILLED", "FILLED", 0),
        ("END", "s1", "FILLED", "FILLED", 0),
        ("TRIG", "s2", 98),
        ("TRADE", 97, 2, "s2", "b4"),
        ("END", "s2", "FILLED", "FILLED", 0),
    ]
    e.validate()


def test_stop_pending_then_cancel(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    acc = e.apply(Place("s", "u1", BUY, STOP, funds=1_000, stop_price=150, tif=TimeInForce.IOC))[0]
    assert acc.status is OrderStatus.PENDING  # type: ignore[union-attr]
    assert e.order_state("s")["status"] == "PENDING"  # type: ignore[index]
    assert shorts(e.apply(Cancel("u1", "s"))) == [("END", "s", "CANCELLED", "USER_CANCEL", 1000)]
    e.validate()


def test_amend_on_partially_filled(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("a", "u1", BUY, 10, 100))
    e.apply(lim("b", "u2", BUY, 10, 100))
    e.apply(lim("s", "u3", SELL, 4, 100))  # a: filled 4, remaining 6
    # reduce keeps priority: a stays ahead of b
    out = e.apply(Amend("a", "u1", quantity=8))
    assert shorts(out) == [("AMEND", "a", True, -200)]
    assert shorts(e.apply(lim("s2", "u3", SELL, 1, 100)))[1] == ("TRADE", 100, 1, "s2", "a")
    # below what is filled: rejected
    assert shorts(e.apply(Amend("a", "u1", quantity=5))) == [
        ("REJ", "VALIDATION_AMEND_BELOW_FILLED")
    ]
    # a needs 500 spent + 100 * 3 open = 800 held, exactly its hold: nothing more is held,
    # so amends that need more (quantity up, price up on a buy) are refused, book unchanged
    exceeds = [("REJ", "MATCHING_AMEND_EXCEEDS_HOLD")]
    assert shorts(e.apply(Amend("a", "u1", quantity=9))) == exceeds
    e.apply(lim("x", "u4", SELL, 2, 101))
    assert shorts(e.apply(Amend("a", "u1", price=102))) == exceeds
    # a price cut fits in the hold, loses priority and frees the difference
    assert shorts(e.apply(Amend("a", "u1", price=99))) == [("AMEND", "a", False, -3)]
    assert shorts(e.apply(lim("s3", "u3", SELL, 1, 99)))[1] == ("TRADE", 100, 1, "s3", "b")
    state = e.order_state("a")
    assert state is not None
    assert (state["filled"], state["remaining"], state["price"]) == (5, 3, 99)
    assert state["reserved"] - state["spent"] == 3 * 99
    e.validate()


def test_cancel_by_client_id_and_mass_cancel(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("a", "u1", BUY, 1, 90, client_order_id="c1"))
    e.apply(lim("b", "u1", SELL, 1, 110))
    e.apply(lim("c", "u1", BUY, 1, 91))
    e.apply(lim("d", "u2", BUY, 1, 92))
    assert shorts(e.apply(Cancel("u1", client_order_id="c1"))) == [
        ("END", "a", "CANCELLED", "USER_CANCEL", 90)
    ]
    assert shorts(e.apply(MassCancel("u1", Side.BUY))) == [
        ("END", "c", "CANCELLED", "MASS_CANCEL", 91)
    ]
    assert shorts(e.apply(MassCancel("u1"))) == [("END", "b", "CANCELLED", "MASS_CANCEL", 1)]
    assert e.apply(MassCancel("u1")) == []
    assert e.depth(BUY, 5) == [(92, 1, 1)]


def test_trading_states(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    e.apply(lim("a", "u1", BUY, 1, 90))
    assert shorts(e.apply(SetTradingState(TradingState.HALT))) == [("STATE", "HALT")]
    assert shorts(e.apply(lim("b", "u1", BUY, 1, 90))) == [("REJ", "MATCHING_SYMBOL_HALTED")]
    assert shorts(e.apply(Cancel("u1", "a"))) == [("REJ", "MATCHING_SYMBOL_HALTED")]
    e.apply(SetTradingState(TradingState.CANCEL_ONLY))
    assert shorts(e.apply(lim("b2", "u1", BUY, 1, 90))) == [("REJ", "MATCHING_SYMBOL_CANCEL_ONLY")]
    # A rejected id was answered: it is never accepted again, whatever the state.
    assert shorts(e.apply(lim("b", "u1", BUY, 1, 90))) == [("REJ", "MATCHING_DUPLICATE_ORDER_ID")]
    assert shorts(e.apply(Amend("a", "u1", quantity=2))) == [("REJ", "MATCHING_SYMBOL_CANCEL_ONLY")]
    e.apply(SetTradingState(TradingState.POST_ONLY))
    assert shorts(e.apply(lim("s", "u2", SELL, 1, 90))) == [
        ("REJ", "MATCHING_POST_ONLY_WOULD_TAKE")
    ]
    assert shorts(e.apply(Place("m", "u2", SELL, MARKET, quantity=1, tif=TimeInForce.IOC))) == [
        ("REJ", "MATCHING_SYMBOL_POST_ONLY")
    ]
    assert shorts(e.apply(lim("s2", "u2", SELL, 1, 95))) == [("ACC", "s2")]
    e.apply(SetTradingState(TradingState.LIMIT_ONLY))
    assert shorts(e.apply(Place("m2", "u2", SELL, MARKET, quantity=1, tif=TimeInForce.IOC))) == [
        ("REJ", "MATCHING_SYMBOL_LIMIT_ONLY")
    ]
    assert shorts(e.apply(lim("t", "u2", SELL, 1, 90)))[1] == ("TRADE", 90, 1, "t", "a")
    e.validate()


def test_price_band_and_max_open_orders(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine(price_band_bps=500, reference_price=1_000, max_open_orders=2)
    assert shorts(e.apply(lim("a", "u1", BUY, 1, 949))) == [("REJ", "MATCHING_PRICE_OUT_OF_BAND")]
    assert shorts(e.apply(lim("a2", "u1", BUY, 1, 950))) == [("ACC", "a2")]
    assert shorts(e.apply(lim("b", "u1", SELL, 1, 1_050))) == [("ACC", "b")]
    assert shorts(e.apply(lim("c", "u1", SELL, 1, 1_040))) == [("REJ", "MATCHING_MAX_OPEN_ORDERS")]
    # IOC orders never rest, so the cap does not apply
    out = e.apply(lim("d", "u1", SELL, 1, 1_040, tif=TimeInForce.IOC))
    assert shorts(out)[-1][:4] == ("END", "d", "EXPIRED", "IOC_REMAINDER")
    assert shorts(e.apply(SetTradingState(TradingState.TRADING, reference_price=2_000))) == [
        ("STATE", "TRADING")
    ]
    assert shorts(e.apply(lim("e", "u2", BUY, 1, 1_000))) == [("REJ", "MATCHING_PRICE_OUT_OF_BAND")]


def test_place_request_strings(make_engine: Any, shorts: Shorts) -> None:
    e = make_engine()
    out = e.apply(PlaceRequest("a", "u1", "SELL", "LIMIT", quantity="1.5", price="50000.25"))
    assert shorts(out) == [("ACC", "a")]
    assert e.depth(SELL, 1) == [(5_000_025, 1_500, 1)]
    assert e.rules.price_scale.format(5_000_025) == "50000.25"
    out = e.apply(PlaceRequest("b", "u2", "BUY", "MARKET", funds="75000.375", tif="IOC"))
    assert shorts(out)[1] == ("TRADE", 5_000_025, 1_500, "b", "a")
    assert e.rules.quote_scale.format(out[1].quote_quantity) == "75000.37500"  # type: ignore[union-attr]


def test_every_end_releases_exactly(make_engine: Any) -> None:
    """Across a small scenario: per order, used hold + release == reserved."""
    e = make_engine()
    recs: list[Execution] = []
    recs += e.apply(lim("a", "u1", SELL, 5, 100))
    recs += e.apply(lim("b", "u2", BUY, 3, 105))
    recs += e.apply(Place("c", "u3", BUY, MARKET, funds=777, tif=TimeInForce.IOC))
    recs += e.apply(lim("d", "u4", BUY, 4, 99))
    recs += e.apply(Cancel("u4", "d"))
    ended = {r.order_id: r for r in recs if isinstance(r, OrderEnded)}
    for r in ended.values():
        used = r.quote_filled if r.order_id in {"b", "c", "d"} else r.filled
        assert used + r.release == r.reserved
    assert ended["c"].reason is EndReason.NO_LIQUIDITY
    assert not e.orders
    assert RejectCode.MATCHING_UNKNOWN_ORDER.value == "MATCHING_UNKNOWN_ORDER"


def test_regression_pending_stop_buy_by_funds_validates(make_engine: Any) -> None:
    """Shrunk by the state machine: a pending STOP buy has no quantity and no price."""
    e = make_engine()
    e.apply(Place("s", "u0", BUY, STOP, funds=105, stop_price=95, tif=TimeInForce.IOC))
    e.validate()
    assert MatchingEngine.restore(e.snapshot()).state_hash() == e.state_hash()
