"""The route table: one entry per endpoint, used both to register the handlers and to
build the OpenAPI document, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from trade_engine.connectors.gateway import account, orders, public
from trade_engine.connectors.gateway.context import Principal
from trade_engine.connectors.gateway.models import (
    ID_PATTERN,
    AmendOrderRequest,
    BalancesResponse,
    CommandResponse,
    HealthResponse,
    HistoryQuery,
    MassCancelQuery,
    OrderPage,
    OrderResponse,
    PlaceOrderRequest,
    PlaceQuery,
    SymbolAdminRequest,
    SymbolList,
    SymbolQuery,
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


_ORDER_ID = {"order_id": ID_PATTERN}
_CLIENT_ID = {"client_order_id": ID_PATTERN}

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
