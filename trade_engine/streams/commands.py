"""Wire contract of ``te.commands`` and ``te.commands.accepted``.

One JSON object per message, key = symbol, ``"v"`` = schema version, decimals
as strings, timestamps as RFC 3339 UTC strings. The ``cmd`` field says which
command it is. Decimal strings are checked for shape here (a plain decimal,
bounded digits, no exponent or sign); whether they sit on the symbol's tick
and step is the matching core's call, so that reject is sequenced like any other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Final, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from trade_engine.tables.matching.commands import (
    AmendRequest,
    Cancel,
    PlaceRequest,
    SetTradingState,
)
from trade_engine.tables.matching.commands import Command as CoreCommand
from trade_engine.tables.matching.commands import MassCancel as CoreMassCancel
from trade_engine.tables.matching.commands import TimeTick as CoreTimeTick
from trade_engine.tables.matching.enums import (
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)
from trade_engine.tables.matching.rules import SymbolRules

if TYPE_CHECKING:
    from trade_engine.streams.command_records import CommandRecord

SCHEMA_VERSION: Final = 1

# Patterns are written so that every regex dialect reads them alike: explicit ASCII
# classes, never \w or \d (ASCII in the JSON Schema's ECMA-262 dialect, Unicode in
# pydantic's Rust engine and in Python's re, where "заказ" would pass).
#
# A plain non-negative decimal: at most 18 integer and 18 fraction digits, no
# exponent, no sign, no leading zeros. A string like "1e999999999" never reaches int().
DECIMAL_PATTERN: Final = r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?$"
DECIMAL_MAX_LENGTH: Final = 37
IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9_.:\-]+$"
IDENTIFIER_MAX_LENGTH: Final = 64
SYMBOL_PATTERN: Final = r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$"
RISK_MESSAGE_MAX_LENGTH: Final = 200

DecimalStr = Annotated[
    str, StringConstraints(pattern=DECIMAL_PATTERN, max_length=DECIMAL_MAX_LENGTH)
]
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN),
]
Symbol = Annotated[str, StringConstraints(pattern=SYMBOL_PATTERN)]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() != UTC.utcoffset(None):
        raise ValueError("timestamps must be RFC 3339 in UTC (suffix Z or +00:00)")
    return value


UtcTimestamp = Annotated[datetime, AfterValidator(_utc)]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    v: Literal[1] = SCHEMA_VERSION
    symbol: Symbol
    # When the command entered the exchange (gateway clock). Informational: the
    # engine's clock moves only with time_tick commands, never the wall clock.
    ts: UtcTimestamp | None = None


class RiskReject(BaseModel):
    """Why the risk stage refused an order. Only the risk stage may set it (on
    ``te.commands.accepted``); a command on ``te.commands`` carrying it is dead-lettered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Literal["RISK_INSUFFICIENT_BALANCE", "RISK_ACCOUNT_NOT_FOUND", "RISK_REJECTED"]
    message: str = Field(default="", max_length=RISK_MESSAGE_MAX_LENGTH)


class PlaceOrder(_Command):
    cmd: Literal["place"] = "place"
    order_id: Identifier
    client_order_id: Identifier | None = None
    user_id: Identifier
    side: Side
    type: OrderType
    time_in_force: TimeInForce = TimeInForce.GTC
    quantity: DecimalStr | None = None
    quote_quantity: DecimalStr | None = Field(
        default=None, description="MARKET/STOP buys by funds: the quote amount to spend."
    )
    price: DecimalStr | None = None
    stop_price: DecimalStr | None = None
    # A JSON true/false only: lax bool would read "yes", "on", 1 as true (schema: boolean).
    post_only: StrictBool = False
    stp_mode: StpMode = StpMode.NONE
    expire_at: UtcTimestamp | None = Field(default=None, description="GTD only.")
    risk_reject: RiskReject | None = None


class CancelOrder(_Command):
    """Cancel by ``order_id``, or by the user's ``client_order_id`` when that is absent."""

    cmd: Literal["cancel"] = "cancel"
    user_id: Identifier
    order_id: Identifier | None = None
    client_order_id: Identifier | None = None


class AmendOrder(_Command):
    """Reducing ``quantity`` keeps queue priority; a price change or an increase loses it."""

    cmd: Literal["amend"] = "amend"
    user_id: Identifier
    order_id: Identifier
    quantity: DecimalStr | None = Field(default=None, description="New total quantity.")
    price: DecimalStr | None = None


class MassCancel(_Command):
    cmd: Literal["mass_cancel"] = "mass_cancel"
    user_id: Identifier
    side: Side | None = None


class SymbolAdmin(_Command):
    cmd: Literal["symbol_admin"] = "symbol_admin"
    trading_state: TradingState
    reference_price: DecimalStr | None = None


class TimeTick(_Command):
    """The engine clock for this symbol moves to ``now`` (DAY/GTD expiry, stop bookkeeping)."""

    cmd: Literal["time_tick"] = "time_tick"
    now: UtcTimestamp


Command = Annotated[
    PlaceOrder | CancelOrder | AmendOrder | MassCancel | SymbolAdmin | TimeTick,
    Field(discriminator="cmd"),
]
# What ``to_core`` takes: a contract model, or the matcher's decoded record.
WireCommand: TypeAlias = (
    "PlaceOrder | CancelOrder | AmendOrder | MassCancel | SymbolAdmin | TimeTick | CommandRecord"
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_millis(value: datetime) -> int:
    """Engine-clock milliseconds for a UTC timestamp (integer arithmetic, no float)."""
    return (value - _EPOCH) // timedelta(milliseconds=1)


def rfc3339(millis: int) -> str:
    return (
        datetime.fromtimestamp(millis / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _millis(value: datetime | str) -> int:
    """Engine-clock milliseconds of a timestamp: a model's ``datetime`` or a record's
    RFC 3339 UTC text (``streams.command_records`` checked its form)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return utc_millis(value)


def to_core(command: WireCommand, rules: SymbolRules) -> CoreCommand:
    """The matching core's command for a wire command (a contract model, or a decoded
    ``streams.command_records`` record: they share their fields).

    Decimal strings stay strings (``PlaceRequest``/``AmendRequest``) so that the
    core parses them with the symbol's scales and an off-tick value becomes a
    sequenced reject like any other.
    """
    if command.cmd == "place":
        return PlaceRequest(
            order_id=command.order_id,
            user_id=command.user_id,
            side=command.side.value,
            order_type=command.type.value,
            quantity=command.quantity,
            price=command.price,
            stop_price=command.stop_price,
            funds=command.quote_quantity,
            tif=command.time_in_force.value,
            client_order_id=command.client_order_id,
            stp=command.stp_mode.value,
            post_only=command.post_only,
            expire_at=_millis(command.expire_at) if command.expire_at else None,
            risk_reject=command.risk_reject.code if command.risk_reject else None,
            risk_message=command.risk_reject.message if command.risk_reject else "",
        )
    if command.cmd == "cancel":
        return Cancel(
            user_id=command.user_id,
            order_id=command.order_id,
            client_order_id=command.client_order_id,
        )
    if command.cmd == "amend":
        return AmendRequest(
            order_id=command.order_id,
            user_id=command.user_id,
            quantity=command.quantity,
            price=command.price,
        )
    if command.cmd == "mass_cancel":
        return CoreMassCancel(user_id=command.user_id, side=command.side)
    if command.cmd == "symbol_admin":
        reference = (
            rules.price_scale.parse(command.reference_price) if command.reference_price else None
        )
        return SetTradingState(state=command.trading_state, reference_price=reference)
    if command.cmd == "time_tick":
        return CoreTimeTick(now=_millis(command.now))
    raise TypeError(f"not a wire command: {type(command).__name__}")
