"""The gateway's read model: the read side of the history tables (``orders``,
``trades``) that the Postgres sink (``sinks/postgres.py``) writes, queried by the
gateway. Every statement the gateway runs against those tables is here, and none
writes: the sink owns the rows, this module only reads them.

Every query is shaped for an index and, where it has a time window, for partition
pruning:

- ``get_order``: ``idx_orders_order_id`` in each monthly partition (the id carries
  no date); pass ``created_after`` when the caller knows a lower bound to prune;
- ``order_by_client_id``, ``has_open_client_order_id``: ``idx_orders_client_order``
  (client order id, user) in each monthly partition;
- ``open_orders``, ``count_open_orders``: the user's prefix of
  ``idx_orders_user_symbol_created`` in each monthly partition (an open order can be
  of any age);
- ``list_orders``: ``idx_orders_user_symbol_created`` (user, symbol, created_at
  DESC, order_id DESC), the time window prunes months;
- ``list_trades``: the buyer and seller indexes (user, symbol, executed_at DESC,
  trade_id DESC), one ordered branch each, merged; the window prunes days.

Pagination is keyset, never OFFSET: a page's cursor is its last row's
(time, id), the next page asks for rows strictly before it. Rows are newest first.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import asyncpg

from trade_engine.migrations.runner import validate_schema

T = TypeVar("T")
MAX_LIMIT = 500
# An order in one of these can still trade or be cancelled.
OPEN_STATUSES = ("PENDING", "OPEN", "PARTIALLY_FILLED")
# The open-orders query answers one page of at most this many, newest first.
OPEN_ORDERS_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    user_id: str
    symbol: str
    side: str
    order_type: str
    status: str
    quantity: Decimal | None
    funds: Decimal | None
    filled_quantity: Decimal
    quote_filled: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    time_in_force: str
    client_order_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    symbol: str
    side: str  # the user's side
    order_id: str  # the user's order
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    fee: Decimal
    fee_asset: str
    is_maker: bool
    executed_at: datetime


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(at: datetime, key: str) -> str:
    raw = json.dumps([at.isoformat(), key]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(at), str(key)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


_ORDER_COLS = (
    "order_id, user_id, symbol, side::text, order_type::text, status::text, quantity, funds, "
    "filled_quantity, quote_filled, price, stop_price, time_in_force::text, client_order_id, "
    "created_at, updated_at"
)
_TRADE_COLS = (
    "trade_id, symbol, price, quantity, quote_quantity, executed_at, buyer_user_id, "
    "buyer_order_id, seller_order_id, buyer_fee, seller_fee, buyer_fee_asset, seller_fee_asset, "
    "is_buyer_maker"
)
_OPEN = "status IN (" + ", ".join(f"'{status}'" for status in OPEN_STATUSES) + ")"
# Stands for "no upper bound": a constant keeps one statement shape (one cached plan).
_FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


class Repository:
    """Queries over one schema's ``orders`` and ``trades`` (pass a connection or a pool)."""

    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool, schema: str = "public") -> None:
        self.conn = conn
        self.schema = validate_schema(schema)

    @property
    def _orders(self) -> str:
        return f'"{self.schema}".orders'

    @property
    def _trades(self) -> str:
        return f'"{self.schema}".trades'

    def order_by_id_sql(self, with_lower_bound: bool) -> str:
        bound = " AND created_at >= $3" if with_lower_bound else ""
        return (
            f"SELECT {_ORDER_COLS} FROM {self._orders} "  # noqa: S608
            f"WHERE order_id = $1 AND user_id = $2{bound} LIMIT 1"
        )

    def order_by_client_id_sql(self) -> str:
        # The newest, should a client order id have been reused after its order ended.
        return (
            f"SELECT {_ORDER_COLS} FROM {self._orders} "  # noqa: S608
            "WHERE client_order_id = $1 AND user_id = $2 ORDER BY created_at DESC LIMIT 1"
        )

    def open_client_order_id_sql(self) -> str:
        return (
            f"SELECT 1 FROM {self._orders} WHERE client_order_id = $1 AND user_id = $2 "  # noqa: S608
            f"AND {_OPEN} LIMIT 1"
        )

    def open_count_sql(self) -> str:
        return f"SELECT count(*) FROM {self._orders} WHERE user_id = $1 AND {_OPEN}"  # noqa: S608

    def open_orders_sql(self, with_symbol: bool) -> str:
        where = f"user_id = $1 AND {_OPEN}" + (" AND symbol = $2" if with_symbol else "")
        return (
            f"SELECT {_ORDER_COLS} FROM {self._orders} WHERE {where} "  # noqa: S608
            f"ORDER BY created_at DESC, order_id DESC LIMIT {OPEN_ORDERS_LIMIT}"
        )

    def orders_sql(self) -> str:
        # $1 user, $2 symbol, $3 since, $4 until, $5/$6 cursor (time, id), $7 limit
        return (
            f"SELECT {_ORDER_COLS} FROM {self._orders} "  # noqa: S608
            "WHERE user_id = $1 AND symbol = $2 AND created_at >= $3 AND created_at < $4 "
            "AND (created_at, order_id) < ($5, $6) "
            "ORDER BY created_at DESC, order_id DESC LIMIT $7"
        )

    def trades_sql(self) -> str:
        # Self-trades (buyer = seller) come from the buyer branch only.
        branch = (
            f"(SELECT {_TRADE_COLS} FROM {self._trades} "  # noqa: S608
            "WHERE {who} = $1 AND symbol = $2 AND executed_at >= $3 AND executed_at < $4 "
            "AND (executed_at, trade_id) < ($5, $6){extra} "
            "ORDER BY executed_at DESC, trade_id DESC LIMIT $7)"
        )
        buyer = branch.format(who="buyer_user_id", extra="")
        seller = branch.format(who="seller_user_id", extra=" AND buyer_user_id <> $1")
        return (
            f"SELECT * FROM ({buyer} UNION ALL {seller}) t "  # noqa: S608
            "ORDER BY executed_at DESC, trade_id DESC LIMIT $7"
        )

    async def get_order(
        self, order_id: str, user_id: str, created_after: datetime | None = None
    ) -> Order | None:
        """The order if it exists and belongs to ``user_id`` (else None: no existence leak)."""
        args: list[Any] = [order_id, user_id]
        if created_after is not None:
            args.append(created_after)
        row = await self.conn.fetchrow(self.order_by_id_sql(created_after is not None), *args)
        return Order(*row.values()) if row is not None else None

    async def order_by_client_id(self, client_order_id: str, user_id: str) -> Order | None:
        """The user's newest order with this client order id, or None."""
        row = await self.conn.fetchrow(self.order_by_client_id_sql(), client_order_id, user_id)
        return Order(*row.values()) if row is not None else None

    async def has_open_client_order_id(self, client_order_id: str, user_id: str) -> bool:
        """An open order of the user carries this client order id."""
        sql = self.open_client_order_id_sql()
        return await self.conn.fetchval(sql, client_order_id, user_id) is not None

    async def count_open_orders(self, user_id: str) -> int:
        return int(await self.conn.fetchval(self.open_count_sql(), user_id))

    async def open_orders(self, user_id: str, symbol: str | None = None) -> list[Order]:
        """The user's open orders (of one symbol if given), newest first, at most
        ``OPEN_ORDERS_LIMIT``."""
        args: list[Any] = [user_id] if symbol is None else [user_id, symbol]
        rows = await self.conn.fetch(self.open_orders_sql(symbol is not None), *args)
        return [Order(*row.values()) for row in rows]

    async def list_orders(
        self,
        user_id: str,
        symbol: str,
        since: datetime,
        until: datetime | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Order]:
        rows = await self.conn.fetch(
            self.orders_sql(),
            *self._window(user_id, symbol, since, until, limit=limit, cursor=cursor),
        )
        items = [Order(*row.values()) for row in rows]
        more = len(items) == min(limit, MAX_LIMIT)
        next_cursor = encode_cursor(items[-1].created_at, items[-1].order_id) if more else None
        return Page(items, next_cursor)

    async def list_trades(
        self,
        user_id: str,
        symbol: str,
        since: datetime,
        until: datetime | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Trade]:
        rows = await self.conn.fetch(
            self.trades_sql(),
            *self._window(user_id, symbol, since, until, limit=limit, cursor=cursor),
        )
        items = [_trade(row, user_id) for row in rows]
        more = len(items) == min(limit, MAX_LIMIT)
        next_cursor = encode_cursor(items[-1].executed_at, items[-1].trade_id) if more else None
        return Page(items, next_cursor)

    @staticmethod
    def _window(
        user_id: str,
        symbol: str,
        since: datetime,
        until: datetime | None,
        *,
        limit: int,
        cursor: str | None,
    ) -> list[Any]:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_LIMIT}")
        before_at, before_key = decode_cursor(cursor) if cursor else (_FAR_FUTURE, "")
        upper = until if until is not None else _FAR_FUTURE
        # The cursor also bounds the window, so later pages prune the newer partitions.
        upper = min(upper, before_at + timedelta(microseconds=1)) if cursor else upper
        return [user_id, symbol, since, upper, before_at, before_key, limit]


def _trade(row: asyncpg.Record, user_id: str) -> Trade:
    is_buyer = row["buyer_user_id"] == user_id
    return Trade(
        trade_id=row["trade_id"],
        symbol=row["symbol"],
        side="BUY" if is_buyer else "SELL",
        order_id=row["buyer_order_id"] if is_buyer else row["seller_order_id"],
        price=row["price"],
        quantity=row["quantity"],
        quote_quantity=row["quote_quantity"],
        fee=row["buyer_fee"] if is_buyer else row["seller_fee"],
        fee_asset=row["buyer_fee_asset"] if is_buyer else row["seller_fee_asset"],
        is_maker=row["is_buyer_maker"] == is_buyer,
        executed_at=row["executed_at"],
    )
