"""The engine against an independent, deliberately naive matcher written from the spec.

``test_state_machine`` drives the engine over two book structures, which catches
book bugs but shares every business rule. This module's ``NaiveMatcher`` shares
nothing with the engine but the command and enum types: it is written from
``docs/matching.md`` alone, keeps resting orders in one plain list and scans it
for every decision. Both run the same random commands (limit GTC/IOC/FOK with
post-only, market sells by quantity, market buys by funds, cancels, amends, mass
cancels, every STP mode) and must emit the same records, projected onto the
fields the spec defines, and hold the same book.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from trade_engine.tables.matching import (
    Accepted,
    Amend,
    Amended,
    Cancel,
    Command,
    Execution,
    MassCancel,
    MatchingEngine,
    OrderEnded,
    OrderType,
    Place,
    Rejected,
    Side,
    StpMode,
    SymbolRules,
    TimeInForce,
    Trade,
)
from trade_engine.tables.matching.executions import StpPrevented

MAKER_PPM = 1_500
TAKER_PPM = 2_500
RULES = SymbolRules(
    "R/Q",
    "0.5",
    "0.1",
    maker_fee_ppm=MAKER_PPM,
    taker_fee_ppm=TAKER_PPM,
    dedup_window=100_000,  # every answered id stays refused: "seen" is exact
)

Event = tuple[Any, ...]


@dataclass
class NaiveOrder:
    order_id: str
    user_id: str
    side: Side
    price: int | None  # None: market
    quantity: int | None  # None: market buy by funds
    funds: int | None
    tif: TimeInForce
    stp: StpMode
    remaining: int
    reserved: int
    prio: int
    post_only: bool = False
    filled: int = 0
    spent: int = 0  # quote traded
    cancelled: int = 0

    def crosses(self, maker: NaiveOrder) -> bool:
        assert maker.price is not None
        if self.price is None:
            return True
        return maker.price <= self.price if self.side is Side.BUY else maker.price >= self.price


class NaiveMatcher:
    """Price-time priority by scanning one list; every rule spelled out from the spec."""

    def __init__(self) -> None:
        self.book: list[NaiveOrder] = []  # resting orders, in no particular order
        self.seen: set[str] = set()
        self.clock = 0  # time priority counter
        self.accepted_at: dict[str, int] = {}  # acceptance order (mass cancel follows it)

    # ---------------------------------------------------------------- queries

    def best_maker(self, taker: NaiveOrder, skip_user: str | None = None) -> NaiveOrder | None:
        """The opposite side's best order by (price, time), or None."""
        best: NaiveOrder | None = None
        for o in self.book:
            if o.side is taker.side or o.user_id == skip_user:
                continue
            if best is None or self._better(o, best):
                best = o
        return best

    @staticmethod
    def _better(a: NaiveOrder, b: NaiveOrder) -> bool:
        assert a.price is not None
        assert b.price is not None
        if a.price != b.price:
            return a.price > b.price if a.side is Side.BUY else a.price < b.price
        return a.prio < b.prio

    def priority_list(self, side: Side) -> list[NaiveOrder]:
        mine = [o for o in self.book if o.side is side]
        return sorted(
            mine, key=lambda o: (-(o.price or 0) if side is Side.BUY else o.price, o.prio)
        )

    def levels(self) -> list[tuple[str, str, int | None, int]]:
        return [
            (o.side.value, o.order_id, o.price, o.remaining)
            for side in (Side.BUY, Side.SELL)
            for o in self.priority_list(side)
        ]

    # ----------------------------------------------------------------- records

    @staticmethod
    def ended(o: NaiveOrder, status: str, reason: str) -> Event:
        used = o.spent if o.side is Side.BUY else o.filled
        return (
            "ENDED",
            o.order_id,
            status,
            reason,
            o.filled,
            o.spent,
            o.cancelled,
            o.reserved - used,
        )

    # ---------------------------------------------------------------- commands

    def apply(self, cmd: Command) -> list[Event]:
        if isinstance(cmd, Place):
            return self.place(cmd)
        if isinstance(cmd, Cancel):
            return self.cancel(cmd)
        if isinstance(cmd, Amend):
            return self.amend(cmd)
        if isinstance(cmd, MassCancel):
            return self.mass_cancel(cmd)
        raise AssertionError(f"not generated: {cmd!r}")

    def place(self, c: Place) -> list[Event]:
        if c.order_type is OrderType.LIMIT:
            assert c.price is not None
            assert c.quantity is not None
            hold = c.price * c.quantity if c.side is Side.BUY else c.quantity
        else:
            hold = (c.funds or 0) if c.side is Side.BUY else (c.quantity or 0)
        if c.order_id in self.seen:
            return [("REJECTED", c.order_id, "MATCHING_DUPLICATE_ORDER_ID", 0)]
        self.clock += 1
        t = NaiveOrder(
            c.order_id,
            c.user_id,
            c.side,
            c.price,
            c.quantity,
            c.funds,
            c.tif,
            c.stp,
            c.quantity or 0,
            hold,
            self.clock,
            c.post_only,
        )
        # An answered id, accepted or rejected, is never accepted again.
        self.seen.add(c.order_id)
        if c.post_only and self.best_maker(t) is not None and t.crosses(self.best_maker(t)):  # type: ignore[arg-type]
            return [("REJECTED", c.order_id, "MATCHING_POST_ONLY_WOULD_TAKE", hold)]
        if c.tif is TimeInForce.FOK and not self.fok_fillable(t):
            return [("REJECTED", c.order_id, "MATCHING_FOK_NOT_FILLABLE", hold)]
        self.accepted_at[c.order_id] = len(self.accepted_at)
        out: list[Event] = [("ACCEPTED", c.order_id, hold)]
        self.take(t, out)
        return out

    def fok_fillable(self, t: NaiveOrder) -> bool:
        need = t.remaining
        skip = t.user_id if t.stp is StpMode.EXPIRE_MAKER else None
        for m in self.priority_list(Side.SELL if t.side is Side.BUY else Side.BUY):
            if need <= 0 or not t.crosses(m):
                break
            if m.user_id == skip:
                continue
            if m.user_id == t.user_id and t.stp is not StpMode.NONE:
                return False  # an own order in the way blocks the rest
            need -= m.remaining
        return need <= 0

    def take(self, t: NaiveOrder, out: list[Event]) -> None:
        """Match ``t`` as taker, then rest it (GTC limit) or end it."""
        ended = False
        funds_short = False
        while (t.quantity is None or t.remaining > 0) and not ended:
            m = self.best_maker(t)
            if m is None or not t.crosses(m):
                break
            assert m.price is not None
            q = m.remaining if t.quantity is None else min(t.remaining, m.remaining)
            if t.funds is not None and t.quantity is None:
                q = min(q, (t.funds - t.spent) // m.price)
                if q == 0:
                    funds_short = True
                    break
            if m.user_id == t.user_id and t.stp is not StpMode.NONE:
                ended = self.prevent(t, m, q, out)
                continue
            self.trade(t, m, q, out)
        if ended:
            return
        if t.quantity is not None and t.remaining == 0:
            out.append(self.ended(t, "FILLED", "FILLED"))
        elif t.price is None:  # market
            if t.quantity is None and funds_short and t.filled > 0:
                out.append(self.ended(t, "FILLED", "FILLED"))
            elif t.quantity is None and funds_short:
                out.append(self.ended(t, "EXPIRED", "FUNDS_EXHAUSTED"))
            else:
                t.cancelled += t.remaining
                t.remaining = 0
                out.append(self.ended(t, "EXPIRED", "NO_LIQUIDITY"))
        elif t.tif is TimeInForce.GTC:
            self.book.append(t)
        else:  # IOC (FOK was fillable, so it never gets here with a remainder)
            t.cancelled += t.remaining
            t.remaining = 0
            out.append(self.ended(t, "EXPIRED", "IOC_REMAINDER"))

    def trade(self, t: NaiveOrder, m: NaiveOrder, q: int, out: list[Event]) -> None:
        assert m.price is not None
        n = m.price * q
        for o in (t, m):
            o.filled += q
            o.spent += n
            if o.quantity is not None:
                o.remaining -= q
        buyer_rate = TAKER_PPM if t.side is Side.BUY else MAKER_PPM
        seller_rate = TAKER_PPM if t.side is Side.SELL else MAKER_PPM
        out.append(
            (
                "TRADE",
                m.order_id,
                t.order_id,
                m.price,
                q,
                n,
                q * buyer_rate // 1_000_000,
                n * seller_rate // 1_000_000,
            )
        )
        if m.remaining == 0:
            self.book.remove(m)
            out.append(self.ended(m, "FILLED", "FILLED"))

    def prevent(self, t: NaiveOrder, m: NaiveOrder, q: int, out: list[Event]) -> bool:
        """Self-trade prevention by the taker's mode; True when the taker ended."""
        assert m.price is not None
        out.append(("STP", t.stp.value, t.order_id, m.order_id, m.price, q))
        mode = t.stp
        if mode is StpMode.DECREMENT and t.quantity is None:
            mode = StpMode.EXPIRE_TAKER  # a buy by funds has no quantity to decrement
        if mode is StpMode.DECREMENT:
            for o in (m, t):
                o.remaining -= q
                o.cancelled += q
            if m.remaining == 0:
                self.book.remove(m)
                out.append(self.ended(m, "EXPIRED", "STP"))
            if t.remaining == 0:
                out.append(self.ended(t, "EXPIRED", "STP"))
                return True
            return False
        if mode in (StpMode.EXPIRE_MAKER, StpMode.EXPIRE_BOTH):
            self.book.remove(m)
            m.cancelled += m.remaining
            m.remaining = 0
            out.append(self.ended(m, "EXPIRED", "STP"))
        if mode in (StpMode.EXPIRE_TAKER, StpMode.EXPIRE_BOTH):
            t.cancelled += t.remaining
            t.remaining = 0
            out.append(self.ended(t, "EXPIRED", "STP"))
            return True
        return False

    def _live(self, order_id: str | None) -> NaiveOrder | None:
        return next((o for o in self.book if o.order_id == order_id), None)

    def cancel(self, c: Cancel) -> list[Event]:
        o = self._live(c.order_id)
        if o is None:
            return [("REJECTED", c.order_id, "MATCHING_UNKNOWN_ORDER", 0)]
        if o.user_id != c.user_id:
            return [("REJECTED", c.order_id, "MATCHING_NOT_ORDER_OWNER", 0)]
        return [self._cancel(o, "USER_CANCEL")]

    def _cancel(self, o: NaiveOrder, reason: str) -> Event:
        self.book.remove(o)
        o.cancelled += o.remaining
        o.remaining = 0
        return self.ended(o, "CANCELLED", reason)

    def mass_cancel(self, c: MassCancel) -> list[Event]:
        mine = [o for o in self.book if o.user_id == c.user_id and c.side in (None, o.side)]
        # Acceptance order; an amend that lost priority does not change it.
        mine.sort(key=lambda o: self.accepted_at[o.order_id])
        return [self._cancel(o, "MASS_CANCEL") for o in mine]

    def amend(self, c: Amend) -> list[Event]:
        o = self._live(c.order_id)
        if o is None:
            return [("REJECTED", c.order_id, "MATCHING_UNKNOWN_ORDER", 0)]
        if o.user_id != c.user_id:
            return [("REJECTED", c.order_id, "MATCHING_NOT_ORDER_OWNER", 0)]
        assert o.price is not None
        assert o.quantity is not None
        price = o.price if c.price is None else c.price
        quantity = o.quantity if c.quantity is None else c.quantity
        if price == o.price and quantity == o.quantity:
            return [("REJECTED", c.order_id, "VALIDATION_AMEND_NOTHING", 0)]
        remaining = quantity - o.filled - o.cancelled
        if remaining <= 0:
            return [("REJECTED", c.order_id, "VALIDATION_AMEND_BELOW_FILLED", 0)]
        keep = price == o.price and quantity < o.quantity
        if o.post_only and price != o.price:
            probe = NaiveOrder(**{**o.__dict__, "price": price})
            maker = self.best_maker(probe)
            if maker is not None and probe.crosses(maker):
                return [("REJECTED", c.order_id, "MATCHING_POST_ONLY_WOULD_TAKE", 0)]
        needed = o.spent + price * remaining if o.side is Side.BUY else quantity
        if needed > o.reserved:  # nobody reserved the extra
            return [("REJECTED", c.order_id, "MATCHING_AMEND_EXCEEDS_HOLD", 0)]
        old = o.reserved
        o.price, o.quantity, o.remaining = price, quantity, remaining
        o.reserved = o.spent + price * remaining if o.side is Side.BUY else quantity
        out: list[Event] = [
            ("AMENDED", o.order_id, price, quantity, remaining, o.reserved, o.reserved - old, keep)
        ]
        if not keep:
            self.clock += 1
            o.prio = self.clock
            self.book.remove(o)
            self.take(o, out)  # a new price may cross: it trades as taker at once
        return out


def project(records: list[Execution]) -> list[Event]:
    """The engine's records onto the naive matcher's event shapes."""
    out: list[Event] = []
    for r in records:
        if isinstance(r, Accepted):
            out.append(("ACCEPTED", r.order_id, r.reserved))
        elif isinstance(r, Rejected):
            out.append(("REJECTED", r.order_id, r.code.value, r.release))
        elif isinstance(r, Trade):
            out.append(
                (
                    "TRADE",
                    r.maker_order_id,
                    r.taker_order_id,
                    r.price,
                    r.quantity,
                    r.quote_quantity,
                    r.buyer_fee,
                    r.seller_fee,
                )
            )
        elif isinstance(r, OrderEnded):
            out.append(
                (
                    "ENDED",
                    r.order_id,
                    r.status.value,
                    r.reason.value,
                    r.filled,
                    r.quote_filled,
                    r.cancelled,
                    r.release,
                )
            )
        elif isinstance(r, StpPrevented):
            out.append(
                ("STP", r.mode.value, r.taker_order_id, r.maker_order_id, r.price, r.quantity)
            )
        elif isinstance(r, Amended):
            out.append(
                (
                    "AMENDED",
                    r.order_id,
                    r.price,
                    r.quantity,
                    r.remaining,
                    r.reserved,
                    r.reserve_delta,
                    r.priority_kept,
                )
            )
        else:
            raise AssertionError(f"not expected from the generated commands: {r!r}")
    return out


def engine_levels(e: MatchingEngine) -> list[tuple[str, str, int | None, int]]:
    snap = e.snapshot()
    fields = snap["order_fields"]
    rows = [dict(zip(fields, row, strict=True)) for row in snap["orders"]]
    return [(r["side"], r["order_id"], r["price"], r["remaining"]) for r in rows if r["where"] == 1]


USERS = st.sampled_from(["a", "b", "c"])
PRICES = st.integers(min_value=96, max_value=104)
QTYS = st.integers(min_value=1, max_value=6)
SIDES = st.sampled_from([Side.BUY, Side.SELL])
STP = st.sampled_from(list(StpMode))


class AgainstNaive(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = MatchingEngine(RULES)
        self.naive = NaiveMatcher()
        self.ids: list[str] = []

    def _id(self, reuse: int) -> str:
        if reuse == 0 and self.ids:
            return self.ids[-1]  # a duplicate order id
        oid = f"o{len(self.ids) + 1}"
        self.ids.append(oid)
        return oid

    def _pick(self, i: int) -> str:
        return self.ids[i % len(self.ids)] if self.ids else "nothing"

    def _run(self, cmd: Command) -> None:
        expected = self.naive.apply(cmd)
        actual = project(self.engine.apply(cmd))
        assert actual == expected, f"{cmd!r}\n engine: {actual}\n  naive: {expected}"
        for e in expected:
            detail = {"REJECTED": 2, "STP": 1, "ENDED": 3}.get(e[0])
            event(e[0] if detail is None else f"{e[0]} {e[detail]}")

    @rule(
        user=USERS,
        side=SIDES,
        price=PRICES,
        qty=QTYS,
        tif=st.sampled_from([TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]),
        stp=STP,
        post_only=st.booleans(),
        reuse=st.integers(0, 15),
    )
    def limit(
        self,
        user: str,
        side: Side,
        price: int,
        qty: int,
        tif: TimeInForce,
        stp: StpMode,
        post_only: bool,
        reuse: int,
    ) -> None:
        post_only = post_only and tif is TimeInForce.GTC
        self._run(
            Place(
                self._id(reuse),
                user,
                side,
                OrderType.LIMIT,
                qty,
                price,
                tif=tif,
                stp=stp,
                post_only=post_only,
            )
        )

    @rule(user=USERS, qty=QTYS, fok=st.booleans(), stp=STP)
    def market_sell(self, user: str, qty: int, fok: bool, stp: StpMode) -> None:
        tif = TimeInForce.FOK if fok else TimeInForce.IOC
        self._run(Place(self._id(1), user, Side.SELL, OrderType.MARKET, qty, tif=tif, stp=stp))

    @rule(user=USERS, funds=st.integers(50, 1_200), stp=STP)
    def market_buy_by_funds(self, user: str, funds: int, stp: StpMode) -> None:
        self._run(
            Place(
                self._id(1),
                user,
                Side.BUY,
                OrderType.MARKET,
                funds=funds,
                tif=TimeInForce.IOC,
                stp=stp,
            )
        )

    @rule(i=st.integers(0, 500), user=USERS, owner=st.booleans())
    def cancel(self, i: int, user: str, owner: bool) -> None:
        oid = self._pick(i)
        o = self.naive._live(oid)
        self._run(Cancel(o.user_id if (o is not None and owner) else user, oid))

    @rule(
        i=st.integers(0, 500),
        qty=st.one_of(st.none(), st.integers(1, 8)),
        price=st.one_of(st.none(), PRICES),
    )
    def amend(self, i: int, qty: int | None, price: int | None) -> None:
        oid = self._pick(i)
        o = self.naive._live(oid)
        if qty is None and price is None:
            qty = 1
        self._run(Amend(oid, o.user_id if o is not None else "a", qty, price))

    @rule(user=USERS, side=st.one_of(st.none(), SIDES))
    def mass_cancel(self, user: str, side: Side | None) -> None:
        self._run(MassCancel(user, side))

    @invariant()
    def same_book(self) -> None:
        assert engine_levels(self.engine) == self.naive.levels()


AgainstNaive.TestCase.settings = settings(
    max_examples=600,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAgainstNaive = AgainstNaive.TestCase


def test_amending_a_post_only_order_across_the_book_is_refused() -> None:
    """Shrunk from a counterexample: the spec first missed that post-only survives amends."""
    engine, naive = MatchingEngine(RULES), NaiveMatcher()
    commands: list[Command] = [
        Place("o1", "a", Side.BUY, OrderType.LIMIT, 1, 96, post_only=True),
        Place("o2", "b", Side.SELL, OrderType.LIMIT, 1, 97),
        Amend("o1", "a", price=97),
    ]
    for cmd in commands:
        assert project(engine.apply(cmd)) == naive.apply(cmd)
    assert naive.levels() == engine_levels(engine)
    assert engine_levels(engine) == [("BUY", "o1", 96, 1), ("SELL", "o2", 97, 1)]
