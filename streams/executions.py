"""Wire contract of ``te.executions`` and ``te.trades``.

The matcher turns each core execution record into one JSON message: integer
ticks, lots and quote units become decimal strings with the symbol's scales,
and every message names the input that caused it (``input``: partition and
offset of ``te.commands.accepted``) and the symbol's gap-free ``seq``.

The hot path builds plain dicts (``execution_message``/``trade_message``); the
pydantic models below are the documented contract and generate the JSON
Schemas in ``streams/schemas/``; a test checks that the two agree.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trade_engine.streams.commands import SCHEMA_VERSION, DecimalStr, rfc3339
from trade_engine.tables.matching.enums import Side
from trade_engine.tables.matching.executions import Execution, Trade
from trade_engine.tables.matching.rules import SymbolRules

# Which scale formats which field of the core's records.
_PRICE_FIELDS = frozenset({"price", "stop_price", "last_price", "reference_price"})
_QTY_FIELDS = frozenset(
    {"quantity", "filled", "remaining", "cancelled", "taker_remaining", "maker_remaining"}
)
_QUOTE_FIELDS = frozenset({"funds", "quote_quantity", "quote_filled"})
# Holds are in the asset the order gives up: quote for buys, base for sells.
_HOLD_FIELDS = frozenset({"reserved", "release", "reserve_delta"})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class InputRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    partition: int
    offset: int


class ExecutionMessage(BaseModel):
    """One outcome of one input command. Fields beyond the envelope depend on ``kind``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    symbol: str
    seq: int = Field(ge=1, description="Per-symbol sequence number, gap-free from 1.")
    kind: Literal[
        "ACCEPTED",
        "REJECTED",
        "TRADE",
        "TRIGGERED",
        "AMENDED",
        "STP_PREVENTED",
        "ORDER_ENDED",
        "TRADING_STATE",
    ]
    input: InputRef
    at: str = Field(description="RFC 3339 UTC: the input record's log timestamp.")


class TradeMessage(BaseModel):
    """A public trade on ``te.trades``; ``trade_id`` is ``<symbol>:<seq>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    trade_id: str
    seq: int = Field(ge=1)
    symbol: str
    price: DecimalStr
    quantity: DecimalStr
    quote_quantity: DecimalStr
    buyer_order_id: str
    seller_order_id: str
    buyer_user_id: str
    seller_user_id: str
    buyer_fee: DecimalStr = Field(description="In the base asset (what the buyer receives).")
    seller_fee: DecimalStr = Field(description="In the quote asset (what the seller receives).")
    buyer_fee_asset: str
    seller_fee_asset: str
    is_buyer_maker: bool
    executed_at: str
    input: InputRef


def _field_names(record: Execution) -> tuple[str, ...]:
    cls = type(record)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(record))
    return names


def execution_message(
    record: Execution,
    rules: SymbolRules,
    partition: int,
    offset: int,
    timestamp_ms: int,
    *,
    side: Side | None = None,
) -> dict[str, Any]:
    """The wire dict of one core record. ``side`` decides the unit of hold fields."""
    out: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "symbol": rules.symbol,
        "seq": record.seq,
        "kind": record.kind,
        "input": {"partition": partition, "offset": offset},
        "at": rfc3339(timestamp_ms),
    }
    side = getattr(record, "side", side)
    for name in _field_names(record):
        if name == "seq":
            continue
        value = getattr(record, name)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = _format(name, value, rules, side, record)
        out[name] = value
    if isinstance(record, Trade):
        out.update(_trade_parties(record, rules))
    return out


def _format(name: str, value: int, rules: SymbolRules, side: Side | None, record: Any) -> Any:
    if name in _PRICE_FIELDS:
        return rules.price_scale.format(value)
    if name in _QTY_FIELDS or name == "buyer_fee":
        return rules.qty_scale.format(value)
    if name in _QUOTE_FIELDS or name == "seller_fee":
        return rules.quote_scale.format(value)
    if name in _HOLD_FIELDS:
        if side is None:
            # Only rejects that never reached a hold lack a side; their figures are 0.
            return rules.quote_scale.format(value)
        scale = rules.quote_scale if side is Side.BUY else rules.qty_scale
        return scale.format(value)
    return value


def _trade_parties(trade: Trade, rules: SymbolRules) -> dict[str, Any]:
    base, quote = rules.symbol.split("/")
    return {
        "buyer_order_id": trade.buyer_order_id,
        "seller_order_id": trade.seller_order_id,
        "buyer_user_id": trade.buyer_user_id,
        "seller_user_id": trade.seller_user_id,
        "buyer_fee_asset": base,
        "seller_fee_asset": quote,
        "is_buyer_maker": trade.is_buyer_maker,
    }


def trade_message(execution: dict[str, Any]) -> dict[str, Any]:
    """The public trade for ``te.trades`` from a TRADE execution message."""
    return {
        "v": SCHEMA_VERSION,
        "trade_id": execution["trade_id"],
        "seq": execution["seq"],
        "symbol": execution["symbol"],
        "price": execution["price"],
        "quantity": execution["quantity"],
        "quote_quantity": execution["quote_quantity"],
        "buyer_order_id": execution["buyer_order_id"],
        "seller_order_id": execution["seller_order_id"],
        "buyer_user_id": execution["buyer_user_id"],
        "seller_user_id": execution["seller_user_id"],
        "buyer_fee": execution["buyer_fee"],
        "seller_fee": execution["seller_fee"],
        "buyer_fee_asset": execution["buyer_fee_asset"],
        "seller_fee_asset": execution["seller_fee_asset"],
        "is_buyer_maker": execution["is_buyer_maker"],
        "executed_at": execution["at"],
        "input": execution["input"],
    }


def dumps(message: dict[str, Any]) -> bytes:
    """Compact, key-order-stable JSON: the same record always gives the same bytes."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
