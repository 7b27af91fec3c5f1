"""Hypothesis over interleavings of reserve, fill (settle), cancel/expire (release),
amend-reduce (partial release) and replays, on the real ledger (PostgreSQL).

Each example is a few users and orders of one symbol (BTC/USDT) in a schema of
this test; every operation goes through a single call or through a batch
(``apply_many``, the set-based path) together with replays of earlier
requests. A plain model of the money says what each call must answer; after
every step the ledger is reconciled and compared with the model.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trade_engine.config import load_settings
from trade_engine.connectors.wallet.exceptions import WalletError
from trade_engine.connectors.wallet.models import (
    ReleaseRequest,
    ReserveRequest,
    SettleTradeRequest,
    TransferRequest,
)
from trade_engine.wallet.ledger import Ledger
from trade_engine.wallet.reconcile import reconcile
from trade_engine.wallet.schema import create_pool, migrate

from .conftest import drop_schema, new_schema

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USERS = ("a", "b", "c")
PRICES = (Decimal("99"), Decimal("100"), Decimal("101"))
LOTS = (Decimal("0.5"), Decimal("1"), Decimal("2"))
FUNDS = {"USDT": Decimal("400"), "BTC": Decimal("3")}
SCHEMA: dict[str, str] = {}


@dataclass
class Order:
    order_id: str
    user: str
    side: str
    price: Decimal
    qty: Decimal  # current quantity (amends reduce it)
    filled: Decimal = Decimal(0)
    hold: Decimal = Decimal(0)  # reserved - settled - released, as the wallet must say
    open: bool = True
    amends: int = 0

    @property
    def asset(self) -> str:
        return "USDT" if self.side == "BUY" else "BTC"

    def needs(self) -> Decimal:
        """What the order still needs held: the unfilled rest at its limit."""
        rest = self.qty - self.filled
        return rest * self.price if self.side == "BUY" else rest


@dataclass
class Model:
    available: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    held: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    fees: dict[str, Decimal] = field(
        default_factory=lambda: {"USDT": Decimal(0), "BTC": Decimal(0)}
    )
    orders: dict[str, Order] = field(default_factory=dict)
    trades: set[str] = field(default_factory=set)


class LedgerInterleavings(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dsn = load_settings().postgres.dsn()
        self.pool: asyncpg.Pool = self.run(create_pool(self.dsn, SCHEMA["name"], max_size=2))
        self.ledger = Ledger(self.pool)
        self.tag = uuid.uuid4().hex[:8]
        self.model = Model()
        self.sent: list[tuple[str, Any, Any]] = []  # (op, request, first answer)
        self.seq = 0
        for user in USERS:
            for asset, amount in FUNDS.items():
                req = TransferRequest(
                    user_id=self.user(user),
                    asset=asset,
                    amount=amount,
                    idempotency_key=f"{self.tag}-fund-{user}-{asset}",
                )
                self.run(self.ledger.deposit(req))
                self.model.available[(user, asset)] = amount
                self.model.held[(user, asset)] = Decimal(0)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.pool.close())
        self.loop.close()

    def user(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def call(self, op: str, req: Any, batched: bool) -> Any:
        """The answer (response or WalletError) of one request, alone or inside a batch
        where earlier requests of the same kind are replayed around it."""
        if not batched:
            single: dict[str, Any] = {
                "reserve": self.ledger.reserve,
                "release": self.ledger.release,
                "settle": self.ledger.settle_trade,
            }[op]
            try:
                return self.run(single(req)).response
            except WalletError as exc:
                return exc
        replays = [(r, a) for o, r, a in self.sent if o == op][-3:]
        batch = [r for r, _ in replays[:1]] + [req] + [r for r, _ in replays[1:]]
        answers = self.run(self.ledger.apply_many(op, batch))
        for (old, first), answer in zip(replays, [answers[0], *answers[2:]], strict=False):
            self.check_replay(old, first, answer)
        answer = answers[1] if replays else answers[0]
        return answer if isinstance(answer, WalletError) else answer.response

    def check_replay(self, req: Any, first: Any, answer: Any) -> None:
        if isinstance(first, WalletError):
            return  # a refused request stored nothing: a resend is a fresh attempt
        assert not isinstance(answer, WalletError), (req, answer)
        assert answer.replayed
        assert answer.response == first

    def remember(self, op: str, req: Any, answer: Any) -> None:
        if not isinstance(answer, WalletError):
            self.sent.append((op, req, answer))

    # --- rules -------------------------------------------------------------------------

    @rule(
        user=st.sampled_from(USERS),
        side=st.sampled_from(("BUY", "SELL")),
        price=st.sampled_from(PRICES),
        qty=st.sampled_from(LOTS),
        batched=st.booleans(),
    )
    def place(self, user: str, side: str, price: Decimal, qty: Decimal, batched: bool) -> None:
        self.seq += 1
        order = Order(f"{self.tag}-o{self.seq}", user, side, price, qty)
        amount = order.needs()
        req = ReserveRequest(
            user_id=self.user(user), asset=order.asset, amount=amount, order_id=order.order_id
        )
        answer = self.call("reserve", req, batched)
        key = (user, order.asset)
        if self.model.available[key] < amount:
            assert isinstance(answer, WalletError), answer
            assert answer.code == "INSUFFICIENT_BALANCE"
            return
        assert not isinstance(answer, WalletError), answer
        self.model.available[key] -= amount
        self.model.held[key] += amount
        order.hold = amount
        self.model.orders[order.order_id] = order
        self.remember("reserve", req, answer)

    def open_orders(self, side: str) -> list[Order]:
        return [o for o in self.model.orders.values() if o.open and o.side == side]

    @precondition(lambda self: self.open_orders("BUY") and self.open_orders("SELL"))
    @rule(data=st.data(), batched=st.booleans(), fee=st.booleans())
    def fill(self, data: st.DataObject, batched: bool, fee: bool) -> None:
        buy = data.draw(st.sampled_from(self.open_orders("BUY")))
        sell = data.draw(st.sampled_from(self.open_orders("SELL")))
        if sell.price > buy.price:
            return  # the engine would not cross them
        rest = min(buy.qty - buy.filled, sell.qty - sell.filled)
        qty = data.draw(st.sampled_from(sorted({rest, rest / 2})))
        price, notional = sell.price, sell.price * qty  # the maker's price
        buyer_fee = qty / 100 if fee else Decimal(0)
        seller_fee = notional / 100 if fee else Decimal(0)
        self.seq += 1
        trade_id = f"{self.tag}-t{self.seq}"
        req = SettleTradeRequest(
            trade_id=trade_id,
            buyer_user_id=self.user(buy.user),
            seller_user_id=self.user(sell.user),
            buyer_order_id=buy.order_id,
            seller_order_id=sell.order_id,
            base_asset="BTC",
            quote_asset="USDT",
            quantity=qty,
            price=price,
            buyer_fee=buyer_fee,
            seller_fee=seller_fee,
        )
        answer = self.call("settle", req, batched)
        assert not isinstance(answer, WalletError), answer
        m = self.model
        m.held[(buy.user, "USDT")] -= notional
        m.available[(sell.user, "USDT")] += notional - seller_fee
        m.held[(sell.user, "BTC")] -= qty
        m.available[(buy.user, "BTC")] += qty - buyer_fee
        m.fees["USDT"] += seller_fee
        m.fees["BTC"] += buyer_fee
        buy.filled += qty
        sell.filled += qty
        buy.hold -= notional
        sell.hold -= qty
        m.trades.add(trade_id)
        self.remember("settle", req, answer)
        for order in (buy, sell):
            if order.filled == order.qty:
                self.end(order, "ORDER_FILLED", batched)

    def end(self, order: Order, reason: str, batched: bool) -> None:
        """Release exactly what remains (a buy filled below its limit keeps a rest)."""
        req = ReleaseRequest(
            user_id=self.user(order.user),
            asset=order.asset,
            order_id=order.order_id,
            amount=order.hold,
            reason=reason,
        )
        answer = self.call("release", req, batched)
        assert not isinstance(answer, WalletError), answer
        assert answer.hold_remaining == 0
        key = (order.user, order.asset)
        self.model.held[key] -= order.hold
        self.model.available[key] += order.hold
        order.hold = Decimal(0)
        order.open = False
        self.remember("release", req, answer)

    @precondition(lambda self: any(o.open for o in self.model.orders.values()))
    @rule(data=st.data(), reason=st.sampled_from(("ORDER_CANCELLED", "ORDER_EXPIRED")))
    def cancel_or_expire(self, data: st.DataObject, reason: str) -> None:
        order = data.draw(st.sampled_from([o for o in self.model.orders.values() if o.open]))
        self.end(order, reason, data.draw(st.booleans()))

    @precondition(lambda self: any(o.open for o in self.model.orders.values()))
    @rule(data=st.data(), batched=st.booleans())
    def amend_reduce(self, data: st.DataObject, batched: bool) -> None:
        order = data.draw(st.sampled_from([o for o in self.model.orders.values() if o.open]))
        rest = order.qty - order.filled
        if rest <= Decimal("0.5"):
            return
        new_qty = order.qty - Decimal("0.5")
        freed = order.needs() - (new_qty - order.filled) * (
            order.price if order.side == "BUY" else 1
        )
        order.amends += 1
        req = ReleaseRequest(
            user_id=self.user(order.user),
            asset=order.asset,
            order_id=order.order_id,
            amount=freed,
            reason="AMEND_DECREASE",
            idempotency_key=f"{order.order_id}:amend{order.amends}",
        )
        answer = self.call("release", req, batched)
        assert not isinstance(answer, WalletError), answer
        key = (order.user, order.asset)
        self.model.held[key] -= freed
        self.model.available[key] += freed
        order.hold -= freed
        order.qty = new_qty
        self.remember("release", req, answer)

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), batched=st.booleans())
    def replay(self, data: st.DataObject, batched: bool) -> None:
        """The same key and payload again: the first answer, nothing moves."""
        op, req, first = data.draw(st.sampled_from(self.sent))
        answer = self.call(op, req, batched)
        if batched:
            assert answer == first
        else:
            assert not isinstance(answer, WalletError)
            assert answer == first

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), batched=st.booleans())
    def conflicting_replay(self, data: st.DataObject, batched: bool) -> None:
        """The same key with another payload: IDEMPOTENCY_CONFLICT, nothing moves."""
        op, req, _ = data.draw(st.sampled_from(self.sent))
        changed = req.model_copy(update={"reason": "SOMETHING_ELSE"})
        if op == "settle":
            changed = req.model_copy(update={"seller_fee": req.seller_fee + Decimal("0.001")})
        answer = self.call(op, changed, batched)
        assert isinstance(answer, WalletError)
        assert answer.code == "IDEMPOTENCY_CONFLICT"

    @precondition(lambda self: self.open_orders("SELL"))
    @rule(data=st.data(), batched=st.booleans())
    def oversettle_is_refused(self, data: st.DataObject, batched: bool) -> None:
        """A trade needing more than a hold keeps is refused whole."""
        sell = data.draw(st.sampled_from(self.open_orders("SELL")))
        buy = next(iter(self.open_orders("BUY")), None)
        if buy is None:
            return
        self.seq += 1
        req = SettleTradeRequest(
            trade_id=f"{self.tag}-x{self.seq}",
            buyer_user_id=self.user(buy.user),
            seller_user_id=self.user(sell.user),
            buyer_order_id=buy.order_id,
            seller_order_id=sell.order_id,
            base_asset="BTC",
            quote_asset="USDT",
            quantity=sell.hold + 1,
            price=Decimal("0.001"),
        )
        answer = self.call("settle", req, batched)
        assert isinstance(answer, WalletError)
        assert answer.code == "RESERVATION_EXCEEDED"

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def ledger_matches_the_model(self) -> None:
        async def read() -> tuple[Any, list[asyncpg.Record], list[asyncpg.Record], Any]:
            async with self.pool.acquire() as conn:
                report = await reconcile(conn)
                accounts = await conn.fetch(
                    "SELECT user_id, asset, kind, balance FROM accounts WHERE user_id LIKE $1",
                    f"{self.tag}-%",
                )
                holds = await conn.fetch(
                    "SELECT order_id, remaining FROM holds WHERE order_id LIKE $1",
                    f"{self.tag}-%",
                )
                settles = await conn.fetch(
                    "SELECT key, count(*) AS n FROM journal_entries"
                    " WHERE op = 'settle' AND key LIKE $1 GROUP BY key",
                    f"{self.tag}-%",
                )
                return report, list(accounts), list(holds), settles

        report, accounts, holds, settles = self.run(read())
        assert report.ok, report.problems
        m = self.model
        for row in accounts:
            user = row["user_id"].removeprefix(f"{self.tag}-")
            book = m.available if row["kind"] == "available" else m.held
            assert row["balance"] == book[(user, row["asset"])], row
            assert row["balance"] >= 0
        remaining = {r["order_id"]: r["remaining"] for r in holds}
        for order in m.orders.values():
            assert remaining[order.order_id] == order.hold, order
            if order.open:
                assert order.hold >= order.needs(), order  # never below what it needs
        assert {r["key"] for r in settles} == m.trades
        assert all(r["n"] == 1 for r in settles)
        for asset in ("USDT", "BTC"):  # conserved: available + held + fees = deposits
            total = sum(m.available[(u, asset)] + m.held[(u, asset)] for u in USERS)
            assert total + m.fees[asset] == FUNDS[asset] * len(USERS)


@pytest.fixture
def ledger_schema() -> Any:
    dsn = load_settings().postgres.dsn()
    schema = new_schema()

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn, schema)
        finally:
            await conn.close()

    asyncio.run(create())
    SCHEMA["name"] = schema
    yield schema
    asyncio.run(drop_schema(dsn, schema))


def test_interleavings_keep_the_money_right(ledger_schema: str) -> None:
    run = LedgerInterleavings.TestCase
    run.settings = settings(
        max_examples=25,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    run().runTest()
