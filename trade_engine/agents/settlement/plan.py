"""What wallet call each execution record implies: pure, no I/O.

``plan`` turns one ``te.executions`` record into a ``WalletOp`` (or None when no
money moves); ``phases`` cuts a batch into batch calls that keep each order's
operations in log order (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import ValidationError

from trade_engine.connectors.wallet import wire
from trade_engine.streams.codes import DeadLetterCode
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.execution_records import (
    AmendedExecution,
    ExecutionRecord,
    OrderEndedExecution,
    RejectedExecution,
    TradeExecution,
    decode_execution,
)
from trade_engine.tables.matching.enums import RequestKind, Side

STAGE = "settlement"
BAD_RECORD = DeadLetterCode.SETTLEMENT_BAD_RECORD

Kind = Literal["reserve", "settle", "release"]
# Built by ``wire.build``: accepted exactly when the pydantic request accepts it.
WalletRequest = wire.ReserveItem | wire.ReleaseItem | wire.SettleItem
Holding = OrderEndedExecution | RejectedExecution | AmendedExecution


class BadRecordError(ValueError):
    """An execution record the agent cannot turn into a wallet call."""


@dataclass(frozen=True, slots=True)
class WalletOp:
    kind: Kind
    request: WalletRequest
    orders: tuple[str, ...]


# ----------------------------------------------------------------- planning (pure)


def _hold_asset(symbol: str, side: Side | None) -> str:
    base, _, quote = symbol.partition("/")
    if side is Side.BUY:
        return quote
    if side is Side.SELL:
        return base
    raise BadRecordError(f"a hold needs the order's side, got {side!r}")


def _release(record: Holding, amount: Decimal, reason: str, key: str | None) -> WalletOp:
    order_id, user_id = record.order_id, record.user_id
    if order_id is None or user_id is None:
        raise BadRecordError(f"{record.kind}: a release needs the order and user ids")
    fields = {
        "user_id": user_id,
        "asset": _hold_asset(record.symbol, record.side),
        "order_id": order_id,
        "amount": amount,
        "reason": reason,
        "idempotency_key": key,
    }
    return WalletOp("release", wire.build("release", fields), (order_id,))


def _settle(trade: TradeExecution) -> WalletOp:
    base, _, quote = trade.symbol.partition("/")
    fields = {
        "trade_id": trade.trade_id,
        "symbol": trade.symbol,
        "buyer_user_id": trade.buyer_user_id,
        "seller_user_id": trade.seller_user_id,
        "buyer_order_id": trade.buyer_order_id,
        "seller_order_id": trade.seller_order_id,
        "base_asset": base,
        "quote_asset": quote,
        "quantity": trade.quantity,
        "price": trade.price,
        "quote_quantity": trade.quote_quantity,
        "buyer_fee": trade.buyer_fee,
        "seller_fee": trade.seller_fee,
        "buyer_fee_asset": trade.buyer_fee_asset,
        "seller_fee_asset": trade.seller_fee_asset,
    }
    request = wire.build("settle", fields)
    return WalletOp("settle", request, (trade.buyer_order_id, trade.seller_order_id))


def _amended(amend: AmendedExecution) -> WalletOp | None:
    delta = amend.reserve_delta
    order_id, seq = amend.order_id, amend.seq
    if delta < 0:
        return _release(amend, -delta, "AMEND_DECREASE", f"{order_id}:{seq}")
    if delta > 0:
        # The matcher now refuses amends that need a larger hold
        # (MATCHING_AMEND_EXCEEDS_HOLD); records written before that rule are
        # still topped up here when replayed (docs/money-flow.md).
        fields = {
            "user_id": amend.user_id,
            "asset": _hold_asset(amend.symbol, amend.side),
            "amount": delta,
            "order_id": order_id,
            "reason": "AMEND_INCREASE",
            "idempotency_key": f"{order_id}:amend:{seq}",
        }
        return WalletOp("reserve", wire.build("reserve", fields), (order_id,))
    return None


def plan(value: bytes | None) -> WalletOp | None:
    """The wallet operation one ``te.executions`` record needs; None when it needs none.

    Raises ``BadRecordError`` for a record that cannot be turned into a valid request.
    """
    try:
        record = decode_execution(value)
    except DecodeError as exc:
        raise BadRecordError(str(exc)) from None
    try:
        return _plan(record)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<request>'}: {e['msg']}"
            for e in exc.errors()[:3]
        )
        raise BadRecordError(f"{record.kind}: invalid wallet request: {problems}") from None
    except ArithmeticError as exc:  # a NaN amount cannot be compared
        raise BadRecordError(f"{record.kind}: amount is not a number: {exc!r}") from None


def _plan(record: ExecutionRecord) -> WalletOp | None:
    if isinstance(record, TradeExecution):
        return _settle(record)
    if isinstance(record, OrderEndedExecution):
        return _release_rest(record, f"ORDER_{record.status}"[:64])
    if isinstance(record, RejectedExecution) and record.request is RequestKind.PLACE:
        return _release_rest(record, "ORDER_REJECTED")
    if isinstance(record, AmendedExecution):
        return _amended(record)
    return None


def _release_rest(record: OrderEndedExecution | RejectedExecution, reason: str) -> WalletOp | None:
    """The release of what an ended or refused order still holds, if anything."""
    if record.release <= 0:
        return None
    return _release(record, record.release, reason, None)


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
