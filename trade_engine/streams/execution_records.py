"""Typed records of ``te.executions`` and ``te.trades``, and the one decoder of each topic.

Every consumer of the two topics (settlement, the sinks, market data, the
gateway's feeds, reconcile, tail, the demo's latency watch) decodes a message
once, with ``decode_execution`` or ``decode_trade``, and works on the struct
it gets: msgspec validates the shape while it parses, for about the cost of
``json.loads`` alone (``ops/benchmarks/bench_codecs.py``).

An execution is a tagged union on ``kind``: one struct per outcome, its fields
those the encoder (``streams.executions``) writes, in the same order; an
unknown ``kind`` or a missing field is refused. Amounts are ``Decimal`` (the
exact value, exponent included: ``"0.50"`` stays ``Decimal("0.50")``; msgspec
also reads another spelling of an exact value, an exponent or a JSON number,
which the encoder never writes); enums are the matching core's; ``at`` and
``executed_at`` stay the RFC 3339 text the encoder wrote; ``input`` is an
``InputRef``. Fields the encoder leaves out when empty default to None.

``execution_wire``/``trade_wire`` give a record back as its wire dict, field
for field in the encoder's order, so a consumer that republishes what it read
(the gateway's order updates, the RabbitMQ bridge) writes the same bytes as
before; ``tests/streams/test_schemas.py`` holds every encoded record to that.

Never decode a topic's message anywhere else: a second decoder is a second
contract. The pydantic models in ``streams.executions`` only generate the
published JSON Schemas.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, Literal

import msgspec

from trade_engine.streams.codes import DeadLetterCode
from trade_engine.streams.exceptions import DecodeError
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


class InputRef(msgspec.Struct, frozen=True, gc=False):
    """The ``te.commands.accepted`` record an execution answers."""

    partition: int
    offset: int


class _Execution(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="kind"):
    """The envelope every execution carries; ``kind`` (the tag) follows ``seq`` on the wire."""

    kind: ClassVar[str]
    v: Literal[1] = 1
    symbol: str
    seq: int
    input: InputRef
    at: str


class AcceptedExecution(_Execution, tag="ACCEPTED", frozen=True, kw_only=True):
    kind: ClassVar[Literal["ACCEPTED"]] = "ACCEPTED"
    order_id: str
    user_id: str
    client_order_id: str | None = None
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: Decimal | None = None
    stop_price: Decimal | None = None
    quantity: Decimal | None = None
    funds: Decimal | None = None
    expire_at: int | None = None
    stp: StpMode
    post_only: bool
    reserved: Decimal
    status: OrderStatus


class RejectedExecution(_Execution, tag="REJECTED", frozen=True, kw_only=True):
    kind: ClassVar[Literal["REJECTED"]] = "REJECTED"
    request: RequestKind
    order_id: str | None = None
    user_id: str | None = None
    code: RejectCode
    message: str
    release: Decimal
    side: Side | None = None


class TradeExecution(_Execution, tag="TRADE", frozen=True, kw_only=True):
    kind: ClassVar[Literal["TRADE"]] = "TRADE"
    trade_id: str
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    taker_side: Side
    taker_order_id: str
    taker_user_id: str
    maker_order_id: str
    maker_user_id: str
    buyer_fee: Decimal
    seller_fee: Decimal
    taker_remaining: Decimal
    maker_remaining: Decimal
    buyer_order_id: str
    seller_order_id: str
    buyer_user_id: str
    seller_user_id: str
    buyer_fee_asset: str
    seller_fee_asset: str
    is_buyer_maker: bool


class TriggeredExecution(_Execution, tag="TRIGGERED", frozen=True, kw_only=True):
    kind: ClassVar[Literal["TRIGGERED"]] = "TRIGGERED"
    order_id: str
    user_id: str
    stop_price: Decimal
    last_price: Decimal


class AmendedExecution(_Execution, tag="AMENDED", frozen=True, kw_only=True):
    kind: ClassVar[Literal["AMENDED"]] = "AMENDED"
    order_id: str
    user_id: str
    price: Decimal
    quantity: Decimal
    remaining: Decimal
    reserved: Decimal
    reserve_delta: Decimal
    priority_kept: bool
    side: Side


class StpPreventedExecution(_Execution, tag="STP_PREVENTED", frozen=True, kw_only=True):
    kind: ClassVar[Literal["STP_PREVENTED"]] = "STP_PREVENTED"
    mode: StpMode
    user_id: str
    taker_order_id: str
    maker_order_id: str
    price: Decimal
    quantity: Decimal


class OrderEndedExecution(_Execution, tag="ORDER_ENDED", frozen=True, kw_only=True):
    kind: ClassVar[Literal["ORDER_ENDED"]] = "ORDER_ENDED"
    order_id: str
    user_id: str
    status: OrderStatus
    reason: EndReason
    filled: Decimal
    quote_filled: Decimal
    cancelled: Decimal
    reserved: Decimal
    release: Decimal
    side: Side


class TradingStateExecution(_Execution, tag="TRADING_STATE", frozen=True, kw_only=True):
    kind: ClassVar[Literal["TRADING_STATE"]] = "TRADING_STATE"
    old: TradingState
    new: TradingState
    reference_price: Decimal | None = None


ExecutionRecord = (
    AcceptedExecution
    | RejectedExecution
    | TradeExecution
    | TriggeredExecution
    | AmendedExecution
    | StpPreventedExecution
    | OrderEndedExecution
    | TradingStateExecution
)


class PublicTrade(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A trade on ``te.trades``; ``trade_id`` is ``<symbol>:<seq>``."""

    v: Literal[1] = 1
    trade_id: str
    seq: int
    symbol: str
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    buyer_order_id: str
    seller_order_id: str
    buyer_user_id: str
    seller_user_id: str
    buyer_fee: Decimal
    seller_fee: Decimal
    buyer_fee_asset: str
    seller_fee_asset: str
    is_buyer_maker: bool
    executed_at: str
    input: InputRef


_EXECUTION: msgspec.json.Decoder[ExecutionRecord] = msgspec.json.Decoder(ExecutionRecord)
_TRADE = msgspec.json.Decoder(PublicTrade)


def decode_execution(raw: bytes | None) -> ExecutionRecord:
    """Bytes from ``te.executions`` to their record, or ``DecodeError`` (``DECODE_EMPTY``,
    ``DECODE_INVALID``); each consumer files that under its own stable code."""
    if not raw:
        raise DecodeError(DeadLetterCode.DECODE_EMPTY, "record has no value")
    try:
        return _EXECUTION.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(DeadLetterCode.DECODE_INVALID, f"not an execution: {exc}") from None


def decode_trade(raw: bytes | None) -> PublicTrade:
    """Bytes from ``te.trades`` to a ``PublicTrade``, or ``DecodeError`` as above."""
    if not raw:
        raise DecodeError(DeadLetterCode.DECODE_EMPTY, "record has no value")
    try:
        return _TRADE.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(DeadLetterCode.DECODE_INVALID, f"not a trade: {exc}") from None


def _wire_value(value: Any) -> Any:
    cls = type(value)
    if cls is Decimal:
        return format(value, "f")  # the encoder's plain decimal, never an exponent
    if cls is InputRef:
        return {"partition": value.partition, "offset": value.offset}
    return value


def execution_wire(record: ExecutionRecord) -> dict[str, Any]:
    """The record as the encoder's wire dict: same keys, same order, decimals as text."""
    out: dict[str, Any] = {}
    for name in record.__struct_fields__:
        value = getattr(record, name)
        if value is None:
            continue
        out[name] = _wire_value(value)
        if name == "seq":
            out["kind"] = record.kind
    return out


def trade_wire(record: PublicTrade) -> dict[str, Any]:
    """The te.trades record as its wire dict (same keys, same order)."""
    return {name: _wire_value(getattr(record, name)) for name in record.__struct_fields__}


def public_trade(trade: TradeExecution) -> PublicTrade:
    """The ``te.trades`` record of a TRADE execution (what the matcher publishes with it)."""
    return PublicTrade(
        trade_id=trade.trade_id,
        seq=trade.seq,
        symbol=trade.symbol,
        price=trade.price,
        quantity=trade.quantity,
        quote_quantity=trade.quote_quantity,
        buyer_order_id=trade.buyer_order_id,
        seller_order_id=trade.seller_order_id,
        buyer_user_id=trade.buyer_user_id,
        seller_user_id=trade.seller_user_id,
        buyer_fee=trade.buyer_fee,
        seller_fee=trade.seller_fee,
        buyer_fee_asset=trade.buyer_fee_asset,
        seller_fee_asset=trade.seller_fee_asset,
        is_buyer_maker=trade.is_buyer_maker,
        executed_at=trade.at,
        input=trade.input,
    )
