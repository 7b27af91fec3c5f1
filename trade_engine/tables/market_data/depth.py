"""L2 depth of one symbol: resting quantity per price level, from its execution records.

The execution log never says "this order now rests"; it says what happened to
each order, and resting is what is left. Which records move resting quantity:

- ``ACCEPTED`` (status OPEN) of a LIMIT order with GTC/DAY/GTD: the order rests
  at its price with its full quantity unless later records of the same input
  take it away. It is added at once; its own trades as taker then reduce it and
  an ``ORDER_ENDED`` (filled, STP, IOC...) removes it, so the book after the
  input's last record equals the engine's. IOC/FOK/MARKET orders never rest.
  An ACCEPTED with status PENDING is a stop: remembered, not in the book.
- ``TRIGGERED``: a pending STOP_LIMIT with a resting time in force enters the
  book (it then takes like any taker); a triggered STOP never rests.
- ``TRADE``: maker and, if resting, taker drop to ``maker_remaining`` /
  ``taker_remaining``.
- ``STP_PREVENTED`` with mode DECREMENT and a taker that has a quantity: both
  orders shrink by ``quantity``. Other modes end orders with ``ORDER_ENDED``.
- ``AMENDED``: the order moves to ``price`` with ``remaining`` (a reduction in
  place or a new level).
- ``ORDER_ENDED``: whatever the order still rests leaves the book.
- ``REJECTED``, ``TRADING_STATE``: no change.

Inside one input the book may be crossed for a moment (a taker is added before
its trades arrive); the agent publishes one diff per input, after its last
record, so readers only ever see uncrossed books. Update ids are the
execution ``seq``: gap-free per symbol and identical on every replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trade_engine.tables.market_data.exceptions import MarketDataError
from trade_engine.tables.matching.exceptions import MatchingError
from trade_engine.tables.matching.numbers import Scale
from trade_engine.tables.matching.rules import SymbolRules

BUY, SELL = "BUY", "SELL"
_RESTING_TIF = frozenset({"GTC", "DAY", "GTD"})
Level = tuple[int, int]  # (price ticks, quantity lots)
# A decoded ``te.executions`` record (``streams.execution_records``; this pure
# package sits below streams, so it reads the record by attribute, per ``kind``).
Record = Any


def units(scale: Scale, amount: Decimal) -> int:
    """Exact units of a record's amount; off the unit (or not a plain number) raises."""
    return scale.parse(format(amount, "f"))


@dataclass(slots=True)
class _Live:
    """What depth needs of one live order."""

    side: str
    price: int | None
    remaining: int
    has_qty: bool
    rests: bool  # a LIMIT order with a resting time in force (in the book once active)
    in_book: bool = False


class DepthBook:
    """Price levels of one symbol (ticks -> lots) and the levels changed since the last take."""

    __slots__ = ("asks", "bids", "changed", "orders", "rules", "seq")

    def __init__(self, rules: SymbolRules) -> None:
        self.rules = rules
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.orders: dict[str, _Live] = {}
        self.seq = 0
        self.changed: dict[tuple[str, int], None] = {}

    # ------------------------------------------------------------------ input

    def apply(self, msg: Record) -> bool:
        """Apply one execution record; False for a record already applied (a replay).

        Raises ``MarketDataError`` on a gap in ``seq`` or a malformed record.
        """
        seq = msg.seq
        if seq <= self.seq:
            return False
        if seq != self.seq + 1:
            raise MarketDataError(
                "MD_SEQ_GAP", f"{self.rules.symbol}: seq {seq} after {self.seq} (records missing)"
            )
        try:
            self._apply(msg)
        except (KeyError, TypeError, ValueError, MatchingError) as exc:
            raise MarketDataError(
                "MD_BAD_RECORD", f"{self.rules.symbol} seq {seq} {msg.kind}: {exc!r}"
            ) from None
        self.seq = seq
        return True

    def _apply(self, msg: Record) -> None:
        kind = msg.kind
        # Every field is parsed before anything changes: a bad record changes nothing.
        if kind == "TRADE":
            maker, taker = self._qty(msg.maker_remaining), self._qty(msg.taker_remaining)
            self._shrink_to(msg.maker_order_id, maker)
            self._shrink_to(msg.taker_order_id, taker)
        elif kind == "ACCEPTED":
            self._accepted(msg)
        elif kind == "ORDER_ENDED":
            o = self.orders.pop(msg.order_id, None)
            if o is not None and o.in_book:
                self._level(o.side, o.price, -o.remaining)  # type: ignore[arg-type]
        elif kind == "AMENDED":
            o = self._known(msg.order_id)
            price = units(self.rules.price_scale, msg.price)
            remaining = self._qty(msg.remaining)
            if o.in_book:
                self._level(o.side, o.price, -o.remaining)  # type: ignore[arg-type]
            o.price, o.remaining, o.in_book = price, remaining, True
            self._level(o.side, o.price, o.remaining)
        elif kind == "TRIGGERED":
            o = self._known(msg.order_id)
            if o.rests:
                o.in_book = True
                self._level(o.side, o.price, o.remaining)  # type: ignore[arg-type]
        elif kind == "STP_PREVENTED":
            t = self.orders.get(msg.taker_order_id)
            if msg.mode == "DECREMENT" and t is not None and t.has_qty:
                d = self._qty(msg.quantity)
                m = self._known(msg.maker_order_id)
                self._shrink_to(msg.maker_order_id, m.remaining - d)
                self._shrink_to(msg.taker_order_id, t.remaining - d)
        elif kind not in ("REJECTED", "TRADING_STATE"):
            raise ValueError(f"unknown kind {kind!r}")

    def _accepted(self, msg: Record) -> None:
        quantity = msg.quantity
        price = msg.price
        side = msg.side
        if side not in (BUY, SELL):
            raise ValueError(f"side {side!r}")
        rests = msg.order_type in ("LIMIT", "STOP_LIMIT") and msg.tif in _RESTING_TIF
        o = _Live(
            side=side,
            price=None if price is None else units(self.rules.price_scale, price),
            remaining=0 if quantity is None else self._qty(quantity),
            has_qty=quantity is not None,
            rests=rests,
        )
        self.orders[msg.order_id] = o
        if rests and msg.status == "OPEN":
            o.in_book = True
            self._level(side, o.price, o.remaining)  # type: ignore[arg-type]

    def _qty(self, amount: Decimal) -> int:
        return units(self.rules.qty_scale, amount)

    def _known(self, order_id: str) -> _Live:
        o = self.orders.get(order_id)
        if o is None:
            raise KeyError(f"order {order_id} is not live")
        return o

    def _shrink_to(self, order_id: str, remaining: int) -> None:
        o = self.orders.get(order_id)
        if o is None:
            return  # a funds-only market taker, already gone: it never rests
        if o.in_book:
            self._level(o.side, o.price, remaining - o.remaining)  # type: ignore[arg-type]
        o.remaining = remaining

    def _level(self, side: str, price: int, delta: int) -> None:
        if not delta:
            return
        levels = self.bids if side == BUY else self.asks
        total = levels.get(price, 0) + delta
        if total < 0:
            raise ValueError(f"{side} level {price} would hold {total} lots")
        if total:
            levels[price] = total
        else:
            del levels[price]
        self.changed[(side, price)] = None

    # ----------------------------------------------------------------- output

    def take_changes(self) -> tuple[list[Level], list[Level]]:
        """Levels changed since the last call, best first, with their new totals (0 = gone).

        A level that changed and came back to its old total is still listed:
        the diff is absolute, so repeating a level is always safe.
        """
        bids: list[Level] = []
        asks: list[Level] = []
        for side, price in self.changed:
            if side == BUY:
                bids.append((price, self.bids.get(price, 0)))
            else:
                asks.append((price, self.asks.get(price, 0)))
        self.changed.clear()
        bids.sort(reverse=True)
        asks.sort()
        return bids, asks

    def levels(self, side: str, limit: int | None = None) -> list[Level]:
        """Levels of one side, best first (bids high to low, asks low to high)."""
        levels = self.bids if side == BUY else self.asks
        ordered = sorted(levels.items(), reverse=side == BUY)
        return ordered if limit is None else ordered[:limit]

    def best(self, side: str) -> Level | None:
        levels = self.bids if side == BUY else self.asks
        if not levels:
            return None
        price = max(levels) if side == BUY else min(levels)
        return price, levels[price]
