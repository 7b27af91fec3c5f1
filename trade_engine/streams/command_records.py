"""Typed records of ``te.commands`` and ``te.commands.accepted``, and their decoder.

The matcher reads every accepted command with ``decode_command_record``: one
msgspec decode into the structs below (the same field names as the contract's
models, so ``streams.commands.to_core`` takes either), then the contract's
text rules in ``__post_init__`` (``streams.commands``' ASCII id and plain
decimal patterns, matched whole; UTC timestamps); msgspec itself holds the
rest (a JSON boolean ``post_only``, no unknown field, ``"v": 1``, the enums).

The contract's pydantic models stay the reference: they build and validate
what producers send (``streams.command_builders``) and generate the published
JSON Schema, and the risk stage decodes with them (``codec.decode_command``).
Both stages must accept exactly the same inputs: an order the risk stage
reserved funds for and the matcher refused would hold those funds for
nothing. So these structs are never more lenient than the models (timestamps
only in the canonical RFC 3339 UTC form, microseconds at most), and whatever
msgspec refuses is decided by the pydantic decoder: it raises the
``DecodeError`` (code and message) the stage always gave, or accepts an input
msgspec reads more strictly (``"v": 1.0``, a timestamp as epoch seconds), in
which case the record is built from the model. ``tests/streams/test_codec.py``
holds the two decoders to the same answers.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, ClassVar, Final, Literal

import msgspec

from trade_engine.streams.codec import MAX_MESSAGE_BYTES, decode_command
from trade_engine.streams.codes import DeadLetterCode
from trade_engine.streams.commands import (
    DECIMAL_MAX_LENGTH,
    DECIMAL_PATTERN,
    IDENTIFIER_MAX_LENGTH,
    IDENTIFIER_PATTERN,
    RISK_MESSAGE_MAX_LENGTH,
    SYMBOL_PATTERN,
)
from trade_engine.streams.exceptions import DecodeError
from trade_engine.tables.matching.enums import (
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)

# What the SDK and pydantic write: anything else goes to the reference decoder.
UTC_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|\+00:00)$"
)
# fullmatch: re's ``$`` alone would also match before a final newline.
_DECIMAL = re.compile(DECIMAL_PATTERN).fullmatch
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN).fullmatch
_SYMBOL = re.compile(SYMBOL_PATTERN).fullmatch
_UTC = re.compile(UTC_PATTERN).fullmatch
# Symbols, users and amounts repeat: each text is matched once, then remembered
# in its own set (bounded like the core's scale caches). Order ids are unique:
# most are alphanumeric ASCII, which two str methods decide without a regex.
_CACHE_SIZE = 4096
_symbols: set[str] = set()
_users: set[str] = set()
_decimals: set[str] = set()


def _remember(seen: set[str], text: str) -> None:
    if len(seen) >= _CACHE_SIZE:
        seen.clear()
    seen.add(text)


def _symbol(text: str) -> None:
    if text not in _symbols:
        if _SYMBOL(text) is None:
            raise ValueError(f"symbol {text[:40]!r} is not BASE/QUOTE")
        _remember(_symbols, text)


def _identifier(name: str, text: str | None) -> None:
    if text is None or (name == "user_id" and text in _users):
        return
    if len(text) > IDENTIFIER_MAX_LENGTH or not (
        (text.isascii() and text.isalnum()) or _IDENTIFIER(text) is not None
    ):
        raise ValueError(f"{name} {text[:80]!r} is not an ASCII id of 1..64 [A-Za-z0-9_.:-]")
    if name == "user_id":
        _remember(_users, text)


def _decimal(name: str, text: str | None) -> None:
    if text is None or text in _decimals:
        return
    if len(text) > DECIMAL_MAX_LENGTH or _DECIMAL(text) is None:
        raise ValueError(f"{name} {text[:40]!r} is not a plain decimal")
    _remember(_decimals, text)


def _time(name: str, text: str | None) -> None:
    if text is None:
        return
    if _UTC(text) is None:
        raise ValueError(f"{name} {text[:40]!r} is not RFC 3339 UTC")
    datetime.fromisoformat(text)  # a ValueError (Feb 30, 24:00) refuses the record


class RiskRejectRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    code: Literal["RISK_INSUFFICIENT_BALANCE", "RISK_ACCOUNT_NOT_FOUND", "RISK_REJECTED"]
    message: Annotated[str, msgspec.Meta(max_length=RISK_MESSAGE_MAX_LENGTH)] = ""


class _CommandRecord(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    gc=False,
    tag_field="cmd",
):
    """The fields every command carries. ``__post_init__`` applies the contract's text rules
    (a ``ValueError`` there refuses the record like any other msgspec error)."""

    cmd: ClassVar[str]
    v: Literal[1] = 1
    symbol: str
    ts: str | None = None

    def __post_init__(self) -> None:
        _symbol(self.symbol)
        _time("ts", self.ts)


class PlaceRecord(_CommandRecord, tag="place", frozen=True, kw_only=True):
    cmd: ClassVar[Literal["place"]] = "place"
    order_id: str
    client_order_id: str | None = None
    user_id: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce = TimeInForce.GTC
    quantity: str | None = None
    quote_quantity: str | None = None
    price: str | None = None
    stop_price: str | None = None
    post_only: bool = False
    stp_mode: StpMode = StpMode.NONE
    expire_at: str | None = None
    risk_reject: RiskRejectRecord | None = None

    def __post_init__(self) -> None:
        # The hottest record: its common cases are decided inline, without a call
        # (remembered texts; an alphanumeric ASCII order id).
        if self.symbol not in _symbols:
            _symbol(self.symbol)
        if self.user_id not in _users:
            _identifier("user_id", self.user_id)
        order_id = self.order_id
        if not (order_id.isascii() and order_id.isalnum() and len(order_id) <= 64):
            _identifier("order_id", order_id)
        if self.client_order_id is not None:
            _identifier("client_order_id", self.client_order_id)
        if self.quantity is not None and self.quantity not in _decimals:
            _decimal("quantity", self.quantity)
        if self.price is not None and self.price not in _decimals:
            _decimal("price", self.price)
        if self.quote_quantity is not None:
            _decimal("quote_quantity", self.quote_quantity)
        if self.stop_price is not None:
            _decimal("stop_price", self.stop_price)
        if self.ts is not None:
            _time("ts", self.ts)
        if self.expire_at is not None:
            _time("expire_at", self.expire_at)


class CancelRecord(_CommandRecord, tag="cancel", frozen=True, kw_only=True):
    cmd: ClassVar[Literal["cancel"]] = "cancel"
    user_id: str
    order_id: str | None = None
    client_order_id: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _identifier("user_id", self.user_id)
        _identifier("order_id", self.order_id)
        _identifier("client_order_id", self.client_order_id)


class AmendRecord(_CommandRecord, tag="amend", frozen=True, kw_only=True):
    cmd: ClassVar[Literal["amend"]] = "amend"
    user_id: str
    order_id: str
    quantity: str | None = None
    price: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _identifier("user_id", self.user_id)
        _identifier("order_id", self.order_id)
        _decimal("quantity", self.quantity)
        _decimal("price", self.price)


class MassCancelRecord(_CommandRecord, tag="mass_cancel", frozen=True, kw_only=True):
    cmd: ClassVar[Literal["mass_cancel"]] = "mass_cancel"
    user_id: str
    side: Side | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _identifier("user_id", self.user_id)


class SymbolAdminRecord(_CommandRecord, tag="symbol_admin", frozen=True, kw_only=True):
    cmd: ClassVar[Literal["symbol_admin"]] = "symbol_admin"
    trading_state: TradingState
    reference_price: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _decimal("reference_price", self.reference_price)


class TimeTickRecord(_CommandRecord, tag="time_tick", frozen=True, kw_only=True):
    cmd: ClassVar[Literal["time_tick"]] = "time_tick"
    now: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _time("now", self.now)


CommandRecord = (
    PlaceRecord | CancelRecord | AmendRecord | MassCancelRecord | SymbolAdminRecord | TimeTickRecord
)

_DECODER: msgspec.json.Decoder[CommandRecord] = msgspec.json.Decoder(CommandRecord)


def decode_command_record(raw: bytes | None) -> CommandRecord:
    """Bytes from ``te.commands``/``te.commands.accepted`` to a command record, or
    ``DecodeError`` with the codes and messages of ``codec.decode_command``:
    ``DECODE_EMPTY``, ``DECODE_TOO_LARGE``, ``DECODE_INVALID``."""
    if not raw:
        raise DecodeError(DeadLetterCode.DECODE_EMPTY, "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError(
            DeadLetterCode.DECODE_TOO_LARGE, f"message of {len(raw)} bytes exceeds the limit"
        )
    try:
        return _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    # The reference decides: its DecodeError, or a record of what it accepted.
    model = decode_command(raw)
    try:
        record: CommandRecord = msgspec.convert(
            model.model_dump(mode="json", exclude_none=True), CommandRecord
        )
    except msgspec.ValidationError as exc:  # the two contracts disagree: refuse, loudly
        raise DecodeError(DeadLetterCode.DECODE_INVALID, f"unreadable command: {exc}") from None
    return record
