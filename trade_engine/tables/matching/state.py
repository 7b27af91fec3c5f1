"""One symbol's engine state: the live orders, the indexes over them, and how that
state is saved, restored, hashed and checked.

``EngineState`` holds every field a snapshot carries and keeps its indexes (orders
by id, by user and by client order id; pending stops by stop price; the expiry heap;
the dedup window) in step; ``MatchingEngine`` (``engine.py``) adds the transitions.
Nothing here emits a record or decides a match. A snapshot is canonical: equal
states give equal JSON and equal hashes (format in docs/matching.md).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Self

from trade_engine.tables.matching.book import Book, BookLike
from trade_engine.tables.matching.enums import OrderStatus, Side, TradingState
from trade_engine.tables.matching.exceptions import InvariantError, SnapshotError
from trade_engine.tables.matching.executions import (
    Accepted,
    Amended,
    Execution,
    OrderEnded,
    StpPrevented,
    Trade,
    Triggered,
)
from trade_engine.tables.matching.order import IN_BOOK, IN_STOPS, NOWHERE, STATE_FIELDS, Order
from trade_engine.tables.matching.rules import SymbolRules

SNAPSHOT_FORMAT = 1


class EngineState:
    """One symbol's book and everything beside it that a snapshot carries."""

    def __init__(self, rules: SymbolRules, *, book: BookLike | None = None) -> None:
        self.rules = rules
        self.symbol = rules.symbol
        self.book: BookLike = book if book is not None else Book()
        self.seq = 0
        self.now = 0
        self.prio = 0
        self.last_price: int | None = None
        self.reference_price: int | None = rules.reference_price
        self.trading_state = TradingState.TRADING
        self.orders: dict[str, Order] = {}
        self.user_orders: dict[str, dict[str, Order]] = {}
        self.client_ids: dict[tuple[str, str], str] = {}
        self.pending: dict[int, Order] = {}
        self.buy_stops: list[tuple[int, int]] = []
        self.sell_stops: list[tuple[int, int]] = []
        self.expiry: list[tuple[int, int, str]] = []
        self.recent: deque[str] = deque()
        self.recent_set: set[str] = set()

    # ------------------------------------------------------------- indexes

    def _register(self, o: Order) -> None:
        self.orders[o.order_id] = o
        mine = self.user_orders.get(o.user_id)
        if mine is None:
            mine = self.user_orders[o.user_id] = {}
        mine[o.order_id] = o
        if o.client_order_id is not None:
            self.client_ids[(o.user_id, o.client_order_id)] = o.order_id

    def _unregister(self, o: Order) -> None:
        del self.orders[o.order_id]
        mine = self.user_orders[o.user_id]
        del mine[o.order_id]
        if not mine:
            del self.user_orders[o.user_id]
        if o.client_order_id is not None:
            del self.client_ids[(o.user_id, o.client_order_id)]

    def _remember(self, order_id: str) -> None:
        window = self.rules.dedup_window
        if not window:
            return
        self.recent.append(order_id)
        self.recent_set.add(order_id)
        if len(self.recent) > window:
            self.recent_set.discard(self.recent.popleft())

    def _add_stop(self, o: Order) -> None:
        o.where = IN_STOPS
        o.status = OrderStatus.PENDING
        self.pending[o.seq] = o
        assert o.stop_price is not None
        insort(self.buy_stops if o.side is Side.BUY else self.sell_stops, (o.stop_price, o.seq))

    def _remove_stop(self, o: Order) -> None:
        del self.pending[o.seq]
        stops = self.buy_stops if o.side is Side.BUY else self.sell_stops
        assert o.stop_price is not None
        del stops[bisect_left(stops, (o.stop_price, o.seq))]
        o.where = NOWHERE

    def _next_triggered(self) -> Order | None:
        """The earliest-accepted pending stop whose condition the last price meets."""
        last = self.last_price
        if last is None:
            return None
        first: int | None = None
        end = bisect_left(self.buy_stops, (last + 1, 0))
        for _, seq in self.buy_stops[:end]:
            if first is None or seq < first:
                first = seq
        start = bisect_left(self.sell_stops, (last, 0))
        for _, seq in self.sell_stops[start:]:
            if first is None or seq < first:
                first = seq
        return None if first is None else self.pending[first]

    # ------------------------------------------------------------ snapshot

    def iter_orders(self) -> Iterator[Order]:
        """Live orders in canonical order: bids, asks (priority order), then stops by seq."""
        yield from self.book.iter_side(Side.BUY)
        yield from self.book.iter_side(Side.SELL)
        for seq in sorted(self.pending):
            yield self.pending[seq]

    def order_state(self, order_id: str) -> dict[str, Any] | None:
        """The live order's plain state, or None once it has ended."""
        o = self.orders.get(order_id)
        return None if o is None else o.state()

    def header(self) -> dict[str, Any]:
        """Everything but the orders and the dedup window (small; persist per command)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "symbol": self.symbol,
            "rules": self.rules.to_dict(),
            "seq": self.seq,
            "now": self.now,
            "prio": self.prio,
            "last_price": self.last_price,
            "reference_price": self.reference_price,
            "trading_state": self.trading_state.value,
        }

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able plain data (see docs/matching.md)."""
        snap = self.header()
        snap["order_fields"] = list(STATE_FIELDS)
        snap["orders"] = [o.state_list() for o in self.iter_orders()]
        snap["recent_order_ids"] = list(self.recent)
        return snap

    def state_hash(self) -> str:
        return hash_snapshot(self.snapshot())

    @classmethod
    def restore(cls, snapshot: dict[str, Any], *, book: BookLike | None = None) -> Self:
        """Rebuild from ``snapshot()`` output (orders already in canonical order)."""
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError(f"unknown snapshot format {snapshot.get('format')!r}")
        if snapshot.get("order_fields") != list(STATE_FIELDS):
            raise SnapshotError("order_fields differ from this version's STATE_FIELDS")
        engine = cls(SymbolRules.from_dict(snapshot["rules"]), book=book)
        engine._load_header(snapshot)
        engine._load_orders(Order.from_state_list(s) for s in snapshot["orders"])
        engine._load_recent(snapshot["recent_order_ids"])
        return engine

    @classmethod
    def from_states(
        cls,
        header: dict[str, Any],
        order_states: Iterable[dict[str, Any]],
        recent_order_ids: Iterable[str] = (),
        *,
        book: BookLike | None = None,
    ) -> Self:
        """Rebuild from a header and per-order state dicts in any order (per-order tables)."""
        orders = [Order.from_state(d) for d in order_states]
        orders.sort(key=_canonical_key)
        return cls.restore(
            {
                **header,
                "order_fields": list(STATE_FIELDS),
                "orders": [o.state_list() for o in orders],
                "recent_order_ids": list(recent_order_ids),
            },
            book=book,
        )

    def _load_header(self, h: dict[str, Any]) -> None:
        self.seq, self.now, self.prio = h["seq"], h["now"], h["prio"]
        self.last_price, self.reference_price = h["last_price"], h["reference_price"]
        self.trading_state = TradingState(h["trading_state"])

    def _load_orders(self, orders: Iterable[Order]) -> None:
        for o in orders:
            if o.where == IN_BOOK:
                self.book.add(o)
            elif o.where == IN_STOPS:
                self._add_stop(o)
            else:
                raise SnapshotError(f"order {o.order_id} is neither resting nor pending")
            self._register(o)
            if o.expire_at is not None:
                self.expiry.append((o.expire_at, o.seq, o.order_id))
        heapq.heapify(self.expiry)

    def _load_recent(self, ids: Iterable[str]) -> None:
        self.recent = deque(ids)
        self.recent_set = set(self.recent)

    # ---------------------------------------------------------- invariants

    def validate(self) -> None:
        """Check every internal invariant; raise InvariantError listing what broke."""
        errs = self.book.problems()
        seen: dict[str, Order] = {}
        for o in self.iter_orders():
            if o.order_id in seen:
                errs.append(f"order {o.order_id} appears twice")
            seen[o.order_id] = o
            errs.extend(self._order_problems(o))
        if seen.keys() != self.orders.keys():
            errs.append("orders index differs from book + pending stops")
        users = {(o.user_id, oid) for oid, o in self.orders.items()}
        if users != {(u, oid) for u, mine in self.user_orders.items() for oid in mine}:
            errs.append("user index differs from orders")
        coids = {
            (o.user_id, o.client_order_id): oid
            for oid, o in self.orders.items()
            if o.client_order_id is not None
        }
        if coids != self.client_ids:
            errs.append("client order id index differs from orders")
        stops = sorted((o.stop_price, o.seq) for o in self.pending.values() if o.side is Side.BUY)
        if stops != self.buy_stops:
            errs.append("buy stop index differs")
        stops = sorted((o.stop_price, o.seq) for o in self.pending.values() if o.side is Side.SELL)
        if stops != self.sell_stops:
            errs.append("sell stop index differs")
        if self._next_triggered() is not None:
            errs.append("a pending stop is left triggered")
        if self.recent_set != set(self.recent) or len(self.recent) > self.rules.dedup_window:
            errs.append("dedup window inconsistent")
        if errs:
            raise InvariantError("; ".join(errs[:20]))

    def _order_problems(self, o: Order) -> list[str]:
        errs: list[str] = []
        if o.seq > self.seq or o.prio > self.prio:
            errs.append(f"{o.order_id}: seq/prio from the future")
        q = o.quantity
        if q is None:
            if o.where != IN_STOPS or o.funds is None:
                errs.append(f"{o.order_id}: only a pending stop buy may lack a quantity")
        elif q != o.filled + o.remaining + o.cancelled or o.remaining <= 0:
            errs.append(f"{o.order_id}: quantity not conserved")
        if o.where == IN_STOPS:
            if o.status is not OrderStatus.PENDING or o.filled:
                errs.append(f"{o.order_id}: pending stop with wrong status")
        elif o.status is not (OrderStatus.OPEN if o.filled == 0 else OrderStatus.PARTIALLY_FILLED):
            errs.append(f"{o.order_id}: resting order with wrong status {o.status}")
        if o.side is Side.BUY:
            if o.price is None:
                if o.reserved != o.funds:
                    errs.append(f"{o.order_id}: stop buy hold != funds")
            elif o.reserved - o.spent < o.price * o.remaining:
                errs.append(f"{o.order_id}: buy hold cannot cover the rest")
        elif o.reserved - o.filled != o.remaining + o.cancelled:
            errs.append(f"{o.order_id}: sell hold != unfilled lots")
        return errs


def touched_order_ids(records: Iterable[Execution]) -> list[str]:
    """Order ids whose state the records changed, first-touch order, no repeats."""
    seen: dict[str, None] = {}
    for r in records:
        if isinstance(r, Trade | StpPrevented):
            seen[r.taker_order_id] = None
            seen[r.maker_order_id] = None
        elif isinstance(r, Accepted | Amended | Triggered | OrderEnded):
            seen[r.order_id] = None
    return list(seen)


def _canonical_key(o: Order) -> tuple[int, int, int, int]:
    if o.where == IN_BOOK:
        assert o.price is not None
        if o.side is Side.BUY:
            return (0, 0, -o.price, o.prio)
        return (0, 1, o.price, o.prio)
    return (1, 0, 0, o.seq)


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def hash_snapshot(snapshot: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of a snapshot: equal states, equal hashes."""
    return hashlib.sha256(canonical_json(snapshot)).hexdigest()
