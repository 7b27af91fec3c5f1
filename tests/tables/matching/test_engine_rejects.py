"""Bad commands: a stable reject code, one seq consumed, nothing else changed."""

from __future__ import annotations

from typing import Any

import pytest

from trade_engine.tables.matching import (
    Amend,
    AmendRequest,
    Cancel,
    Command,
    MatchingEngine,
    OrderType,
    Place,
    PlaceRequest,
    RejectCode,
    Rejected,
    SetTradingState,
    Side,
    TimeInForce,
    TradingState,
)
from trade_engine.tables.matching.state import hash_snapshot

BUY, SELL, LIMIT = Side.BUY, Side.SELL, OrderType.LIMIT


def _seeded(make_engine: Any, **rules: Any) -> MatchingEngine:
    e: MatchingEngine = make_engine(**rules)
    e.apply(Place("a", "u1", BUY, LIMIT, quantity=10, price=100, client_order_id="ca"))
    e.apply(Place("b", "u2", SELL, LIMIT, quantity=10, price=110))
    e.apply(Place("c", "u2", SELL, LIMIT, quantity=4, price=100))  # fills a partly, c ends
    return e


def _hash_without_seq(e: MatchingEngine) -> str:
    """The state hash minus what every reject may move: the seq, and the dedup window
    (a refused place joins it; each test checks that on its own)."""
    snap = e.snapshot()
    snap.pop("seq")
    snap.pop("recent_order_ids")
    return hash_snapshot(snap)


def _answered_ids(command: Command) -> list[str]:
    """What a refused command adds to the dedup window: a first-seen place's id."""
    if isinstance(command, Place | PlaceRequest) and command.order_id not in ("a", "b", "c"):
        return [command.order_id]
    return []


CASES: list[tuple[str, Command, RejectCode]] = [
    ("unknown order", Cancel("u1", "nope"), RejectCode.MATCHING_UNKNOWN_ORDER),
    ("filled order", Cancel("u2", "c"), RejectCode.MATCHING_UNKNOWN_ORDER),
    ("another user's", Cancel("u2", "a"), RejectCode.MATCHING_NOT_ORDER_OWNER),
    ("unknown client id", Cancel("u1", client_order_id="zz"), RejectCode.MATCHING_UNKNOWN_ORDER),
    ("no target", Cancel("u1"), RejectCode.VALIDATION_CANCEL_TARGET_REQUIRED),
    ("amend other user", Amend("a", "u2", quantity=5), RejectCode.MATCHING_NOT_ORDER_OWNER),
    ("amend unknown", Amend("x", "u2", quantity=5), RejectCode.MATCHING_UNKNOWN_ORDER),
    ("amend nothing", Amend("a", "u1"), RejectCode.VALIDATION_AMEND_NOTHING),
    ("amend same", Amend("a", "u1", quantity=10), RejectCode.VALIDATION_AMEND_NOTHING),
    ("amend zero", Amend("a", "u1", quantity=0), RejectCode.VALIDATION_QUANTITY_NOT_POSITIVE),
    ("amend <= filled", Amend("a", "u1", quantity=4), RejectCode.VALIDATION_AMEND_BELOW_FILLED),
    (
        "duplicate order id (live)",
        Place("a", "u1", BUY, LIMIT, quantity=2, price=1),
        RejectCode.MATCHING_DUPLICATE_ORDER_ID,
    ),
    (
        "duplicate order id (ended, in window)",
        Place("c", "u1", BUY, LIMIT, quantity=2, price=1),
        RejectCode.MATCHING_DUPLICATE_ORDER_ID,
    ),
    (
        "duplicate client order id",
        Place("n", "u1", BUY, LIMIT, quantity=2, price=1, client_order_id="ca"),
        RejectCode.MATCHING_DUPLICATE_CLIENT_ORDER_ID,
    ),
    (
        "zero quantity",
        Place("n", "u1", BUY, LIMIT, quantity=0, price=1),
        RejectCode.VALIDATION_QUANTITY_NOT_POSITIVE,
    ),
    (
        "negative price",
        Place("n", "u1", BUY, LIMIT, quantity=2, price=-5),
        RejectCode.VALIDATION_PRICE_NOT_POSITIVE,
    ),
    (
        "limit without price",
        Place("n", "u1", BUY, LIMIT, quantity=2),
        RejectCode.VALIDATION_PRICE_REQUIRED,
    ),
    (
        "market with price",
        Place("n", "u1", SELL, OrderType.MARKET, quantity=2, price=1, tif=TimeInForce.IOC),
        RejectCode.VALIDATION_PRICE_NOT_ALLOWED,
    ),
    (
        "market buy without funds",
        Place("n", "u1", BUY, OrderType.MARKET, quantity=2, tif=TimeInForce.IOC),
        RejectCode.VALIDATION_FUNDS_REQUIRED,
    ),
    (
        "market GTC",
        Place("n", "u1", SELL, OrderType.MARKET, quantity=2),
        RejectCode.VALIDATION_TIF_NOT_ALLOWED,
    ),
    (
        "funds on a limit",
        Place("n", "u1", BUY, LIMIT, quantity=2, price=1, funds=5),
        RejectCode.VALIDATION_FUNDS_NOT_ALLOWED,
    ),
    (
        "stop without stop price",
        Place("n", "u1", SELL, OrderType.STOP, quantity=2, tif=TimeInForce.IOC),
        RejectCode.VALIDATION_STOP_PRICE_REQUIRED,
    ),
    (
        "post-only IOC",
        Place("n", "u1", BUY, LIMIT, quantity=2, price=1, post_only=True, tif=TimeInForce.IOC),
        RejectCode.VALIDATION_POST_ONLY_NOT_ALLOWED,
    ),
    (
        "GTD without expire_at",
        Place("n", "u1", BUY, LIMIT, quantity=2, price=1, tif=TimeInForce.GTD),
        RejectCode.VALIDATION_EXPIRE_AT_REQUIRED,
    ),
    (
        "expire_at without GTD",
        Place("n", "u1", BUY, LIMIT, quantity=2, price=1, expire_at=5),
        RejectCode.VALIDATION_EXPIRE_AT_NOT_ALLOWED,
    ),
    (
        "post-only would take",
        Place("n", "u1", BUY, LIMIT, quantity=2, price=110, post_only=True),
        RejectCode.MATCHING_POST_ONLY_WOULD_TAKE,
    ),
    (
        "FOK not fillable",
        Place("n", "u1", BUY, LIMIT, quantity=11, price=110, tif=TimeInForce.FOK),
        RejectCode.MATCHING_FOK_NOT_FILLABLE,
    ),
    (
        "below min qty",
        Place("n", "u1", BUY, LIMIT, quantity=1, price=100),
        RejectCode.VALIDATION_QUANTITY_BELOW_MIN,
    ),
    (
        "off-tick price string",
        PlaceRequest("n", "u1", "BUY", "LIMIT", quantity="0.002", price="1.001"),
        RejectCode.VALIDATION_PRICE_OFF_TICK,
    ),
    (
        "off-step quantity string",
        PlaceRequest("n", "u1", "BUY", "LIMIT", quantity="0.0025", price="1.00"),
        RejectCode.VALIDATION_QUANTITY_OFF_STEP,
    ),
    (
        "zero quantity string",
        PlaceRequest("n", "u1", "BUY", "LIMIT", quantity="0", price="1.00"),
        RejectCode.VALIDATION_QUANTITY_NOT_POSITIVE,
    ),
    (
        "exponent",
        PlaceRequest("n", "u1", "BUY", "LIMIT", quantity="1e5", price="1.00"),
        RejectCode.VALIDATION_NUMBER_FORMAT,
    ),
    (
        "NaN",
        PlaceRequest("n", "u1", "BUY", "LIMIT", quantity="1", price="NaN"),
        RejectCode.VALIDATION_NUMBER_FORMAT,
    ),
    (
        "Infinity",
        PlaceRequest("n", "u1", "BUY", "LIMIT", quantity="1", price="Infinity"),
        RejectCode.VALIDATION_NUMBER_FORMAT,
    ),
    (
        "huge exponent",
        PlaceRequest("n", "u1", "BUY", "LIMIT", quantity="1", price="1e999999999"),
        RejectCode.VALIDATION_NUMBER_FORMAT,
    ),
    (
        "bad enum",
        PlaceRequest("n", "u1", "BUYY", "LIMIT", quantity="1", price="1"),
        RejectCode.VALIDATION_BAD_ENUM,
    ),
    (
        "amend exponent",
        AmendRequest("a", "u1", quantity="1E3"),
        RejectCode.VALIDATION_NUMBER_FORMAT,
    ),
]


@pytest.mark.parametrize(("name", "command", "code"), CASES, ids=[c[0] for c in CASES])
def test_reject_leaves_state_unchanged(
    make_engine: Any, name: str, command: Command, code: RejectCode
) -> None:
    e = _seeded(make_engine, min_qty=2)
    before, seq, window = _hash_without_seq(e), e.seq, list(e.recent)
    out = e.apply(command)
    assert len(out) == 1, name
    rec = out[0]
    assert isinstance(rec, Rejected)
    assert rec.code is code
    assert rec.seq == seq + 1
    assert _hash_without_seq(e) == before
    assert list(e.recent) == window + _answered_ids(command)
    e.validate()


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (TradingState.HALT, RejectCode.MATCHING_SYMBOL_HALTED),
        (TradingState.CANCEL_ONLY, RejectCode.MATCHING_SYMBOL_CANCEL_ONLY),
    ],
)
def test_halted_symbol_rejects_place(
    make_engine: Any, state: TradingState, code: RejectCode
) -> None:
    e = _seeded(make_engine)
    e.apply(SetTradingState(state))
    before = _hash_without_seq(e)
    out = e.apply(Place("n", "u3", BUY, LIMIT, quantity=2, price=1))
    assert isinstance(out[0], Rejected)
    assert out[0].code is code
    assert out[0].release == 2
    assert _hash_without_seq(e) == before


def test_rejected_place_releases_its_hold(make_engine: Any) -> None:
    e = _seeded(make_engine)
    out = e.apply(Place("n", "u1", BUY, LIMIT, quantity=3, price=110, post_only=True))
    assert isinstance(out[0], Rejected)
    assert out[0].release == 330


def test_halt_release_is_the_hold(make_engine: Any) -> None:
    assert _seeded(make_engine).apply(Place("z", "u9", SELL, LIMIT, quantity=7, price=500))


def test_duplicate_order_id_releases_nothing(make_engine: Any) -> None:
    """The hold named by a duplicate id is the original order's: it must stay held."""
    e = _seeded(make_engine)
    out = e.apply(Place("a", "u1", BUY, LIMIT, quantity=2, price=1))
    assert isinstance(out[0], Rejected)
    assert out[0].code is RejectCode.MATCHING_DUPLICATE_ORDER_ID
    assert out[0].release == 0
