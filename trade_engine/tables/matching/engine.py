"""MatchingEngine: applies commands to one symbol's book and returns executions.

Pure and deterministic: the only clock is ``TimeTick``; every iteration that
can reach an output is over an ordered structure (the book's priority order,
lists sorted by (stop price, seq), a heap keyed by (expire_at, seq), or an
explicit sort by seq). Every output record takes the next ``seq``; a command
with no effect (a tick that expires nothing, a mass cancel of nothing) emits
nothing and takes no seq. A rejected command changes nothing but ``seq``.

Only the transitions live here. What they change (the orders and their indexes),
and how it is saved, restored, hashed and checked, is the base class
``state.EngineState``; the static rules of a place, shared with the gateway and the
risk stage, are in ``checks``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from trade_engine.tables.matching.book import BookLike
from trade_engine.tables.matching.checks import (
    IMMEDIATE,
    MARKET_TYPES,
    STOP_TYPES,
    Problem,
    amended_hold,
    parse_place,
    required_hold,
    static_problem,
)
from trade_engine.tables.matching.codes import EndReason, RejectCode
from trade_engine.tables.matching.commands import (
    Amend,
    AmendRequest,
    Cancel,
    Command,
    MassCancel,
    Place,
    PlaceRequest,
    SetTradingState,
    TimeTick,
)
from trade_engine.tables.matching.enums import (
    OrderStatus,
    OrderType,
    RequestKind,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)
from trade_engine.tables.matching.exceptions import NumberFormatError
from trade_engine.tables.matching.executions import (
    Accepted,
    Amended,
    Execution,
    OrderEnded,
    Rejected,
    StpPrevented,
    Trade,
    TradingStateChanged,
    Triggered,
)
from trade_engine.tables.matching.order import IN_BOOK, IN_STOPS, Order
from trade_engine.tables.matching.rules import BPS, PPM, SymbolRules
from trade_engine.tables.matching.state import EngineState

# Why the matching loop stopped.
_DONE, _NO_LIQUIDITY, _FUNDS, _TAKER_GONE = 0, 1, 2, 3


class MatchingEngine(EngineState):
    """One symbol's book. ``apply(command) -> list[Execution]`` is the only mutator."""

    def __init__(self, rules: SymbolRules, *, book: BookLike | None = None) -> None:
        super().__init__(rules, book=book)
        self._handlers: dict[type, Callable[[Any, list[Execution]], None]] = {
            Place: self._place,
            PlaceRequest: self._place_request,
            Cancel: self._cancel,
            Amend: self._amend,
            AmendRequest: self._amend_request,
            MassCancel: self._mass_cancel,
            SetTradingState: self._set_state,
            TimeTick: self._tick,
        }

    # ----------------------------------------------------------------- API

    def apply(self, command: Command) -> list[Execution]:
        out: list[Execution] = []
        handler = self._handlers.get(type(command))
        if handler is None:
            raise TypeError(f"not a matching command: {type(command).__name__}")
        handler(command, out)
        return out

    def depth(self, side: Side, n: int) -> list[tuple[int, int, int]]:
        return self.book.depth(side, n)

    def best_bid(self) -> int | None:
        return self.book.best_price(Side.BUY)

    def best_ask(self) -> int | None:
        return self.book.best_price(Side.SELL)

    # ------------------------------------------------------------- helpers

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _reject(
        self,
        out: list[Execution],
        request: RequestKind,
        order_id: str | None,
        user_id: str | None,
        problem: Problem,
        *,
        release: int = 0,
        side: Side | None = None,
    ) -> None:
        self.seq += 1
        out.append(
            Rejected(self.seq, request, order_id, user_id, problem[0], problem[1], release, side)
        )

    def _crosses(self, side: Side, price: int) -> bool:
        if side is Side.BUY:
            best = self.book.best_price(Side.SELL)
            return best is not None and best <= price
        best = self.book.best_price(Side.BUY)
        return best is not None and best >= price

    def _band_problem(self, price: int) -> Problem | None:
        bps = self.rules.price_band_bps
        ref = self.last_price if self.last_price is not None else self.reference_price
        if not bps or ref is None:
            return None
        low = -((-ref * (BPS - bps)) // BPS)
        high = ref * (BPS + bps) // BPS
        if low <= price <= high:
            return None
        return RejectCode.MATCHING_PRICE_OUT_OF_BAND, f"price {price} outside [{low}, {high}]"

    def _day_end(self) -> int:
        r = self.rules
        k = (self.now - r.day_offset_ms) // r.day_session_ms + 1
        return r.day_offset_ms + k * r.day_session_ms

    def _end(self, o: Order, status: OrderStatus, reason: EndReason, out: list[Execution]) -> None:
        if o.where == IN_BOOK:
            self.book.remove(o)
        elif o.where == IN_STOPS:
            self._remove_stop(o)
        if o.quantity is not None:
            o.cancelled += o.remaining
            o.remaining = 0
        o.status = status
        used = o.spent if o.side is Side.BUY else o.filled
        self._unregister(o)
        self.seq += 1
        out.append(
            OrderEnded(
                self.seq,
                o.order_id,
                o.user_id,
                status,
                reason,
                o.filled,
                o.spent,
                o.cancelled,
                o.reserved,
                o.reserved - used,
                o.side,
            )
        )

    def _rest(self, o: Order) -> None:
        self.prio += 1
        o.prio = self.prio
        o.status = OrderStatus.OPEN if o.filled == 0 else OrderStatus.PARTIALLY_FILLED
        self.book.add(o)

    # ------------------------------------------------------------ matching

    def _take(self, o: Order, out: list[Execution]) -> None:
        """Match ``o`` (not in the book) as taker, then rest or end it."""
        why = self._match(o, out)
        if why == _TAKER_GONE:
            return
        if o.quantity is not None and o.remaining == 0:
            self._end(o, OrderStatus.FILLED, EndReason.FILLED, out)
        elif o.price is None:
            if why == _FUNDS and o.quantity is None and o.filled:
                self._end(o, OrderStatus.FILLED, EndReason.FILLED, out)
            elif why == _FUNDS:
                self._end(o, OrderStatus.EXPIRED, EndReason.FUNDS_EXHAUSTED, out)
            else:
                self._end(o, OrderStatus.EXPIRED, EndReason.NO_LIQUIDITY, out)
        elif o.tif in IMMEDIATE:
            self._end(o, OrderStatus.EXPIRED, EndReason.IOC_REMAINDER, out)
        else:
            self._rest(o)

    def _match(self, t: Order, out: list[Execution]) -> int:
        book = self.book
        buy = t.side is Side.BUY
        opp = Side.SELL if buy else Side.BUY
        limit = t.price
        by_qty = t.quantity is not None
        funds = t.funds
        no_stp = t.stp is StpMode.NONE
        while True:
            if by_qty and t.remaining <= 0:
                return _DONE
            m = book.top(opp)
            if m is None:
                return _NO_LIQUIDITY
            p: int = m.price  # type: ignore[assignment]
            if limit is not None and (p > limit if buy else p < limit):
                return _NO_LIQUIDITY
            cap = t.remaining if by_qty else m.remaining
            if funds is not None:
                afford = (funds - t.spent) // p
                if afford <= 0:
                    return _FUNDS
                cap = min(cap, afford)
            if not no_stp and m.user_id == t.user_id:
                if self._prevent(t, m, p, cap, out):
                    return _TAKER_GONE
                continue
            self._trade(t, m, p, cap if cap < m.remaining else m.remaining, out)

    def _trade(self, t: Order, m: Order, p: int, q: int, out: list[Execution]) -> None:
        notional = p * q
        m.remaining -= q
        m.filled += q
        m.spent += notional
        if t.quantity is not None:
            t.remaining -= q
        t.filled += q
        t.spent += notional
        t.status = OrderStatus.PARTIALLY_FILLED
        self.last_price = p
        r = self.rules
        if t.side is Side.BUY:
            buyer_fee = q * r.taker_fee_ppm // PPM
            seller_fee = notional * r.maker_fee_ppm // PPM
        else:
            buyer_fee = q * r.maker_fee_ppm // PPM
            seller_fee = notional * r.taker_fee_ppm // PPM
        self.seq += 1
        seq = self.seq
        out.append(
            Trade(
                seq,
                f"{self.symbol}:{seq}",
                self.symbol,
                p,
                q,
                notional,
                t.side,
                t.order_id,
                t.user_id,
                m.order_id,
                m.user_id,
                buyer_fee,
                seller_fee,
                t.remaining,
                m.remaining,
            )
        )
        self.book.reduce(m, q)
        if m.remaining == 0:
            self._end(m, OrderStatus.FILLED, EndReason.FILLED, out)
        else:
            m.status = OrderStatus.PARTIALLY_FILLED

    def _prevent(self, t: Order, m: Order, p: int, cap: int, out: list[Execution]) -> bool:
        """Self-trade prevention under the taker's mode; True if the taker ended."""
        mode = t.stp
        q = cap if cap < m.remaining else m.remaining
        if mode is StpMode.DECREMENT and t.quantity is not None:
            d = t.remaining if t.remaining < m.remaining else m.remaining
            self.seq += 1
            out.append(StpPrevented(self.seq, mode, t.user_id, t.order_id, m.order_id, p, d))
            m.remaining -= d
            m.cancelled += d
            self.book.reduce(m, d)
            t.remaining -= d
            t.cancelled += d
            if m.remaining == 0:
                self._end(m, OrderStatus.EXPIRED, EndReason.STP, out)
            if t.remaining == 0:
                self._end(t, OrderStatus.EXPIRED, EndReason.STP, out)
                return True
            return False
        self.seq += 1
        out.append(StpPrevented(self.seq, mode, t.user_id, t.order_id, m.order_id, p, q))
        if mode is StpMode.EXPIRE_MAKER or mode is StpMode.EXPIRE_BOTH:
            self._end(m, OrderStatus.EXPIRED, EndReason.STP, out)
        if mode is not StpMode.EXPIRE_MAKER:
            # EXPIRE_TAKER, EXPIRE_BOTH, and DECREMENT of a funds-only taker.
            self._end(t, OrderStatus.EXPIRED, EndReason.STP, out)
            return True
        return False

    def _fok_fillable(
        self,
        side: Side,
        price: int | None,
        qty: int,
        funds: int | None,
        *,
        user_id: str,
        stp: StpMode,
    ) -> bool:
        """Could ``qty`` trade in full right now? Self-trade-blocked liquidity does not count."""
        need, budget = qty, funds
        buy = side is Side.BUY
        for m in self.book.iter_side(Side.SELL if buy else Side.BUY):
            p: int = m.price  # type: ignore[assignment]
            if price is not None and (p > price if buy else p < price):
                return False
            if stp is not StpMode.NONE and m.user_id == user_id:
                if stp is StpMode.EXPIRE_MAKER:
                    continue
                return False
            take = need if need < m.remaining else m.remaining
            if budget is not None:
                if budget // p < take:
                    return False
                budget -= take * p
            need -= take
            if need == 0:
                return True
        return False

    # --------------------------------------------------------------- stops

    def _run_stops(self, out: list[Execution]) -> None:
        if not self.pending:
            return
        while (o := self._next_triggered()) is not None:
            self._remove_stop(o)
            o.status = OrderStatus.OPEN
            assert o.stop_price is not None
            assert self.last_price is not None
            self.seq += 1
            out.append(Triggered(self.seq, o.order_id, o.user_id, o.stop_price, self.last_price))
            if o.price is not None and o.post_only and self._crosses(o.side, o.price):
                self._end(o, OrderStatus.EXPIRED, EndReason.POST_ONLY_WOULD_TAKE, out)
            elif o.tif is TimeInForce.FOK and not self._fok_fillable(
                o.side, o.price, o.remaining, o.funds, user_id=o.user_id, stp=o.stp
            ):
                self._end(o, OrderStatus.EXPIRED, EndReason.FOK_NOT_FILLABLE, out)
            else:
                self._take(o, out)

    # ---------------------------------------------------------------- place

    def _static_problem(self, p: Place) -> Problem | None:
        return static_problem(p, self.rules)

    def _state_problem(self, p: Place) -> Problem | None:  # noqa: PLR0911
        """Checks against the book's current state, in documented order."""
        st = self.trading_state
        t = p.order_type
        if st is not TradingState.TRADING:
            if st is TradingState.HALT:
                return RejectCode.MATCHING_SYMBOL_HALTED, "symbol halted"
            if st is TradingState.CANCEL_ONLY:
                return RejectCode.MATCHING_SYMBOL_CANCEL_ONLY, "symbol is cancel-only"
            if st is TradingState.POST_ONLY and (t is not OrderType.LIMIT or p.tif in IMMEDIATE):
                return RejectCode.MATCHING_SYMBOL_POST_ONLY, "symbol is post-only"
            if st is TradingState.LIMIT_ONLY and t in MARKET_TYPES:
                return RejectCode.MATCHING_SYMBOL_LIMIT_ONLY, "symbol is limit-only"
        if p.client_order_id is not None and (p.user_id, p.client_order_id) in self.client_ids:
            return RejectCode.MATCHING_DUPLICATE_CLIENT_ORDER_ID, "client order id is live"
        if p.expire_at is not None and p.expire_at <= self.now:
            return RejectCode.VALIDATION_EXPIRE_AT_IN_PAST, f"expire_at <= now ({self.now})"
        cap = self.rules.max_open_orders
        if (
            cap
            and (t in STOP_TYPES or p.tif not in IMMEDIATE)
            and len(self.user_orders.get(p.user_id, ())) >= cap
        ):
            return RejectCode.MATCHING_MAX_OPEN_ORDERS, f"user has {cap} open orders"
        if p.price is not None and (band := self._band_problem(p.price)) is not None:
            return band
        if t in STOP_TYPES:
            return None
        if (
            p.price is not None
            and (p.post_only or st is TradingState.POST_ONLY)
            and self._crosses(p.side, p.price)
        ):
            return RejectCode.MATCHING_POST_ONLY_WOULD_TAKE, "post-only order would take"
        if p.tif is TimeInForce.FOK and not self._fok_fillable(
            p.side, p.price, p.quantity or 0, p.funds, user_id=p.user_id, stp=p.stp
        ):
            return RejectCode.MATCHING_FOK_NOT_FILLABLE, "FOK cannot fill in full"
        return None

    def _seen(self, order_id: str) -> bool:
        """The engine has answered a place of ``order_id`` (live, or within the window)."""
        return order_id in self.orders or order_id in self.recent_set

    def _duplicate(
        self, order_id: str, user_id: str, side: Side | None, out: list[Execution]
    ) -> None:
        # Checked before every other rule: a duplicate names a hold that belongs to
        # the first answer (still live, released by its reject, or used by its
        # fills), so it releases nothing, whatever else would be wrong with it.
        problem = (RejectCode.MATCHING_DUPLICATE_ORDER_ID, f"order id {order_id} seen")
        self._reject(out, RequestKind.PLACE, order_id, user_id, problem, side=side)

    def _refuse_place(
        self,
        out: list[Execution],
        order_id: str,
        user_id: str,
        problem: Problem,
        *,
        release: int = 0,
        side: Side | None = None,
    ) -> None:
        """Reject a first-seen place and remember its id: an answered id is never
        accepted again within the window (a re-sent copy is a duplicate)."""
        self._reject(out, RequestKind.PLACE, order_id, user_id, problem, release=release, side=side)
        self._remember(order_id)

    def _place(self, p: Place, out: list[Execution]) -> None:
        if self._seen(p.order_id):
            self._duplicate(p.order_id, p.user_id, p.side, out)
            return
        problem = self._static_problem(p) or self._state_problem(p)
        if problem is not None:
            self._refuse_place(
                out, p.order_id, p.user_id, problem, release=required_hold(p), side=p.side
            )
            return
        expire_at = self._day_end() if p.tif is TimeInForce.DAY else p.expire_at
        o = Order.from_place(p, expire_at, required_hold(p))
        self.seq += 1
        o.seq = self.seq
        stop = p.order_type in STOP_TYPES
        out.append(
            Accepted(
                o.seq,
                o.order_id,
                o.user_id,
                o.client_order_id,
                o.side,
                o.order_type,
                o.tif,
                o.price,
                o.stop_price,
                o.quantity,
                o.funds,
                expire_at,
                o.stp,
                o.post_only,
                o.reserved,
                OrderStatus.PENDING if stop else OrderStatus.OPEN,
            )
        )
        self._register(o)
        self._remember(o.order_id)
        if expire_at is not None:
            heapq.heappush(self.expiry, (expire_at, o.seq, o.order_id))
        if stop:
            self._add_stop(o)
        else:
            self._take(o, out)
        self._run_stops(out)

    def _place_request(self, r: PlaceRequest, out: list[Execution]) -> None:
        if self._seen(r.order_id):
            side = Side(r.side) if r.side in Side.__members__ else None
            self._duplicate(r.order_id, r.user_id, side, out)
            return
        if r.risk_reject is not None:
            self._risk_reject(r, out)
            return
        try:
            p = parse_place(r, self.rules)
        except NumberFormatError as exc:
            self._refuse_place(out, r.order_id, r.user_id, (exc.reject, str(exc)))
            return
        except ValueError as exc:
            problem = (RejectCode.VALIDATION_BAD_ENUM, str(exc)[:100])
            self._refuse_place(out, r.order_id, r.user_id, problem)
            return
        self._place(p, out)

    def _risk_reject(self, r: PlaceRequest, out: list[Execution]) -> None:
        """The risk stage refused this order and took no hold: a sequenced reject, release 0."""
        try:
            code = RejectCode(r.risk_reject or "")
        except ValueError:
            code = RejectCode.RISK_REJECTED
        if not code.startswith("RISK_"):
            code = RejectCode.RISK_REJECTED
        side = Side(r.side) if r.side in Side.__members__ else None
        self._refuse_place(out, r.order_id, r.user_id, (code, r.risk_message[:200]), side=side)

    # ----------------------------------------------------- cancel and amend

    def _cancel(self, c: Cancel, out: list[Execution]) -> None:
        kind = RequestKind.CANCEL
        if self.trading_state is TradingState.HALT:
            problem: Problem = (RejectCode.MATCHING_SYMBOL_HALTED, "symbol halted")
            self._reject(out, kind, c.order_id, c.user_id, problem)
            return
        if c.order_id is not None:
            o = self.orders.get(c.order_id)
        elif c.client_order_id is not None:
            oid = self.client_ids.get((c.user_id, c.client_order_id))
            o = None if oid is None else self.orders[oid]
        else:
            problem = (RejectCode.VALIDATION_CANCEL_TARGET_REQUIRED, "order_id or client_order_id")
            self._reject(out, kind, None, c.user_id, problem)
            return
        if o is None:
            problem = (RejectCode.MATCHING_UNKNOWN_ORDER, "no live order with that id")
            self._reject(out, kind, c.order_id, c.user_id, problem)
        elif o.user_id != c.user_id:
            problem = (RejectCode.MATCHING_NOT_ORDER_OWNER, "order belongs to another user")
            self._reject(out, kind, c.order_id, c.user_id, problem)
        else:
            self._end(o, OrderStatus.CANCELLED, EndReason.USER_CANCEL, out)

    def _mass_cancel(self, c: MassCancel, out: list[Execution]) -> None:
        if self.trading_state is TradingState.HALT:
            problem = (RejectCode.MATCHING_SYMBOL_HALTED, "symbol halted")
            self._reject(out, RequestKind.MASS_CANCEL, None, c.user_id, problem)
            return
        mine = self.user_orders.get(c.user_id)
        if not mine:
            return
        victims = sorted(
            (o for o in mine.values() if c.side is None or o.side is c.side),
            key=lambda o: o.seq,
        )
        for o in victims:
            self._end(o, OrderStatus.CANCELLED, EndReason.MASS_CANCEL, out)

    def _amend_problem(  # noqa: PLR0911, PLR0912
        self, a: Amend
    ) -> tuple[Problem | None, Order | None]:
        st = self.trading_state
        if st is TradingState.HALT:
            return (RejectCode.MATCHING_SYMBOL_HALTED, "symbol halted"), None
        if st is TradingState.CANCEL_ONLY:
            return (RejectCode.MATCHING_SYMBOL_CANCEL_ONLY, "symbol is cancel-only"), None
        o = self.orders.get(a.order_id)
        if o is None:
            return (RejectCode.MATCHING_UNKNOWN_ORDER, "no live order with that id"), None
        if o.user_id != a.user_id:
            return (RejectCode.MATCHING_NOT_ORDER_OWNER, "order belongs to another user"), None
        if a.quantity is None and a.price is None:
            return (RejectCode.VALIDATION_AMEND_NOTHING, "nothing to change"), None
        if o.where != IN_BOOK:
            return (RejectCode.MATCHING_AMEND_NOT_ALLOWED, "only resting orders amend"), None
        assert o.price is not None
        assert o.quantity is not None
        price = o.price if a.price is None else a.price
        qty = o.quantity if a.quantity is None else a.quantity
        if price <= 0:
            return (RejectCode.VALIDATION_PRICE_NOT_POSITIVE, "price must be positive"), None
        if qty <= 0:
            return (RejectCode.VALIDATION_QUANTITY_NOT_POSITIVE, "quantity must be positive"), None
        if price == o.price and qty == o.quantity:
            return (RejectCode.VALIDATION_AMEND_NOTHING, "nothing to change"), None
        if qty - o.filled - o.cancelled <= 0:
            return (RejectCode.VALIDATION_AMEND_BELOW_FILLED, "nothing would stay open"), None
        if qty < self.rules.min_qty:
            return (RejectCode.VALIDATION_QUANTITY_BELOW_MIN, "quantity below min"), None
        if price * qty < self.rules.min_notional:
            return (RejectCode.VALIDATION_NOTIONAL_BELOW_MIN, "notional below min"), None
        if price != o.price:
            band = self._band_problem(price)
            if band is not None:
                return band, None
            if (o.post_only or st is TradingState.POST_ONLY) and self._crosses(o.side, price):
                return (RejectCode.MATCHING_POST_ONLY_WOULD_TAKE, "post-only would take"), None
        if amended_hold(o, price, qty) > o.reserved:
            # Nothing holds the extra: the risk stage reserved this order's hold
            # before matching and cannot know its fills. Cancel and place anew.
            problem = (RejectCode.MATCHING_AMEND_EXCEEDS_HOLD, "amend needs more than is held")
            return problem, None
        return None, o

    def _amend(self, a: Amend, out: list[Execution]) -> None:
        problem, o = self._amend_problem(a)
        if problem is not None or o is None:
            assert problem is not None
            self._reject(out, RequestKind.AMEND, a.order_id, a.user_id, problem)
            return
        assert o.price is not None
        assert o.quantity is not None
        price = o.price if a.price is None else a.price
        qty = o.quantity if a.quantity is None else a.quantity
        remaining = qty - o.filled - o.cancelled
        keep = price == o.price and qty < o.quantity
        if keep:
            self.book.reduce(o, o.remaining - remaining)
            o.remaining = remaining
        else:
            self.book.remove(o)
            o.price, o.remaining = price, remaining
        o.quantity = qty
        old = o.reserved
        o.reserved = amended_hold(o, price, qty)
        self.seq += 1
        out.append(
            Amended(
                self.seq,
                o.order_id,
                o.user_id,
                price,
                qty,
                remaining,
                o.reserved,
                o.reserved - old,
                keep,
                o.side,
            )
        )
        if not keep:
            if self._crosses(o.side, price):
                self._take(o, out)
            else:
                self._rest(o)
            self._run_stops(out)

    def _amend_request(self, r: AmendRequest, out: list[Execution]) -> None:
        rules = self.rules
        try:
            a = Amend(
                r.order_id,
                r.user_id,
                None if r.quantity is None else rules.qty_scale.parse(r.quantity),
                None if r.price is None else rules.price_scale.parse(r.price),
            )
        except NumberFormatError as exc:
            self._reject(out, RequestKind.AMEND, r.order_id, r.user_id, (exc.reject, str(exc)))
            return
        self._amend(a, out)

    # ------------------------------------------------------ admin and time

    def _set_state(self, c: SetTradingState, out: list[Execution]) -> None:
        if c.reference_price is not None and c.reference_price <= 0:
            problem = (RejectCode.VALIDATION_PRICE_NOT_POSITIVE, "reference price must be > 0")
            self._reject(out, RequestKind.ADMIN, None, None, problem)
            return
        old = self.trading_state
        self.trading_state = c.state
        if c.reference_price is not None:
            self.reference_price = c.reference_price
        self.seq += 1
        out.append(TradingStateChanged(self.seq, old, c.state, self.reference_price))

    def _tick(self, c: TimeTick, out: list[Execution]) -> None:
        if c.now < self.now:
            problem = (RejectCode.VALIDATION_TIME_BACKWARDS, f"{c.now} < {self.now}")
            self._reject(out, RequestKind.TIME_TICK, None, None, problem)
            return
        self.now = c.now
        heap = self.expiry
        while heap and heap[0][0] <= c.now:
            _, seq, oid = heapq.heappop(heap)
            o = self.orders.get(oid)
            if o is None or o.seq != seq:
                continue  # lazily deleted: the order ended earlier
            reason = EndReason.DAY_EXPIRY if o.tif is TimeInForce.DAY else EndReason.GTD_EXPIRY
            self._end(o, OrderStatus.EXPIRED, reason, out)
