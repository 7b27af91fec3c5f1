"""Commands the engine applies, as frozen slotted dataclasses.

Integer commands (``Place``, ``Amend``) carry ticks, lots and quote units.
``PlaceRequest``/``AmendRequest`` carry the wire's decimal strings and enum
strings; the engine parses them with the symbol's scales, so a malformed
number becomes a sequenced ``Rejected`` record like any other bad command.
"""

from __future__ import annotations

from dataclasses import dataclass

from trade_engine.tables.matching.enums import (
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)


@dataclass(frozen=True, slots=True)
class Place:
    """A new order. ``price``/``stop_price`` in ticks, ``quantity`` in lots,
    ``funds`` (MARKET/STOP buys only: the spend cap and the hold) in quote units,
    ``expire_at`` (GTD only) in engine-clock milliseconds."""

    order_id: str
    user_id: str
    side: Side
    order_type: OrderType
    quantity: int | None = None
    price: int | None = None
    stop_price: int | None = None
    funds: int | None = None
    tif: TimeInForce = TimeInForce.GTC
    client_order_id: str | None = None
    stp: StpMode = StpMode.NONE
    post_only: bool = False
    expire_at: int | None = None


@dataclass(frozen=True, slots=True)
class PlaceRequest:
    """``Place`` with wire strings (decimals and enum names)."""

    order_id: str
    user_id: str
    side: str
    order_type: str
    quantity: str | None = None
    price: str | None = None
    stop_price: str | None = None
    funds: str | None = None
    tif: str = "GTC"
    client_order_id: str | None = None
    stp: str = "NONE"
    post_only: bool = False
    expire_at: int | None = None
    # Set by the risk stage when it refused the order (a RISK_* reject code).
    risk_reject: str | None = None
    risk_message: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel by ``order_id`` or, if that is None, by the user's ``client_order_id``."""

    user_id: str
    order_id: str | None = None
    client_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Amend:
    """New total ``quantity`` (lots, including what is filled) and/or new ``price``."""

    order_id: str
    user_id: str
    quantity: int | None = None
    price: int | None = None


@dataclass(frozen=True, slots=True)
class AmendRequest:
    order_id: str
    user_id: str
    quantity: str | None = None
    price: str | None = None


@dataclass(frozen=True, slots=True)
class MassCancel:
    """Cancel all of a user's live orders (resting and pending stops), optionally one side."""

    user_id: str
    side: Side | None = None


@dataclass(frozen=True, slots=True)
class SetTradingState:
    """Symbol admin; ``reference_price`` (ticks) re-centres the price band if given."""

    state: TradingState
    reference_price: int | None = None


@dataclass(frozen=True, slots=True)
class TimeTick:
    """Advance the engine clock (ms); expires DAY/GTD orders due at or before ``now``."""

    now: int


Command = (
    Place | PlaceRequest | Cancel | Amend | AmendRequest | MassCancel | SetTradingState | TimeTick
)
