"""The mutable live order and its plain-data state (for snapshots and per-order tables)."""

from __future__ import annotations

from typing import Any

from trade_engine.tables.matching.commands import Place
from trade_engine.tables.matching.enums import (
    OrderStatus,
    OrderType,
    Side,
    StpMode,
    TimeInForce,
)

NOWHERE = 0
IN_BOOK = 1
IN_STOPS = 2

# Field order of the compact (list) state used by snapshots; never reorder, only append.
STATE_FIELDS = (
    "order_id",
    "user_id",
    "client_order_id",
    "side",
    "order_type",
    "tif",
    "price",
    "stop_price",
    "quantity",
    "funds",
    "remaining",
    "filled",
    "cancelled",
    "spent",
    "reserved",
    "seq",
    "prio",
    "expire_at",
    "stp",
    "post_only",
    "status",
    "where",
)


class Order:
    """A live order. ``quantity`` is None only for MARKET/STOP buys by funds.

    Conservation: ``filled + remaining + cancelled == quantity``; ``spent`` is
    the quote traded; ``seq`` is the seq of its Accepted record; ``prio`` its
    time priority in the book (renewed when priority is lost).
    """

    __slots__ = (
        "cancelled",
        "client_order_id",
        "expire_at",
        "filled",
        "funds",
        "level",
        "next",
        "order_id",
        "order_type",
        "post_only",
        "prev",
        "price",
        "prio",
        "quantity",
        "remaining",
        "reserved",
        "seq",
        "side",
        "spent",
        "status",
        "stop_price",
        "stp",
        "tif",
        "user_id",
        "where",
    )

    def __init__(
        self,
        *,
        order_id: str,
        user_id: str,
        client_order_id: str | None,
        side: Side,
        order_type: OrderType,
        tif: TimeInForce,
        price: int | None,
        stop_price: int | None,
        quantity: int | None,
        funds: int | None,
        stp: StpMode,
        post_only: bool,
        expire_at: int | None,
        reserved: int,
    ) -> None:
        self.order_id = order_id
        self.user_id = user_id
        self.client_order_id = client_order_id
        self.side = side
        self.order_type = order_type
        self.tif = tif
        self.price = price
        self.stop_price = stop_price
        self.quantity = quantity
        self.funds = funds
        self.remaining = quantity if quantity is not None else 0
        self.filled = 0
        self.cancelled = 0
        self.spent = 0
        self.reserved = reserved
        self.seq = 0
        self.prio = 0
        self.expire_at = expire_at
        self.stp = stp
        self.post_only = post_only
        self.status = OrderStatus.OPEN
        self.where = NOWHERE
        self.prev: Order | None = None
        self.next: Order | None = None
        self.level: Any = None

    def state_list(self) -> list[Any]:
        return [
            self.order_id,
            self.user_id,
            self.client_order_id,
            self.side.value,
            self.order_type.value,
            self.tif.value,
            self.price,
            self.stop_price,
            self.quantity,
            self.funds,
            self.remaining,
            self.filled,
            self.cancelled,
            self.spent,
            self.reserved,
            self.seq,
            self.prio,
            self.expire_at,
            self.stp.value,
            self.post_only,
            self.status.value,
            self.where,
        ]

    def state(self) -> dict[str, Any]:
        """Plain JSON-able dict of everything needed to rebuild this order."""
        return dict(zip(STATE_FIELDS, self.state_list(), strict=True))

    @classmethod
    def from_state_list(cls, s: list[Any]) -> Order:
        o = cls(
            order_id=s[0],
            user_id=s[1],
            client_order_id=s[2],
            side=Side(s[3]),
            order_type=OrderType(s[4]),
            tif=TimeInForce(s[5]),
            price=s[6],
            stop_price=s[7],
            quantity=s[8],
            funds=s[9],
            stp=StpMode(s[18]),
            post_only=bool(s[19]),
            expire_at=s[17],
            reserved=s[14],
        )
        o.remaining, o.filled, o.cancelled, o.spent = s[10], s[11], s[12], s[13]
        o.seq, o.prio = s[15], s[16]
        o.status = OrderStatus(s[20])
        o.where = s[21]
        return o

    @classmethod
    def from_place(cls, p: Place, expire_at: int | None, reserved: int) -> Order:
        return cls(
            order_id=p.order_id,
            user_id=p.user_id,
            client_order_id=p.client_order_id,
            side=p.side,
            order_type=p.order_type,
            tif=p.tif,
            price=p.price,
            stop_price=p.stop_price,
            quantity=p.quantity,
            funds=p.funds,
            stp=p.stp,
            post_only=p.post_only,
            expire_at=expire_at,
            reserved=reserved,
        )

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> Order:
        return cls.from_state_list([d[k] for k in STATE_FIELDS])
