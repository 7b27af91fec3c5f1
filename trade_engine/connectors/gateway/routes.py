"""The route table: one entry per endpoint, used both to register the handlers and to
build the OpenAPI document, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from trade_engine.connectors.gateway import account, feeds, orders, protocol, public, snapshots
from trade_engine.connectors.gateway.context import Principal
from trade_engine.connectors.gateway.exceptions import BadRequestError, UnavailableError
from trade_engine.connectors.gateway.models import (
    ID_PATTERN,
    SYMBOL_PATH_PATTERN,
    AmendOrderRequest,
    BalancesResponse,
    CandleList,
    CandlesQuery,
    CommandResponse,
    DepthQuery,
    DepthSnapshot,
    HealthResponse,
    HistoryQuery,
    MassCancelQuery,
    OrderPage,
    OrderResponse,
    PlaceOrderRequest,
    PlaceQuery,
    StatusResponse,
    SymbolAdminRequest,
    SymbolList,
    SymbolQuery,
    Ticker,
    TradePage,
)

Handler = Callable[[web.Request, Principal | None], Awaitable[web.StreamResponse]]

API = "/api/v1"
_AUTHED = (400, 401, 429, 503)


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str  # OpenAPI form: /api/v1/orders/{order_id}
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    auth: bool = True
    rate_limited: bool = True
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = _AUTHED
    path_params: dict[str, str] = field(default_factory=dict)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    router_path: str = ""  # aiohttp's form when it differs (a regex on a path parameter)

    @property
    def registered_path(self) -> str:
        return self.router_path or self.path


_ORDER_ID = {"order_id": ID_PATTERN}
_CLIENT_ID = {"client_order_id": ID_PATTERN}
_SYMBOL = {"symbol": SYMBOL_PATH_PATTERN}
_MARKET_DATA = "Market data (docs/market-data.md)"


def _market_data(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Handler:
    """A handler of the market-data half, which needs ``setup_market_data`` on the app
    (``create_app(..., market_data=False)`` leaves it out: a 503, never a 500)."""

    async def handle(request: web.Request, principal: Principal | None) -> web.StreamResponse:
        if feeds.MARKET not in request.app:
            raise UnavailableError(
                "market data is not running on this gateway", code="MARKET_DATA_UNAVAILABLE"
            )
        return await handler(request)

    return handle


async def _websocket(request: web.Request) -> web.StreamResponse:
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise BadRequestError(
            "this endpoint is a WebSocket: send GET with Upgrade: websocket",
            code="WS_UPGRADE_REQUIRED",
        )
    return await protocol.websocket(request)


# Fixed paths before parameterised ones: aiohttp resolves in registration order.
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "POST",
        f"{API}/orders",
        orders.place_order,
        "placeOrder",
        "Place an order",
        "orders",
        body=PlaceOrderRequest,
        query=PlaceQuery,
        status=201,
        response=OrderResponse,
        errors=(400, 401, 409, 422, 429, 501, 503),
        description="Validated with the engine's own rules; answered once the command is "
        "durable in Kafka (status PENDING), or with the engine's first answer when "
        "`wait=true`. A repeat with the same `client_order_id` and body returns the "
        "original response (header `Idempotent-Replayed: true`).",
    ),
    RouteSpec(
        "GET",
        f"{API}/orders",
        orders.order_history,
        "listOrders",
        "The caller's orders of one symbol, newest first (keyset pages)",
        "orders",
        query=HistoryQuery,
        response=OrderPage,
    ),
    RouteSpec(
        "DELETE",
        f"{API}/orders",
        orders.mass_cancel,
        "cancelAllOrders",
        "Cancel all the caller's open orders (one symbol or all, optionally one side)",
        "orders",
        query=MassCancelQuery,
        status=202,
        response=CommandResponse,
    ),
    RouteSpec(
        "GET",
        f"{API}/orders/open",
        orders.open_orders,
        "listOpenOrders",
        "The caller's open orders",
        "orders",
        query=SymbolQuery,
        response=OrderPage,
    ),
    RouteSpec(
        "GET",
        f"{API}/orders/client/{{client_order_id}}",
        orders.get_order_by_client_id,
        "getOrderByClientId",
        "One of the caller's orders by client order id",
        "orders",
        response=OrderResponse,
        errors=(*_AUTHED, 404),
        path_params=_CLIENT_ID,
    ),
    RouteSpec(
        "DELETE",
        f"{API}/orders/client/{{client_order_id}}",
        orders.cancel_order_by_client_id,
        "cancelOrderByClientId",
        "Cancel one of the caller's orders by client order id",
        "orders",
        status=202,
        response=CommandResponse,
        errors=(*_AUTHED, 404, 409),
        path_params=_CLIENT_ID,
    ),
    RouteSpec(
        "GET",
        f"{API}/orders/{{order_id}}",
        orders.get_order,
        "getOrder",
        "One of the caller's orders",
        "orders",
        response=OrderResponse,
        errors=(*_AUTHED, 404),
        path_params=_ORDER_ID,
    ),
    RouteSpec(
        "DELETE",
        f"{API}/orders/{{order_id}}",
        orders.cancel_order,
        "cancelOrder",
        "Cancel one of the caller's orders",
        "orders",
        status=202,
        response=CommandResponse,
        errors=(*_AUTHED, 404, 409),
        path_params=_ORDER_ID,
    ),
    RouteSpec(
        "PATCH",
        f"{API}/orders/{{order_id}}",
        orders.amend_order,
        "amendOrder",
        "Amend an open order: a smaller quantity keeps priority, a new price loses it",
        "orders",
        body=AmendOrderRequest,
        status=202,
        response=CommandResponse,
        errors=(*_AUTHED, 404, 409),
        path_params=_ORDER_ID,
    ),
    RouteSpec(
        "GET",
        f"{API}/trades",
        account.my_trades,
        "listTrades",
        "The caller's trades of one symbol, newest first (keyset pages)",
        "account",
        query=HistoryQuery,
        response=TradePage,
    ),
    RouteSpec(
        "GET",
        f"{API}/balances",
        account.balances,
        "getBalances",
        "The caller's balances per asset (from the wallet service)",
        "account",
        response=BalancesResponse,
    ),
    RouteSpec(
        "GET",
        f"{API}/symbols",
        public.symbols,
        "listSymbols",
        "Tradable symbols and their rules (tick, step, minimums, fees)",
        "market",
        auth=False,
        query=SymbolQuery,
        response=SymbolList,
        errors=(400, 429),
    ),
    RouteSpec(
        "GET",
        f"{API}/depth/{{symbol}}",
        _market_data(snapshots.depth_snapshot),
        "getDepth",
        "Order book snapshot of a symbol, with the lastUpdateId that depth diffs follow",
        "market",
        auth=False,
        query=DepthQuery,
        response=DepthSnapshot,
        errors=(400, 429, 503),
        path_params=_SYMBOL,
        router_path=f"{API}/depth/{snapshots.SYMBOL_PARAM}",
        description=f"`BTC-USDT` or `BTC_USDT`. 503 `MARKET_DATA_NOT_READY` until the "
        f"gateway's book is synced. {_MARKET_DATA} describes keeping a local book.",
    ),
    RouteSpec(
        "GET",
        f"{API}/candles/{{symbol}}",
        _market_data(snapshots.candles),
        "getCandles",
        "The latest one-minute candles of a symbol",
        "market",
        auth=False,
        query=CandlesQuery,
        response=CandleList,
        errors=(400, 429, 503),
        path_params=_SYMBOL,
        router_path=f"{API}/candles/{snapshots.SYMBOL_PARAM}",
    ),
    RouteSpec(
        "GET",
        f"{API}/ticker/{{symbol}}",
        _market_data(snapshots.ticker),
        "getTicker",
        "Rolling 24-hour ticker of a symbol",
        "market",
        auth=False,
        response=Ticker,
        errors=(400, 404, 429, 503),
        path_params=_SYMBOL,
        router_path=f"{API}/ticker/{snapshots.SYMBOL_PARAM}",
        description="404 `NOT_FOUND` until the symbol has traded.",
    ),
    RouteSpec(
        "GET",
        f"{API}/ws",
        _market_data(_websocket),
        "websocket",
        "WebSocket: public trades/depth/candles/ticker channels, private orders channel",
        "market",
        auth=False,
        status=101,
        errors=(400, 429, 503),
        description="A GET with `Upgrade: websocket`. Public channels need no token; the "
        "private `orders` channel needs an `auth` message with a bearer JWT. "
        f"{_MARKET_DATA} describes the messages, heartbeats and the depth resync procedure.",
    ),
    RouteSpec(
        "POST",
        f"{API}/admin/symbols/state",
        public.symbol_admin,
        "setSymbolState",
        "Halt, resume or restrict a symbol (admin scope)",
        "admin",
        body=SymbolAdminRequest,
        status=202,
        response=CommandResponse,
        errors=(*_AUTHED, 403),
    ),
    RouteSpec(
        "GET",
        f"{API}/status",
        public.status,
        "getStatus",
        "Build version, uptime and the dependencies' states",
        "operations",
        auth=False,
        response=StatusResponse,
        errors=(429,),
        description="No token needed; limited per client IP only. Always 200: `status` is "
        "`degraded` when Kafka, PostgreSQL or the wallet does not answer (`/health/ready` "
        "is the probe that answers 503). Dependencies are checked at most every five "
        "seconds, whoever asks.",
    ),
    RouteSpec(
        "GET",
        "/health/live",
        public.live,
        "live",
        "The process is up",
        "operations",
        auth=False,
        rate_limited=False,
        response=HealthResponse,
        errors=(),
    ),
    RouteSpec(
        "GET",
        "/health/ready",
        public.ready,
        "ready",
        "Kafka, PostgreSQL and the wallet answer",
        "operations",
        auth=False,
        rate_limited=False,
        response=HealthResponse,
        errors=(503,),
    ),
    RouteSpec(
        "GET",
        "/metrics",
        public.metrics,
        "metrics",
        "Prometheus metrics (text exposition format)",
        "operations",
        auth=False,
        rate_limited=False,
        errors=(),
        extra={"content_type": "text/plain"},
    ),
)
