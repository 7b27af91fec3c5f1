"""Builders of ``te.commands`` commands: validated contract models from keyword arguments.

Every producer of the topic (the producer SDK, the gateway, the CLI, the load
generator) builds its commands here, so a command is checked against the wire
contract (``streams.commands``) before anything is sent, and a bad one fails
with ``InvalidCommandError`` naming the field. ``new_order_id`` is how the edge
mints order ids; the engine itself never makes random ids.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from trade_engine.streams.commands import (
    AmendOrder,
    CancelOrder,
    Command,
    MassCancel,
    PlaceOrder,
    SymbolAdmin,
    TimeTick,
)
from trade_engine.streams.exceptions import InvalidCommandError
from trade_engine.tables.matching.enums import (
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)

CommandModel = PlaceOrder | CancelOrder | AmendOrder | MassCancel | SymbolAdmin | TimeTick
COMMAND_TYPES = (PlaceOrder, CancelOrder, AmendOrder, MassCancel, SymbolAdmin, TimeTick)
Amount = str | Decimal | int
"""Decimal amounts: strings as on the wire, or ``Decimal``/``int``. Never floats."""

_COMMAND: TypeAdapter[Any] = TypeAdapter(cast(Any, Command))
_IMMEDIATE_TYPES = (OrderType.MARKET.value, OrderType.STOP.value)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_order_id() -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, 26 Crockford base32 characters.

    Unique without coordination and sortable by creation time. Only the edge
    (SDK, gateway) makes ids this way; the engine never generates random ids.
    """
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def _amount(name: str, value: Amount | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise InvalidCommandError(
            f"{name}: decimal amounts must be str, Decimal or int, not {type(value).__name__}",
            name,
        )
    return format(value, "f")


def _build(model: type[CommandModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise InvalidCommandError.from_validation(exc) from None


def build_place(
    *,
    symbol: str,
    side: Side | str,
    user_id: str,
    type: OrderType | str = OrderType.LIMIT,
    quantity: Amount | None = None,
    price: Amount | None = None,
    time_in_force: TimeInForce | str | None = None,
    order_id: str | None = None,
    client_order_id: str | None = None,
    stop_price: Amount | None = None,
    quote_quantity: Amount | None = None,
    post_only: bool = False,
    stp_mode: StpMode | str = StpMode.NONE,
    expire_at: datetime | str | None = None,
    ts: datetime | None = None,
) -> PlaceOrder:
    """A validated ``PlaceOrder``. Without ``time_in_force``, MARKET/STOP orders are IOC
    and the others GTC; without ``order_id`` a new ULID is used."""
    if time_in_force is None:
        type_name = type.value if isinstance(type, OrderType) else str(type)
        time_in_force = TimeInForce.IOC if type_name in _IMMEDIATE_TYPES else TimeInForce.GTC
    place: PlaceOrder = _build(
        PlaceOrder,
        {
            "symbol": symbol,
            "order_id": order_id or new_order_id(),
            "client_order_id": client_order_id,
            "user_id": user_id,
            "side": side,
            "type": type,
            "time_in_force": time_in_force,
            "quantity": _amount("quantity", quantity),
            "quote_quantity": _amount("quote_quantity", quote_quantity),
            "price": _amount("price", price),
            "stop_price": _amount("stop_price", stop_price),
            "post_only": post_only,
            "stp_mode": stp_mode,
            "expire_at": expire_at,
            "ts": ts,
        },
    )
    return place


def build_cancel(
    *,
    symbol: str,
    user_id: str,
    order_id: str | None = None,
    client_order_id: str | None = None,
    ts: datetime | None = None,
) -> CancelOrder:
    if (order_id is None) == (client_order_id is None):
        raise InvalidCommandError("cancel needs exactly one of order_id or client_order_id")
    cancel: CancelOrder = _build(
        CancelOrder,
        {
            "symbol": symbol,
            "user_id": user_id,
            "order_id": order_id,
            "client_order_id": client_order_id,
            "ts": ts,
        },
    )
    return cancel


def build_amend(
    *,
    symbol: str,
    user_id: str,
    order_id: str,
    quantity: Amount | None = None,
    price: Amount | None = None,
    ts: datetime | None = None,
) -> AmendOrder:
    if quantity is None and price is None:
        raise InvalidCommandError("amend needs a new quantity, a new price or both")
    amend: AmendOrder = _build(
        AmendOrder,
        {
            "symbol": symbol,
            "user_id": user_id,
            "order_id": order_id,
            "quantity": _amount("quantity", quantity),
            "price": _amount("price", price),
            "ts": ts,
        },
    )
    return amend


def build_mass_cancel(
    *, symbol: str, user_id: str, side: Side | str | None = None, ts: datetime | None = None
) -> MassCancel:
    mass: MassCancel = _build(
        MassCancel, {"symbol": symbol, "user_id": user_id, "side": side, "ts": ts}
    )
    return mass


def build_symbol_admin(
    *,
    symbol: str,
    trading_state: TradingState | str,
    reference_price: Amount | None = None,
    ts: datetime | None = None,
) -> SymbolAdmin:
    admin: SymbolAdmin = _build(
        SymbolAdmin,
        {
            "symbol": symbol,
            "trading_state": trading_state,
            "reference_price": _amount("reference_price", reference_price),
            "ts": ts,
        },
    )
    return admin


def build_time_tick(*, symbol: str, now: datetime | str | None = None) -> TimeTick:
    """A clock tick for ``symbol``; ``now`` defaults to the wall clock (UTC)."""
    tick: TimeTick = _build(
        TimeTick, {"symbol": symbol, "now": now if now is not None else datetime.now(UTC)}
    )
    return tick


def validate_command(command: CommandModel | Mapping[str, Any]) -> CommandModel:
    """Validate a command model (again) or a plain mapping against the wire contract."""
    try:
        if isinstance(command, COMMAND_TYPES):
            # dict(model) gives the raw field values, so a model_construct()-ed
            # instance with bad data is caught too.
            validated: CommandModel = type(command).model_validate(dict(command))
            return validated
        if isinstance(command, Mapping):
            result: CommandModel = _COMMAND.validate_python(dict(command))
            return result
    except ValidationError as exc:
        raise InvalidCommandError.from_validation(
            exc, strip_tag=not isinstance(command, COMMAND_TYPES)
        ) from None
    raise InvalidCommandError(f"not a command: {type(command).__name__}")
