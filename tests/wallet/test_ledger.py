"""The ledger against real PostgreSQL: exact flows, idempotency, errors, concurrency."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from decimal import Decimal

import asyncpg
import pytest

from trade_engine.connectors.wallet.exceptions import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InsufficientBalanceError,
    ReservationExceededError,
    ReservationMismatchError,
    ReservationNotFoundError,
    UserNotFoundError,
)
from trade_engine.connectors.wallet.models import (
    AssetBalance,
    ReleaseRequest,
    ReserveRequest,
    SettleTradeRequest,
    TransferRequest,
    format_amount,
)
from trade_engine.wallet.ledger import Ledger
from trade_engine.wallet.reconcile import reconcile

from .conftest import WalletDb

pytestmark = pytest.mark.postgres
D = Decimal


async def deposit(ledger: Ledger, user: str, asset: str, amount: str) -> None:
    await ledger.deposit(
        TransferRequest(
            user_id=user, asset=asset, amount=amount, idempotency_key=f"d-{user}-{asset}"
        )  # type: ignore[arg-type]
    )


def reserve(user: str, asset: str, amount: str, order: str, **kw: str) -> ReserveRequest:
    return ReserveRequest(user_id=user, asset=asset, amount=amount, order_id=order, **kw)  # type: ignore[arg-type]


def release(
    user: str, asset: str, order: str, amount: str | None = None, **kw: str
) -> ReleaseRequest:
    return ReleaseRequest(user_id=user, asset=asset, order_id=order, amount=amount, **kw)  # type: ignore[arg-type]


def settle(
    trade: str,
    qty: str,
    price: str,
    *,
    buyer: str = "b",
    seller: str = "s",
    bo: str = "ob",
    so: str = "os",
    bfee: str = "0",
    sfee: str = "0",
) -> SettleTradeRequest:
    return SettleTradeRequest.model_validate(
        {
            "trade_id": trade,
            "buyer_user_id": buyer,
            "seller_user_id": seller,
            "buyer_order_id": bo,
            "seller_order_id": so,
            "base_asset": "BTC",
            "quote_asset": "USDT",
            "quantity": qty,
            "price": price,
            "buyer_fee": bfee,
            "seller_fee": sfee,
        }
    )


async def balances(ledger: Ledger, user: str) -> dict[str, tuple[str, str]]:
    got = (await ledger.balances(user)).balances
    return {a: (format_amount(b.available), format_amount(b.reserved)) for a, b in got.items()}


async def fee_totals(db: WalletDb) -> dict[str, Decimal]:
    async with db.pool.acquire() as conn:
        report = await reconcile(conn)
    return {t.asset: t.fees for t in report.assets}


async def test_reserve_settle_release_exact(wallet_db: WalletDb) -> None:
    ledger = wallet_db.ledger
    await deposit(ledger, "b", "USDT", "100000")
    await deposit(ledger, "s", "BTC", "2")
    r = (await ledger.reserve(reserve("b", "USDT", "50000", "ob"))).response
    assert (r.available_balance, r.reserved_balance, r.hold_remaining) == (
        D(50000),
        D(50000),
        D(50000),
    )
    await ledger.reserve(reserve("s", "BTC", "1", "os"))
    await wallet_db.check()

    # A partial fill at a better price than the buyer's limit.
    t1 = (
        await ledger.settle_trade(settle("t1", "0.4", "49000", bfee="0.0004", sfee="19.6"))
    ).response
    assert t1.quote_quantity == D(19600)
    assert (t1.buyer_hold_remaining, t1.seller_hold_remaining) == (D(30400), D("0.6"))
    assert t1.buyer_balances == {
        "BTC": AssetBalance(available=D("0.3996"), reserved=D(0)),
        "USDT": AssetBalance(available=D(50000), reserved=D(30400)),
    }
    assert t1.seller_balances["USDT"] == AssetBalance(available=D("19580.4"), reserved=D(0))
    assert t1.seller_balances["BTC"] == AssetBalance(available=D(1), reserved=D("0.6"))
    assert await fee_totals(wallet_db) == {"BTC": D("0.0004"), "USDT": D("19.6")}
    await wallet_db.check()

    t2 = (
        await ledger.settle_trade(settle("t2", "0.6", "49000", bfee="0.0006", sfee="29.4"))
    ).response
    assert (t2.buyer_hold_remaining, t2.seller_hold_remaining) == (D(1000), D(0))
    await wallet_db.check()

    # The buy ends FILLED with 1000 USDT of its hold unused; the sell releases 0.
    rel = (await ledger.release(release("b", "USDT", "ob"))).response
    assert (rel.released_amount, rel.hold_remaining) == (D(1000), D(0))
    assert (await ledger.release(release("s", "BTC", "os", "0"))).response.released_amount == 0
    assert await balances(ledger, "b") == {"BTC": ("0.999", "0"), "USDT": ("51000", "0")}
    assert await balances(ledger, "s") == {"BTC": ("1", "0"), "USDT": ("48951", "0")}
    assert await fee_totals(wallet_db) == {"BTC": D("0.001"), "USDT": D(49)}
    await wallet_db.check()


async def test_partial_release_then_rest(wallet_db: WalletDb) -> None:
    ledger = wallet_db.ledger
    await deposit(ledger, "u", "USDT", "100")
    await ledger.reserve(reserve("u", "USDT", "60", "o1"))
    part = (
        await ledger.release(release("u", "USDT", "o1", "25", idempotency_key="o1:amend"))
    ).response
    assert (part.released_amount, part.hold_remaining, part.available_balance) == (
        D(25),
        D(35),
        D(65),
    )
    with pytest.raises(ReservationExceededError) as exc:
        await ledger.release(release("u", "USDT", "o1", "35.000000000000000001"))
    assert exc.value.details["remaining"] == "35"
    rest = (await ledger.release(release("u", "USDT", "o1"))).response
    assert (rest.released_amount, rest.hold_remaining, rest.available_balance) == (
        D(35),
        D(0),
        D(100),
    )
    await wallet_db.check()


async def test_top_up_with_another_key(wallet_db: WalletDb) -> None:
    ledger = wallet_db.ledger
    await deposit(ledger, "u", "BTC", "5")
    await ledger.reserve(reserve("u", "BTC", "1", "o1"))
    top = (
        await ledger.reserve(reserve("u", "BTC", "0.5", "o1", idempotency_key="o1:amend:1"))
    ).response
    assert (top.hold_remaining, top.reserved_balance, top.available_balance) == (
        D("1.5"),
        D("1.5"),
        D("3.5"),
    )
    with pytest.raises(ReservationMismatchError):
        await ledger.reserve(reserve("u", "ETH", "1", "o1", idempotency_key="o1:amend:2"))
    await wallet_db.check()


async def test_errors_change_nothing(wallet_db: WalletDb) -> None:
    ledger = wallet_db.ledger
    await deposit(ledger, "u", "USDT", "100")
    with pytest.raises(InsufficientBalanceError) as exc:
        await ledger.reserve(reserve("u", "USDT", "100.01", "o1"))
    assert exc.value.code == "INSUFFICIENT_BALANCE"
    assert exc.value.details == {
        "user_id": "u",
        "asset": "USDT",
        "available": "100",
        "requested": "100.01",
    }
    assert await balances(ledger, "u") == {"USDT": ("100", "0")}
    with pytest.raises(AccountNotFoundError):
        await ledger.reserve(reserve("u", "BTC", "1", "o2"))
    with pytest.raises(UserNotFoundError):
        await ledger.balances("nobody")
    with pytest.raises(ReservationNotFoundError):
        await ledger.release(release("u", "USDT", "missing"))
    with pytest.raises(InsufficientBalanceError):
        await ledger.withdraw(
            TransferRequest(user_id="u", asset="USDT", amount="101", idempotency_key="w1")
        )  # type: ignore[arg-type]
    # A refused withdrawal leaves no idempotency record: the same key works once funded.
    await ledger.deposit(
        TransferRequest(user_id="u", asset="USDT", amount="1", idempotency_key="d2")
    )  # type: ignore[arg-type]
    # A refused reserve is its order id's answer for good, even once funds arrive: an
    # order id is answered once (a re-sent copy must not get a hold its first copy was
    # refused, the matcher having answered that copy already).
    with pytest.raises(InsufficientBalanceError) as again:
        await ledger.reserve(reserve("u", "USDT", "100.01", "o1"))
    assert again.value.details == exc.value.details
    assert (
        await ledger.reserve(reserve("u", "USDT", "100.01", "o3"))
    ).response.available_balance == D("0.99")
    # Settling against a hold of the wrong user or without a hold fails whole.
    with pytest.raises(ReservationNotFoundError):
        await ledger.settle_trade(settle("t1", "1", "1", buyer="u", bo="o3", so="nohold"))
    with pytest.raises(ReservationMismatchError):
        await ledger.settle_trade(settle("t1", "1", "1", buyer="x", bo="o3", so="o1x"))
    assert await balances(ledger, "u") == {"BTC": ("0", "0"), "USDT": ("0.99", "100.01")}
    await wallet_db.check()


async def test_idempotency(wallet_db: WalletDb) -> None:
    ledger = wallet_db.ledger
    await deposit(ledger, "b", "USDT", "1000")
    await deposit(ledger, "s", "BTC", "1")
    first = await ledger.reserve(reserve("b", "USDT", "500", "ob"))
    again = await ledger.reserve(reserve("b", "USDT", "500.00", "ob"))
    assert (first.replayed, again.replayed) == (False, True)
    assert again.response == first.response
    with pytest.raises(IdempotencyConflictError) as exc:
        await ledger.reserve(reserve("b", "USDT", "400", "ob"))
    assert exc.value.code == "IDEMPOTENCY_CONFLICT"
    assert exc.value.status == 409
    await ledger.reserve(reserve("s", "BTC", "1", "os"))

    s1 = await ledger.settle_trade(settle("t1", "0.5", "100"))
    s2 = await ledger.settle_trade(settle("t1", "0.5", "100"))
    assert s2.replayed
    assert s2.response == s1.response
    with pytest.raises(IdempotencyConflictError):
        await ledger.settle_trade(settle("t1", "0.4", "100"))
    r1 = await ledger.release(release("b", "USDT", "ob"))
    r2 = await ledger.release(release("b", "USDT", "ob"))
    assert r2.replayed
    assert r2.response.released_amount == r1.response.released_amount == D(450)
    assert await balances(ledger, "b") == {"BTC": ("0.5", "0"), "USDT": ("950", "0")}
    await wallet_db.check()


async def _unbalanced_entry(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        entry = await conn.fetchval(
            "INSERT INTO journal_entries (op, key) VALUES ('deposit', 'x') RETURNING entry_id"
        )
        await conn.execute(
            "INSERT INTO postings (entry_id, account_id, asset, amount)"
            " SELECT $1, account_id, 'USDT', 5 FROM accounts WHERE user_id = 'u'",
            entry,
        )


async def test_journal_entries_must_balance(wallet_db: WalletDb) -> None:
    await deposit(wallet_db.ledger, "u", "USDT", "1")
    async with wallet_db.pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
            await _unbalanced_entry(conn)
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM postings")


async def test_a_posting_added_later_to_a_balanced_entry_is_refused(wallet_db: WalletDb) -> None:
    """The check runs per INSERT statement over all of an entry's postings: legs split
    across statements, or appended to an entry already written, never pass."""
    await deposit(wallet_db.ledger, "u", "USDT", "1")
    async with wallet_db.pool.acquire() as conn:
        entry, account = await conn.fetchrow(
            "SELECT p.entry_id, p.account_id FROM postings AS p"
            " JOIN accounts AS a USING (account_id) WHERE a.user_id = 'u' LIMIT 1"
        )
        with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
            await conn.execute(
                "INSERT INTO postings (entry_id, account_id, asset, amount)"
                " VALUES ($1, $2, 'USDT', 1)",
                entry,
                account,
            )


async def test_reconcile_reports_drift(wallet_db: WalletDb) -> None:
    ledger = wallet_db.ledger
    await deposit(ledger, "u", "USDT", "10")
    await ledger.reserve(reserve("u", "USDT", "4", "o1"))
    async with wallet_db.pool.acquire() as conn:
        report = await reconcile(conn)
        assert report.ok
        assert [(h.order_id, h.remaining) for h in report.open_holds] == [("o1", D(4))]
        assert report.to_dict()["assets"] == [
            {
                "asset": "USDT",
                "postings_sum": "0",
                "available": "6",
                "held": "4",
                "fees": "0",
                "external": "-10",
            }
        ]
        await conn.execute(
            "UPDATE accounts SET balance = balance + 1 WHERE user_id = 'u' AND kind = 'held'"
        )
        report = await reconcile(conn)
    assert not report.ok
    assert any("caches 5 but its postings sum to 4" in p for p in report.problems)
    assert any("holds' remaining sum to 4" in p for p in report.problems)


async def test_concurrent_operations_keep_exact_totals(wallet_db: WalletDb) -> None:
    """Overlapping users, shuffled and duplicated settles and releases, all at once."""
    ledger = wallet_db.ledger
    rng = random.Random(7)
    users = [f"u{i}" for i in range(6)]
    await asyncio.gather(
        *(deposit(ledger, u, a, "1000000") for u in users for a in ("BTC", "USDT"))
    )
    expected: dict[tuple[str, str], Decimal] = defaultdict(lambda: D(1000000))
    fees = defaultdict(Decimal)
    reserves, settles, releases = [], [], []
    for n in range(80):
        buyer, seller = rng.sample(users, 2)
        qty, price, limit = D(rng.randint(1, 500)) / 100, D(rng.randint(900, 1100)), D(1100)
        fill = qty * D(rng.randint(1, 4)) / 4  # partial or full fill
        notional = fill * price
        bfee, sfee = (fill / 1000).quantize(D("0.00001")), (notional / 1000).quantize(D("0.01"))
        reserves += [
            reserve(buyer, "USDT", str(qty * limit), f"b{n}"),
            reserve(seller, "BTC", str(qty), f"s{n}"),
        ]
        settles.append(
            settle(
                f"t{n}",
                str(fill),
                str(price),
                buyer=buyer,
                seller=seller,
                bo=f"b{n}",
                so=f"s{n}",
                bfee=str(bfee),
                sfee=str(sfee),
            )
        )
        releases += [
            release(buyer, "USDT", f"b{n}", str(qty * limit - notional)),
            release(seller, "BTC", f"s{n}", str(qty - fill)),
        ]
        expected[(buyer, "USDT")] -= notional
        expected[(buyer, "BTC")] += fill - bfee
        expected[(seller, "BTC")] -= fill
        expected[(seller, "USDT")] += notional - sfee
        fees["BTC"] += bfee
        fees["USDT"] += sfee
    rng.shuffle(reserves)
    await asyncio.gather(*(ledger.reserve(r) for r in reserves))
    await wallet_db.check()
    # Exact-amount settles and releases commute: run them all at once, each twice.
    ops = [ledger.settle_trade(s) for s in settles * 2] + [ledger.release(r) for r in releases * 2]
    rng.shuffle(ops)
    outcomes = await asyncio.gather(*ops)
    assert sum(o.replayed for o in outcomes) == len(settles) + len(releases)
    await wallet_db.check()
    for user in users:
        got = (await ledger.balances(user)).balances
        for asset in ("BTC", "USDT"):
            assert got[asset] == AssetBalance(available=expected[(user, asset)], reserved=D(0))
    assert await fee_totals(wallet_db) == dict(fees)


async def test_a_refused_reserve_stays_refused_single_and_batched(wallet_db: WalletDb) -> None:
    """Both paths store a reserve's refusal as its key's answer; a settle or release the
    ledger refused stores nothing (settlement re-drives those)."""
    ledger = wallet_db.ledger
    await deposit(ledger, "u", "USDT", "10")
    batch = [reserve("u", "USDT", "5", "ok1"), reserve("u", "USDT", "50", "nsf1")]
    first = await ledger.apply_many("reserve", batch)
    assert isinstance(first[1], InsufficientBalanceError)
    await ledger.deposit(
        TransferRequest(user_id="u", asset="USDT", amount="100", idempotency_key="top-up")
    )  # type: ignore[arg-type]
    again = await ledger.apply_many("reserve", batch)
    assert not isinstance(again[0], Exception)
    assert again[0].replayed
    assert isinstance(again[1], InsufficientBalanceError)
    with pytest.raises(InsufficientBalanceError):
        await ledger.reserve(reserve("u", "USDT", "50", "nsf1"))
    # A different payload under the refused key is still a conflict, not a new answer.
    with pytest.raises(IdempotencyConflictError):
        await ledger.reserve(reserve("u", "USDT", "40", "nsf1"))
    assert await balances(ledger, "u") == {"USDT": ("105", "5")}
    # A refused release stores nothing: the same key succeeds once there is a hold.
    with pytest.raises(ReservationNotFoundError):
        await ledger.release(release("u", "USDT", "later"))
    await ledger.reserve(reserve("u", "USDT", "1", "later"))
    assert (await ledger.release(release("u", "USDT", "later"))).response.released_amount == D(1)
    await wallet_db.check()
