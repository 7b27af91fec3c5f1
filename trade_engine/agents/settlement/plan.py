"""What wallet call each execution record implies: pure, no I/O.

``plan`` turns one ``te.executions`` record into a ``WalletOp`` (or None when no
money moves); ``phases`` cuts a batch into batch calls that keep each order's
operations in log order (see the package docstring).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import ValidationError

from trade_engine.connectors.wallet.models import (
    ReleaseRequest,
    ReserveRequest,
    SettleTradeRequest,
)
from trade_engine.streams.records import ConsumedRecord

STAGE = "settlement"
BAD_RECORD = "SETTLEMENT_BAD_RECORD"

Kind = Literal["reserve", "settle", "release"]
WalletRequest = ReserveRequest | ReleaseRequest | SettleTradeRequest


class BadRecordError(ValueError):
    """An execution record the agent cannot turn into a wallet call."""


@dataclass(frozen=True, slots=True)
class WalletOp:
    kind: Kind
    request: WalletRequest
    orders: tuple[str, ...]


# ----------------------------------------------------------------- planning (pure)


def _amount(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise BadRecordError(f"amount {value!r} is not a decimal string")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise BadRecordError(f"amount {value!r} is not a decimal") from None


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _hold_asset(symbol: str, side: Any) -> str:
    base, _, quote = symbol.partition("/")
    if side == "BUY":
        return quote
    if side == "SELL":
        return base
    raise BadRecordError(f"a hold needs the order's side, got {side!r}")


def _release(msg: dict[str, Any], amount: Decimal, reason: str, key: str | None) -> WalletOp:
    order_id = msg["order_id"]
    request = ReleaseRequest(
        user_id=msg["user_id"],
        asset=_hold_asset(msg["symbol"], msg.get("side")),
        order_id=order_id,
        amount=_plain(amount),  # type: ignore[arg-type]
        reason=reason,
        idempotency_key=key,
    )
    return WalletOp("release", request, (order_id,))


def _settle(msg: dict[str, Any]) -> WalletOp:
    base, _, quote = msg["symbol"].partition("/")
    request = SettleTradeRequest(
        trade_id=msg["trade_id"],
        symbol=msg["symbol"],
        buyer_user_id=msg["buyer_user_id"],
        seller_user_id=msg["seller_user_id"],
        buyer_order_id=msg["buyer_order_id"],
        seller_order_id=msg["seller_order_id"],
        base_asset=base,
        quote_asset=quote,
        quantity=msg["quantity"],
        price=msg["price"],
        quote_quantity=msg["quote_quantity"],
        buyer_fee=msg["buyer_fee"],
        seller_fee=msg["seller_fee"],
        buyer_fee_asset=msg.get("buyer_fee_asset", base),
        seller_fee_asset=msg.get("seller_fee_asset", quote),
    )
    return WalletOp("settle", request, (msg["buyer_order_id"], msg["seller_order_id"]))


def _amended(msg: dict[str, Any]) -> WalletOp | None:
    delta = _amount(msg.get("reserve_delta", "0"))
    order_id, seq = msg["order_id"], msg["seq"]
    if delta < 0:
        return _release(msg, -delta, "AMEND_DECREASE", f"{order_id}:{seq}")
    if delta > 0:
        # The matcher now refuses amends that need a larger hold
        # (MATCHING_AMEND_EXCEEDS_HOLD); records written before that rule are
        # still topped up here when replayed (docs/money-flow.md).
        request = ReserveRequest(
            user_id=msg["user_id"],
            asset=_hold_asset(msg["symbol"], msg.get("side")),
            amount=_plain(delta),  # type: ignore[arg-type]
            order_id=order_id,
            reason="AMEND_INCREASE",
            idempotency_key=f"{order_id}:amend:{seq}",
        )
        return WalletOp("reserve", request, (order_id,))
    return None


def plan(value: bytes | None) -> WalletOp | None:  # noqa: PLR0911
    """The wallet operation one ``te.executions`` record needs; None when it needs none.

    Raises ``BadRecordError`` for a record that cannot be turned into a valid request.
    """
    if value is None:
        raise BadRecordError("record has no value")
    try:
        msg = json.loads(value)
    except ValueError as exc:
        raise BadRecordError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise BadRecordError("not a JSON object")
    kind = msg.get("kind")
    try:
        if kind == "TRADE":
            return _settle(msg)
        if kind == "ORDER_ENDED":
            release = _amount(msg.get("release", "0"))
            if release <= 0:
                return None
            return _release(msg, release, f"ORDER_{msg.get('status', 'ENDED')}"[:64], None)
        if kind == "REJECTED" and msg.get("request") == "PLACE":
            release = _amount(msg.get("release", "0"))
            if release <= 0:
                return None
            return _release(msg, release, "ORDER_REJECTED", None)
        if kind == "AMENDED":
            return _amended(msg)
    except BadRecordError:
        raise
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<request>'}: {e['msg']}"
            for e in exc.errors()[:3]
        )
        raise BadRecordError(f"{kind}: invalid wallet request: {problems}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise BadRecordError(f"{kind}: missing or malformed field {exc}") from None
    return None


def phases(items: Sequence[tuple[int, WalletOp]]) -> list[tuple[Kind, list[tuple[int, WalletOp]]]]:
    """Group ``(index, op)`` items (in log order) into sequential one-kind batch calls.

    Each order's operations stay in log order: an item joins the first phase
    of its kind at or after the last phase holding an earlier item of any of
    its orders (within one phase the wallet applies items in request order).
    A reserve never moves before an earlier item of any order.
    """
    out: list[tuple[Kind, list[tuple[int, WalletOp]]]] = []
    last: dict[str, int] = {}
    for index, op in items:
        if op.kind == "reserve":
            floor = max(len(out) - 1, 0)
        else:
            floor = max((last.get(order, 0) for order in op.orders), default=0)
        chosen = next((p for p in range(floor, len(out)) if out[p][0] == op.kind), None)
        if chosen is None:
            out.append((op.kind, []))
            chosen = len(out) - 1
        out[chosen][1].append((index, op))
        for order in op.orders:
            last[order] = chosen
    return out


def header_dict(headers: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in headers or []:
        if value is None:
            continue
        out[key] = value if isinstance(value, bytes) else str(value).encode()
    return out


def dead_letter_headers(record: ConsumedRecord, code: str, reason: str) -> dict[str, bytes]:
    """The record's headers plus ``dlq.*``; a re-dead-lettered record keeps its origin."""
    headers = header_dict(record.headers)
    redrives = 0
    if "dlq.topic" in headers:  # it came from the dead-letter topic (a redrive)
        redrives = int(headers.get("dlq.redrives", b"0") or b"0") + 1
    else:
        headers["dlq.topic"] = record.topic.encode()
        headers["dlq.partition"] = str(record.partition).encode()
        headers["dlq.offset"] = str(record.offset).encode()
    headers.update(
        {
            "dlq.code": code.encode(),
            "dlq.reason": reason.encode()[:1000],
            "dlq.stage": STAGE.encode(),
            "dlq.redrives": str(redrives).encode(),
        }
    )
    return headers
