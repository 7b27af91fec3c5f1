"""Market data over REST: the depth, candles and ticker the market-data feed keeps.

``GET /api/v1/depth/{symbol}`` (the book with ``lastUpdateId``, the same update
ids as the ``depth`` channel), ``GET /api/v1/candles/{symbol}`` and ``GET
/api/v1/ticker/{symbol}``, answered from ``feeds.MarketDataFollower``'s state:
nothing here reads Kafka or a database.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from trade_engine.config import Settings
from trade_engine.connectors.gateway.context import SETTINGS
from trade_engine.connectors.gateway.feeds import CANDLES_KEPT, MARKET

# aiohttp's pattern of the symbol in market-data paths: BTC-USDT, BTC_USDT or BTC/USDT.
SYMBOL_PARAM = "{symbol:[A-Za-z0-9]{1,16}[-_/][A-Za-z0-9]{1,16}}"
UNKNOWN_SYMBOL = "VALIDATION_UNKNOWN_SYMBOL"


def canonical_symbol(settings: Settings, text: str) -> str | None:
    """``BTC/USDT``, ``BTC-USDT`` or ``BTC_USDT`` -> the configured ``BTC/USDT``, else None."""
    symbol = text.upper().replace("-", "/").replace("_", "/")
    return symbol if settings.market.get(symbol) is not None else None


def _error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    return web.json_response(
        {"error": message, "code": code, "details": details or {}}, status=status
    )


def _symbol_or_error(request: web.Request) -> str | web.Response:
    text = request.match_info["symbol"]
    symbol = canonical_symbol(request.app[SETTINGS], text)
    if symbol is None:
        return _error(400, UNKNOWN_SYMBOL, f"unknown symbol {text!r}", {"symbol": text})
    return symbol


def _limit(request: web.Request, default: int, most: int) -> int | web.Response:
    text = request.query.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        return _error(400, "VALIDATION_ERROR", f"limit must be 1..{most}", {"limit": text})
    return int(text)


async def depth_snapshot(request: web.Request) -> web.StreamResponse:
    symbol = _symbol_or_error(request)
    if isinstance(symbol, web.Response):
        return symbol
    limit = _limit(request, 1000, 5000)
    if isinstance(limit, web.Response):
        return limit
    book = request.app[MARKET].books[symbol]
    if not book.synced:
        return _error(503, "MARKET_DATA_NOT_READY", "the depth of this symbol is not synced yet")
    return web.json_response(book.snapshot(limit))


async def candles(request: web.Request) -> web.StreamResponse:
    symbol = _symbol_or_error(request)
    if isinstance(symbol, web.Response):
        return symbol
    limit = _limit(request, 500, CANDLES_KEPT)
    if isinstance(limit, web.Response):
        return limit
    kept = request.app[MARKET].candles[symbol]
    rows = sorted(kept.values(), key=lambda c: str(c["open_time"]))[-limit:]
    return web.json_response({"symbol": symbol, "interval": "1m", "candles": rows})


async def ticker(request: web.Request) -> web.StreamResponse:
    symbol = _symbol_or_error(request)
    if isinstance(symbol, web.Response):
        return symbol
    found = request.app[MARKET].tickers.get(symbol)
    if found is None:
        return _error(404, "NOT_FOUND", f"no trade of {symbol} yet", {"symbol": symbol})
    return web.json_response(found)
