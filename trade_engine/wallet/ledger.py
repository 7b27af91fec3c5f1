"""The wallet's double-entry ledger on PostgreSQL: reserve, release, settle, deposit, withdraw.

Every applied operation is one transaction holding one journal entry whose
postings sum to zero per asset (checked by a deferred trigger at commit), the
cached balances of the user accounts it touches (CHECK >= 0) and, for reserve,
release and settle, the order's hold. Each is idempotent on ``(op, key)``.

Lock order, the same in every operation so concurrent ones never deadlock:
the ``operations`` row of the key, then holds sorted by order id, then user
accounts sorted by ``(user_id, asset, kind)``. System accounts (fees,
external) are never locked: they keep no cached balance. Accounts are created
on first use in a short transaction of their own, before the operation's.

This module never talks HTTP and never decides retries: that is the caller's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg

from trade_engine.connectors.wallet.exceptions import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InternalError,
    ReservationMismatchError,
    ReservationNotFoundError,
    UserNotFoundError,
    WalletError,
)
from trade_engine.connectors.wallet.models import (
    SYSTEM_USER,
    BalancesResponse,
    ReleaseRequest,
    ReleaseResponse,
    ReserveRequest,
    ReserveResponse,
    SettleTradeRequest,
    SettleTradeResponse,
    TransferRequest,
    TransferResponse,
)
from trade_engine.connectors.wallet.wire import Item, from_model, to_builtins
from trade_engine.wallet import batch
from trade_engine.wallet.rules import (
    Account,
    AccountKey,
    Encoded,
    Hold,
    Outcome,
    R,
    by_asset,
    check_funds,
    check_hold_owner,
    check_remaining,
    columns,
    refusal_is_final,
    refusal_json,
    replayed,
    settle_accounts,
)


class Ledger:
    """Money operations on a pool whose connections use the wallet's schema."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._known_accounts: set[AccountKey] = set()

    @asynccontextmanager
    async def connection(
        self, conn: asyncpg.Connection | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        """``conn`` itself, or one from the pool for the block (a batch reuses one)."""
        if conn is not None:
            yield conn
            return
        async with self._pool.acquire() as acquired:
            yield acquired

    async def reserve(
        self, req: ReserveRequest, conn: asyncpg.Connection | None = None
    ) -> Outcome[ReserveResponse]:
        async with self.connection(conn) as c:
            await self._ensure_accounts(c, [(req.user_id, req.asset, "held")])
            return await _idempotent(
                c, "reserve", req.key, req=req, model=ReserveResponse, apply=_reserve
            )

    async def release(
        self, req: ReleaseRequest, conn: asyncpg.Connection | None = None
    ) -> Outcome[ReleaseResponse]:
        async with self.connection(conn) as c:
            keys = [(req.user_id, req.asset, "available"), (req.user_id, req.asset, "held")]
            await self._ensure_accounts(c, keys)
            return await _idempotent(
                c, "release", req.key, req=req, model=ReleaseResponse, apply=_release
            )

    async def settle_trade(
        self, req: SettleTradeRequest, conn: asyncpg.Connection | None = None
    ) -> Outcome[SettleTradeResponse]:
        async with self.connection(conn) as c:
            await self._ensure_accounts(c, settle_accounts(req))
            return await _idempotent(
                c, "settle", req.trade_id, req=req, model=SettleTradeResponse, apply=_settle
            )

    async def deposit(
        self, req: TransferRequest, conn: asyncpg.Connection | None = None
    ) -> Outcome[TransferResponse]:
        async with self.connection(conn) as c:
            keys = [(req.user_id, req.asset, "available"), (SYSTEM_USER, req.asset, "external")]
            await self._ensure_accounts(c, keys)
            return await _idempotent(
                c, "deposit", req.idempotency_key, req=req, model=TransferResponse, apply=_deposit
            )

    async def withdraw(
        self, req: TransferRequest, conn: asyncpg.Connection | None = None
    ) -> Outcome[TransferResponse]:
        async with self.connection(conn) as c:
            await self._ensure_accounts(c, [(SYSTEM_USER, req.asset, "external")])
            return await _idempotent(
                c, "withdraw", req.idempotency_key, req=req, model=TransferResponse, apply=_withdraw
            )

    async def apply_batch(
        self, op: str, items: Sequence[Item], conn: asyncpg.Connection | None = None
    ) -> list[Encoded | WalletError]:
        """Per item (one kind: reserve, release or settle) its answer as JSON, or its error,
        in order: the service's batch path (no pydantic model per item).

        One transaction for the whole batch (``batch.py``); each item's answer is
        the one its single operation would have given at that point of the batch.
        Batches the set-based path cannot take run item by item, each in its own
        transaction, through the single operations.
        """
        async with self.connection(conn) as c:
            await self._ensure_accounts(c, [k for r in items for k in _ensure_keys(op, r)])
            try:
                return await batch.apply(c, op, items)
            except batch.FallBackError:
                pass
            single = self._single(op)
            request = _REQUESTS[op]
            out: list[Encoded | WalletError] = []
            for item in items:
                try:
                    outcome = await single(request.model_validate(to_builtins(item)), c)
                except WalletError as exc:
                    out.append(exc)
                else:
                    out.append(
                        Encoded(outcome.response.model_dump_json().encode(), outcome.replayed)
                    )
            return out

    async def apply_many(
        self, op: str, reqs: Sequence[Any], conn: asyncpg.Connection | None = None
    ) -> list[Outcome[Any] | WalletError]:
        """``apply_batch`` for pydantic requests, answering pydantic outcomes (tools, tests)."""
        model = _RESPONSES[op]
        answers = await self.apply_batch(op, [from_model(op, r) for r in reqs], conn)
        return [
            a
            if isinstance(a, WalletError)
            else Outcome(model.model_validate_json(a.body), a.replayed)
            for a in answers
        ]

    def _single(self, op: str) -> Callable[[Any, asyncpg.Connection], Awaitable[Outcome[Any]]]:
        single: dict[str, Callable[[Any, asyncpg.Connection], Awaitable[Outcome[Any]]]] = {
            "reserve": self.reserve,
            "release": self.release,
            "settle": self.settle_trade,
        }
        return single[op]

    async def balances(self, user_id: str) -> BalancesResponse:
        async with self._pool.acquire() as c:
            rows = await c.fetch(
                "SELECT asset, kind, balance FROM accounts WHERE user_id = $1"
                " AND kind IN ('available', 'held') ORDER BY asset",
                user_id,
            )
        if not rows:
            raise UserNotFoundError(f"no accounts for user {user_id!r}", {"user_id": user_id})
        return BalancesResponse(user_id=user_id, balances=by_asset(rows))

    async def ping(self) -> None:
        async with self._pool.acquire() as c:
            await c.fetchval("SELECT 1 FROM schema_migrations LIMIT 1")

    async def _ensure_accounts(self, conn: asyncpg.Connection, keys: Iterable[AccountKey]) -> None:
        missing = sorted(set(keys) - self._known_accounts)
        if not missing:
            return
        # Sorted inserts in their own short transaction: account creation never
        # holds a lock while an operation waits for another.
        await conn.execute(
            "INSERT INTO accounts (user_id, asset, kind)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ORDER BY 1, 2, 3"
            " ON CONFLICT DO NOTHING",
            *columns(missing),
        )
        self._known_accounts.update(missing)


_REQUESTS: dict[str, type[ReserveRequest | ReleaseRequest | SettleTradeRequest]] = {
    "reserve": ReserveRequest,
    "release": ReleaseRequest,
    "settle": SettleTradeRequest,
}
_RESPONSES: dict[str, type[ReserveResponse | ReleaseResponse | SettleTradeResponse]] = {
    "reserve": ReserveResponse,
    "release": ReleaseResponse,
    "settle": SettleTradeResponse,
}


# --- idempotency ---------------------------------------------------------------------


async def _idempotent(
    conn: asyncpg.Connection,
    op: str,
    key: str,
    *,
    req: Any,
    model: type[R],
    apply: Callable[[asyncpg.Connection, Any, str], Awaitable[R]],
) -> Outcome[R]:
    digest = req.request_hash()
    try:
        async with conn.transaction():
            # First statement and first lock: a concurrent request with the same
            # key waits here until this one commits or rolls back.
            fresh = await conn.fetchval(
                "INSERT INTO operations (op, key, request_hash) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                op,
                key,
                digest,
            )
            if not fresh:
                row = await conn.fetchrow(
                    "SELECT request_hash, response FROM operations WHERE op = $1 AND key = $2",
                    op,
                    key,
                )
                if row["request_hash"] != digest:
                    raise IdempotencyConflictError(
                        f"{op} key {key!r} was already used with a different payload",
                        {"op": op, "key": key},
                    )
                answer = replayed(row["response"], model)
                if isinstance(answer, WalletError):
                    raise answer
                return answer
            try:
                # A savepoint: a refusal undoes whatever the operation wrote, and only that.
                async with conn.transaction():
                    response = await apply(conn, req, key)
            except WalletError as exc:
                if not refusal_is_final(op, exc):
                    raise
                # The refusal is this key's answer from now on, committed with the key.
                await conn.execute(
                    "UPDATE operations SET response = $3::jsonb WHERE op = $1 AND key = $2",
                    op,
                    key,
                    refusal_json(exc),
                )
                refusal = exc
            else:
                await conn.execute(
                    "UPDATE operations SET response = $3::jsonb, entry_id = $4"
                    " WHERE op = $1 AND key = $2",
                    op,
                    key,
                    response.model_dump_json(),
                    response.entry_id,
                )
                return Outcome(response, False)
    except asyncpg.CheckViolationError as exc:
        # Every rule is checked before writing; reaching a constraint is a bug.
        raise InternalError(f"ledger constraint violated: {exc}", {"op": op, "key": key}) from exc
    raise refusal


# --- operations ----------------------------------------------------------------------


async def _reserve(conn: asyncpg.Connection, req: ReserveRequest, key: str) -> ReserveResponse:
    hold = (await _lock_holds(conn, [req.order_id])).get(req.order_id)
    if hold is not None:
        check_hold_owner(hold, req.user_id, req.asset)
    available_key = (req.user_id, req.asset, "available")
    held_key = (req.user_id, req.asset, "held")
    accounts = await _lock_accounts(conn, [available_key, held_key])
    available = accounts.get(available_key)
    if available is None:
        raise AccountNotFoundError(
            f"user {req.user_id!r} has no {req.asset} account",
            {"user_id": req.user_id, "asset": req.asset},
        )
    check_funds(available, req.amount)
    held = accounts[held_key]
    entry_id = await _entry(conn, "reserve", key, req.order_id, req.reason)
    await _post(conn, entry_id, [(available, -req.amount), (held, req.amount)])
    row = await conn.fetchrow(
        "INSERT INTO holds (order_id, user_id, asset, reserved) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (order_id) DO UPDATE SET reserved = holds.reserved + EXCLUDED.reserved,"
        " updated_at = now()"
        " WHERE holds.user_id = EXCLUDED.user_id AND holds.asset = EXCLUDED.asset"
        " RETURNING reservation_id::text, remaining",
        req.order_id,
        req.user_id,
        req.asset,
        req.amount,
    )
    if row is None:  # created concurrently for another user or asset
        raise ReservationMismatchError(
            f"order {req.order_id!r} holds funds of another user or asset",
            {"order_id": req.order_id},
        )
    return ReserveResponse(
        reservation_id=row["reservation_id"],
        order_id=req.order_id,
        user_id=req.user_id,
        asset=req.asset,
        amount=req.amount,
        hold_remaining=row["remaining"],
        available_balance=available.balance - req.amount,
        reserved_balance=held.balance + req.amount,
        entry_id=entry_id,
    )


async def _release(conn: asyncpg.Connection, req: ReleaseRequest, key: str) -> ReleaseResponse:
    hold = (await _lock_holds(conn, [req.order_id])).get(req.order_id)
    if hold is None:
        raise ReservationNotFoundError(
            f"no hold for order {req.order_id!r}", {"order_id": req.order_id}
        )
    check_hold_owner(hold, req.user_id, req.asset)
    if req.reservation_id is not None and req.reservation_id != hold.reservation_id:
        raise ReservationMismatchError(
            f"order {req.order_id!r} has reservation {hold.reservation_id}",
            {"order_id": req.order_id, "reservation_id": hold.reservation_id},
        )
    amount = hold.remaining if req.amount is None else req.amount
    check_remaining(hold, amount)
    available_key = (req.user_id, req.asset, "available")
    held_key = (req.user_id, req.asset, "held")
    accounts = await _lock_accounts(conn, [available_key, held_key])
    available, held = accounts[available_key], accounts[held_key]
    entry_id = await _entry(conn, "release", key, req.order_id, req.reason)
    await _post(conn, entry_id, [(held, -amount), (available, amount)])
    remaining = await conn.fetchval(
        "UPDATE holds SET released = released + $2, updated_at = now() WHERE order_id = $1"
        " RETURNING remaining",
        req.order_id,
        amount,
    )
    return ReleaseResponse(
        reservation_id=hold.reservation_id,
        order_id=req.order_id,
        user_id=req.user_id,
        asset=req.asset,
        released_amount=amount,
        hold_remaining=remaining,
        available_balance=available.balance + amount,
        reserved_balance=held.balance - amount,
        entry_id=entry_id,
    )


def _ensure_keys(op: str, req: Any) -> list[AccountKey]:
    """The accounts an operation creates on first use (a reserve never creates 'available')."""
    if op == "settle":
        return settle_accounts(req)
    if op == "reserve":
        return [(req.user_id, req.asset, "held")]
    return [(req.user_id, req.asset, "available"), (req.user_id, req.asset, "held")]


async def _settle(
    conn: asyncpg.Connection, req: SettleTradeRequest, key: str
) -> SettleTradeResponse:
    base, quote = req.base_asset, req.quote_asset
    notional = req.notional()
    holds = await _lock_holds(conn, [req.buyer_order_id, req.seller_order_id])
    buyer_hold = _settle_hold(holds, req.buyer_order_id, req.buyer_user_id, quote, notional)
    seller_hold = _settle_hold(holds, req.seller_order_id, req.seller_user_id, base, req.quantity)
    keys = settle_accounts(req)
    users = await _lock_accounts(conn, keys[:4])
    fees = await _system_accounts(conn, keys[4:])
    entry_id = await _entry(conn, "settle", key, req.trade_id, None)
    await _post(
        conn,
        entry_id,
        [
            (users[keys[0]], -notional),
            (users[keys[3]], notional - req.seller_fee),
            (fees[keys[5]], req.seller_fee),
            (users[keys[2]], -req.quantity),
            (users[keys[1]], req.quantity - req.buyer_fee),
            (fees[keys[4]], req.buyer_fee),
        ],
    )
    await conn.execute(
        "UPDATE holds AS h SET settled = h.settled + d.amount, updated_at = now()"
        " FROM unnest($1::text[], $2::numeric[]) AS d(order_id, amount)"
        " WHERE h.order_id = d.order_id",
        [req.buyer_order_id, req.seller_order_id],
        [notional, req.quantity],
    )
    rows = await conn.fetch(
        "SELECT user_id, asset, kind, balance FROM accounts"
        " WHERE user_id = ANY($1::text[]) AND asset = ANY($2::text[])"
        " AND kind IN ('available', 'held')",
        [req.buyer_user_id, req.seller_user_id],
        [base, quote],
    )
    return SettleTradeResponse(
        trade_id=req.trade_id,
        entry_id=entry_id,
        buyer_ledger_entry_id=entry_id,
        seller_ledger_entry_id=entry_id,
        quote_quantity=notional,
        buyer_hold_remaining=buyer_hold.remaining - notional,
        seller_hold_remaining=seller_hold.remaining - req.quantity,
        buyer_balances=by_asset([r for r in rows if r["user_id"] == req.buyer_user_id]),
        seller_balances=by_asset([r for r in rows if r["user_id"] == req.seller_user_id]),
    )


def _settle_hold(
    holds: dict[str, Hold], order_id: str, user_id: str, asset: str, amount: Decimal
) -> Hold:
    hold = holds.get(order_id)
    if hold is None:
        raise ReservationNotFoundError(f"no hold for order {order_id!r}", {"order_id": order_id})
    check_hold_owner(hold, user_id, asset)
    check_remaining(hold, amount)
    return hold


async def _deposit(conn: asyncpg.Connection, req: TransferRequest, key: str) -> TransferResponse:
    user_key = (req.user_id, req.asset, "available")
    accounts = await _lock_accounts(conn, [user_key, (req.user_id, req.asset, "held")])
    external = await _system_accounts(conn, [(SYSTEM_USER, req.asset, "external")])
    entry_id = await _entry(conn, "deposit", key, req.user_id, req.reason)
    await _post(
        conn, entry_id, [(external.popitem()[1], -req.amount), (accounts[user_key], req.amount)]
    )
    return _transfer_response(req, entry_id, accounts, req.amount)


async def _withdraw(conn: asyncpg.Connection, req: TransferRequest, key: str) -> TransferResponse:
    user_key = (req.user_id, req.asset, "available")
    accounts = await _lock_accounts(conn, [user_key, (req.user_id, req.asset, "held")])
    if user_key not in accounts:
        raise AccountNotFoundError(
            f"user {req.user_id!r} has no {req.asset} account",
            {"user_id": req.user_id, "asset": req.asset},
        )
    check_funds(accounts[user_key], req.amount)
    external = await _system_accounts(conn, [(SYSTEM_USER, req.asset, "external")])
    entry_id = await _entry(conn, "withdraw", key, req.user_id, req.reason)
    await _post(
        conn, entry_id, [(accounts[user_key], -req.amount), (external.popitem()[1], req.amount)]
    )
    return _transfer_response(req, entry_id, accounts, -req.amount)


def _transfer_response(
    req: TransferRequest, entry_id: int, accounts: dict[AccountKey, Account], delta: Decimal
) -> TransferResponse:
    held = accounts.get((req.user_id, req.asset, "held"))
    return TransferResponse(
        user_id=req.user_id,
        asset=req.asset,
        amount=req.amount,
        entry_id=entry_id,
        available_balance=accounts[(req.user_id, req.asset, "available")].balance + delta,
        reserved_balance=held.balance if held else Decimal(0),
    )


# --- checks --------------------------------------------------------------------------


# --- rows ----------------------------------------------------------------------------


_SELECT_ACCOUNTS = (
    "SELECT a.account_id, a.user_id, a.asset, a.kind, a.balance FROM accounts AS a"
    " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(user_id, asset, kind)"
    " USING (user_id, asset, kind) ORDER BY a.user_id, a.asset, a.kind"
)


async def _lock_accounts(
    conn: asyncpg.Connection, keys: Iterable[AccountKey]
) -> dict[AccountKey, Account]:
    """Lock user accounts in (user_id, asset, kind) order: the rows are locked as sorted."""
    rows = await conn.fetch(_SELECT_ACCOUNTS + " FOR UPDATE OF a", *columns(sorted(set(keys))))
    return {key: acc for acc in map(_account, rows) for key in [acc.key]}


async def _system_accounts(
    conn: asyncpg.Connection, keys: Iterable[AccountKey]
) -> dict[AccountKey, Account]:
    rows = await conn.fetch(_SELECT_ACCOUNTS, *columns(sorted(set(keys))))
    return {acc.key: acc for acc in map(_account, rows)}


def _account(row: asyncpg.Record) -> Account:
    return Account(row["account_id"], (row["user_id"], row["asset"], row["kind"]), row["balance"])


async def _lock_holds(conn: asyncpg.Connection, order_ids: Sequence[str]) -> dict[str, Hold]:
    rows = await conn.fetch(
        "SELECT order_id, reservation_id::text, user_id, asset, remaining FROM holds"
        " WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE",
        sorted(set(order_ids)),
    )
    return {r["order_id"]: Hold(*r.values()) for r in rows}


async def _entry(conn: asyncpg.Connection, op: str, key: str, ref: str, reason: str | None) -> int:
    entry_id: int = await conn.fetchval(
        "INSERT INTO journal_entries (op, key, ref, reason) VALUES ($1, $2, $3, $4)"
        " RETURNING entry_id",
        op,
        key,
        ref,
        reason,
    )
    return entry_id


async def _post(
    conn: asyncpg.Connection, entry_id: int, legs: Sequence[tuple[Account, Decimal]]
) -> None:
    """Write the postings and move the cached balances of the user accounts among them."""
    legs = [(account, amount) for account, amount in legs if amount != 0]
    if not legs:
        return
    await conn.execute(
        "INSERT INTO postings (entry_id, account_id, asset, amount)"
        " SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::numeric[])",
        entry_id,
        [a.account_id for a, _ in legs],
        [a.key[1] for a, _ in legs],
        [amount for _, amount in legs],
    )
    deltas: dict[int, Decimal] = {}
    for account, amount in legs:
        if account.key[0] != SYSTEM_USER:
            deltas[account.account_id] = deltas.get(account.account_id, Decimal(0)) + amount
    if deltas:
        await conn.execute(
            "UPDATE accounts AS a SET balance = a.balance + d.amount"
            " FROM unnest($1::bigint[], $2::numeric[]) AS d(account_id, amount)"
            " WHERE a.account_id = d.account_id",
            list(deltas),
            list(deltas.values()),
        )
