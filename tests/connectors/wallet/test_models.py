"""Wire models: strict decimal amounts, settle-trade consistency, request hashes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from trade_engine.connectors.wallet.exceptions import (
    CircuitOpenError,
    InsufficientBalanceError,
    UnavailableError,
    WalletError,
    error_from_body,
)
from trade_engine.connectors.wallet.models import (
    ReserveRequest,
    SettleTradeRequest,
    format_amount,
    parse_amount,
)


@pytest.mark.parametrize("text", ["0", "1", "1000.5", "0.000000000000000001", "9" * 20])
def test_amounts_accepted(text: str) -> None:
    assert parse_amount(text) == Decimal(text)


@pytest.mark.parametrize(
    "value",
    [
        "-1",
        "1e5",
        "NaN",
        "Infinity",
        "01",
        ".5",
        "5.",
        " 1",
        "1.0000000000000000001",
        "9" * 21,
        "1" * 10_000,
        1.5,
        2,
        None,
    ],
)
def test_amounts_rejected(value: object) -> None:
    with pytest.raises(ValueError, match=r"decimal"):
        parse_amount(value)


def test_format_is_canonical() -> None:
    assert format_amount(Decimal("1000.000")) == "1000"
    assert format_amount(Decimal("1E+3")) == "1000"
    assert format_amount(Decimal("0.0500")) == "0.05"
    assert format_amount(Decimal("0E-18")) == "0"


def test_reserve_needs_a_positive_amount() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        ReserveRequest(user_id="u1", asset="USDT", amount="0", order_id="o1")  # type: ignore[arg-type]


def test_equal_amounts_hash_equal() -> None:
    a = ReserveRequest(user_id="u1", asset="USDT", amount="100", order_id="o1")  # type: ignore[arg-type]
    b = ReserveRequest(user_id="u1", asset="USDT", amount="100.00", order_id="o1")  # type: ignore[arg-type]
    c = ReserveRequest(user_id="u1", asset="USDT", amount="100.01", order_id="o1")  # type: ignore[arg-type]
    assert a.request_hash() == b.request_hash() != c.request_hash()


def _trade(**over: object) -> SettleTradeRequest:
    fields: dict[str, object] = {
        "trade_id": "BTC/USDT:7",
        "buyer_user_id": "b",
        "seller_user_id": "s",
        "buyer_order_id": "ob",
        "seller_order_id": "os",
        "base_asset": "BTC",
        "quote_asset": "USDT",
        "quantity": "0.5",
        "price": "50000.00",
    }
    return SettleTradeRequest.model_validate(fields | over)


def test_settle_notional_and_checks() -> None:
    assert _trade().notional() == Decimal(25000)
    assert _trade(quote_quantity="25000.000").quote_quantity == Decimal(25000)
    for bad, message in [
        ({"quote_quantity": "25000.01"}, "quote_quantity must equal"),
        ({"buyer_fee_asset": "USDT"}, "buyer_fee_asset"),
        ({"seller_fee": "25000.01"}, "seller_fee exceeds"),
        ({"buyer_fee": "0.6"}, "buyer_fee exceeds"),
        ({"seller_order_id": "ob"}, "must differ"),
        ({"symbol": "ETH/USDT"}, "symbol"),
        ({"price": "0.0000000001", "quantity": "0.000000001"}, "more than 18 decimals"),
        ({"extra": 1}, "Extra inputs"),
    ]:
        with pytest.raises(ValidationError, match=message):
            _trade(**bad)


def test_error_bodies_map_to_types() -> None:
    body = {"code": "INSUFFICIENT_BALANCE", "message": "no", "details": {"a": 1}}
    err = error_from_body(422, body)
    assert isinstance(err, InsufficientBalanceError)
    assert (err.code, err.retriable, err.details) == ("INSUFFICIENT_BALANCE", False, {"a": 1})
    assert isinstance(error_from_body(503, None), UnavailableError)
    assert error_from_body(429, {"code": "RATE_LIMITED", "message": "slow"}).retriable
    unknown = error_from_body(418, {"code": "TEAPOT", "message": "?"})
    assert type(unknown) is WalletError
    assert unknown.code == "TEAPOT"
    assert CircuitOpenError("x").retriable
