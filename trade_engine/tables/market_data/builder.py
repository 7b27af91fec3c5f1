"""One symbol's depth, candles and ticker behind ``apply``/``flush``, and their wire messages.

``SymbolMarketData.apply(record)`` takes the symbol's decoded execution
records (``streams.execution_records``, read by attribute) in ``seq`` order.
Records of one input (same ``input`` partition and offset) form one group; a
group's outputs are produced when the next group starts or when ``flush`` is
called (the agent flushes when it has read everything available;
the matcher commits all records of an input in one transaction, so a group is
never seen in part). Per group with an effect:

- one ``depth_update`` with ``U`` = the previous update's ``u`` + 1 and ``u`` =
  the group's last ``seq`` (records that change no level are folded into the
  next update's range, so ``U`` of each update is always the previous ``u`` + 1);
- the candles it closed (``closed: true``) and the open candle;
- a ticker when it traded or moved the best bid or ask.

``snapshot()`` is the whole book with ``lastUpdateId`` = the last applied
``seq``. ``MarketDataBuilder`` keeps one ``SymbolMarketData`` per symbol.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

from trade_engine.tables.market_data.candles import MINUTE_MS, Candle, CandleSeries, iso, minute_of
from trade_engine.tables.market_data.depth import BUY, SELL, DepthBook, Level, Record, units
from trade_engine.tables.market_data.exceptions import MarketDataError
from trade_engine.tables.market_data.ticker import RollingTicker
from trade_engine.tables.matching.exceptions import MatchingError
from trade_engine.tables.matching.rules import SymbolRules

SCHEMA_VERSION = 1
SNAPSHOT_MAX_LEVELS = 5000  # per side, like Binance's deepest REST snapshot
DEPTH, SNAPSHOT, CANDLES, TICKERS = "md_depth", "md_depth_snapshot", "md_candles", "md_tickers"
_PERCENT = Decimal("0.001")


class Output(NamedTuple):
    """One message to publish: the topic role, its key and its JSON value."""

    role: str
    key: str
    value: dict[str, Any]


class SymbolMarketData:
    """Depth, candles and ticker of one symbol."""

    def __init__(self, rules: SymbolRules, *, snapshot_every: int = 1000) -> None:
        self.rules = rules
        self.symbol = rules.symbol
        self.depth = DepthBook(rules)
        self.candles = CandleSeries()
        self.ticker = RollingTicker()
        self.snapshot_every = snapshot_every
        self.last_u = 0  # ``u`` of the last depth update produced
        self.last_snapshot_seq = 0
        self._group: Any = None  # the ``input`` of the pending group
        self._pending = False
        self._traded = False
        self._at = ""
        self._top: tuple[Level | None, Level | None] = (None, None)

    @property
    def seq(self) -> int:
        return self.depth.seq

    def apply(self, msg: Record) -> list[Output]:
        """Apply one execution record; returns the previous group's outputs if it ended."""
        out: list[Output] = []
        group = msg.input
        if self._pending and group != self._group:
            out = self.flush()
        trade = self._parse_trade(msg) if msg.kind == "TRADE" else None
        if not self.depth.apply(msg):
            return out  # already applied (a replayed record)
        self._group = group
        self._pending = True
        self._at = msg.at
        if trade is not None:
            closed = self.candles.trade(msg.seq, *trade)
            if closed is not None:
                self.ticker.close(closed)
            self._traded = True
        return out

    def _parse_trade(self, msg: Record) -> tuple[int, int, int, int]:
        """(minute, price, quantity, quote) of a TRADE, before anything changes."""
        r = self.rules
        try:
            return (
                minute_of(msg.at),
                units(r.price_scale, msg.price),
                units(r.qty_scale, msg.quantity),
                units(r.quote_scale, msg.quote_quantity),
            )
        except (KeyError, TypeError, ValueError, MatchingError) as exc:
            raise MarketDataError(
                "MD_BAD_RECORD", f"{self.symbol} seq {msg.seq} TRADE: {exc!r}"
            ) from None

    def flush(self) -> list[Output]:
        """The pending group's outputs (none when nothing is pending)."""
        if not self._pending:
            return []
        self._pending = False
        out: list[Output] = []
        bids, asks = self.depth.take_changes()
        if bids or asks:
            out.append(Output(DEPTH, self.symbol, self._depth_update(bids, asks)))
            self.last_u = self.depth.seq
        closed, current = self.candles.take()
        for candle in closed:
            out.append(self._candle(candle, closed=True))
        if current is not None:
            out.append(self._candle(current, closed=False))
        top = (self.depth.best(BUY), self.depth.best(SELL)) if bids or asks else self._top
        if (self._traded or top != self._top) and self.candles.current is not None:
            out.append(Output(TICKERS, self.symbol, self._ticker(self.candles.current, top)))
        self._top = top
        self._traded = False
        if self.snapshot_every and self.depth.seq - self.last_snapshot_seq >= self.snapshot_every:
            out.append(self.snapshot())
        return out

    # -------------------------------------------------------------- messages

    def _levels(self, levels: list[Level]) -> list[list[str]]:
        price, qty = self.rules.price_scale.format, self.rules.qty_scale.format
        return [[price(p), qty(q)] for p, q in levels]

    def _depth_update(self, bids: list[Level], asks: list[Level]) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": "depth_update",
            "symbol": self.symbol,
            "U": self.last_u + 1,
            "u": self.depth.seq,
            "at": self._at,
            "bids": self._levels(bids),
            "asks": self._levels(asks),
        }

    def snapshot(self, max_levels: int = SNAPSHOT_MAX_LEVELS) -> Output:
        """The book now; ``lastUpdateId`` is the last applied ``seq`` (the pending group
        is flushed first by callers that publish it)."""
        self.last_snapshot_seq = self.depth.seq
        value = {
            "v": SCHEMA_VERSION,
            "type": "depth_snapshot",
            "symbol": self.symbol,
            "lastUpdateId": self.depth.seq,
            "at": self._at,
            "bids": self._levels(self.depth.levels(BUY, max_levels)),
            "asks": self._levels(self.depth.levels(SELL, max_levels)),
        }
        return Output(SNAPSHOT, self.symbol, value)

    def _candle(self, c: Candle, *, closed: bool) -> Output:
        r = self.rules
        price = r.price_scale.format
        open_time = iso(c.open_ms)
        value = {
            "v": SCHEMA_VERSION,
            "type": "candle",
            "symbol": self.symbol,
            "interval": "1m",
            "open_time": open_time,
            "close_time": iso(c.open_ms + MINUTE_MS - 1),
            "open": price(c.open),
            "high": price(c.high),
            "low": price(c.low),
            "close": price(c.close),
            "volume": r.qty_scale.format(c.volume),
            "quote_volume": r.quote_scale.format(c.quote_volume),
            "trades": c.trades,
            "first_seq": c.first_seq,
            "last_seq": c.last_seq,
            "closed": closed,
        }
        # One key per symbol and minute: a compacted topic keeps each minute's last state.
        return Output(CANDLES, f"{self.symbol}|{open_time}", value)

    def _ticker(self, current: Candle, top: tuple[Level | None, Level | None]) -> dict[str, Any]:
        r = self.rules
        price = r.price_scale.format
        qty = r.qty_scale.format
        f = self.ticker.figures(current)
        change = f.last - f.open
        percent = (Decimal(change * 100) / Decimal(f.open)).quantize(_PERCENT, ROUND_HALF_EVEN)
        # quote units / lots = ticks; rounded half up to the tick.
        average = (2 * f.quote_volume + f.volume) // (2 * f.volume) if f.volume else f.last
        bid, ask = top
        return {
            "v": SCHEMA_VERSION,
            "type": "ticker",
            "symbol": self.symbol,
            "window": "24h",
            "open_time": iso(f.open_ms),
            "close_time": iso(f.close_ms),
            "open": price(f.open),
            "high": price(f.high),
            "low": price(f.low),
            "last": price(f.last),
            "price_change": ("-" if change < 0 else "") + price(abs(change)),
            "price_change_percent": format(percent, "f"),
            "weighted_avg_price": price(average),
            "volume": qty(f.volume),
            "quote_volume": r.quote_scale.format(f.quote_volume),
            "trades": f.trades,
            "first_seq": f.first_seq,
            "last_seq": f.last_seq,
            "best_bid": None if bid is None else price(bid[0]),
            "best_bid_qty": None if bid is None else qty(bid[1]),
            "best_ask": None if ask is None else price(ask[0]),
            "best_ask_qty": None if ask is None else qty(ask[1]),
        }


class MarketDataBuilder:
    """``SymbolMarketData`` for every configured symbol."""

    def __init__(self, rules: dict[str, SymbolRules], *, snapshot_every: int = 1000) -> None:
        self.rules = rules
        self.snapshot_every = snapshot_every
        self.symbols: dict[str, SymbolMarketData] = {}

    def get(self, symbol: str) -> SymbolMarketData | None:
        book = self.symbols.get(symbol)
        if book is None:
            rules = self.rules.get(symbol)
            if rules is None:
                return None
            book = self.symbols[symbol] = SymbolMarketData(
                rules, snapshot_every=self.snapshot_every
            )
        return book

    def apply(self, msg: Record) -> list[Output]:
        """Apply one decoded execution record; ``MarketDataError`` for an unusable one."""
        symbol = msg.symbol
        book = self.get(symbol)
        if book is None:
            raise MarketDataError("MD_UNKNOWN_SYMBOL", f"symbol {symbol!r} is not configured")
        return book.apply(msg)

    def flush(self) -> list[Output]:
        out: list[Output] = []
        for book in self.symbols.values():
            out.extend(book.flush())
        return out

    def snapshots(self) -> list[Output]:
        """A snapshot of every symbol seen (flush first so none lags its updates)."""
        return [book.snapshot() for book in self.symbols.values()]


class PartitionMarketData:
    """The builders of one ``te.executions`` partition and the offsets that bound them.

    The records of one input are contiguous in the partition, so at most one
    group is incomplete at any time: the trailing one. When a record of a new
    input arrives the previous group is complete and flushed, whatever its
    symbol. ``safe_position`` is the offset a consumer may commit: every record
    before it has had its outputs produced (the trailing group's first offset
    while it is pending, else the next offset). A restart replays ``[0,
    safe_position)`` without publishing (then ``flush``, dropping its outputs)
    and continues from there: nothing is published twice and nothing is lost.
    """

    def __init__(self, builder: MarketDataBuilder) -> None:
        self.builder = builder
        self.position = 0
        self._group: Any = None
        self._group_symbol: str | None = None
        self._group_start: int | None = None

    @property
    def safe_position(self) -> int:
        return self.position if self._group_start is None else self._group_start

    def apply(self, offset: int, msg: Record) -> list[Output]:
        """One record at ``offset``; ``MarketDataError`` leaves the position past it."""
        out: list[Output] = []
        group = msg.input
        if self._group_start is not None and group != self._group:
            out = self._flush_group()
        self.position = offset + 1
        out.extend(self.builder.apply(msg))
        if self._group_start is None:
            self._group, self._group_symbol, self._group_start = group, msg.symbol, offset
        return out

    def _flush_group(self) -> list[Output]:
        book = self.builder.symbols.get(self._group_symbol or "")
        self._group, self._group_symbol, self._group_start = None, None, None
        return [] if book is None else book.flush()

    def flush(self) -> list[Output]:
        """Everything read so far is complete (the reader is caught up): publish it all."""
        out = self._flush_group()
        out.extend(self.builder.flush())
        return out

    def snapshots_due(self) -> list[Output]:
        """Snapshots of the symbols that changed since their last one (none pending)."""
        return [
            book.snapshot()
            for symbol, book in self.builder.symbols.items()
            if book.seq > book.last_snapshot_seq and symbol != self._group_symbol
        ]
