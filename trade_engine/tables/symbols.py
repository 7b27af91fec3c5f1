"""The symbol catalogue: configured symbols (decimal strings) to the core's integer rules."""

from __future__ import annotations

from trade_engine.config import SymbolSettings
from trade_engine.tables.matching.numbers import Scale
from trade_engine.tables.matching.rules import PPM, SymbolRules

_PPM_SCALE = Scale("0.000001")


def rules_for(spec: SymbolSettings) -> SymbolRules:
    """Integer rules for one symbol; raises ``ValueError`` naming the bad field."""
    base = SymbolRules(symbol=spec.symbol, tick_size=spec.tick_size, step_size=spec.step_size)

    def parse(field: str, scale: Scale, text: str) -> int:
        try:
            return scale.parse(text)
        except Exception as exc:
            raise ValueError(f"market.symbols[{spec.symbol}].{field}: {text!r} ({exc})") from None

    maker = parse("maker_fee_rate", _PPM_SCALE, spec.maker_fee_rate)
    taker = parse("taker_fee_rate", _PPM_SCALE, spec.taker_fee_rate)
    if maker >= PPM or taker >= PPM:
        raise ValueError(f"market.symbols[{spec.symbol}]: fee rates must be below 1")
    return SymbolRules(
        symbol=spec.symbol,
        tick_size=spec.tick_size,
        step_size=spec.step_size,
        min_qty=parse("min_qty", base.qty_scale, spec.min_qty) if spec.min_qty else 1,
        min_notional=parse("min_notional", base.quote_scale, spec.min_notional),
        price_band_bps=spec.price_band_pct * 100,
        max_open_orders=spec.max_open_orders,
        maker_fee_ppm=maker,
        taker_fee_ppm=taker,
        reference_price=(
            parse("reference_price", base.price_scale, spec.reference_price)
            if spec.reference_price
            else None
        ),
    )
