"""Settlement's pure parts: which wallet call each execution record needs, how a batch
is cut into phases that keep each order's operations in log order, and the headers
of a dead letter (``streams.dead_letter``, with the redrive's ``keep_origin``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from trade_engine.agents.settlement.plan import (
    STAGE,
    BadRecordError,
    WalletOp,
    phases,
    plan,
)
from trade_engine.connectors.wallet import wire
from trade_engine.connectors.wallet.models import (
    ReleaseRequest,
    ReserveRequest,
    SettleTradeRequest,
)
from trade_engine.streams.codec import header
from trade_engine.streams.dead_letter import dead_letter
from trade_engine.streams.records import ConsumedRecord

ENVELOPE = {"v": 1, "input": {"partition": 0, "offset": 3}, "at": "2026-12-03T10:00:00.000Z"}
TRADE = {
    **ENVELOPE,
    "symbol": "BTC/USDT",
    "seq": 7,
    "kind": "TRADE",
    "trade_id": "BTC/USDT:7",
    "price": "50000.00",
    "quantity": "0.50000",
    "quote_quantity": "25000.0000000",
    "taker_side": "BUY",
    "taker_order_id": "b1",
    "taker_user_id": "ub",
    "maker_order_id": "s1",
    "maker_user_id": "us",
    "buyer_fee": "0.00050",
    "seller_fee": "25.0000000",
    "taker_remaining": "0.00000",
    "maker_remaining": "0.50000",
    "buyer_order_id": "b1",
    "seller_order_id": "s1",
    "buyer_user_id": "ub",
    "seller_user_id": "us",
    "buyer_fee_asset": "BTC",
    "seller_fee_asset": "USDT",
    "is_buyer_maker": False,
}
ENDED = {
    "reason": "USER_CANCEL",
    "filled": "0.00000",
    "quote_filled": "0.0000000",
    "cancelled": "0.25000",
    "reserved": "12.5000000",
}
ACCEPTED = {
    "order_id": "b1",
    "user_id": "ub",
    "side": "BUY",
    "order_type": "LIMIT",
    "tif": "GTC",
    "price": "50000.00",
    "quantity": "0.25000",
    "stp": "NONE",
    "post_only": False,
    "reserved": "12500.0000000",
    "status": "OPEN",
}
AMENDED = {"price": "1.00", "quantity": "1.00000", "remaining": "1.00000", "reserved": "1.00000"}


def _raw(**fields: Any) -> bytes:
    """An execution record: the envelope, then ``fields``."""
    return json.dumps({**ENVELOPE, **fields}).encode()


def _same_as_pydantic(model: Any, item: wire.Item) -> None:
    """The pydantic request of the same fields: same payload, same request hash."""
    request = model.model_validate(wire.to_builtins(item))
    assert wire.to_builtins(item) == request.model_dump(mode="json")
    assert wire.request_hash(item) == request.request_hash()


def test_plan_per_record_kind() -> None:
    settle = plan(json.dumps(TRADE).encode())
    assert settle is not None
    assert settle.kind == "settle"
    assert isinstance(settle.request, wire.SettleItem)
    assert settle.request.trade_id == "BTC/USDT:7"
    assert settle.request.quote_quantity == "25000"
    _same_as_pydantic(SettleTradeRequest, settle.request)
    assert (settle.request.base_asset, settle.request.quote_asset) == ("BTC", "USDT")
    assert settle.orders == ("b1", "s1")

    ended = dict(symbol="BTC/USDT", order_id="b1", user_id="ub", status="CANCELLED", **ENDED)
    release = plan(_raw(kind="ORDER_ENDED", seq=9, release="12.5000000", side="BUY", **ended))
    assert release is not None
    assert isinstance(release.request, wire.ReleaseItem)
    assert (release.request.asset, release.request.amount) == ("USDT", "12.5")
    assert release.request.key == "b1"
    _same_as_pydantic(ReleaseRequest, release.request)
    assert plan(_raw(kind="ORDER_ENDED", seq=9, release="0.0000000", side="BUY", **ended)) is None

    rejected = dict(
        symbol="BTC/USDT",
        order_id="s1",
        user_id="us",
        side="SELL",
        code="RISK_REJECTED",
        message="no",
    )
    op = plan(_raw(kind="REJECTED", seq=3, request="PLACE", release="0.10000", **rejected))
    assert op is not None
    assert (op.request.asset, op.request.order_id) == ("BTC", "s1")  # type: ignore[union-attr]
    assert plan(_raw(kind="REJECTED", seq=3, request="CANCEL", release="0", **rejected)) is None

    amended = dict(
        symbol="BTC/USDT",
        order_id="s1",
        user_id="us",
        side="SELL",
        seq=11,
        priority_kept=True,
        **AMENDED,
    )
    down = plan(_raw(kind="AMENDED", reserve_delta="-0.20000", **amended))
    assert down is not None
    assert isinstance(down.request, wire.ReleaseItem)
    assert (down.request.amount, down.request.key) == ("0.2", "s1:11")
    up = plan(_raw(kind="AMENDED", reserve_delta="0.30000", **amended))
    assert up is not None
    assert isinstance(up.request, wire.ReserveItem)
    assert (up.kind, up.request.amount, up.request.key) == ("reserve", "0.3", "s1:amend:11")
    _same_as_pydantic(ReserveRequest, up.request)
    assert plan(_raw(kind="ACCEPTED", seq=1, symbol="BTC/USDT", **ACCEPTED)) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"nope",
        b"[1]",
        _raw(kind="TRADE", symbol="BTC/USDT"),
        _raw(kind="ORDER_ENDED", release="1"),
        _raw(kind="NOT_A_KIND", symbol="BTC/USDT", seq=1),
        # A release whose side is unknown cannot name the held asset.
        _raw(
            kind="REJECTED",
            symbol="BTC/USDT",
            seq=2,
            request="PLACE",
            release="1.00",
            order_id="o",
            user_id="u",
            code="RISK_REJECTED",
            message="",
        ),
        _raw(
            kind="ORDER_ENDED",
            symbol="BTC/USDT",
            seq=3,
            order_id="o",
            user_id="u",
            status="CANCELLED",
            side="BUY",
            **{**ENDED, "release": "NaN"},
        ),
    ],
)
def test_bad_records_are_named(value: bytes | None) -> None:
    with pytest.raises(BadRecordError):
        plan(value)


def _op(kind: str, *orders: str) -> WalletOp:
    return WalletOp(kind, None, orders)  # type: ignore[arg-type]


def test_phases_keep_each_orders_log_order() -> None:
    items = list(
        enumerate(
            [
                _op("settle", "a", "b"),  # 0
                _op("release", "a"),  # 1: after 0
                _op("settle", "c", "d"),  # 2: joins phase 0
                _op("settle", "b", "e"),  # 3: joins phase 0 (b's last op is there)
                _op("release", "c"),  # 4: joins phase 1
                _op("settle", "a", "f"),  # 5: after a's release: new phase
                _op("reserve", "g"),  # 6: after everything before it
                _op("release", "d"),  # 7: may run early (phase 1)
            ]
        )
    )
    got = [(kind, [i for i, _ in members]) for kind, members in phases(items)]
    assert got == [
        ("settle", [0, 2, 3]),
        ("release", [1, 4, 7]),
        ("settle", [5]),
        ("reserve", [6]),
    ]


def test_dead_letters_keep_the_origin_and_count_redrives() -> None:
    record = ConsumedRecord("te.executions", 3, 42, 0, b"k", b"v", [("trace_id", b"t")])
    value, headers = dead_letter(
        record, "RESERVATION_NOT_FOUND", "settle: no hold", stage=STAGE, keep_origin=True
    )
    assert value == b"v"
    assert header(headers, "dlq.topic") == "te.executions"
    assert (header(headers, "dlq.partition"), header(headers, "dlq.offset")) == ("3", "42")
    assert (
        header(headers, "dlq.stage"),
        header(headers, "dlq.redrives"),
        header(headers, "trace_id"),
    ) == ("settlement", "0", "t")
    again = ConsumedRecord("te.dead-letter", 0, 5, 0, b"k", b"v", headers)
    _, second = dead_letter(again, "RESERVATION_NOT_FOUND", "still", stage=STAGE, keep_origin=True)
    assert (
        header(second, "dlq.topic"),
        header(second, "dlq.offset"),
        header(second, "dlq.redrives"),
    ) == ("te.executions", "42", "1")
    assert [name for name, _ in second].count("dlq.code") == 1
    # Without keep_origin (the command stages), a forged origin is replaced by the position.
    _, forged = dead_letter(again, "DECODE_INVALID", "bad", stage="matcher")
    assert (header(forged, "dlq.topic"), header(forged, "dlq.offset")) == ("te.dead-letter", "5")
    assert header(forged, "dlq.redrives") is None
