"""From ``te.executions`` records to database rows: a pure fold, no I/O.

A batch of decoded execution records (``streams.execution_records``) becomes

- ``trades``: one row per TRADE (immutable, keyed by ``trade_id``);
- ``new_orders``: one full row per ACCEPTED in the batch, with the batch's later
  events for that order already folded in (most orders live and die within one
  batch, so they are written once, by COPY, and never updated);
- ``changes``: per order accepted in an earlier batch, what the batch did to it
  (fills to add, last status, amended price/quantity, final figures).

Events apply in ``seq`` order. The fold never reads the clock: every timestamp
comes from the record's ``at`` so a replay builds the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from trade_engine.streams.execution_records import (
    AcceptedExecution,
    AmendedExecution,
    ExecutionRecord,
    OrderEndedExecution,
    TradeExecution,
    TriggeredExecution,
)

FINAL_STATUSES = frozenset({"FILLED", "CANCELLED", "EXPIRED", "REJECTED"})
ZERO = Decimal(0)

ORDER_COLUMNS = (
    "order_id",
    "user_id",
    "symbol",
    "side",
    "order_type",
    "status",
    "quantity",
    "funds",
    "filled_quantity",
    "quote_filled",
    "cancelled_quantity",
    "price",
    "stop_price",
    "time_in_force",
    "post_only",
    "stp_mode",
    "expire_at_ms",
    "client_order_id",
    "end_reason",
    "created_at",
    "updated_at",
    "filled_at",
    "cancelled_at",
    "accepted_seq",
    "last_seq",
)
TRADE_COLUMNS = (
    "trade_id",
    "symbol",
    "seq",
    "buyer_order_id",
    "seller_order_id",
    "buyer_user_id",
    "seller_user_id",
    "price",
    "quantity",
    "quote_quantity",
    "buyer_fee",
    "seller_fee",
    "buyer_fee_asset",
    "seller_fee_asset",
    "is_buyer_maker",
    "executed_at",
    "input_partition",
    "input_offset",
)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(slots=True)
class OrderChange:
    """What one batch did to one order. ``None`` fields were not touched."""

    order_id: str
    symbol: str
    first_seq: int
    last_seq: int
    updated_at: datetime
    fill_quantity: Decimal = ZERO
    fill_quote: Decimal = ZERO
    status: str | None = None
    price: Decimal | None = None
    quantity: Decimal | None = None
    final_filled: Decimal | None = None
    final_quote: Decimal | None = None
    cancelled: Decimal | None = None
    end_reason: str | None = None
    filled_at: datetime | None = None
    cancelled_at: datetime | None = None


@dataclass
class BatchRows:
    trades: list[tuple[Any, ...]] = field(default_factory=list)
    new_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: dict[str, OrderChange] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    seq_gaps: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def order_rows(self) -> list[tuple[Any, ...]]:
        return [tuple(row[c] for c in ORDER_COLUMNS) for row in self.new_orders.values()]

    def order_times(self) -> set[datetime]:
        return {row["created_at"] for row in self.new_orders.values()}

    def trade_times(self) -> set[datetime]:
        return {row[15] for row in self.trades}


def fold(records: list[ExecutionRecord], last_seq: dict[str, int] | None = None) -> BatchRows:
    """The rows for a batch of execution records (in log order).

    ``last_seq`` (symbol -> last applied seq) lets the fold count gaps; a record at
    or below it was applied before and is skipped (redelivery).
    """
    out = BatchRows()
    seen = dict(last_seq or {})
    for record in records:
        symbol, seq = record.symbol, record.seq
        previous = seen.get(symbol)
        if previous is not None and seq <= previous:
            out.skipped += 1
            continue
        if previous is not None and seq != previous + 1:
            out.seq_gaps[symbol] = out.seq_gaps.get(symbol, 0) + 1
        seen[symbol] = out.last_seq[symbol] = seq
        _apply(out, record)
    return out


def _apply(out: BatchRows, m: ExecutionRecord) -> None:
    at = parse_time(m.at)
    if isinstance(m, AcceptedExecution):
        out.new_orders[m.order_id] = _accepted_row(m, at)
    elif isinstance(m, TradeExecution):
        out.trades.append(_trade_row(m, at))
        for order_id in (m.taker_order_id, m.maker_order_id):
            _fill(out, order_id, m, at, quantity=m.quantity, quote=m.quote_quantity)
    elif isinstance(m, TriggeredExecution):
        _touch(out, m.order_id, m, at, status="OPEN")
    elif isinstance(m, AmendedExecution):
        _touch(out, m.order_id, m, at, price=m.price, quantity=m.quantity)
    elif isinstance(m, OrderEndedExecution):
        _end(out, m, at)
    # REJECTED, STP_PREVENTED and TRADING_STATE change no order row: a rejected
    # command never became an order, STP's effect arrives as ORDER_ENDED.


def _accepted_row(m: AcceptedExecution, at: datetime) -> dict[str, Any]:
    return {
        "order_id": m.order_id,
        "user_id": m.user_id,
        "symbol": m.symbol,
        "side": m.side,
        "order_type": m.order_type,
        "status": m.status,
        "quantity": m.quantity,
        "funds": m.funds,
        "filled_quantity": ZERO,
        "quote_filled": ZERO,
        "cancelled_quantity": ZERO,
        "price": m.price,
        "stop_price": m.stop_price,
        "time_in_force": m.tif,
        "post_only": m.post_only,
        "stp_mode": m.stp,
        "expire_at_ms": m.expire_at,
        "client_order_id": m.client_order_id,
        "end_reason": None,
        "created_at": at,
        "updated_at": at,
        "filled_at": None,
        "cancelled_at": None,
        "accepted_seq": m.seq,
        "last_seq": m.seq,
    }


def _trade_row(m: TradeExecution, at: datetime) -> tuple[Any, ...]:
    return (
        m.trade_id,
        m.symbol,
        m.seq,
        m.buyer_order_id,
        m.seller_order_id,
        m.buyer_user_id,
        m.seller_user_id,
        m.price,
        m.quantity,
        m.quote_quantity,
        m.buyer_fee,
        m.seller_fee,
        m.buyer_fee_asset,
        m.seller_fee_asset,
        m.is_buyer_maker,
        at,
        m.input.partition,
        m.input.offset,
    )


def _change(out: BatchRows, order_id: str, m: ExecutionRecord, at: datetime) -> OrderChange:
    change = out.changes.get(order_id)
    if change is None:
        change = out.changes[order_id] = OrderChange(order_id, m.symbol, m.seq, m.seq, at)
    change.last_seq, change.updated_at = m.seq, at
    return change


def _fill(
    out: BatchRows,
    order_id: str,
    m: TradeExecution,
    at: datetime,
    *,
    quantity: Decimal,
    quote: Decimal,
) -> None:
    row = out.new_orders.get(order_id)
    if row is not None:
        row["filled_quantity"] += quantity
        row["quote_filled"] += quote
        if row["status"] not in FINAL_STATUSES:
            row["status"] = "PARTIALLY_FILLED"
        row["updated_at"], row["last_seq"] = at, m.seq
        return
    change = _change(out, order_id, m, at)
    change.fill_quantity += quantity
    change.fill_quote += quote
    if change.status not in FINAL_STATUSES:
        change.status = "PARTIALLY_FILLED"


def _touch(out: BatchRows, order_id: str, m: ExecutionRecord, at: datetime, **values: Any) -> None:
    row = out.new_orders.get(order_id)
    if row is not None:
        row.update(values)
        row["updated_at"], row["last_seq"] = at, m.seq
        return
    change = _change(out, order_id, m, at)
    for name, value in values.items():
        setattr(change, name, value)


def _end(out: BatchRows, m: OrderEndedExecution, at: datetime) -> None:
    status = m.status
    values: dict[str, Any] = {
        "status": status,
        "end_reason": m.reason,
        "filled_at": at if status == "FILLED" else None,
        "cancelled_at": None if status == "FILLED" else at,
    }
    filled, quote, cancelled = m.filled, m.quote_filled, m.cancelled
    row = out.new_orders.get(m.order_id)
    if row is not None:
        row.update(values, filled_quantity=filled, quote_filled=quote, cancelled_quantity=cancelled)
        row["updated_at"], row["last_seq"] = at, m.seq
        return
    change = _change(out, m.order_id, m, at)
    for name, value in values.items():
        setattr(change, name, value)
    change.final_filled, change.final_quote, change.cancelled = filled, quote, cancelled
