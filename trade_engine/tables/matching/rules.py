"""Per-symbol trading rules; all amounts are integers in the symbol's units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trade_engine.tables.matching.codes import RejectCode
from trade_engine.tables.matching.numbers import Scale

PPM = 1_000_000
BPS = 10_000


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """Static configuration of one symbol.

    ``min_qty`` is in lots, ``min_notional`` in quote units (tick * step),
    ``price_band_bps`` is the band half-width in basis points around the
    reference price (last trade, else ``reference_price``; 0 = no band),
    ``max_open_orders`` counts a user's resting orders and pending stops
    (0 = unlimited), fee rates are parts per million of the received amount.
    DAY orders expire at the first ``day_offset_ms + k * day_session_ms``
    after the engine clock at placement.
    """

    symbol: str
    tick_size: str
    step_size: str
    min_qty: int = 1
    min_notional: int = 0
    price_band_bps: int = 0
    max_open_orders: int = 0
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    reference_price: int | None = None
    day_session_ms: int = 86_400_000
    day_offset_ms: int = 0
    dedup_window: int = 100_000
    price_scale: Scale = field(init=False, repr=False, compare=False)
    qty_scale: Scale = field(init=False, repr=False, compare=False)
    quote_scale: Scale = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        price = Scale(self.tick_size, RejectCode.VALIDATION_PRICE_OFF_TICK)
        qty = Scale(self.step_size, RejectCode.VALIDATION_QUANTITY_OFF_STEP)
        object.__setattr__(self, "price_scale", price)
        object.__setattr__(self, "qty_scale", qty)
        object.__setattr__(
            self, "quote_scale", price.times(qty, RejectCode.VALIDATION_FUNDS_OFF_UNIT)
        )
        for name in ("maker_fee_ppm", "taker_fee_ppm"):
            if not 0 <= getattr(self, name) < PPM:
                raise ValueError(f"{name} must be in [0, {PPM})")
        if self.min_qty < 1 or self.min_notional < 0 or self.price_band_bps < 0:
            raise ValueError("min_qty >= 1, min_notional >= 0, price_band_bps >= 0")
        if self.day_session_ms <= 0 or self.dedup_window < 0:
            raise ValueError("day_session_ms > 0 and dedup_window >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "tick_size": self.tick_size,
            "step_size": self.step_size,
            "min_qty": self.min_qty,
            "min_notional": self.min_notional,
            "price_band_bps": self.price_band_bps,
            "max_open_orders": self.max_open_orders,
            "maker_fee_ppm": self.maker_fee_ppm,
            "taker_fee_ppm": self.taker_fee_ppm,
            "reference_price": self.reference_price,
            "day_session_ms": self.day_session_ms,
            "day_offset_ms": self.day_offset_ms,
            "dedup_window": self.dedup_window,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymbolRules:
        return cls(**data)
