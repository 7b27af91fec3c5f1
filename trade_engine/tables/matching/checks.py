"""The static rules of a place: parsing a wire place, the checks that need only the
command and the symbol's rules, and the holds an order needs.

Shared on purpose: the gateway refuses what the matcher would reject statically and
the risk stage reserves exactly what the matcher will account for, because all three
call these very functions. Nothing here reads a book: the checks against the book's
state (trading state, duplicates, bands, post-only, FOK) are the engine's.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

from trade_engine.tables.matching.codes import RejectCode
from trade_engine.tables.matching.commands import Place, PlaceRequest
from trade_engine.tables.matching.enums import OrderType, Side, StpMode, TimeInForce
from trade_engine.tables.matching.order import Order
from trade_engine.tables.matching.rules import SymbolRules

# A reason to refuse a command: its stable code and a short message.
Problem = tuple[RejectCode, str]

MARKET_TYPES = (OrderType.MARKET, OrderType.STOP)
STOP_TYPES = (OrderType.STOP, OrderType.STOP_LIMIT)
IMMEDIATE = (TimeInForce.IOC, TimeInForce.FOK)

_E = TypeVar("_E", bound=Enum)


def _member(cls: type[_E], value: Any) -> _E:
    """``cls(value)`` without the Enum call machinery on the hot path (same result,
    and the same ValueError from ``cls(value)`` for anything that is not a value)."""
    try:
        member = cls._value2member_map_.get(value)
    except TypeError:  # unhashable: let the Enum call raise as usual
        member = None
    return cls(value) if member is None else member  # type: ignore[return-value]


def parse_place(r: PlaceRequest, rules: SymbolRules) -> Place:
    """The integer ``Place`` of a wire place, with the symbol's scales.

    Raises ``NumberFormatError`` (off grid, malformed) or ``ValueError`` (unknown
    enum). The risk stage computes holds with this very function, so what it
    reserves and what the matcher accepts can never disagree.
    """
    return Place(
        r.order_id,
        r.user_id,
        _member(Side, r.side),
        _member(OrderType, r.order_type),
        None if r.quantity is None else rules.qty_scale.parse(r.quantity),
        None if r.price is None else rules.price_scale.parse(r.price),
        None if r.stop_price is None else rules.price_scale.parse(r.stop_price),
        None if r.funds is None else rules.quote_scale.parse(r.funds),
        _member(TimeInForce, r.tif),
        r.client_order_id,
        _member(StpMode, r.stp),
        r.post_only,
        r.expire_at,
    )


# A validation ladder reads best flat: one check, one stable code per line.
def static_problem(p: Place, r: SymbolRules) -> Problem | None:  # noqa: PLR0911, PLR0912
    """Checks that depend only on the command and the symbol rules.

    Public so that the gateway refuses exactly what the matcher would reject
    before anything reaches the log (the state checks stay the matcher's).
    """
    limit_like = p.order_type is OrderType.LIMIT or p.order_type is OrderType.STOP_LIMIT
    stop_like = p.order_type in STOP_TYPES
    if limit_like:
        if p.price is None:
            return RejectCode.VALIDATION_PRICE_REQUIRED, "limit orders need a price"
        if p.price <= 0:
            return RejectCode.VALIDATION_PRICE_NOT_POSITIVE, "price must be positive"
    elif p.price is not None:
        return RejectCode.VALIDATION_PRICE_NOT_ALLOWED, "market orders take no price"
    if stop_like:
        if p.stop_price is None:
            return RejectCode.VALIDATION_STOP_PRICE_REQUIRED, "stop orders need a stop price"
        if p.stop_price <= 0:
            return RejectCode.VALIDATION_PRICE_NOT_POSITIVE, "stop price must be positive"
    elif p.stop_price is not None:
        return RejectCode.VALIDATION_STOP_PRICE_NOT_ALLOWED, "only stop orders take one"
    market_buy = not limit_like and p.side is Side.BUY
    if market_buy:
        if p.funds is None:
            return RejectCode.VALIDATION_FUNDS_REQUIRED, "market buys need funds (the hold)"
        if p.funds <= 0:
            return RejectCode.VALIDATION_QUANTITY_NOT_POSITIVE, "funds must be positive"
        if p.funds < r.min_notional:
            return RejectCode.VALIDATION_NOTIONAL_BELOW_MIN, "funds below min notional"
    elif p.funds is not None:
        return RejectCode.VALIDATION_FUNDS_NOT_ALLOWED, "funds only on market buys"
    if p.quantity is None:
        if not market_buy:
            return RejectCode.VALIDATION_QUANTITY_REQUIRED, "quantity required"
    elif p.quantity <= 0:
        return RejectCode.VALIDATION_QUANTITY_NOT_POSITIVE, "quantity must be positive"
    elif p.quantity < r.min_qty:
        return RejectCode.VALIDATION_QUANTITY_BELOW_MIN, f"quantity below {r.min_qty} lots"
    if limit_like and p.price * p.quantity < r.min_notional:  # type: ignore[operator]
        return RejectCode.VALIDATION_NOTIONAL_BELOW_MIN, "notional below min notional"
    tif = p.tif
    if not limit_like and (tif not in IMMEDIATE or (p.quantity is None and tif is TimeInForce.FOK)):
        return RejectCode.VALIDATION_TIF_NOT_ALLOWED, f"{tif} not allowed for this type"
    if p.post_only and (not limit_like or tif in IMMEDIATE):
        return RejectCode.VALIDATION_POST_ONLY_NOT_ALLOWED, "post-only needs a resting limit"
    if tif is TimeInForce.GTD:
        if p.expire_at is None:
            return RejectCode.VALIDATION_EXPIRE_AT_REQUIRED, "GTD needs expire_at"
    elif p.expire_at is not None:
        return RejectCode.VALIDATION_EXPIRE_AT_NOT_ALLOWED, "expire_at only with GTD"
    return None


def required_hold(p: Place) -> int:
    """The hold a wallet must place for ``p``: quote units for buys, lots for sells.

    LIMIT/STOP_LIMIT buy: price * quantity; MARKET/STOP buy: funds; sell: quantity.
    Fees are charged in the received asset, so they never need a hold.
    """
    if p.side is Side.SELL:
        return max(p.quantity or 0, 0)
    if p.order_type in MARKET_TYPES:
        return max(p.funds or 0, 0)
    if p.price is None or p.quantity is None:
        return 0
    return max(p.price * p.quantity, 0)


def amended_hold(o: Order, price: int, qty: int) -> int:
    """An order's hold after an amend to ``(price, qty)``: never above the hold it has
    (the engine refuses an amend that would need more)."""
    if o.side is Side.BUY:
        return o.spent + price * (qty - o.filled - o.cancelled)
    return qty
