"""Closed vocabularies of the matching core; values are the wire strings."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    DAY = "DAY"
    GTD = "GTD"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class StpMode(StrEnum):
    """Self-trade prevention; the taker's mode decides (the maker's is kept for display)."""

    NONE = "NONE"
    EXPIRE_TAKER = "EXPIRE_TAKER"
    EXPIRE_MAKER = "EXPIRE_MAKER"
    EXPIRE_BOTH = "EXPIRE_BOTH"
    DECREMENT = "DECREMENT"


class TradingState(StrEnum):
    TRADING = "TRADING"
    HALT = "HALT"
    CANCEL_ONLY = "CANCEL_ONLY"
    POST_ONLY = "POST_ONLY"
    LIMIT_ONLY = "LIMIT_ONLY"


class RequestKind(StrEnum):
    """Which command a reject answers."""

    PLACE = "PLACE"
    CANCEL = "CANCEL"
    AMEND = "AMEND"
    MASS_CANCEL = "MASS_CANCEL"
    ADMIN = "ADMIN"
    TIME_TICK = "TIME_TICK"
