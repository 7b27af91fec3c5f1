"""The static rules of a place: parsing, the static checks and the holds, on their own
and against the engine (the gateway and the risk stage rely on their agreeing)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from trade_engine.tables.matching import (
    MatchingEngine,
    OrderType,
    Place,
    PlaceRequest,
    RejectCode,
    Rejected,
    Side,
    StpMode,
    SymbolRules,
    TimeInForce,
)
from trade_engine.tables.matching.checks import (
    amended_hold,
    parse_place,
    required_hold,
    static_problem,
)
from trade_engine.tables.matching.exceptions import NumberFormatError
from trade_engine.tables.matching.order import Order

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET, STOP, STOP_LIMIT = (
    OrderType.LIMIT,
    OrderType.MARKET,
    OrderType.STOP,
    OrderType.STOP_LIMIT,
)
IOC, FOK, GTD = TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTD
# tick 0.01, step 0.001: a quote unit is 0.00001
RULES = SymbolRules("BTC/USDT", "0.01", "0.001", min_qty=2, min_notional=1_000)


def test_parse_place_puts_every_number_on_the_symbols_grid() -> None:
    request = PlaceRequest(
        "o1",
        "u1",
        "BUY",
        "STOP_LIMIT",
        quantity="0.5",
        price="50000.01",
        stop_price="49000",
        tif="GTD",
        client_order_id="c1",
        stp="EXPIRE_BOTH",
        post_only=True,
        expire_at=7,
    )
    assert parse_place(request, RULES) == Place(
        "o1",
        "u1",
        BUY,
        STOP_LIMIT,
        quantity=500,
        price=5_000_001,
        stop_price=4_900_000,
        tif=GTD,
        client_order_id="c1",
        stp=StpMode.EXPIRE_BOTH,
        post_only=True,
        expire_at=7,
    )
    funds = PlaceRequest("o2", "u1", "BUY", "MARKET", funds="1.00001", tif="IOC")
    assert parse_place(funds, RULES).funds == 100_001


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("price", "1.001", RejectCode.VALIDATION_PRICE_OFF_TICK),
        ("quantity", "0.0005", RejectCode.VALIDATION_QUANTITY_OFF_STEP),
        ("price", "1e3", RejectCode.VALIDATION_NUMBER_FORMAT),
    ],
)
def test_parse_place_refuses_numbers_off_the_grid(field: str, value: str, code: RejectCode) -> None:
    request = replace(PlaceRequest("o1", "u1", "BUY", "LIMIT", "1", "1"), **{field: value})
    with pytest.raises(NumberFormatError) as caught:
        parse_place(request, RULES)
    assert caught.value.reject is code


@pytest.mark.parametrize(
    ("field", "value"),
    [("side", "BUYY"), ("order_type", "ICEBERG"), ("tif", "GTX"), ("stp", "x"), ("side", ["BUY"])],
)
def test_parse_place_refuses_unknown_enums_with_value_error(field: str, value: object) -> None:
    request = replace(PlaceRequest("o1", "u1", "BUY", "LIMIT", "1", "1"), **{field: value})
    with pytest.raises(ValueError, match="is not a valid"):
        parse_place(request, RULES)


STATIC: list[tuple[str, Place, RejectCode | None]] = [
    ("a good limit", Place("n", "u", BUY, LIMIT, 2, 500), None),
    ("a good market buy", Place("n", "u", BUY, MARKET, funds=1_000, tif=IOC), None),
    ("a good stop sell", Place("n", "u", SELL, STOP, 2, stop_price=9, tif=FOK), None),
    ("limit, no price", Place("n", "u", BUY, LIMIT, 2), RejectCode.VALIDATION_PRICE_REQUIRED),
    ("limit, price 0", Place("n", "u", BUY, LIMIT, 2, 0), RejectCode.VALIDATION_PRICE_NOT_POSITIVE),
    (
        "market with a price",
        Place("n", "u", SELL, MARKET, 2, 1, tif=IOC),
        RejectCode.VALIDATION_PRICE_NOT_ALLOWED,
    ),
    (
        "stop, no stop price",
        Place("n", "u", SELL, STOP, 2, tif=IOC),
        RejectCode.VALIDATION_STOP_PRICE_REQUIRED,
    ),
    (
        "stop price on a limit",
        Place("n", "u", BUY, LIMIT, 2, 500, stop_price=4),
        RejectCode.VALIDATION_STOP_PRICE_NOT_ALLOWED,
    ),
    (
        "market buy, no funds",
        Place("n", "u", BUY, MARKET, 2, tif=IOC),
        RejectCode.VALIDATION_FUNDS_REQUIRED,
    ),
    (
        "market buy, funds below min notional",
        Place("n", "u", BUY, MARKET, funds=999, tif=IOC),
        RejectCode.VALIDATION_NOTIONAL_BELOW_MIN,
    ),
    (
        "funds on a sell",
        Place("n", "u", SELL, MARKET, 2, funds=5, tif=IOC),
        RejectCode.VALIDATION_FUNDS_NOT_ALLOWED,
    ),
    ("no quantity", Place("n", "u", SELL, LIMIT, price=5), RejectCode.VALIDATION_QUANTITY_REQUIRED),
    (
        "quantity below min",
        Place("n", "u", BUY, LIMIT, 1, 5_000),
        RejectCode.VALIDATION_QUANTITY_BELOW_MIN,
    ),
    (
        "notional below min",
        Place("n", "u", BUY, LIMIT, 2, 499),
        RejectCode.VALIDATION_NOTIONAL_BELOW_MIN,
    ),
    ("market GTC", Place("n", "u", SELL, MARKET, 2), RejectCode.VALIDATION_TIF_NOT_ALLOWED),
    (
        "market buy by funds FOK",
        Place("n", "u", BUY, MARKET, funds=1_000, tif=FOK),
        RejectCode.VALIDATION_TIF_NOT_ALLOWED,
    ),
    (
        "post-only IOC",
        Place("n", "u", BUY, LIMIT, 2, 500, tif=IOC, post_only=True),
        RejectCode.VALIDATION_POST_ONLY_NOT_ALLOWED,
    ),
    (
        "GTD, no expire_at",
        Place("n", "u", BUY, LIMIT, 2, 500, tif=GTD),
        RejectCode.VALIDATION_EXPIRE_AT_REQUIRED,
    ),
    (
        "expire_at on GTC",
        Place("n", "u", BUY, LIMIT, 2, 500, expire_at=9),
        RejectCode.VALIDATION_EXPIRE_AT_NOT_ALLOWED,
    ),
]


@pytest.mark.parametrize(("name", "place", "code"), STATIC, ids=[c[0] for c in STATIC])
def test_static_problem_is_what_the_engine_rejects_first(
    name: str, place: Place, code: RejectCode | None
) -> None:
    problem = static_problem(place, RULES)
    assert (None if problem is None else problem[0]) is code
    if code is not None:
        [record] = MatchingEngine(RULES).apply(place)
        assert isinstance(record, Rejected)
        assert record.code is code
        assert record.release == required_hold(place)


@pytest.mark.parametrize(
    ("place", "hold"),
    [
        (Place("n", "u", BUY, LIMIT, 3, 500), 1_500),
        (Place("n", "u", BUY, STOP_LIMIT, 3, 500, stop_price=4), 1_500),
        (Place("n", "u", BUY, MARKET, 3, funds=7_000, tif=IOC), 7_000),
        (Place("n", "u", BUY, STOP, funds=7_000, stop_price=4, tif=IOC), 7_000),
        (Place("n", "u", SELL, LIMIT, 3, 500), 3),
        (Place("n", "u", SELL, MARKET, 3, tif=IOC), 3),
        (Place("n", "u", BUY, LIMIT, 3), 0),  # no price: rejected, holds nothing
        (Place("n", "u", BUY, MARKET, tif=IOC), 0),
        (Place("n", "u", SELL, LIMIT, -3, 500), 0),  # never negative
        (Place("n", "u", BUY, LIMIT, 3, -500), 0),
    ],
)
def test_required_hold_is_quote_for_buys_and_lots_for_sells(place: Place, hold: int) -> None:
    assert required_hold(place) == hold


def test_amended_hold_keeps_what_is_spent_and_holds_the_rest_at_the_new_price() -> None:
    buy = Order.from_place(Place("b", "u", BUY, LIMIT, 10, 500), None, 5_000)
    buy.filled, buy.spent, buy.cancelled = 4, 1_960, 1  # 4 lots filled at 490
    assert amended_hold(buy, 400, 8) == 1_960 + 400 * 3
    assert amended_hold(buy, 500, 10) == 1_960 + 500 * 5
    sell = Order.from_place(Place("s", "u", SELL, LIMIT, 10, 500), None, 10)
    sell.filled = 4
    assert amended_hold(sell, 900, 7) == 7
