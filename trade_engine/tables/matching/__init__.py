"""The pure, deterministic matching core: one order book per symbol.

``MatchingEngine(rules).apply(command) -> list[Execution]`` is the whole
contract. Everything here is standard library only and never reads the wall
clock, draws random numbers or lets the iteration order of an unordered
collection reach an output. Prices are integer ticks, quantities integer lots,
quote amounts integer quote units (tick * step); decimal strings exist only in
``numbers`` (parse/format) and in the ``*Request`` commands that use it.
"""

from trade_engine.tables.matching.checks import parse_place, required_hold
from trade_engine.tables.matching.codes import EndReason, RejectCode
from trade_engine.tables.matching.commands import (
    Amend,
    AmendRequest,
    Cancel,
    Command,
    MassCancel,
    Place,
    PlaceRequest,
    SetTradingState,
    TimeTick,
)
from trade_engine.tables.matching.engine import MatchingEngine
from trade_engine.tables.matching.enums import (
    OrderStatus,
    OrderType,
    RequestKind,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)
from trade_engine.tables.matching.executions import (
    Accepted,
    Amended,
    Execution,
    OrderEnded,
    Rejected,
    StpPrevented,
    Trade,
    TradingStateChanged,
    Triggered,
)
from trade_engine.tables.matching.numbers import Scale
from trade_engine.tables.matching.rules import SymbolRules

__all__ = [
    "Accepted",
    "Amend",
    "AmendRequest",
    "Amended",
    "Cancel",
    "Command",
    "EndReason",
    "Execution",
    "MassCancel",
    "MatchingEngine",
    "OrderEnded",
    "OrderStatus",
    "OrderType",
    "Place",
    "PlaceRequest",
    "RejectCode",
    "Rejected",
    "RequestKind",
    "Scale",
    "SetTradingState",
    "Side",
    "StpMode",
    "StpPrevented",
    "SymbolRules",
    "TimeInForce",
    "TimeTick",
    "Trade",
    "TradingState",
    "TradingStateChanged",
    "Triggered",
    "parse_place",
    "required_hold",
]
