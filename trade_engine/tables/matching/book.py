"""The fast order book: price levels of intrusive doubly linked order lists.

Each side keeps ``keys``, a sorted list of level keys with the best level
LAST (bids: key = price; asks: key = -price), so the best price is ``keys[-1]``
and removing an exhausted best level is ``list.pop()``. ``levels`` maps key
to a ``Level``. Cancel is O(1) through the order's own ``level``/``prev``/
``next`` links; adding a new level is a bisect insert. The book holds no
business rules: the engine decides, the book stores.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Protocol

from trade_engine.tables.matching.enums import Side
from trade_engine.tables.matching.order import IN_BOOK, NOWHERE, Order


class BookLike(Protocol):
    """What the engine needs from a book (the fast one and the naive reference)."""

    def add(self, o: Order) -> None: ...
    def remove(self, o: Order) -> None: ...
    def reduce(self, o: Order, qty: int) -> None: ...
    def top(self, side: Side) -> Order | None: ...
    def iter_side(self, side: Side) -> Iterator[Order]: ...
    def best_price(self, side: Side) -> int | None: ...
    def depth(self, side: Side, n: int) -> list[tuple[int, int, int]]: ...
    def problems(self) -> list[str]: ...


class Level:
    __slots__ = ("count", "head", "price", "tail", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head: Order | None = None
        self.tail: Order | None = None
        self.total = 0
        self.count = 0


class BookSide:
    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.keys: list[int] = []
        self.levels: dict[int, Level] = {}


class Book:
    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = BookSide(1)
        self.asks = BookSide(-1)

    def _side(self, side: Side) -> BookSide:
        return self.bids if side is Side.BUY else self.asks

    def add(self, o: Order) -> None:
        """Append ``o`` at the tail of its price level (lowest priority)."""
        bs = self.bids if o.side is Side.BUY else self.asks
        price = o.price
        assert price is not None
        key = price * bs.sign
        level = bs.levels.get(key)
        if level is None:
            level = Level(price)
            bs.levels[key] = level
            keys = bs.keys
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                insort(keys, key)
        tail = level.tail
        o.prev = tail
        o.next = None
        if tail is None:
            level.head = o
        else:
            tail.next = o
        level.tail = o
        level.total += o.remaining
        level.count += 1
        o.level = level
        o.where = IN_BOOK

    def remove(self, o: Order) -> None:
        level: Level = o.level
        prev, nxt = o.prev, o.next
        if prev is None:
            level.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt.prev = prev
        level.total -= o.remaining
        level.count -= 1
        o.prev = o.next = o.level = None
        o.where = NOWHERE
        if level.count == 0:
            bs = self.bids if o.side is Side.BUY else self.asks
            key = level.price * bs.sign
            del bs.levels[key]
            keys = bs.keys
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[bisect_left(keys, key)]

    def reduce(self, o: Order, qty: int) -> None:
        """``o.remaining`` was lowered by ``qty`` in place; keep the level total right."""
        o.level.total -= qty

    def top(self, side: Side) -> Order | None:
        bs = self.bids if side is Side.BUY else self.asks
        keys = bs.keys
        if not keys:
            return None
        return bs.levels[keys[-1]].head

    def best_price(self, side: Side) -> int | None:
        bs = self.bids if side is Side.BUY else self.asks
        return bs.keys[-1] * bs.sign if bs.keys else None

    def iter_side(self, side: Side) -> Iterator[Order]:
        """Orders of ``side`` in priority order (best price first, then time)."""
        bs = self._side(side)
        for key in reversed(bs.keys):
            o = bs.levels[key].head
            while o is not None:
                yield o
                o = o.next

    def depth(self, side: Side, n: int) -> list[tuple[int, int, int]]:
        """Up to ``n`` best levels as (price ticks, total lots, order count)."""
        bs = self._side(side)
        out = []
        for key in reversed(bs.keys[-n:] if n > 0 else []):
            lv = bs.levels[key]
            out.append((lv.price, lv.total, lv.count))
        return out

    def problems(self) -> list[str]:
        errs: list[str] = []
        for name, side, bs in (("bids", Side.BUY, self.bids), ("asks", Side.SELL, self.asks)):
            if any(a >= b for a, b in zip(bs.keys, bs.keys[1:], strict=False)):
                errs.append(f"{name}: keys not strictly ascending")
            if set(bs.keys) != set(bs.levels):
                errs.append(f"{name}: keys and levels differ")
            for key, lv in bs.levels.items():
                errs.extend(_level_problems(name, side, key * bs.sign, lv))
        bid, ask = self.best_price(Side.BUY), self.best_price(Side.SELL)
        if bid is not None and ask is not None and bid >= ask:
            errs.append(f"crossed book: bid {bid} >= ask {ask}")
        return errs


def _level_problems(name: str, side: Side, price: int, lv: Level) -> list[str]:
    errs: list[str] = []
    total = count = 0
    prev: Order | None = None
    o = lv.head
    while o is not None:
        if o.prev is not prev or o.level is not lv or o.side is not side or o.price != price:
            errs.append(f"{name} {price}: bad links or fields at {o.order_id}")
        if o.remaining <= 0 or o.where != IN_BOOK:
            errs.append(f"{name} {price}: order {o.order_id} has no remaining or wrong place")
        if prev is not None and prev.prio >= o.prio:
            errs.append(f"{name} {price}: priority out of order at {o.order_id}")
        total += o.remaining
        count += 1
        prev, o = o, o.next
    if lv.tail is not prev or total != lv.total or count != lv.count or count == 0:
        errs.append(f"{name} {price}: tail/total/count mismatch")
    return errs
