"""Settlement's pure parts: which wallet call each execution record needs, how a batch
is cut into phases that keep each order's operations in log order, and the headers
of a dead letter.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from trade_engine.agents.settlement.plan import (
    BadRecordError,
    WalletOp,
    dead_letter_headers,
    phases,
    plan,
)
from trade_engine.connectors.wallet.models import (
    ReleaseRequest,
    ReserveRequest,
    SettleTradeRequest,
)
from trade_engine.streams.records import ConsumedRecord

TRADE = {
    "v": 1,
    "symbol": "BTC/USDT",
    "seq": 7,
    "kind": "TRADE",
    "trade_id": "BTC/USDT:7",
    "price": "50000.00",
    "quantity": "0.50000",
    "quote_quantity": "25000.0000000",
    "buyer_order_id": "b1",
    "seller_order_id": "s1",
    "buyer_user_id": "ub",
    "seller_user_id": "us",
    "buyer_fee": "0.00050",
    "seller_fee": "25.0000000",
    "buyer_fee_asset": "BTC",
    "seller_fee_asset": "USDT",
}


def _raw(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_plan_per_record_kind() -> None:
    settle = plan(json.dumps(TRADE).encode())
    assert settle is not None
    assert settle.kind == "settle"
    assert isinstance(settle.request, SettleTradeRequest)
    assert settle.request.trade_id == "BTC/USDT:7"
    assert settle.request.quote_quantity == Decimal(25000)
    assert (settle.request.base_asset, settle.request.quote_asset) == ("BTC", "USDT")
    assert settle.orders == ("b1", "s1")

    ended = dict(symbol="BTC/USDT", order_id="b1", user_id="ub", status="CANCELLED")
    release = plan(_raw(kind="ORDER_ENDED", seq=9, release="12.5000000", side="BUY", **ended))
    assert release is not None
    assert isinstance(release.request, ReleaseRequest)
    assert (release.request.asset, release.request.amount) == ("USDT", Decimal("12.5"))
    assert release.request.key == "b1"
    assert plan(_raw(kind="ORDER_ENDED", seq=9, release="0.0000000", side="BUY", **ended)) is None

    rejected = dict(symbol="BTC/USDT", order_id="s1", user_id="us", side="SELL")
    op = plan(_raw(kind="REJECTED", seq=3, request="PLACE", release="0.10000", **rejected))
    assert op is not None
    assert (op.request.asset, op.request.order_id) == ("BTC", "s1")  # type: ignore[union-attr]
    assert plan(_raw(kind="REJECTED", seq=3, request="CANCEL", release="0", **rejected)) is None

    amended = dict(symbol="BTC/USDT", order_id="s1", user_id="us", side="SELL", seq=11)
    down = plan(_raw(kind="AMENDED", reserve_delta="-0.20000", **amended))
    assert down is not None
    assert isinstance(down.request, ReleaseRequest)
    assert (down.request.amount, down.request.key) == (Decimal("0.2"), "s1:11")
    up = plan(_raw(kind="AMENDED", reserve_delta="0.30000", **amended))
    assert up is not None
    assert isinstance(up.request, ReserveRequest)
    assert (up.kind, up.request.amount, up.request.key) == (
        "reserve",
        Decimal("0.3"),
        "s1:amend:11",
    )
    assert plan(_raw(kind="ACCEPTED", seq=1, symbol="BTC/USDT")) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"nope",
        b"[1]",
        _raw(kind="TRADE", symbol="BTC/USDT"),
        _raw(kind="ORDER_ENDED", release="1"),
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


def test_dead_letter_headers_keep_the_origin() -> None:
    record = ConsumedRecord("te.executions", 3, 42, 0, b"k", b"v", [("trace_id", b"t")])
    headers = dead_letter_headers(record, "RESERVATION_NOT_FOUND", "settle: no hold")
    assert headers["dlq.topic"] == b"te.executions"
    assert (headers["dlq.partition"], headers["dlq.offset"]) == (b"3", b"42")
    assert (headers["dlq.stage"], headers["dlq.redrives"], headers["trace_id"]) == (
        b"settlement",
        b"0",
        b"t",
    )
    again = ConsumedRecord("te.dead-letter", 0, 5, 0, b"k", b"v", list(headers.items()))
    second = dead_letter_headers(again, "RESERVATION_NOT_FOUND", "still")
    assert (second["dlq.topic"], second["dlq.offset"], second["dlq.redrives"]) == (
        b"te.executions",
        b"42",
        b"1",
    )
