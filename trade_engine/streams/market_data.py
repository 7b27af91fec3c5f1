"""Wire contract of the market-data topics (``te.md.*``) and of the public WebSocket channels.

The market-data agent builds these messages (``tables.market_data.builder``);
the gateway forwards them unchanged. The pydantic models are the documented
contract and generate ``streams/schemas/md_*.json``; a test validates the
builder's output against them.

Depth follows Binance's diff-depth conventions: ``U``/``u`` are the first and
last update ids covered (the symbol's execution ``seq``), levels are
``[price, quantity]`` pairs of decimal strings with the level's new total
quantity (``"0..."`` removes it), and a snapshot carries ``lastUpdateId``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trade_engine.streams.commands import DecimalStr

Level = tuple[DecimalStr, DecimalStr]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    symbol: str


class DepthUpdateMessage(_Message):
    """``te.md.depth`` (key: symbol) and the ``depth.<SYM>`` channel."""

    type: Literal["depth_update"] = "depth_update"
    U: int = Field(ge=1, description="First update id (execution seq) this diff covers.")
    u: int = Field(ge=1, description="Last update id covered; the next diff has U = u + 1.")
    at: str = Field(description="RFC 3339 UTC: log time of the last input covered.")
    bids: list[Level] = Field(description="Changed bid levels, best first; qty 0 = removed.")
    asks: list[Level] = Field(description="Changed ask levels, best first; qty 0 = removed.")


class DepthSnapshotMessage(_Message):
    """``te.md.depth.snapshot`` (compacted, key: symbol) and ``GET /api/v1/depth/{symbol}``."""

    type: Literal["depth_snapshot"] = "depth_snapshot"
    lastUpdateId: int = Field(ge=0, description="The book after every update id up to this.")  # noqa: N815
    at: str
    bids: list[Level] = Field(description="Best first, at most 5000 levels.")
    asks: list[Level] = Field(description="Best first, at most 5000 levels.")


class CandleMessage(_Message):
    """``te.md.candles`` (compacted, key: ``<symbol>|<open_time>``) and ``candles.<SYM>``."""

    type: Literal["candle"] = "candle"
    interval: Literal["1m"] = "1m"
    open_time: str
    close_time: str
    open: DecimalStr
    high: DecimalStr
    low: DecimalStr
    close: DecimalStr
    volume: DecimalStr = Field(description="Base asset traded.")
    quote_volume: DecimalStr = Field(description="Quote asset traded.")
    trades: int = Field(ge=1)
    first_seq: int = Field(ge=1)
    last_seq: int = Field(ge=1)
    closed: bool = Field(description="True once a trade of a later minute arrived.")


class TickerMessage(_Message):
    """``te.md.tickers`` (compacted, key: symbol) and ``ticker.<SYM>``: rolling 24 h."""

    type: Literal["ticker"] = "ticker"
    window: Literal["24h"] = "24h"
    open_time: str
    close_time: str
    open: DecimalStr
    high: DecimalStr
    low: DecimalStr
    last: DecimalStr
    price_change: str = Field(pattern=r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")
    price_change_percent: str = Field(pattern=r"^-?(0|[1-9][0-9]*)\.[0-9]{3}$")
    weighted_avg_price: DecimalStr
    volume: DecimalStr
    quote_volume: DecimalStr
    trades: int = Field(ge=1)
    first_seq: int = Field(ge=1)
    last_seq: int = Field(ge=1)
    best_bid: DecimalStr | None
    best_bid_qty: DecimalStr | None
    best_ask: DecimalStr | None
    best_ask_qty: DecimalStr | None


MESSAGES: dict[str, type[_Message]] = {
    "depth_update": DepthUpdateMessage,
    "depth_snapshot": DepthSnapshotMessage,
    "candle": CandleMessage,
    "ticker": TickerMessage,
}
