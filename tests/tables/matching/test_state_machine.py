"""The fast book and the naive reference book, driven by the same commands.

After every step: identical outputs and state hashes, validate() on both,
snapshot -> restore reproduces the hash, gapless seqs, trade price = maker's
limit price, no self-trade unless the taker chose STP NONE, every ended order
conserves quantity and releases exactly its unused hold, and a reject changes
nothing but the seq.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

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
    SetTradingState,
    Side,
    StpMode,
    SymbolRules,
    TimeInForce,
    TimeTick,
    Trade,
    TradingState,
)
from trade_engine.tables.matching.reference import NaiveBook
from trade_engine.tables.matching.state import hash_snapshot

USERS = st.sampled_from(["u0", "u1", "u2"])
PRICES = st.integers(min_value=95, max_value=105)
QTYS = st.integers(min_value=1, max_value=6)
SIDES = st.sampled_from([Side.BUY, Side.SELL])
STP = st.sampled_from(list(StpMode))
LIMIT_TIF = st.sampled_from(list(TimeInForce))

RULES = SymbolRules(
    "T/Q",
    "0.5",
    "0.1",
    maker_fee_ppm=1_500,
    taker_fee_ppm=2_500,
    max_open_orders=12,
    day_session_ms=5_000,
    dedup_window=50,
)


def _without_seq(e: MatchingEngine) -> str:
    """The hash minus what a reject moves: the seq, and the dedup window (a refused
    place joins it; ``_run`` checks that apart)."""
    snap = e.snapshot()
    snap.pop("seq")
    snap.pop("recent_order_ids")
    return hash_snapshot(snap)


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fast = MatchingEngine(RULES)
        self.ref = MatchingEngine(RULES, book=NaiveBook())
        self.next_id = 0
        self.ids: list[str] = []
        self.seq = 0
        self.limit_price: dict[str, int | None] = {}
        self.stp: dict[str, StpMode] = {}
        self.side: dict[str, Side] = {}
        self.reserved: dict[str, int] = {}
        self.traded: dict[str, int] = {}

    @initialize()
    def start(self) -> None:
        self.fast.validate()

    # ------------------------------------------------------------ driving

    def _new_id(self, reuse: bool) -> str:
        if reuse and self.ids:
            return self.ids[self.next_id % len(self.ids)]
        self.next_id += 1
        oid = f"o{self.next_id}"
        self.ids.append(oid)
        return oid

    def _pick(self, i: int) -> str:
        return self.ids[i % len(self.ids)] if self.ids else "missing"

    def _run(self, cmd: Command) -> None:
        before = _without_seq(self.fast)
        out = self.fast.apply(cmd)
        assert out == self.ref.apply(cmd)
        if len(out) == 1 and isinstance(out[0], Rejected):
            assert _without_seq(self.fast) == before
            if isinstance(cmd, Place):
                assert cmd.order_id in self.fast.recent_set  # answered: never accepted again
        self._check_records(out)

    def _check_records(self, out: list[Execution]) -> None:
        for r in out:
            event(r.kind if not isinstance(r, Rejected) else f"REJECTED {r.code.value}")
            assert r.seq == self.seq + 1
            self.seq = r.seq
            if isinstance(r, Accepted):
                self.limit_price[r.order_id] = r.price
                self.stp[r.order_id] = r.stp
                self.side[r.order_id] = r.side
                self.reserved[r.order_id] = r.reserved
                self.traded[r.order_id] = 0
            elif isinstance(r, Amended):
                self.limit_price[r.order_id] = r.price
                self.reserved[r.order_id] = r.reserved
            elif isinstance(r, Trade):
                self._check_trade(r)
            elif isinstance(r, OrderEnded):
                assert r.filled == self.traded[r.order_id]
                assert r.reserved == self.reserved[r.order_id]
                used = r.quote_filled if self.side[r.order_id] is Side.BUY else r.filled
                assert used + r.release == r.reserved
                assert r.release >= 0
                state_qty = r.filled + r.cancelled
                assert r.cancelled >= 0
                assert state_qty >= r.filled

    def _check_trade(self, t: Trade) -> None:
        assert t.trade_id == f"T/Q:{t.seq}"
        assert t.price == self.limit_price[t.maker_order_id]
        taker_limit = self.limit_price[t.taker_order_id]
        if taker_limit is not None:
            assert t.price <= taker_limit if t.taker_side is Side.BUY else t.price >= taker_limit
        if t.taker_user_id == t.maker_user_id:
            assert self.stp[t.taker_order_id] is StpMode.NONE
        assert t.quantity > 0
        assert t.quote_quantity == t.price * t.quantity
        self.traded[t.taker_order_id] += t.quantity
        self.traded[t.maker_order_id] += t.quantity

    # -------------------------------------------------------------- rules

    @rule(
        user=USERS,
        side=SIDES,
        price=PRICES,
        qty=QTYS,
        tif=LIMIT_TIF,
        stp=STP,
        post_only=st.booleans(),
        reuse=st.integers(0, 20),
        expire=st.integers(0, 3_000),
    )
    def place_limit(
        self,
        user: str,
        side: Side,
        price: int,
        qty: int,
        tif: TimeInForce,
        stp: StpMode,
        post_only: bool,
        reuse: int,
        expire: int,
    ) -> None:
        oid = self._new_id(reuse == 0)
        expire_at = self.fast.now + expire if tif is TimeInForce.GTD else None
        cmd = Place(oid, user, side, OrderType.LIMIT, qty, price, None, None, tif, None, stp)
        if post_only or expire_at is not None:
            cmd = Place(
                oid,
                user,
                side,
                OrderType.LIMIT,
                qty,
                price,
                tif=tif,
                stp=stp,
                post_only=post_only and tif not in (TimeInForce.IOC, TimeInForce.FOK),
                expire_at=expire_at,
                client_order_id=f"c{reuse}" if reuse < 3 else None,
            )
        self._run(cmd)

    @rule(
        user=USERS,
        side=SIDES,
        qty=st.one_of(st.none(), QTYS),
        funds=st.integers(1, 1_500),
        fok=st.booleans(),
        stp=STP,
    )
    def place_market(
        self, user: str, side: Side, qty: int | None, funds: int, fok: bool, stp: StpMode
    ) -> None:
        tif = TimeInForce.FOK if fok and qty is not None else TimeInForce.IOC
        if side is Side.SELL:
            cmd = Place(
                self._new_id(False), user, side, OrderType.MARKET, qty or 1, tif=tif, stp=stp
            )
        else:
            cmd = Place(
                self._new_id(False),
                user,
                side,
                OrderType.MARKET,
                qty,
                funds=funds,
                tif=tif,
                stp=stp,
            )
        self._run(cmd)

    @rule(
        user=USERS,
        side=SIDES,
        stop=PRICES,
        price=st.one_of(st.none(), PRICES),
        qty=QTYS,
        tif=LIMIT_TIF,
        stp=STP,
    )
    def place_stop(
        self,
        user: str,
        side: Side,
        stop: int,
        price: int | None,
        qty: int,
        tif: TimeInForce,
        stp: StpMode,
    ) -> None:
        oid = self._new_id(False)
        if price is None:
            funds = qty * 105 if side is Side.BUY else None
            cmd = Place(
                oid,
                user,
                side,
                OrderType.STOP,
                None if funds else qty,
                stop_price=stop,
                funds=funds,
                tif=TimeInForce.IOC,
                stp=stp,
            )
        else:
            expire_at = self.fast.now + 1_000 if tif is TimeInForce.GTD else None
            cmd = Place(
                oid,
                user,
                side,
                OrderType.STOP_LIMIT,
                qty,
                price,
                stop,
                tif=tif,
                stp=stp,
                expire_at=expire_at,
            )
        self._run(cmd)

    @rule(i=st.integers(0, 1_000), user=USERS, by_client=st.booleans())
    def cancel(self, i: int, user: str, by_client: bool) -> None:
        if by_client:
            self._run(Cancel(user, client_order_id=f"c{i % 3}"))
        else:
            self._run(Cancel(user, self._pick(i)))

    @rule(
        i=st.integers(0, 1_000),
        owner=st.booleans(),
        qty=st.one_of(st.none(), st.integers(0, 8)),
        price=st.one_of(st.none(), PRICES),
    )
    def amend(self, i: int, owner: bool, qty: int | None, price: int | None) -> None:
        oid = self._pick(i)
        o = self.fast.orders.get(oid)
        user = o.user_id if (o is not None and owner) else "u1"
        self._run(Amend(oid, user, qty, price))

    @rule(user=USERS, side=st.one_of(st.none(), SIDES))
    def mass_cancel(self, user: str, side: Side | None) -> None:
        self._run(MassCancel(user, side))

    @rule(state=st.sampled_from(list(TradingState)), back=st.booleans())
    def admin(self, state: TradingState, back: bool) -> None:
        self._run(SetTradingState(TradingState.TRADING if back else state))

    @rule(dt=st.integers(0, 2_500))
    def tick(self, dt: int) -> None:
        self._run(TimeTick(self.fast.now + dt))

    # --------------------------------------------------------- invariants

    @invariant()
    def books_agree_and_are_valid(self) -> None:
        self.fast.validate()
        self.ref.validate()
        h = self.fast.state_hash()
        assert h == self.ref.state_hash()
        restored = MatchingEngine.restore(self.fast.snapshot())
        restored.validate()
        assert restored.state_hash() == h
        states = [o.state() for o in self.fast.orders.values()]
        rebuilt = MatchingEngine.from_states(self.fast.header(), states, list(self.fast.recent))
        assert rebuilt.state_hash() == h
        for o in self.fast.orders.values():
            if o.quantity is not None:
                assert o.quantity == o.filled + o.remaining + o.cancelled
            assert o.filled == self.traded[o.order_id]
            assert o.reserved == self.reserved[o.order_id]


BookMachine.TestCase.settings = settings(
    max_examples=800,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBookMachine = BookMachine.TestCase


def test_restored_engine_continues_identically() -> None:
    """Replaying the same tail on a restored copy gives byte-equal outputs."""
    a = MatchingEngine(RULES)
    cmds: list[Any] = [
        Place("x1", "u1", Side.SELL, OrderType.LIMIT, 3, 100),
        Place("x2", "u2", Side.SELL, OrderType.STOP_LIMIT, 2, 97, 99),
        Place("x3", "u0", Side.BUY, OrderType.LIMIT, 2, 99, tif=TimeInForce.DAY),
    ]
    for c in cmds:
        a.apply(c)
    b = MatchingEngine.restore(a.snapshot())
    tail: list[Any] = [
        Place("x4", "u2", Side.BUY, OrderType.LIMIT, 1, 100),
        Place("x5", "u1", Side.SELL, OrderType.LIMIT, 2, 99),
        TimeTick(10**9),
    ]
    for c in tail:
        assert a.apply(c) == b.apply(c)
    assert a.state_hash() == b.state_hash()
