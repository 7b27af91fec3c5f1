"""Request and response bodies of the wallet API (pydantic), shared by service and client.

Amounts are decimal strings on the wire, parsed strictly (no sign, exponent,
NaN or leading zeros; at most 20 integer and 18 fractional digits, the range of
the ledger's ``numeric(38,18)``) and rendered without trailing zeros.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, localcontext
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?$")
_MAX_AMOUNT_CHARS = 39
MAX_BATCH_ITEMS = 1000
SYSTEM_USER = "@system"


def parse_amount(value: Any) -> Decimal:
    if isinstance(value, Decimal) and value.is_finite() and value >= 0:
        value = format_amount(value)
    if not isinstance(value, str):
        raise ValueError("must be a decimal string such as '1000.50'")
    # Length first, so an enormous input never reaches the regex or Decimal.
    if len(value) > _MAX_AMOUNT_CHARS or not _AMOUNT.match(value):
        raise ValueError(f"not a plain decimal with <=20+18 digits: {value[:40]!r}")
    return Decimal(value)


def format_amount(value: Decimal) -> str:
    """Canonical text: plain notation, no trailing zeros (``Decimal('1E+3')`` -> ``'1000'``)."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


_Serialize = PlainSerializer(format_amount, return_type=str, when_used="always")
NonNegAmount = Annotated[Decimal, BeforeValidator(parse_amount), _Serialize]
Amount = Annotated[Decimal, BeforeValidator(parse_amount), AfterValidator(_positive), _Serialize]
Asset = Annotated[str, Field(pattern=r"^[A-Z0-9]{1,16}$")]
UserId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,199}$")]
Reason = Annotated[str, Field(max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Request(_Model):
    def request_hash(self) -> str:
        """SHA-256 of the canonical payload: equal amounts hash equal (``1.0`` == ``1``)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ReserveRequest(_Request):
    user_id: UserId
    asset: Asset
    amount: Amount
    order_id: Key
    reason: Reason | None = None
    # Defaults to order_id. A second reserve for the same order with another key
    # tops its hold up (an amend that needs more funds).
    idempotency_key: Key | None = None

    @property
    def key(self) -> str:
        return self.idempotency_key or self.order_id


class ReleaseRequest(_Request):
    user_id: UserId
    asset: Asset
    order_id: Key
    # What to void; None voids everything that remains of the hold.
    amount: NonNegAmount | None = None
    reservation_id: str | None = Field(default=None, max_length=64)
    reason: Reason | None = None
    idempotency_key: Key | None = None

    @property
    def key(self) -> str:
        return self.idempotency_key or self.order_id


class SettleTradeRequest(_Request):
    trade_id: Key
    buyer_user_id: UserId
    seller_user_id: UserId
    buyer_order_id: Key
    seller_order_id: Key
    base_asset: Asset
    quote_asset: Asset
    quantity: Amount
    price: Amount
    # price * quantity; optional, but when given it must be exactly that.
    quote_quantity: Amount | None = None
    buyer_fee: NonNegAmount = Decimal(0)
    seller_fee: NonNegAmount = Decimal(0)
    buyer_fee_asset: Asset | None = None
    seller_fee_asset: Asset | None = None
    symbol: str | None = Field(default=None, max_length=40)

    @model_validator(mode="after")
    def _consistent(self) -> SettleTradeRequest:
        notional = self.notional()
        problems = []
        if self.base_asset == self.quote_asset:
            problems.append("base_asset and quote_asset must differ")
        if self.buyer_order_id == self.seller_order_id:
            problems.append("buyer_order_id and seller_order_id must differ")
        if self.quote_quantity is not None and self.quote_quantity != notional:
            problems.append(f"quote_quantity must equal price*quantity = {format_amount(notional)}")
        if _decimals(notional) > 18:
            problems.append("price*quantity has more than 18 decimals")
        if self.buyer_fee > self.quantity:
            problems.append("buyer_fee exceeds quantity")
        if self.seller_fee > notional:
            problems.append("seller_fee exceeds price*quantity")
        if self.buyer_fee_asset not in (None, self.base_asset):
            problems.append(
                "buyer_fee_asset must be the base asset (fees are paid in what is received)"
            )
        if self.seller_fee_asset not in (None, self.quote_asset):
            problems.append("seller_fee_asset must be the quote asset")
        if self.symbol is not None and self.symbol != f"{self.base_asset}/{self.quote_asset}":
            problems.append("symbol must be base_asset/quote_asset")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def notional(self) -> Decimal:
        with localcontext() as ctx:
            ctx.prec = 80  # exact: 38 + 38 digits never round
            return (self.price * self.quantity).normalize(ctx)


class TransferRequest(_Request):
    """A deposit or a withdrawal (admin): idempotent on ``idempotency_key``."""

    user_id: UserId
    asset: Asset
    amount: Amount
    idempotency_key: Key
    reason: Reason | None = None


class AssetBalance(_Model):
    available: NonNegAmount
    reserved: NonNegAmount


class ReserveResponse(_Model):
    success: Literal[True] = True
    reservation_id: str
    order_id: str
    user_id: str
    asset: str
    amount: NonNegAmount
    hold_remaining: NonNegAmount
    available_balance: NonNegAmount
    reserved_balance: NonNegAmount
    entry_id: int


class ReleaseResponse(_Model):
    success: Literal[True] = True
    reservation_id: str
    order_id: str
    user_id: str
    asset: str
    released_amount: NonNegAmount
    hold_remaining: NonNegAmount
    available_balance: NonNegAmount
    reserved_balance: NonNegAmount
    entry_id: int


class SettleTradeResponse(_Model):
    success: Literal[True] = True
    trade_id: str
    entry_id: int
    # The seeds' names; one journal entry holds both legs, so both equal entry_id.
    buyer_ledger_entry_id: int
    seller_ledger_entry_id: int
    quote_quantity: NonNegAmount
    buyer_hold_remaining: NonNegAmount
    seller_hold_remaining: NonNegAmount
    buyer_balances: dict[str, AssetBalance]
    seller_balances: dict[str, AssetBalance]


class TransferResponse(_Model):
    success: Literal[True] = True
    user_id: str
    asset: str
    amount: NonNegAmount
    entry_id: int
    available_balance: NonNegAmount
    reserved_balance: NonNegAmount


class BalancesResponse(_Model):
    user_id: str
    balances: dict[str, AssetBalance]


class ErrorBody(_Model):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class BatchItemResult(_Model):
    index: int
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None


class BatchResponse(_Model):
    results: list[BatchItemResult]
