"""Execution records: one per outcome, each with the next per-symbol ``seq``.

Each record type names itself with a ``kind`` property rather than a ``ClassVar``:
mypyc (which compiles this package for the benchmark) treats a class variable of a
dataclass as a defaulted field.

Units: prices in ticks, quantities in lots, quote amounts in quote units
(tick * step). ``reserved``/``release`` are in the asset the order holds:
quote units for buys, lots for sells.
"""

from __future__ import annotations

from dataclasses import dataclass

from trade_engine.tables.matching.codes import EndReason, RejectCode
from trade_engine.tables.matching.enums import (
    OrderStatus,
    OrderType,
    RequestKind,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The order passed every check; ``reserved`` is the hold it needs. Status OPEN or PENDING."""

    seq: int
    order_id: str
    user_id: str
    client_order_id: str | None
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: int | None
    stop_price: int | None
    quantity: int | None
    funds: int | None
    expire_at: int | None
    stp: StpMode
    post_only: bool
    reserved: int
    status: OrderStatus

    @property
    def kind(self) -> str:
        return "ACCEPTED"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refused command; the state is unchanged. For PLACE, ``release`` is the hold to void."""

    seq: int
    request: RequestKind
    order_id: str | None
    user_id: str | None
    code: RejectCode
    message: str
    release: int
    side: Side | None = None  # the order's side when known: the unit of `release`

    @property
    def kind(self) -> str:
        return "REJECTED"


@dataclass(frozen=True, slots=True)
class Trade:
    """A fill at the maker's price. ``buyer_fee`` in lots (base), ``seller_fee`` in quote units."""

    seq: int
    trade_id: str
    symbol: str
    price: int
    quantity: int
    quote_quantity: int
    taker_side: Side
    taker_order_id: str
    taker_user_id: str
    maker_order_id: str
    maker_user_id: str
    buyer_fee: int
    seller_fee: int
    taker_remaining: int
    maker_remaining: int

    @property
    def is_buyer_maker(self) -> bool:
        return self.taker_side is Side.SELL

    @property
    def buyer_order_id(self) -> str:
        return self.maker_order_id if self.taker_side is Side.SELL else self.taker_order_id

    @property
    def seller_order_id(self) -> str:
        return self.taker_order_id if self.taker_side is Side.SELL else self.maker_order_id

    @property
    def buyer_user_id(self) -> str:
        return self.maker_user_id if self.taker_side is Side.SELL else self.taker_user_id

    @property
    def seller_user_id(self) -> str:
        return self.taker_user_id if self.taker_side is Side.SELL else self.maker_user_id

    @property
    def kind(self) -> str:
        return "TRADE"


@dataclass(frozen=True, slots=True)
class Triggered:
    """A pending stop became active (status OPEN) because of ``last_price``."""

    seq: int
    order_id: str
    user_id: str
    stop_price: int
    last_price: int

    @property
    def kind(self) -> str:
        return "TRIGGERED"


@dataclass(frozen=True, slots=True)
class Amended:
    """New price/quantity; ``reserve_delta`` = new hold - old hold (may be negative)."""

    seq: int
    order_id: str
    user_id: str
    price: int
    quantity: int
    remaining: int
    reserved: int
    reserve_delta: int
    priority_kept: bool
    side: Side  # the unit of `reserved` and `reserve_delta`

    @property
    def kind(self) -> str:
        return "AMENDED"


@dataclass(frozen=True, slots=True)
class StpPrevented:
    """Self-trade prevention fired; ``quantity`` is what would have traded at ``price``."""

    seq: int
    mode: StpMode
    user_id: str
    taker_order_id: str
    maker_order_id: str
    price: int
    quantity: int

    @property
    def kind(self) -> str:
        return "STP_PREVENTED"


@dataclass(frozen=True, slots=True)
class OrderEnded:
    """Final status (FILLED/CANCELLED/EXPIRED). ``release`` = ``reserved`` - used hold."""

    seq: int
    order_id: str
    user_id: str
    status: OrderStatus
    reason: EndReason
    filled: int
    quote_filled: int
    cancelled: int
    reserved: int
    release: int
    side: Side  # the unit of `reserved` and `release`

    @property
    def kind(self) -> str:
        return "ORDER_ENDED"


@dataclass(frozen=True, slots=True)
class TradingStateChanged:
    seq: int
    old: TradingState
    new: TradingState
    reference_price: int | None

    @property
    def kind(self) -> str:
        return "TRADING_STATE"


Execution = (
    Accepted
    | Rejected
    | Trade
    | Triggered
    | Amended
    | StpPrevented
    | OrderEnded
    | TradingStateChanged
)
