"""Seeded load generator: a realistic, reproducible order flow.

``iter_commands(symbols, seed, users)`` is a pure function of its arguments
(``random.Random(seed)``, no wall clock, no unordered iteration): the same seed
gives the same commands, ids included. Per symbol it keeps a mid price that
random-walks in basis-point steps from the symbol's ``reference_price`` and
stays within +-8% of it (inside the default 20% price band), and the ids of the
orders it placed recently. Each step picks a symbol, moves its mid and emits
one command (weights in ``FlowMix``, per mille):

- passive LIMIT GTC orders 1-20 bps away from the mid on both sides (the book);
- crossing LIMIT GTC, IOC and FOK orders 1-10 bps through the mid (trades);
- MARKET IOC orders: buys spend ``quote_quantity``, sells give ``quantity``;
- post-only and STOP_LIMIT orders now and then;
- cancels (by order id or client order id) and amends (smaller quantity keeps
  priority, a new price loses it) of its own recent orders, a rare mass cancel.

Prices and quantities are on the symbol's tick and step grid (integers formatted
with ``Scale``); order sizes are drawn as notional (10-500, sometimes up to 5000
quote units) and never below ``min_qty``/``min_notional``. The generator does
not see fills, so some cancels and amends target orders that have already
traded and are rejected as unknown, as they would be from a real client.

``publish`` paces any command iterator onto a producer with a token bucket.
"""

from __future__ import annotations

import bisect
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from itertools import accumulate, islice
from typing import Protocol, TextIO

from trade_engine.config import MarketSettings, SymbolSettings
from trade_engine.streams.commands import (
    AmendOrder,
    CancelOrder,
    MassCancel,
    PlaceOrder,
    SymbolAdmin,
    TimeTick,
)
from trade_engine.tables.matching.codes import RejectCode
from trade_engine.tables.matching.enums import OrderType, Side, TimeInForce
from trade_engine.tables.matching.numbers import Scale

GeneratedCommand = PlaceOrder | CancelOrder | AmendOrder | MassCancel | SymbolAdmin | TimeTick

_RECENT = 64  # cancels and amends pick among the last orders placed on the symbol
_TRACKED = 2_000  # orders remembered per symbol (older ones just rest in the book)
_WALK = 8  # mid moves at most +-8% from the reference price
_DEFAULT_MID_TICKS = 10_000


@dataclass(frozen=True, slots=True)
class FlowMix:
    """Weights (per mille) of each kind of command."""

    passive_limit: int = 400
    post_only: int = 20
    crossing_limit: int = 80
    ioc: int = 60
    fok: int = 30
    market: int = 50
    stop_limit: int = 10
    cancel: int = 280
    amend: int = 68
    mass_cancel: int = 2

    def table(self) -> tuple[list[str], list[int]]:
        names = [f.name for f in fields(self) if getattr(self, f.name) > 0]
        cumulative = list(accumulate(getattr(self, name) for name in names))
        return names, cumulative


@dataclass(slots=True)
class _Open:
    order_id: str
    client_order_id: str | None
    user_id: str
    side: Side
    price: int
    quantity: int


@dataclass(slots=True)
class _Book:
    spec: SymbolSettings
    price: Scale
    qty: Scale
    quote: Scale
    reference: int
    mid: int
    bp: int
    min_qty: int
    min_notional: int
    open: list[_Open] = field(default_factory=list)

    @classmethod
    def of(cls, spec: SymbolSettings) -> _Book:
        price = Scale(spec.tick_size, RejectCode.VALIDATION_PRICE_OFF_TICK)
        qty = Scale(spec.step_size, RejectCode.VALIDATION_QUANTITY_OFF_STEP)
        quote = price.times(qty, RejectCode.VALIDATION_FUNDS_OFF_UNIT)
        reference = (
            price.parse(spec.reference_price) if spec.reference_price else _DEFAULT_MID_TICKS
        )
        return cls(
            spec=spec,
            price=price,
            qty=qty,
            quote=quote,
            reference=reference,
            mid=reference,
            bp=max(1, reference // 10_000),
            min_qty=qty.parse(spec.min_qty) if spec.min_qty else 1,
            min_notional=quote.parse(spec.min_notional),
        )

    def walk(self, rng: random.Random) -> None:
        lo = max(1, self.reference * (100 - _WALK) // 100)
        hi = self.reference * (100 + _WALK) // 100
        mid = self.mid + rng.randint(-2, 2) * self.bp
        if mid < lo or mid > hi:  # reflect at the edges
            mid = 2 * self.mid - mid
        self.mid = min(max(mid, lo), hi)

    def lots_for(self, rng: random.Random, price: int) -> int:
        """A quantity whose notional is 10-500 (15%: 500-5000) quote units."""
        notional = self.notional(rng)
        lots = -(-notional // price)  # ceil: price * lots >= notional >= min_notional
        return max(lots, self.min_qty)

    def notional(self, rng: random.Random) -> int:
        one = self.quote.parse("1")
        lo, hi = (10, 500) if rng.randrange(100) < 85 else (500, 5000)
        return max(rng.randint(lo * one, hi * one), self.min_notional)

    def track(self, order: _Open) -> None:
        self.open.append(order)
        if len(self.open) > _TRACKED:
            del self.open[: len(self.open) - _TRACKED]

    def pick_recent(self, rng: random.Random) -> int | None:
        if not self.open:
            return None
        return rng.randrange(max(0, len(self.open) - _RECENT), len(self.open))


class _Flow:
    def __init__(
        self, symbols: Sequence[SymbolSettings], seed: int, users: int, id_prefix: str, mix: FlowMix
    ) -> None:
        if not symbols:
            raise ValueError("at least one symbol is needed")
        if users < 1:
            raise ValueError("users must be >= 1")
        self.rng = random.Random(seed)
        self.books = [_Book.of(spec) for spec in symbols]
        self.users = users
        self.prefix = id_prefix
        self.kinds, self.cumulative = mix.table()
        self.n = 0

    def __iter__(self) -> Iterator[GeneratedCommand]:
        rng = self.rng
        total = self.cumulative[-1]
        while True:
            book = self.books[rng.randrange(len(self.books))]
            book.walk(rng)
            kind = self.kinds[bisect.bisect_right(self.cumulative, rng.randrange(total))]
            yield getattr(self, f"_{kind}")(book)

    # -- helpers ---------------------------------------------------------------

    def _user(self) -> str:
        return f"u{self.rng.randrange(self.users) + 1}"

    def _side(self) -> Side:
        return Side.BUY if self.rng.randrange(2) == 0 else Side.SELL

    def _ids(self) -> tuple[str, str | None]:
        self.n += 1
        client = f"{self.prefix}c{self.n}" if self.rng.randrange(4) == 0 else None
        return f"{self.prefix}-{self.n}", client

    def _limit(
        self,
        book: _Book,
        side: Side,
        price: int,
        tif: TimeInForce = TimeInForce.GTC,
        *,
        post_only: bool = False,
        rest: bool = True,
    ) -> PlaceOrder:
        price = max(price, 1)
        order_id, client_id = self._ids()
        user = self._user()
        lots = book.lots_for(self.rng, price)
        if rest:
            book.track(_Open(order_id, client_id, user, side, price, lots))
        return PlaceOrder(
            symbol=book.spec.symbol,
            order_id=order_id,
            client_order_id=client_id,
            user_id=user,
            side=side,
            type=OrderType.LIMIT,
            time_in_force=tif,
            quantity=book.qty.format(lots),
            price=book.price.format(price),
            post_only=post_only,
        )

    def _passive_price(self, book: _Book, side: Side) -> int:
        offset = self.rng.randint(1, 20) * book.bp
        return book.mid - offset if side is Side.BUY else book.mid + offset

    def _crossing_price(self, book: _Book, side: Side) -> int:
        offset = self.rng.randint(1, 10) * book.bp
        return book.mid + offset if side is Side.BUY else book.mid - offset

    # -- command kinds ---------------------------------------------------------

    def _passive_limit(self, book: _Book) -> GeneratedCommand:
        side = self._side()
        return self._limit(book, side, self._passive_price(book, side))

    def _post_only(self, book: _Book) -> GeneratedCommand:
        side = self._side()
        return self._limit(book, side, self._passive_price(book, side), post_only=True)

    def _crossing_limit(self, book: _Book) -> GeneratedCommand:
        side = self._side()
        return self._limit(book, side, self._crossing_price(book, side))

    def _ioc(self, book: _Book) -> GeneratedCommand:
        side = self._side()
        return self._limit(
            book, side, self._crossing_price(book, side), TimeInForce.IOC, rest=False
        )

    def _fok(self, book: _Book) -> GeneratedCommand:
        side = self._side()
        return self._limit(
            book, side, self._crossing_price(book, side), TimeInForce.FOK, rest=False
        )

    def _market(self, book: _Book) -> GeneratedCommand:
        side = self._side()
        order_id, client_id = self._ids()
        user = self._user()
        funds = quantity = None
        if side is Side.BUY:
            funds = book.quote.format(book.notional(self.rng))
        else:
            quantity = book.qty.format(book.lots_for(self.rng, book.mid))
        return PlaceOrder(
            symbol=book.spec.symbol,
            order_id=order_id,
            client_order_id=client_id,
            user_id=user,
            side=side,
            type=OrderType.MARKET,
            time_in_force=TimeInForce.IOC,
            quantity=quantity,
            quote_quantity=funds,
        )

    def _stop_limit(self, book: _Book) -> GeneratedCommand:
        side = self._side()
        away = self.rng.randint(5, 30) * book.bp
        slip = self.rng.randint(0, 5) * book.bp
        # A buy stop triggers when the price rises to it, a sell stop when it falls.
        stop = book.mid + away if side is Side.BUY else max(book.mid - away, 2)
        price = stop + slip if side is Side.BUY else max(stop - slip, 1)
        order_id, client_id = self._ids()
        user = self._user()
        lots = book.lots_for(self.rng, price)
        book.track(_Open(order_id, client_id, user, side, price, lots))
        return PlaceOrder(
            symbol=book.spec.symbol,
            order_id=order_id,
            client_order_id=client_id,
            user_id=user,
            side=side,
            type=OrderType.STOP_LIMIT,
            time_in_force=TimeInForce.GTC,
            quantity=book.qty.format(lots),
            price=book.price.format(price),
            stop_price=book.price.format(stop),
        )

    def _cancel(self, book: _Book) -> GeneratedCommand:
        index = book.pick_recent(self.rng)
        if index is None:
            return self._passive_limit(book)
        order = book.open.pop(index)
        by_client = order.client_order_id is not None and self.rng.randrange(3) == 0
        return CancelOrder(
            symbol=book.spec.symbol,
            user_id=order.user_id,
            order_id=None if by_client else order.order_id,
            client_order_id=order.client_order_id if by_client else None,
        )

    def _amend(self, book: _Book) -> GeneratedCommand:
        index = book.pick_recent(self.rng)
        if index is None:
            return self._passive_limit(book)
        order = book.open[index]
        symbol = book.spec.symbol
        floor = max(book.min_qty, -(-book.min_notional // order.price))
        if self.rng.randrange(2) == 0 and order.quantity - 1 >= floor:
            # Reduce: keeps queue priority.
            order.quantity = self.rng.randint(floor, order.quantity - 1)
            return AmendOrder(
                symbol=symbol,
                user_id=order.user_id,
                order_id=order.order_id,
                quantity=book.qty.format(order.quantity),
            )
        # Re-price by 1-5 bps (loses priority); keep the notional above the minimum.
        step = self.rng.randint(1, 5) * book.bp
        price = order.price + step if self.rng.randrange(2) == 0 else order.price - step
        if price < 1 or price * order.quantity < book.min_notional:
            price = order.price + step
        order.price = price
        return AmendOrder(
            symbol=symbol,
            user_id=order.user_id,
            order_id=order.order_id,
            price=book.price.format(price),
        )

    def _mass_cancel(self, book: _Book) -> GeneratedCommand:
        user = self._user()
        side = None if self.rng.randrange(2) == 0 else self._side()
        book.open = [
            o for o in book.open if not (o.user_id == user and (side is None or o.side is side))
        ]
        return MassCancel(symbol=book.spec.symbol, user_id=user, side=side)


def iter_commands(
    symbols: Sequence[SymbolSettings] | None = None,
    seed: int = 0,
    users: int = 100,
    *,
    id_prefix: str | None = None,
    mix: FlowMix | None = None,
) -> Iterator[GeneratedCommand]:
    """An endless, seeded command flow over ``symbols`` (default: the demo symbols).

    Order ids are ``{id_prefix}-{n}`` (client order ids ``{id_prefix}c{n}``);
    ``id_prefix`` defaults to ``lg{seed}``, so the same seed gives the same ids.
    Pass a different prefix to send the same flow twice into one engine.
    """
    chosen = list(symbols) if symbols is not None else MarketSettings().symbols
    prefix = id_prefix if id_prefix is not None else f"lg{seed}"
    return iter(_Flow(chosen, seed, users, prefix, mix or FlowMix()))


def generate(
    n: int,
    seed: int = 0,
    symbols: Sequence[SymbolSettings] | None = None,
    users: int = 100,
    *,
    id_prefix: str | None = None,
    mix: FlowMix | None = None,
) -> list[GeneratedCommand]:
    """The first ``n`` commands of ``iter_commands(symbols, seed, users, ...)``."""
    return list(islice(iter_commands(symbols, seed, users, id_prefix=id_prefix, mix=mix), n))


# -- publishing --------------------------------------------------------------------


@dataclass(slots=True)
class LoadStats:
    sent: int = 0
    delivered: int = 0
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate, 1),
        }


class Sender(Protocol):
    """What ``publish`` needs of a producer (``OrderProducer`` fits)."""

    delivered: int

    def send(self, command: GeneratedCommand) -> object: ...

    def flush(self, timeout: float | None = None) -> None: ...


def publish(
    producer: Sender,
    commands: Iterable[GeneratedCommand],
    *,
    rate: float | None = None,
    duration_s: float | None = None,
    count: int | None = None,
    report: TextIO | None = sys.stderr,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> LoadStats:
    """Send ``commands`` at ``rate`` per second (None or 0: as fast as possible) until
    ``count`` commands are sent, ``duration_s`` has passed or the iterator ends; then
    flush. Prints the achieved rate to ``report`` every second."""
    stats = LoadStats()
    start = clock()
    end = start + duration_s if duration_s is not None else None
    burst = max(1.0, (rate or 0) / 20)  # at most 50 ms worth of messages at once
    tokens = burst
    last = start
    next_report = start + 1.0
    window_start, window_sent = start, 0
    source = iter(commands) if count is None else islice(commands, count)
    for command in source:
        now = clock()
        if end is not None and now >= end:
            break
        if rate:
            tokens = min(burst, tokens + (now - last) * rate)
            last = now
            if tokens < 1:
                sleep((1 - tokens) / rate)
                now = clock()
                tokens = min(burst, tokens + (now - last) * rate)
                last = now
            tokens -= 1
        producer.send(command)
        stats.sent += 1
        window_sent += 1
        if report is not None and now >= next_report:
            window_rate = window_sent / (now - window_start) if now > window_start else 0.0
            target = f"{rate:g}/s" if rate else "unlimited"
            print(
                f"load: t={now - start:.1f}s sent={stats.sent} "
                f"rate={window_rate:.0f}/s target={target} delivered={producer.delivered}",
                file=report,
                flush=True,
            )
            window_start, window_sent = now, 0
            next_report = now + 1.0
    producer.flush()
    stats.elapsed_s = clock() - start
    stats.delivered = producer.delivered
    return stats
