"""Rolling 24 h statistics of one symbol, folded from its 1-minute candles.

The window is the 1440 minutes ending with the minute of the latest trade
(record time): the open candle plus the closed candles of the 1439 minutes
before it, so the window moves to the minute, like Binance's rolling ticker.
It moves only when a trade arrives; a symbol that stops trading keeps its
last figures until the next trade (there is no wall clock here).

Additive figures (volume, quote volume, trade count) are running sums; high
and low are recomputed over the window's candles only when a candle enters or
leaves it, at most once per minute of record time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from trade_engine.tables.market_data.candles import MINUTE_MS, Candle

WINDOW_MINUTES = 1440


@dataclass(frozen=True, slots=True)
class TickerFigures:
    """Integers: prices in ticks, volume in lots, quote volume in quote units."""

    open_ms: int
    close_ms: int
    open: int
    high: int
    low: int
    last: int
    volume: int
    quote_volume: int
    trades: int
    first_seq: int
    last_seq: int


class RollingTicker:
    __slots__ = ("_high", "_low", "_quote", "_trades", "_volume", "window")

    def __init__(self) -> None:
        self.window: deque[Candle] = deque()  # closed candles, oldest first
        self._volume = self._quote = self._trades = 0
        self._high: int | None = None
        self._low: int | None = None

    def close(self, candle: Candle) -> None:
        """A candle closed: it joins the window."""
        self.window.append(candle)
        self._volume += candle.volume
        self._quote += candle.quote_volume
        self._trades += candle.trades
        self._high = candle.high if self._high is None else max(self._high, candle.high)
        self._low = candle.low if self._low is None else min(self._low, candle.low)

    def _evict(self, current_minute: int) -> None:
        first_kept = current_minute - (WINDOW_MINUTES - 1) * MINUTE_MS
        window = self.window
        evicted = False
        while window and window[0].open_ms < first_kept:
            old = window.popleft()
            self._volume -= old.volume
            self._quote -= old.quote_volume
            self._trades -= old.trades
            evicted = True
        if evicted:
            self._high = max((c.high for c in window), default=None)
            self._low = min((c.low for c in window), default=None)

    def figures(self, current: Candle) -> TickerFigures:
        """The window ending with ``current`` (the open candle)."""
        self._evict(current.open_ms)
        first = self.window[0] if self.window else current
        high = current.high if self._high is None else max(self._high, current.high)
        low = current.low if self._low is None else min(self._low, current.low)
        return TickerFigures(
            open_ms=first.open_ms,
            close_ms=current.open_ms + MINUTE_MS - 1,
            open=first.open,
            high=high,
            low=low,
            last=current.close,
            volume=self._volume + current.volume,
            quote_volume=self._quote + current.quote_volume,
            trades=self._trades + current.trades,
            first_seq=first.first_seq,
            last_seq=current.last_seq,
        )
