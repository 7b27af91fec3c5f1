"""1-minute OHLCV candles of one symbol, by record time.

A trade belongs to the minute of its ``at`` (the input's log timestamp, the
same on every replay), never to the wall clock. A candle closes when a trade of
a later minute arrives; a minute without trades has no candle (Coinbase's
convention; readers fill gaps with the previous close if they want them).
Log timestamps are set by producers and may step back a little: a trade whose
minute is before the open candle's is counted in the open candle, so candles
never reopen and the output stays a function of the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MINUTE_MS = 60_000
_MINUTES: dict[str, int] = {}


def minute_of(at: str) -> int:
    """Epoch milliseconds of the start of the minute of an RFC 3339 UTC timestamp."""
    key = at[:16]  # YYYY-MM-DDTHH:MM
    minute = _MINUTES.get(key)
    if minute is None:
        if len(at) < 17 or at[-1] != "Z" or at[10] != "T":
            raise ValueError(f"not an RFC 3339 UTC timestamp: {at!r}")
        stamp = datetime.fromisoformat(key).replace(tzinfo=UTC)
        minute = int(stamp.timestamp()) * 1000
        if len(_MINUTES) > 100_000:
            _MINUTES.clear()
        _MINUTES[key] = minute
    return minute


def iso(millis: int) -> str:
    """RFC 3339 UTC with milliseconds, like every timestamp on the wire."""
    stamp = datetime.fromtimestamp(millis // 1000, tz=UTC).replace(microsecond=millis % 1000 * 1000)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Candle:
    """One minute. Prices in ticks, ``volume`` in lots, ``quote_volume`` in quote units."""

    open_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    first_seq: int
    last_seq: int

    def add(self, seq: int, price: int, quantity: int, quote: int) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += quantity
        self.quote_volume += quote
        self.trades += 1
        self.last_seq = seq


class CandleSeries:
    """The open candle of one symbol and the candles closed since the last ``take``."""

    __slots__ = ("closed", "current", "dirty")

    def __init__(self) -> None:
        self.current: Candle | None = None
        self.closed: list[Candle] = []
        self.dirty = False

    def trade(self, seq: int, minute: int, price: int, quantity: int, quote: int) -> Candle | None:
        """Count one trade; returns the candle it closed, if any."""
        current = self.current
        closed = None
        if current is None or minute > current.open_ms:
            if current is not None:
                self.closed.append(current)
                closed = current
            self.current = Candle(minute, price, price, price, price, 0, 0, 0, seq, seq)
            current = self.current
        current.add(seq, price, quantity, quote)
        self.dirty = True
        return closed

    def take(self) -> tuple[list[Candle], Candle | None]:
        """(candles closed since the last take, the open candle if it changed)."""
        closed, self.closed = self.closed, []
        current = self.current if self.dirty else None
        self.dirty = False
        return closed, current
