"""A deliberately naive book: one plain list, scanned on every question.

Used by tests (and by replay tools) as the reference the fast ``Book`` must
agree with. Its only ordering rule is spelled out once: best price first,
then lowest ``prio`` (time priority).
"""

from __future__ import annotations

from collections.abc import Iterator

from trade_engine.tables.matching.enums import Side
from trade_engine.tables.matching.order import IN_BOOK, NOWHERE, Order


def _rank(o: Order) -> tuple[int, int]:
    price = o.price if o.price is not None else 0
    return (-price if o.side is Side.BUY else price, o.prio)


class NaiveBook:
    __slots__ = ("orders",)

    def __init__(self) -> None:
        self.orders: list[Order] = []

    def add(self, o: Order) -> None:
        self.orders.append(o)
        o.where = IN_BOOK

    def remove(self, o: Order) -> None:
        self.orders = [x for x in self.orders if x is not o]
        o.where = NOWHERE

    def reduce(self, o: Order, qty: int) -> None:
        """Nothing to keep in step: totals are recomputed on demand."""

    def top(self, side: Side) -> Order | None:
        mine = [o for o in self.orders if o.side is side]
        return min(mine, key=_rank) if mine else None

    def iter_side(self, side: Side) -> Iterator[Order]:
        return iter(sorted((o for o in self.orders if o.side is side), key=_rank))

    def best_price(self, side: Side) -> int | None:
        o = self.top(side)
        return None if o is None else o.price

    def depth(self, side: Side, n: int) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        for o in self.iter_side(side):
            assert o.price is not None
            if out and out[-1][0] == o.price:
                p, t, c = out[-1]
                out[-1] = (p, t + o.remaining, c + 1)
            elif len(out) == n:
                break
            else:
                out.append((o.price, o.remaining, 1))
        return out

    def problems(self) -> list[str]:
        errs = [f"order {o.order_id} not resting" for o in self.orders if o.remaining <= 0]
        bid, ask = self.best_price(Side.BUY), self.best_price(Side.SELL)
        if bid is not None and ask is not None and bid >= ask:
            errs.append(f"crossed book: bid {bid} >= ask {ask}")
        return errs
