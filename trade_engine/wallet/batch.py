"""Batches of one operation kind applied in one transaction, set-based.

A batch call used to run each item in a transaction of its own: a dozen round
trips and one commit (an fsync) per item, about 200 settles per second. Here
the whole batch is one transaction of about ten statements whatever its size:

1. the ``operations`` rows of every key, inserted in key order (the first
   lock, as for a single operation); keys already there are replays or
   conflicts, answered from the stored response;
2. the holds of every order the fresh items name, locked in order-id order,
   then every user account they touch, locked in ``(user, asset, kind)``
   order: the same global lock order as single operations, so the two kinds
   never wait on each other in a cycle;
3. each fresh item is checked and applied **in request order** against an
   in-memory copy of those locked rows, with the very checks (and error
   messages) of the single operations: an item refused changes nothing, and
   later items see the effects of earlier ones;
4. the journal entries, postings, balance and hold changes of the applied
   items are written with one set-based statement each; a refused reserve keeps
   its refusal as its key's answer (an order id is answered once: a copy re-sent
   after the user's funds changed must not get a hold its first answer refused),
   other refused items' ``operations`` rows are deleted; commit.

Each item's outcome is exactly what the single operation would have answered
at that point of the batch. A batch that names the same key twice is handed
back to the per-item path (the caller's fallback), as is one that finds a new
hold created under it by a concurrent request; both are rare.

This module never talks HTTP; it is the ledger's, used by ``Ledger.apply_many``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from trade_engine.connectors.wallet.exceptions import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InternalError,
    ReservationMismatchError,
    ReservationNotFoundError,
    WalletError,
)
from trade_engine.connectors.wallet.models import (
    SYSTEM_USER,
    ReleaseRequest,
    ReleaseResponse,
    ReserveRequest,
    ReserveResponse,
    SettleTradeRequest,
    SettleTradeResponse,
)
from trade_engine.wallet.rules import (
    Account,
    AccountKey,
    Hold,
    Outcome,
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

BatchRequest = ReserveRequest | ReleaseRequest | SettleTradeRequest
BatchResponse = ReserveResponse | ReleaseResponse | SettleTradeResponse
MODELS: dict[str, type[Any]] = {
    "reserve": ReserveResponse,
    "release": ReleaseResponse,
    "settle": SettleTradeResponse,
}


class FallBackError(Exception):
    """This batch needs the per-item path (nothing was written)."""


def key_of(op: str, req: BatchRequest) -> str:
    return req.trade_id if isinstance(req, SettleTradeRequest) else req.key


@dataclass
class _HoldRow:
    order_id: str
    reservation_id: str
    user_id: str
    asset: str
    remaining: Decimal
    new: bool = False
    reserved: Decimal = Decimal(0)  # deltas to write
    settled: Decimal = Decimal(0)
    released: Decimal = Decimal(0)

    def view(self) -> Hold:
        return Hold(self.order_id, self.reservation_id, self.user_id, self.asset, self.remaining)


@dataclass
class _AccountRow:
    account_id: int
    key: AccountKey
    balance: Decimal
    delta: Decimal = Decimal(0)

    def view(self) -> Account:
        return Account(self.account_id, self.key, self.balance)


@dataclass
class _Applied:
    index: int
    key: str
    ref: str
    reason: str | None
    legs: list[tuple[int, str, Decimal]]  # (account_id, asset, amount)
    build: Any  # entry_id -> response


@dataclass
class _State:
    holds: dict[str, _HoldRow] = field(default_factory=dict)
    accounts: dict[AccountKey, _AccountRow] = field(default_factory=dict)

    def post(self, legs: Sequence[tuple[_AccountRow, Decimal]]) -> list[tuple[int, str, Decimal]]:
        out = []
        for account, amount in legs:
            if amount == 0:
                continue
            out.append((account.account_id, account.key[1], amount))
            if account.key[0] != SYSTEM_USER:
                account.balance += amount
                account.delta += amount
        return out


def _reserve(state: _State, index: int, key: str, req: ReserveRequest) -> _Applied:
    hold = state.holds.get(req.order_id)
    if hold is not None:
        check_hold_owner(hold.view(), req.user_id, req.asset)
    available = state.accounts.get((req.user_id, req.asset, "available"))
    if available is None:
        raise AccountNotFoundError(
            f"user {req.user_id!r} has no {req.asset} account",
            {"user_id": req.user_id, "asset": req.asset},
        )
    check_funds(available.view(), req.amount)
    held = state.accounts[(req.user_id, req.asset, "held")]
    if hold is None:
        hold = _HoldRow(req.order_id, str(uuid.uuid4()), req.user_id, req.asset, Decimal(0), True)
        state.holds[req.order_id] = hold
    legs = state.post([(available, -req.amount), (held, req.amount)])
    hold.reserved += req.amount
    hold.remaining += req.amount
    response: dict[str, Any] = dict(
        reservation_id=hold.reservation_id,
        order_id=req.order_id,
        user_id=req.user_id,
        asset=req.asset,
        amount=req.amount,
        hold_remaining=hold.remaining,
        available_balance=available.balance,
        reserved_balance=held.balance,
    )
    return _Applied(
        index,
        key,
        req.order_id,
        req.reason,
        legs,
        lambda entry_id: ReserveResponse(**response, entry_id=entry_id),
    )


def _release(state: _State, index: int, key: str, req: ReleaseRequest) -> _Applied:
    hold = state.holds.get(req.order_id)
    if hold is None:
        raise ReservationNotFoundError(
            f"no hold for order {req.order_id!r}", {"order_id": req.order_id}
        )
    check_hold_owner(hold.view(), req.user_id, req.asset)
    if req.reservation_id is not None and req.reservation_id != hold.reservation_id:
        raise ReservationMismatchError(
            f"order {req.order_id!r} has reservation {hold.reservation_id}",
            {"order_id": req.order_id, "reservation_id": hold.reservation_id},
        )
    amount = hold.remaining if req.amount is None else req.amount
    check_remaining(hold.view(), amount)
    available = state.accounts[(req.user_id, req.asset, "available")]
    held = state.accounts[(req.user_id, req.asset, "held")]
    legs = state.post([(held, -amount), (available, amount)])
    hold.released += amount
    hold.remaining -= amount
    response: dict[str, Any] = dict(
        reservation_id=hold.reservation_id,
        order_id=req.order_id,
        user_id=req.user_id,
        asset=req.asset,
        released_amount=amount,
        hold_remaining=hold.remaining,
        available_balance=available.balance,
        reserved_balance=held.balance,
    )
    return _Applied(
        index,
        key,
        req.order_id,
        req.reason,
        legs,
        lambda entry_id: ReleaseResponse(**response, entry_id=entry_id),
    )


def _settle_hold(
    state: _State, order_id: str, user_id: str, asset: str, amount: Decimal
) -> _HoldRow:
    hold = state.holds.get(order_id)
    if hold is None:
        raise ReservationNotFoundError(f"no hold for order {order_id!r}", {"order_id": order_id})
    check_hold_owner(hold.view(), user_id, asset)
    check_remaining(hold.view(), amount)
    return hold


def _balances_of(state: _State, user_id: str, assets: tuple[str, str]) -> dict[str, Any]:
    rows: list[Any] = [
        {"asset": asset, "kind": kind, "balance": account.balance}
        for asset in assets
        for kind in ("available", "held")
        for account in [state.accounts.get((user_id, asset, kind))]
        if account is not None
    ]
    return by_asset(rows)


def _settle(state: _State, index: int, key: str, req: SettleTradeRequest) -> _Applied:
    base, quote = req.base_asset, req.quote_asset
    notional = req.notional()
    buyer_hold = _settle_hold(state, req.buyer_order_id, req.buyer_user_id, quote, notional)
    seller_hold = _settle_hold(state, req.seller_order_id, req.seller_user_id, base, req.quantity)
    keys = settle_accounts(req)
    acc = state.accounts
    legs = state.post(
        [
            (acc[keys[0]], -notional),
            (acc[keys[3]], notional - req.seller_fee),
            (acc[keys[5]], req.seller_fee),
            (acc[keys[2]], -req.quantity),
            (acc[keys[1]], req.quantity - req.buyer_fee),
            (acc[keys[4]], req.buyer_fee),
        ]
    )
    buyer_hold.settled += notional
    buyer_hold.remaining -= notional
    seller_hold.settled += req.quantity
    seller_hold.remaining -= req.quantity
    response: dict[str, Any] = dict(
        trade_id=req.trade_id,
        quote_quantity=notional,
        buyer_hold_remaining=buyer_hold.remaining,
        seller_hold_remaining=seller_hold.remaining,
        buyer_balances=_balances_of(state, req.buyer_user_id, (base, quote)),
        seller_balances=_balances_of(state, req.seller_user_id, (base, quote)),
    )
    return _Applied(
        index,
        key,
        req.trade_id,
        None,
        legs,
        lambda entry_id: SettleTradeResponse(
            **response,
            entry_id=entry_id,
            buyer_ledger_entry_id=entry_id,
            seller_ledger_entry_id=entry_id,
        ),
    )


_APPLY: dict[str, Callable[..., _Applied]] = {
    "reserve": _reserve,
    "release": _release,
    "settle": _settle,
}


def touched(op: str, req: BatchRequest) -> tuple[list[str], list[AccountKey]]:
    """The holds an item reads and the accounts it reads or moves (all created beforehand)."""
    if isinstance(req, SettleTradeRequest):
        users = (req.buyer_user_id, req.seller_user_id)
        assets = (req.base_asset, req.quote_asset)
        keys = [(u, a, k) for u in users for a in assets for k in ("available", "held")]
        return [req.buyer_order_id, req.seller_order_id], keys + settle_accounts(req)[4:]
    return [req.order_id], [(req.user_id, req.asset, "available"), (req.user_id, req.asset, "held")]


async def apply(
    conn: asyncpg.Connection, op: str, reqs: Sequence[BatchRequest]
) -> list[Outcome[Any] | WalletError]:
    """Apply ``reqs`` (one kind) in one transaction; raises ``FallBackError`` when it cannot."""
    keys = [key_of(op, r) for r in reqs]
    if len(set(keys)) != len(keys):
        raise FallBackError("a key appears twice in the batch")
    model = MODELS[op]
    out: list[Outcome[Any] | WalletError | None] = [None] * len(reqs)
    hashes = [r.request_hash() for r in reqs]
    try:
        async with conn.transaction():
            order = sorted(range(len(reqs)), key=keys.__getitem__)
            fresh = {
                row["key"]
                for row in await conn.fetch(
                    "INSERT INTO operations (op, key, request_hash)"
                    " SELECT $1, k, h FROM unnest($2::text[], $3::text[]) AS d(k, h) ORDER BY k"
                    " ON CONFLICT DO NOTHING RETURNING key",
                    op,
                    [keys[i] for i in order],
                    [hashes[i] for i in order],
                )
            }
            await _replays(conn, op, keys=keys, hashes=hashes, fresh=fresh, model=model, out=out)
            todo = [i for i, k in enumerate(keys) if k in fresh]
            if todo:
                await _apply_fresh(conn, op, reqs=reqs, keys=keys, todo=todo, out=out)
    except asyncpg.CheckViolationError as exc:
        raise InternalError(f"ledger constraint violated: {exc}", {"op": op}) from exc
    return [r for r in out if r is not None]


async def _replays(
    conn: asyncpg.Connection,
    op: str,
    *,
    keys: list[str],
    hashes: list[str],
    fresh: set[str],
    model: type[Any],
    out: list[Outcome[Any] | WalletError | None],
) -> None:
    old = [k for k in keys if k not in fresh]
    if not old:
        return
    rows = await conn.fetch(
        "SELECT key, request_hash, response FROM operations"
        " WHERE op = $1 AND key = ANY($2::text[])",
        op,
        old,
    )
    stored = {r["key"]: r for r in rows}
    for i, key in enumerate(keys):
        if key in fresh:
            continue
        row = stored[key]
        if row["request_hash"] != hashes[i]:
            out[i] = IdempotencyConflictError(
                f"{op} key {key!r} was already used with a different payload",
                {"op": op, "key": key},
            )
        else:
            out[i] = replayed(row["response"], model)


async def _store_refusals(
    conn: asyncpg.Connection,
    op: str,
    refused: list[str],
    out: list[Outcome[Any] | WalletError | None],
    keys: list[str],
) -> None:
    """A refused reserve keeps its refusal as the key's answer (``refusal_is_final``);
    other refused operations store nothing, so they may be tried again."""
    if not refused:
        return
    errors = {keys[i]: r for i, r in enumerate(out) if isinstance(r, WalletError)}
    final = [k for k in refused if refusal_is_final(op, errors[k])]
    if final:
        await conn.execute(
            "UPDATE operations AS o SET response = d.response::jsonb"
            " FROM unnest($2::text[], $3::text[]) AS d(key, response)"
            " WHERE o.op = $1 AND o.key = d.key",
            op,
            final,
            [refusal_json(errors[k]) for k in final],
        )
    retriable = [k for k in refused if k not in set(final)]
    if retriable:
        await conn.execute(
            "DELETE FROM operations WHERE op = $1 AND key = ANY($2::text[])", op, retriable
        )


async def _lock(conn: asyncpg.Connection, op: str, reqs: Sequence[BatchRequest]) -> _State:
    orders: set[str] = set()
    accounts: set[AccountKey] = set()
    for req in reqs:
        o, a = touched(op, req)
        orders.update(o)
        accounts.update(a)
    state = _State()
    rows = await conn.fetch(
        "SELECT order_id, reservation_id::text, user_id, asset, remaining FROM holds"
        " WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE",
        sorted(orders),
    )
    for r in rows:
        state.holds[r["order_id"]] = _HoldRow(*r.values())
    users = sorted(k for k in accounts if k[0] != SYSTEM_USER)
    system = sorted(k for k in accounts if k[0] == SYSTEM_USER)
    select = (
        "SELECT a.account_id, a.user_id, a.asset, a.kind, a.balance FROM accounts AS a"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(user_id, asset, kind)"
        " USING (user_id, asset, kind) ORDER BY a.user_id, a.asset, a.kind"
    )
    rows = list(await conn.fetch(select + " FOR UPDATE OF a", *columns(users)))
    if system:
        rows += await conn.fetch(select, *columns(system))
    for r in rows:
        key = (r["user_id"], r["asset"], r["kind"])
        state.accounts[key] = _AccountRow(r["account_id"], key, r["balance"])
    return state


async def _apply_fresh(
    conn: asyncpg.Connection,
    op: str,
    *,
    reqs: Sequence[BatchRequest],
    keys: list[str],
    todo: list[int],
    out: list[Outcome[Any] | WalletError | None],
) -> None:
    state = await _lock(conn, op, [reqs[i] for i in todo])
    applied: list[_Applied] = []
    refused: list[str] = []
    for i in todo:
        try:
            applied.append(_APPLY[op](state, i, keys[i], reqs[i]))
        except WalletError as exc:
            out[i] = exc
            refused.append(keys[i])
    await _store_refusals(conn, op, refused, out, keys)
    if not applied:
        return
    entries = await conn.fetch(
        "INSERT INTO journal_entries (op, key, ref, reason)"
        " SELECT $1, k, r, why FROM unnest($2::text[], $3::text[], $4::text[])"
        " WITH ORDINALITY AS d(k, r, why, n) ORDER BY n RETURNING key, entry_id",
        op,
        [a.key for a in applied],
        [a.ref for a in applied],
        [a.reason for a in applied],
    )
    entry_ids = {r["key"]: r["entry_id"] for r in entries}
    await _write_postings(conn, applied, entry_ids)
    await _write_balances(conn, state)
    await _write_holds(conn, state)
    responses = []
    for a in applied:
        response = a.build(entry_ids[a.key])
        out[a.index] = Outcome(response, False)
        responses.append(response.model_dump_json())
    await conn.execute(
        "UPDATE operations AS o SET response = d.response::jsonb, entry_id = d.entry_id"
        " FROM unnest($2::text[], $3::text[], $4::bigint[]) AS d(key, response, entry_id)"
        " WHERE o.op = $1 AND o.key = d.key",
        op,
        [a.key for a in applied],
        responses,
        [entry_ids[a.key] for a in applied],
    )


async def _write_postings(
    conn: asyncpg.Connection, applied: list[_Applied], entry_ids: dict[str, int]
) -> None:
    cols: tuple[list[int], list[int], list[str], list[Decimal]] = ([], [], [], [])
    for a in applied:
        for account_id, asset, amount in a.legs:
            cols[0].append(entry_ids[a.key])
            cols[1].append(account_id)
            cols[2].append(asset)
            cols[3].append(amount)
    if cols[0]:
        await conn.execute(
            "INSERT INTO postings (entry_id, account_id, asset, amount)"
            " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::numeric[])",
            *cols,
        )


async def _write_balances(conn: asyncpg.Connection, state: _State) -> None:
    moved = [a for a in state.accounts.values() if a.delta != 0]
    if moved:
        await conn.execute(
            "UPDATE accounts AS a SET balance = a.balance + d.amount"
            " FROM unnest($1::bigint[], $2::numeric[]) AS d(account_id, amount)"
            " WHERE a.account_id = d.account_id",
            [a.account_id for a in moved],
            [a.delta for a in moved],
        )


async def _write_holds(conn: asyncpg.Connection, state: _State) -> None:
    new = [h for h in state.holds.values() if h.new]
    if new:
        created = await conn.fetch(
            "INSERT INTO holds (order_id, reservation_id, user_id, asset, reserved)"
            " SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::numeric[])"
            " ORDER BY 1 ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
            [h.order_id for h in new],
            [h.reservation_id for h in new],
            [h.user_id for h in new],
            [h.asset for h in new],
            [h.reserved for h in new],
        )
        if len(created) != len(new):  # created meanwhile by a concurrent request
            raise FallBackError("a hold was created concurrently")
    old = [h for h in state.holds.values() if not h.new and (h.reserved or h.settled or h.released)]
    if old:
        await conn.execute(
            "UPDATE holds AS h SET reserved = h.reserved + d.r, settled = h.settled + d.s,"
            " released = h.released + d.x, updated_at = now()"
            " FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[])"
            " AS d(order_id, r, s, x) WHERE h.order_id = d.order_id",
            [h.order_id for h in old],
            [h.reserved for h in old],
            [h.settled for h in old],
            [h.released for h in old],
        )
