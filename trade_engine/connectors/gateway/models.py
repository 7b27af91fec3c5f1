"""Request and response bodies of the REST API (pydantic); the OpenAPI document is built
from them.

Decimals are JSON strings checked by the matching core's own parser
(``split_decimal``): a plain decimal, at most 18+18 digits, no sign, exponent,
NaN or Infinity. A malformed one fails with the core's code
(``VALIDATION_NUMBER_FORMAT``, ``VALIDATION_NUMBER_TOO_LARGE``) carried as the
pydantic error type, so the error response names the same code the engine would.
Unknown fields are refused, so a typo never passes silently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from trade_engine.streams.commands import UtcTimestamp
from trade_engine.tables.matching.enums import OrderType, Side, StpMode, TimeInForce, TradingState
from trade_engine.tables.matching.exceptions import NumberFormatError
from trade_engine.tables.matching.numbers import split_decimal

DECIMAL_PATTERN = r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?$"
SYMBOL_PATTERN = r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
STATUS = Literal[
    "PENDING", "OPEN", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED", "EXPIRED"
]


def _decimal_text(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "VALIDATION_NUMBER_FORMAT", 'decimals are JSON strings such as "0.5"'
        )
    try:
        split_decimal(value)
    except NumberFormatError as exc:
        raise PydanticCustomError(
            exc.reject.value,
            "not a plain decimal with at most 18+18 digits (no sign, exponent, NaN): {value}",
            {"value": value[:40]},
        ) from None
    return value


DecimalText = Annotated[
    str,
    BeforeValidator(_decimal_text),
    WithJsonSchema(
        {"type": "string", "pattern": DECIMAL_PATTERN, "maxLength": 37, "examples": ["0.5"]}
    ),
]
SymbolText = Annotated[str, Field(pattern=SYMBOL_PATTERN, examples=["BTC/USDT"])]
ClientOrderId = Annotated[str, Field(pattern=ID_PATTERN, examples=["my-order-1"])]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorResponse(_Body):
    error: str = Field(description="What went wrong, for people.")
    code: str = Field(description="Stable machine-readable code (docs/api.md lists them).")
    details: dict[str, Any] = Field(default_factory=dict)


# --- orders ------------------------------------------------------------------------------


class PlaceOrderRequest(_Body):
    """A new order. MARKET/STOP buys spend ``quote_quantity``; the rest need ``quantity``."""

    symbol: SymbolText
    side: Side
    type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce | None = Field(
        default=None, description="Default: IOC for MARKET/STOP, GTC otherwise."
    )
    quantity: DecimalText | None = None
    quote_quantity: DecimalText | None = None
    price: DecimalText | None = None
    stop_price: DecimalText | None = None
    post_only: bool = False
    stp_mode: StpMode = StpMode.NONE
    expire_at: UtcTimestamp | None = Field(default=None, description="GTD only (RFC 3339, UTC).")
    client_order_id: ClientOrderId | None = Field(
        default=None, description="Unique per user among open orders; makes retries idempotent."
    )


class PlaceQuery(_Body):
    wait: bool = Field(
        default=False, description="Wait for the engine's first answer and return its status."
    )
    wait_timeout_ms: int | None = Field(default=None, ge=1, le=10_000)


class AmendOrderRequest(_Body):
    """A new total quantity and/or price: a reduction keeps priority, anything else loses it."""

    quantity: DecimalText | None = None
    price: DecimalText | None = None


class OrderResponse(_Body):
    order_id: str = Field(description="Assigned by the gateway: a ULID (26 characters).")
    client_order_id: str | None = None
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    status: STATUS
    quantity: str | None = None
    quote_quantity: str | None = None
    price: str | None = None
    stop_price: str | None = None
    filled_quantity: str = "0"
    quote_filled: str = "0"
    post_only: bool = False
    stp_mode: StpMode = StpMode.NONE
    expire_at: datetime | None = None
    reject_code: str | None = None
    reject_reason: str | None = None
    created_at: datetime
    updated_at: datetime


class CommandResponse(_Body):
    """A cancel, amend, mass cancel or admin command durable in the log; its outcome
    arrives as executions (private WebSocket channel, then order queries)."""

    request: Literal["CANCEL", "AMEND", "MASS_CANCEL", "SYMBOL_ADMIN"]
    status: Literal["SUBMITTED"] = "SUBMITTED"
    symbols: list[str]
    order_id: str | None = None
    client_order_id: str | None = None


class OrderPage(_Body):
    items: list[OrderResponse]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page.")


class SymbolQuery(_Body):
    symbol: SymbolText | None = None


class MassCancelQuery(_Body):
    symbol: SymbolText | None = Field(default=None, description="Default: every symbol.")
    side: Side | None = None


class HistoryQuery(_Body):
    symbol: SymbolText
    since: UtcTimestamp | None = Field(
        default=None, description="Default: gateway.history_days ago."
    )
    until: UtcTimestamp | None = None
    limit: int = Field(default=100, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


# --- account -----------------------------------------------------------------------------


class TradeResponse(_Body):
    trade_id: str
    symbol: str
    order_id: str = Field(description="The caller's order.")
    side: Side = Field(description="The caller's side.")
    price: str
    quantity: str
    quote_quantity: str
    fee: str
    fee_asset: str
    is_maker: bool
    executed_at: datetime


class TradePage(_Body):
    items: list[TradeResponse]
    next_cursor: str | None


class AssetBalance(_Body):
    available: str
    reserved: str


class BalancesResponse(_Body):
    user_id: str
    balances: dict[str, AssetBalance]


# --- public and admin --------------------------------------------------------------------


class SymbolInfo(_Body):
    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: str
    step_size: str
    min_qty: str
    min_notional: str
    price_band_pct: int
    max_open_orders: int
    maker_fee_rate: str
    taker_fee_rate: str
    reference_price: str | None
    order_types: list[OrderType]
    time_in_force: list[TimeInForce]


class SymbolList(_Body):
    symbols: list[SymbolInfo]


class SymbolAdminRequest(_Body):
    symbol: SymbolText
    trading_state: TradingState
    reference_price: DecimalText | None = None


class HealthResponse(_Body):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class StatusResponse(_Body):
    service: Literal["trade-engine-gateway"] = "trade-engine-gateway"
    version: str = Field(description="The trade-engine package's version (its metadata).")
    status: Literal["ok", "degraded"] = Field(
        description="`ok` when every dependency answers, else `degraded` (the answer is "
        "still 200: this is information, `/health/ready` is the probe)."
    )
    started_at: datetime = Field(description="When this gateway process started (UTC).")
    uptime_s: float = Field(ge=0, description="Seconds since then.")
    dependencies: dict[str, str] = Field(
        description="Kafka, PostgreSQL and the wallet, as `/health/ready` checks them: "
        '`"ok"` or `"unavailable: <error>"`.',
        examples=[{"kafka": "ok", "postgres": "ok", "wallet": "unavailable: TimeoutError"}],
    )
    checked_at: datetime = Field(
        description="When the dependencies were checked: the result is shared for a few "
        "seconds, so polling this route costs the dependencies nothing more."
    )


# --- market data -------------------------------------------------------------------------

# The symbol in a market-data path: BTC-USDT or BTC_USDT (a slash would need escaping).
SYMBOL_PATH_PATTERN = r"^[A-Za-z0-9]{1,16}[-_][A-Za-z0-9]{1,16}$"


class _Published(BaseModel):
    """A record as the market-data agent publishes it: later schema versions may add fields."""

    model_config = ConfigDict(extra="allow", frozen=True)


class DepthQuery(_Body):
    limit: int = Field(default=1000, ge=1, le=5000, description="Price levels per side.")


class CandlesQuery(_Body):
    limit: int = Field(default=500, ge=1, le=1440, description="The most recent candles.")


class DepthSnapshot(_Published):
    """The gateway's book: apply stream diffs whose ``u`` is above ``lastUpdateId``."""

    symbol: str
    lastUpdateId: int  # noqa: N815 (the wire name clients already follow)
    bids: list[tuple[str, str]] = Field(description="[price, quantity], best first")
    asks: list[tuple[str, str]] = Field(description="[price, quantity], best first")


class Candle(_Published):
    symbol: str
    interval: Literal["1m"]
    open_time: str
    close_time: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    first_seq: int
    last_seq: int
    closed: bool


class CandleList(_Body):
    symbol: str
    interval: Literal["1m"]
    candles: list[Candle] = Field(description="Oldest first; the last may still be open.")


class Ticker(_Published):
    """Rolling 24 hours, updated with every trade."""

    symbol: str
    window: Literal["24h"]
    open_time: str
    close_time: str
    open: str
    high: str
    low: str
    last: str
    price_change: str
    price_change_percent: str
    weighted_avg_price: str
    volume: str
    quote_volume: str
    trades: int
    best_bid: str | None = None
    best_bid_qty: str | None = None
    best_ask: str | None = None
    best_ask_qty: str | None = None
