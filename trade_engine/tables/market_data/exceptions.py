"""Errors of the market-data builders; ``code`` is stable (metrics, logs)."""

from __future__ import annotations

from trade_engine.errors import TradeEngineError


class MarketDataError(TradeEngineError):
    """An execution record the builders cannot apply (malformed, out of sequence)."""

    code = "MD_BAD_RECORD"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ResyncNeededError(TradeEngineError):
    """A depth diff does not continue the local book: fetch a snapshot and start over."""

    code = "MD_RESYNC_NEEDED"
