"""Wire contract of ``te.executions`` and ``te.trades``.

The matcher turns each core execution record into one JSON message: integer
ticks, lots and quote units become decimal strings with the symbol's scales,
and every message names the input that caused it (``input``: partition and
offset of ``te.commands.accepted``) and the symbol's gap-free ``seq``.

``execution_message``/``trade_message`` build the wire dicts and ``dumps``
encodes them: that is the reference encoding. The hot path
(``encode_execution``) writes the same bytes directly for the frequent kinds
(ACCEPTED, REJECTED, TRADE, ORDER_ENDED) without the dict and ``json.dumps``,
and falls back to the reference for the others; a property test checks that
the two give identical bytes. The pydantic models below are the documented
contract and generate the JSON Schemas in ``streams/schemas/``; a test checks
that the dicts agree with them. Consumers never parse these bytes themselves:
``streams.execution_records`` is the topics' one decoder.
"""

from __future__ import annotations

import json
from dataclasses import fields
from json.encoder import encode_basestring
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trade_engine.streams.commands import SCHEMA_VERSION, DecimalStr, rfc3339
from trade_engine.tables.matching.enums import Side
from trade_engine.tables.matching.executions import (
    Accepted,
    Execution,
    OrderEnded,
    Rejected,
    Trade,
)
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


# -- the hot path: the same bytes as ``dumps(execution_message(...))``, written directly

# json.dumps(..., ensure_ascii=False) encodes every str (StrEnum members included)
# with encode_basestring, ints with int.__repr__, bools as true/false.
_str = encode_basestring


def _json_bool(value: bool) -> str:
    return "true" if value else "false"


class InputTail:
    """The fields every execution of one input shares: ``"input":{...},"at":"..."``.

    ``at`` is the input record's timestamp as RFC 3339; consecutive records often
    share a millisecond, so the last conversion is cached.
    """

    __slots__ = ("_last_at", "_last_ms")

    def __init__(self) -> None:
        self._last_ms: int | None = None
        self._last_at = ""

    def at(self, timestamp_ms: int) -> str:
        if timestamp_ms != self._last_ms:
            self._last_at = rfc3339(timestamp_ms)
            self._last_ms = timestamp_ms
        return self._last_at

    def tail(self, partition: int, offset: int, timestamp_ms: int) -> tuple[str, str]:
        """(``,"input":{...},"at":"..."`` fragment, the ``input`` object alone)."""
        input_obj = f'{{"partition":{int.__repr__(partition)},"offset":{int.__repr__(offset)}}}'
        return f',"input":{input_obj},"at":{_str(self.at(timestamp_ms))}', input_obj


def _hold(rules: SymbolRules, side: Side | None, value: int) -> str:
    scale = rules.qty_scale if side is not None and side is not Side.BUY else rules.quote_scale
    return _str(scale.format(value))


def _opt_str(name: str, value: str | None) -> str:
    return "" if value is None else f',"{name}":{_str(value)}'


def _opt_int(name: str, value: int | None) -> str:
    return "" if value is None else f',"{name}":{int.__repr__(value)}'


def _accepted(r: Accepted, rules: SymbolRules) -> str:
    price_scale = rules.price_scale
    parts = [
        f',"order_id":{_str(r.order_id)},"user_id":{_str(r.user_id)}',
        _opt_str("client_order_id", r.client_order_id),
        f',"side":{_str(r.side)},"order_type":{_str(r.order_type)},"tif":{_str(r.tif)}',
    ]
    if r.price is not None:
        parts.append(f',"price":{_str(price_scale.format(r.price))}')
    if r.stop_price is not None:
        parts.append(f',"stop_price":{_str(price_scale.format(r.stop_price))}')
    if r.quantity is not None:
        parts.append(f',"quantity":{_str(rules.qty_scale.format(r.quantity))}')
    if r.funds is not None:
        parts.append(f',"funds":{_str(rules.quote_scale.format(r.funds))}')
    parts.append(_opt_int("expire_at", r.expire_at))
    parts.append(
        f',"stp":{_str(r.stp)},"post_only":{_json_bool(r.post_only)}'
        f',"reserved":{_hold(rules, r.side, r.reserved)},"status":{_str(r.status)}}}'
    )
    return "".join(parts)


def _rejected(r: Rejected, rules: SymbolRules) -> str:
    return (
        f',"request":{_str(r.request)}'
        f"{_opt_str('order_id', r.order_id)}{_opt_str('user_id', r.user_id)}"
        f',"code":{_str(r.code)},"message":{_str(r.message)}'
        f',"release":{_hold(rules, r.side, r.release)}'
        f"{_opt_str('side', r.side)}}}"
    )


def _order_ended(r: OrderEnded, rules: SymbolRules) -> str:
    qty = rules.qty_scale
    return (
        f',"order_id":{_str(r.order_id)},"user_id":{_str(r.user_id)}'
        f',"status":{_str(r.status)},"reason":{_str(r.reason)}'
        f',"filled":{_str(qty.format(r.filled))}'
        f',"quote_filled":{_str(rules.quote_scale.format(r.quote_filled))}'
        f',"cancelled":{_str(qty.format(r.cancelled))}'
        f',"reserved":{_hold(rules, r.side, r.reserved)}'
        f',"release":{_hold(rules, r.side, r.release)}'
        f"{_opt_str('side', r.side)}}}"
    )


_PREFIX: dict[str, str] = {}
# ``kind`` is a per-instance property of the core's records; the prefix is per class.
_KIND: dict[type, str] = {
    Accepted: ',"kind":"ACCEPTED"',
    Rejected: ',"kind":"REJECTED"',
    OrderEnded: ',"kind":"ORDER_ENDED"',
}


def _prefix(symbol: str) -> str:
    """``{"v":1,"symbol":"...","seq":`` per symbol."""
    prefix = _PREFIX.get(symbol)
    if prefix is None:
        prefix = _PREFIX[symbol] = (
            f'{{"v":{int.__repr__(SCHEMA_VERSION)},"symbol":{_str(symbol)},"seq":'
        )
    return prefix


def encode_execution(
    record: Execution,
    rules: SymbolRules,
    *,
    tail: str,
    input_obj: str,
    at: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
) -> tuple[bytes, bytes | None]:
    """``dumps(execution_message(record, ...))`` and, for a trade, ``dumps(trade_message(...))``.

    ``tail``, ``input_obj`` and ``at`` come from ``InputTail`` for the same
    ``partition``, ``offset`` and ``timestamp_ms`` (those are only used by the
    reference path of the rarer kinds).
    """
    cls = type(record)
    if cls is Trade:
        return _trade(record, rules, tail, input_obj, at)  # type: ignore[arg-type]
    if cls is Accepted:
        body = _accepted(record, rules)  # type: ignore[arg-type]
    elif cls is OrderEnded:
        body = _order_ended(record, rules)  # type: ignore[arg-type]
    elif cls is Rejected:
        body = _rejected(record, rules)  # type: ignore[arg-type]
    else:
        message = execution_message(record, rules, partition, offset, timestamp_ms)
        return dumps(message), None
    text = f"{_prefix(rules.symbol)}{int.__repr__(record.seq)}{_KIND[cls]}{tail}{body}"
    return text.encode(), None


_ASSETS: dict[str, tuple[str, str]] = {}


def _assets(symbol: str) -> tuple[str, str]:
    assets = _ASSETS.get(symbol)
    if assets is None:
        base, quote = symbol.split("/")
        assets = _ASSETS[symbol] = (_str(base), _str(quote))
    return assets


def _trade(r: Trade, rules: SymbolRules, tail: str, input_obj: str, at: str) -> tuple[bytes, bytes]:
    qty = rules.qty_scale
    quote = rules.quote_scale
    seq = int.__repr__(r.seq)
    trade_id = _str(r.trade_id)
    symbol = _str(r.symbol)
    price = _str(rules.price_scale.format(r.price))
    quantity = _str(qty.format(r.quantity))
    quote_quantity = _str(quote.format(r.quote_quantity))
    buyer_fee = _str(qty.format(r.buyer_fee))
    seller_fee = _str(quote.format(r.seller_fee))
    maker_is_buyer = r.taker_side is Side.SELL
    taker_order, maker_order = _str(r.taker_order_id), _str(r.maker_order_id)
    taker_user, maker_user = _str(r.taker_user_id), _str(r.maker_user_id)
    if maker_is_buyer:
        parties = (
            f'"buyer_order_id":{maker_order},"seller_order_id":{taker_order}'
            f',"buyer_user_id":{maker_user},"seller_user_id":{taker_user}'
        )
    else:
        parties = (
            f'"buyer_order_id":{taker_order},"seller_order_id":{maker_order}'
            f',"buyer_user_id":{taker_user},"seller_user_id":{maker_user}'
        )
    base, quote_asset = _assets(rules.symbol)
    assets = f'"buyer_fee_asset":{base},"seller_fee_asset":{quote_asset}'
    maker_flag = _json_bool(maker_is_buyer)
    execution = (
        f'{{"v":{int.__repr__(SCHEMA_VERSION)},"symbol":{symbol},"seq":{seq},"kind":"TRADE"'
        f'{tail},"trade_id":{trade_id},"price":{price},"quantity":{quantity}'
        f',"quote_quantity":{quote_quantity},"taker_side":{_str(r.taker_side)}'
        f',"taker_order_id":{taker_order},"taker_user_id":{taker_user}'
        f',"maker_order_id":{maker_order},"maker_user_id":{maker_user}'
        f',"buyer_fee":{buyer_fee},"seller_fee":{seller_fee}'
        f',"taker_remaining":{_str(qty.format(r.taker_remaining))}'
        f',"maker_remaining":{_str(qty.format(r.maker_remaining))}'
        f',{parties},{assets},"is_buyer_maker":{maker_flag}}}'
    )
    trade = (
        f'{{"v":{int.__repr__(SCHEMA_VERSION)},"trade_id":{trade_id},"seq":{seq}'
        f',"symbol":{symbol},"price":{price},"quantity":{quantity}'
        f',"quote_quantity":{quote_quantity},{parties},"buyer_fee":{buyer_fee}'
        f',"seller_fee":{seller_fee},{assets},"is_buyer_maker":{maker_flag}'
        f',"executed_at":{_str(at)},"input":{input_obj}}}'
    )
    return execution.encode(), trade.encode()
