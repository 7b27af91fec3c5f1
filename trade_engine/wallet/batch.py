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

Items arrive as ``wire`` Structs (amounts as canonical text, parsed here once)
and every answer leaves as the JSON bytes that are both stored as the key's
response and sent back (``Encoded``): no pydantic model per item.

This module never talks HTTP; it is the ledger's, used by ``Ledger.apply_batch``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg

from trade_engine.connectors.wallet.exceptions import (
    AccountNotFoundError,
    IdempotencyConflictError,
    InternalError,
    ReservationMismatchError,
    ReservationNotFoundError,
    WalletError,
    error_from_item,
)
from trade_engine.connectors.wallet.models import SYSTEM_USER, format_amount
from trade_engine.connectors.wallet.wire import (
    Balance,
    Item,
    ReleaseItem,
    ReleaseResult,
    ReserveItem,
    ReserveResult,
    Result,
    SettleItem,
    SettleResult,
    decode_result,
    encode,
    notional,
    request_hash,
)
from trade_engine.wallet.rules import (
    AccountKey,
    Encoded,
    check_funds,
    check_hold_owner,
    check_remaining,
    columns,
    refusal_is_final,
    refusal_json,
    settle_accounts,
)

_ZERO = Decimal(0)


class FallBackError(Exception):
    """This batch needs the per-item path (nothing was written)."""


def key_of(item: Item) -> str:
    return item.trade_id if isinstance(item, SettleItem) else item.key


@dataclass(slots=True)
class _HoldRow:
    order_id: str
    reservation_id: str
    user_id: str
    asset: str
    remaining: Decimal
    new: bool = False
    reserved: Decimal = _ZERO  # deltas to write
    settled: Decimal = _ZERO
    released: Decimal = _ZERO


@dataclass(slots=True)
class _AccountRow:
    account_id: int
    key: AccountKey
    balance: Decimal
    delta: Decimal = _ZERO
    _text: str | None = None  # format_amount(balance), until the balance moves

    def text(self) -> str:
        if self._text is None:
            self._text = format_amount(self.balance)
        return self._text


@dataclass(slots=True)
class _Applied:
    index: int
    key: str
    ref: str
    reason: str | None
    legs: list[tuple[int, str, Decimal]]  # (account_id, asset, amount)
    result: Result  # its entry id is set once the journal entries are written


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
                account._text = None
        return out


_V4 = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
_V4_MASK = ~((0xF000 << 64) | (0xC000 << 48))


def new_reservation_id() -> str:
    """A random version-4 UUID as text, as ``str(uuid.uuid4())`` writes it, at half its
    cost: no ``UUID`` object per new hold (it showed in the service's reserve profile)."""
    n = int.from_bytes(os.urandom(16)) & _V4_MASK | _V4
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _reserve(state: _State, index: int, key: str, req: ReserveItem) -> _Applied:
    amount = Decimal(req.amount)
    hold = state.holds.get(req.order_id)
    if hold is not None:
        check_hold_owner(hold, req.user_id, req.asset)
    available = state.accounts.get((req.user_id, req.asset, "available"))
    if available is None:
        raise AccountNotFoundError(
            f"user {req.user_id!r} has no {req.asset} account",
            {"user_id": req.user_id, "asset": req.asset},
        )
    check_funds(available, amount)
    held = state.accounts[(req.user_id, req.asset, "held")]
    if hold is None:
        hold = _HoldRow(req.order_id, new_reservation_id(), req.user_id, req.asset, _ZERO, True)
        state.holds[req.order_id] = hold
    legs = state.post([(available, -amount), (held, amount)])
    hold.reserved += amount
    hold.remaining += amount
    result = ReserveResult(
        reservation_id=hold.reservation_id,
        order_id=req.order_id,
        user_id=req.user_id,
        asset=req.asset,
        amount=req.amount,  # canonical already
        hold_remaining=format_amount(hold.remaining),
        available_balance=available.text(),
        reserved_balance=held.text(),
    )
    return _Applied(index, key, req.order_id, req.reason, legs, result)


def _release(state: _State, index: int, key: str, req: ReleaseItem) -> _Applied:
    hold = state.holds.get(req.order_id)
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
    amount = hold.remaining if req.amount is None else Decimal(req.amount)
    check_remaining(hold, amount)
    available = state.accounts[(req.user_id, req.asset, "available")]
    held = state.accounts[(req.user_id, req.asset, "held")]
    legs = state.post([(held, -amount), (available, amount)])
    hold.released += amount
    hold.remaining -= amount
    result = ReleaseResult(
        reservation_id=hold.reservation_id,
        order_id=req.order_id,
        user_id=req.user_id,
        asset=req.asset,
        released_amount=format_amount(amount),
        hold_remaining=format_amount(hold.remaining),
        available_balance=available.text(),
        reserved_balance=held.text(),
    )
    return _Applied(index, key, req.order_id, req.reason, legs, result)


def _settle_hold(
    state: _State, order_id: str, user_id: str, asset: str, amount: Decimal
) -> _HoldRow:
    hold = state.holds.get(order_id)
    if hold is None:
        raise ReservationNotFoundError(f"no hold for order {order_id!r}", {"order_id": order_id})
    check_hold_owner(hold, user_id, asset)
    check_remaining(hold, amount)
    return hold


def _balances_of(state: _State, user_id: str, assets: list[str]) -> dict[str, Balance]:
    """``by_asset`` of the user's accounts in ``assets`` (sorted), from the batch's rows."""
    out: dict[str, Balance] = {}
    for asset in assets:
        available = state.accounts.get((user_id, asset, "available"))
        held = state.accounts.get((user_id, asset, "held"))
        if available is not None or held is not None:
            out[asset] = Balance(
                available=available.text() if available is not None else "0",
                reserved=held.text() if held is not None else "0",
            )
    return out


def _settle(state: _State, index: int, key: str, req: SettleItem) -> _Applied:
    base, quote = req.base_asset, req.quote_asset
    quantity, buyer_fee, seller_fee = (
        Decimal(req.quantity),
        Decimal(req.buyer_fee),
        Decimal(req.seller_fee),
    )
    total = notional(Decimal(req.price), quantity)
    buyer_hold = _settle_hold(state, req.buyer_order_id, req.buyer_user_id, quote, total)
    seller_hold = _settle_hold(state, req.seller_order_id, req.seller_user_id, base, quantity)
    keys = settle_accounts(req)
    acc = state.accounts
    legs = state.post(
        [
            (acc[keys[0]], -total),
            (acc[keys[3]], total - seller_fee),
            (acc[keys[5]], seller_fee),
            (acc[keys[2]], -quantity),
            (acc[keys[1]], quantity - buyer_fee),
            (acc[keys[4]], buyer_fee),
        ]
    )
    buyer_hold.settled += total
    buyer_hold.remaining -= total
    seller_hold.settled += quantity
    seller_hold.remaining -= quantity
    assets = sorted((base, quote))
    result = SettleResult(
        trade_id=req.trade_id,
        quote_quantity=format_amount(total),
        buyer_hold_remaining=format_amount(buyer_hold.remaining),
        seller_hold_remaining=format_amount(seller_hold.remaining),
        buyer_balances=_balances_of(state, req.buyer_user_id, assets),
        seller_balances=_balances_of(state, req.seller_user_id, assets),
    )
    return _Applied(index, key, req.trade_id, None, legs, result)


_APPLY: dict[str, Callable[..., _Applied]] = {
    "reserve": _reserve,
    "release": _release,
    "settle": _settle,
}


def touched(item: Item) -> tuple[list[str], list[AccountKey]]:
    """The holds an item reads and the accounts it reads or moves (all created beforehand)."""
    if isinstance(item, SettleItem):
        users = (item.buyer_user_id, item.seller_user_id)
        assets = (item.base_asset, item.quote_asset)
        keys = [(u, a, k) for u in users for a in assets for k in ("available", "held")]
        return [item.buyer_order_id, item.seller_order_id], keys + settle_accounts(item)[4:]
    return [item.order_id], [
        (item.user_id, item.asset, "available"),
        (item.user_id, item.asset, "held"),
    ]


async def apply(
    conn: asyncpg.Connection, op: str, items: Sequence[Item]
) -> list[Encoded | WalletError]:
    """Apply ``items`` (one kind) in one transaction; raises ``FallBackError`` when it cannot."""
    keys = [key_of(r) for r in items]
    if len(set(keys)) != len(keys):
        raise FallBackError("a key appears twice in the batch")
    out: list[Encoded | WalletError | None] = [None] * len(items)
    hashes = [request_hash(r) for r in items]
    try:
        async with conn.transaction():
            order = sorted(range(len(items)), key=keys.__getitem__)
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
            await _replays(conn, op, keys=keys, hashes=hashes, fresh=fresh, out=out)
            todo = [i for i, k in enumerate(keys) if k in fresh]
            if todo:
                await _apply_fresh(conn, op, items=items, keys=keys, todo=todo, out=out)
    except asyncpg.CheckViolationError as exc:
        raise InternalError(f"ledger constraint violated: {exc}", {"op": op}) from exc
    return [r for r in out if r is not None]


def replayed(op: str, stored: str) -> Encoded | WalletError:
    """A key's stored answer: its response (re-encoded, so its fields keep their order)
    or the refusal it was given (``rules.replayed``'s reading)."""
    if '"refused"' in stored:
        data = json.loads(stored)
        if isinstance(data, dict) and "refused" in data:
            return error_from_item(data["refused"])
    return Encoded(encode(decode_result(op, stored)), True)


async def _replays(
    conn: asyncpg.Connection,
    op: str,
    *,
    keys: list[str],
    hashes: list[str],
    fresh: set[str],
    out: list[Encoded | WalletError | None],
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
            out[i] = replayed(op, row["response"])


async def _store_refusals(
    conn: asyncpg.Connection,
    op: str,
    refused: list[str],
    out: list[Encoded | WalletError | None],
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


async def _lock(conn: asyncpg.Connection, items: Sequence[Item]) -> _State:
    orders: set[str] = set()
    accounts: set[AccountKey] = set()
    for item in items:
        o, a = touched(item)
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
    items: Sequence[Item],
    keys: list[str],
    todo: list[int],
    out: list[Encoded | WalletError | None],
) -> None:
    state = await _lock(conn, [items[i] for i in todo])
    applied: list[_Applied] = []
    refused: list[str] = []
    step = _APPLY[op]
    for i in todo:
        try:
            applied.append(step(state, i, keys[i], items[i]))
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
        result = a.result
        if isinstance(result, SettleResult):
            result.set_entry(entry_ids[a.key])
        else:
            result.entry_id = entry_ids[a.key]
        body = encode(result)  # the one encode: stored below and sent as these bytes
        out[a.index] = Encoded(body, False)
        responses.append(body.decode())
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
