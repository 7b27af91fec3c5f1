"""Factories for the matching core's tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from trade_engine.tables.matching import (
    Accepted,
    Amended,
    Execution,
    MatchingEngine,
    OrderEnded,
    Rejected,
    StpPrevented,
    SymbolRules,
    Trade,
    TradingStateChanged,
    Triggered,
)


@pytest.fixture
def make_engine() -> Callable[..., MatchingEngine]:
    """Engine for BTC/USDT (tick 0.01, step 0.001) with rule overrides."""

    def factory(**overrides: Any) -> MatchingEngine:
        params: dict[str, Any] = {
            "symbol": "BTC/USDT",
            "tick_size": "0.01",
            "step_size": "0.001",
            "maker_fee_ppm": 1_000,
            "taker_fee_ppm": 2_000,
        }
        params.update(overrides)
        return MatchingEngine(SymbolRules(**params))

    return factory


def short(rec: Execution) -> tuple[Any, ...]:
    """A compact, readable form of a record for golden assertions."""
    if isinstance(rec, Accepted):
        return ("ACC", rec.order_id)
    if isinstance(rec, Rejected):
        return ("REJ", rec.code.value)
    if isinstance(rec, Trade):
        return ("TRADE", rec.price, rec.quantity, rec.taker_order_id, rec.maker_order_id)
    if isinstance(rec, OrderEnded):
        return ("END", rec.order_id, rec.status.value, rec.reason.value, rec.release)
    if isinstance(rec, StpPrevented):
        return ("STP", rec.taker_order_id, rec.maker_order_id, rec.quantity)
    if isinstance(rec, Triggered):
        return ("TRIG", rec.order_id, rec.last_price)
    if isinstance(rec, Amended):
        return ("AMEND", rec.order_id, rec.priority_kept, rec.reserve_delta)
    if isinstance(rec, TradingStateChanged):
        return ("STATE", rec.new.value)
    raise AssertionError(rec)


@pytest.fixture
def shorts() -> Callable[[Sequence[Execution]], list[tuple[Any, ...]]]:
    return lambda recs: [short(r) for r in recs]
