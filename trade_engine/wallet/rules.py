"""What the ledger's single and batch paths share: row types, the money checks with
their exact error messages, and how a key's stored answer is read back.

Pure: no SQL is run here, so ``ledger`` (one operation per transaction) and
``batch`` (a whole batch per transaction) check money identically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import asyncpg

from trade_engine.connectors.wallet.exceptions import (
    IdempotencyConflictError,
    InsufficientBalanceError,
    ReservationExceededError,
    ReservationMismatchError,
    WalletError,
    error_from_item,
)
from trade_engine.connectors.wallet.models import (
    SYSTEM_USER,
    AssetBalance,
    ReleaseResponse,
    ReserveResponse,
    SettleTradeRequest,
    SettleTradeResponse,
    TransferResponse,
    format_amount,
)
from trade_engine.connectors.wallet.wire import SettleItem

AccountKey = tuple[str, str, str]  # (user_id, asset, kind)


R = TypeVar("R", ReserveResponse, ReleaseResponse, SettleTradeResponse, TransferResponse)


class Outcome(NamedTuple, Generic[R]):
    response: R
    replayed: bool  # an earlier identical request's stored result


class Encoded(NamedTuple):
    """An answer of the batch path, already JSON (stored and sent as these bytes)."""

    body: bytes
    replayed: bool


class AccountView(Protocol):
    """What the checks read of an account: ``Account`` or the batch's mutable row."""

    @property
    def key(self) -> AccountKey: ...
    @property
    def balance(self) -> Decimal: ...


class HoldView(Protocol):
    @property
    def order_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def asset(self) -> str: ...
    @property
    def remaining(self) -> Decimal: ...


@dataclass(frozen=True)
class Account:
    account_id: int
    key: AccountKey
    balance: Decimal


@dataclass(frozen=True)
class Hold:
    order_id: str
    reservation_id: str
    user_id: str
    asset: str
    remaining: Decimal


def refusal_is_final(op: str, error: WalletError) -> bool:
    """A reserve refused for the state of the ledger (funds, account, another user's hold)
    is that order id's answer for good: an order id is answered once. Other refusals
    (a settle or release the ledger cannot take yet) store nothing, so they can be
    re-driven."""
    return (
        op == "reserve"
        and 400 <= error.status < 500
        and not isinstance(error, IdempotencyConflictError)
    )


def refusal_json(error: WalletError) -> str:
    return json.dumps({"refused": error.body()})


def replayed(response: Any, model: type[R]) -> Outcome[R] | WalletError:
    """The stored answer of a key: its response, or the refusal it was given."""
    if isinstance(response, str | bytes):
        if b'"refused"' in (response.encode() if isinstance(response, str) else response):
            data = json.loads(response)
            if isinstance(data, dict) and "refused" in data:
                return error_from_item(data["refused"])
        return Outcome(model.model_validate_json(response), True)
    if isinstance(response, dict) and "refused" in response:
        return error_from_item(response["refused"])
    return Outcome(model.model_validate(response), True)


def settle_accounts(req: SettleTradeRequest | SettleItem) -> list[AccountKey]:
    base, quote = req.base_asset, req.quote_asset
    return [
        (req.buyer_user_id, quote, "held"),
        (req.buyer_user_id, base, "available"),
        (req.seller_user_id, base, "held"),
        (req.seller_user_id, quote, "available"),
        (SYSTEM_USER, base, "fee"),
        (SYSTEM_USER, quote, "fee"),
    ]


def check_funds(account: AccountView, amount: Decimal) -> None:
    if account.balance < amount:
        user_id, asset, _ = account.key
        raise InsufficientBalanceError(
            f"available {asset} of {user_id!r} is {format_amount(account.balance)},"
            f" {format_amount(amount)} needed",
            {
                "user_id": user_id,
                "asset": asset,
                "available": format_amount(account.balance),
                "requested": format_amount(amount),
            },
        )


def check_hold_owner(hold: HoldView, user_id: str, asset: str) -> None:
    if (hold.user_id, hold.asset) != (user_id, asset):
        raise ReservationMismatchError(
            f"order {hold.order_id!r} holds {hold.asset} of user {hold.user_id!r},"
            f" not {asset} of {user_id!r}",
            {"order_id": hold.order_id, "user_id": hold.user_id, "asset": hold.asset},
        )


def check_remaining(hold: HoldView, amount: Decimal) -> None:
    if amount > hold.remaining:
        raise ReservationExceededError(
            f"order {hold.order_id!r} has {format_amount(hold.remaining)} {hold.asset} held,"
            f" {format_amount(amount)} requested",
            {
                "order_id": hold.order_id,
                "remaining": format_amount(hold.remaining),
                "requested": format_amount(amount),
            },
        )


def columns(keys: Sequence[AccountKey]) -> tuple[list[str], list[str], list[str]]:
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]


def by_asset(rows: Iterable[asyncpg.Record]) -> dict[str, AssetBalance]:
    found: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        found.setdefault(row["asset"], {})[row["kind"]] = row["balance"]
    return {
        asset: AssetBalance(
            available=kinds.get("available", Decimal(0)), reserved=kinds.get("held", Decimal(0))
        )
        for asset, kinds in sorted(found.items())
    }
