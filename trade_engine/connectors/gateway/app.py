"""The gateway's aiohttp application: ``create_app(settings)`` and ``serve``.

aiohttp because the engine already runs it (the wallet service and its
client): one maintained asyncio HTTP stack for servers, clients and WebSockets,
with no ASGI server to add. Per request:

0. ``cors`` (middleware, only with ``gateway.cors.allowed_origins``; ``cors.py``):
   answers preflights, adds ``Access-Control-*`` headers for allowed origins.
1. ``_errors`` (middleware): every failure becomes ``{"error", "code",
   "details"}`` with a stable code; an unexpected exception is a logged 500 with
   no trace in the body; request counts and latencies by route pattern.
2. ``_guarded`` (per route, from the table in ``routes``, market-data and
   WebSocket routes included): verify the bearer token, then charge the rate
   limits (client IP always, user once known) in one call, then refuse: 429
   first (a flood of bad tokens is limited by IP), then 401. Rate headers go on
   every limited response (not on a WebSocket's 101).
3. The handler.

Requests aiohttp's HTTP parser refuses before any of this runs (a header or the
request line above ``MAX_FIELD_BYTES``, too many headers, malformed HTTP) get the
same error body from ``GatewayRunner``: 431 ``HEADER_TOO_LARGE`` or 400
``BAD_HTTP_REQUEST``, never aiohttp's bare text (which echoes the offending bytes,
a bearer token's included).

``create_app`` refuses to build a gateway that would verify HS256 tokens with the
development secret committed in this repository unless ``gateway.dev_mode`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from trade_engine.config import Settings
from trade_engine.connectors.gateway import metrics
from trade_engine.connectors.gateway.auth import JwtAuthenticator, bearer_token, refuse_dev_secret
from trade_engine.connectors.gateway.common import RESOURCES, Resources, respond
from trade_engine.connectors.gateway.context import AUTHENTICATOR, SETTINGS, Principal
from trade_engine.connectors.gateway.cors import cors_middleware
from trade_engine.connectors.gateway.exceptions import (
    AuthError,
    GatewayError,
    RateLimitedError,
)
from trade_engine.connectors.gateway.openapi import build_openapi
from trade_engine.connectors.gateway.producer import CommandProducer
from trade_engine.connectors.gateway.protocol import setup_market_data
from trade_engine.connectors.gateway.public import GATEWAY_STATUS, GatewayStatus
from trade_engine.connectors.gateway.ratelimit import (
    Limit,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from trade_engine.connectors.gateway.routes import ROUTES, RouteSpec
from trade_engine.connectors.gateway.store import LocalOrderStore, OrderStore, RedisOrderStore
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.tables.symbols import rules_for

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# Large enough that an oversized token reaches the authenticator (a 401 with its
# code); anything longer is refused by the HTTP parser (431, ``GatewayRunner``).
MAX_FIELD_BYTES = 32 * 1024
RUNNER_ARGS: dict[str, Any] = {"max_field_size": MAX_FIELD_BYTES, "max_line_size": MAX_FIELD_BYTES}

_Middleware = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    settings: Settings,
    *,
    limiter: RateLimiter | None = None,
    store: OrderStore | None = None,
    market_data: bool = True,
) -> web.Application:
    """The gateway. Kafka, PostgreSQL, the wallet client and, when ``gateway.redis_url`` is
    set, Redis are connected when the app starts (``limiter``/``store`` override them).

    ``market_data``: the execution feed (``?wait=true``, the private ``orders`` channel)
    and the market-data followers, which read the executions and ``te.md.*`` topics from
    startup on. Off only for tests of the REST half alone: its routes then answer 503
    ``MARKET_DATA_UNAVAILABLE`` and ``?wait=true`` 501 ``WAIT_NOT_AVAILABLE``.

    ``ConfigError`` when HS256 would use the committed development secret outside
    ``gateway.dev_mode`` (``auth.refuse_dev_secret``).
    """
    refuse_dev_secret(settings.gateway)
    middlewares: list[Middleware] = [_errors]
    if settings.gateway.cors.enabled:  # outermost: error responses get the headers too
        middlewares.insert(0, cors_middleware(settings.gateway.cors))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[GATEWAY_STATUS] = GatewayStatus()
    app[AUTHENTICATOR] = JwtAuthenticator(settings.gateway.auth)
    app.cleanup_ctx.append(_resources(limiter, store))
    if market_data:
        # After _resources in cleanup_ctx: the followers start once the producer and
        # pool exist and stop before them. The route table registers their routes.
        setup_market_data(app, routes=False)
    for spec in ROUTES:
        app.router.add_route(spec.method, spec.registered_path, _guarded(spec))
    document = build_openapi(ROUTES)

    async def openapi(request: web.Request) -> web.StreamResponse:
        return respond(document)

    app.router.add_get("/api/v1/openapi.json", openapi)
    return app


def _resources(
    limiter: RateLimiter | None, store: OrderStore | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        gw = settings.gateway
        redis_url = gw.redis_url
        resources = Resources(
            producer=CommandProducer(settings),
            store=store
            or (
                RedisOrderStore(redis_url, gw.idempotency_ttl_s)
                if redis_url
                else LocalOrderStore(gw.idempotency_ttl_s)
            ),
            limiter=limiter or (RedisRateLimiter(redis_url) if redis_url else LocalRateLimiter()),
            # min_size=0: the gateway starts while PostgreSQL is down; queries then answer 503.
            pool=await asyncpg.create_pool(
                settings.postgres.dsn(), min_size=0, max_size=10, command_timeout=5.0
            ),
            wallet=WalletClient.from_settings(settings, max_retries=1),
            rules={s.symbol: rules_for(s) for s in settings.market.symbols},
            schema=gw.postgres_schema,
        )
        app[RESOURCES] = resources
        try:
            yield
        finally:
            await resources.producer.close()
            await resources.wallet.close()
            await resources.pool.close()
            await resources.limiter.close()
            await resources.store.close()

    return ctx


def client_ip(request: web.Request) -> str:
    """The peer address. Behind a proxy, configure the proxy to limit per client."""
    return request.remote or "unknown"


def _guarded(spec: RouteSpec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        app = request.app
        principal: Principal | None = None
        refused: AuthError | None = None
        if spec.auth:
            try:
                token = bearer_token(request.headers.get("Authorization"))
                principal = app[AUTHENTICATOR].verify(token)
            except AuthError as exc:
                refused = exc
        rate_headers: dict[str, str] = {}
        limits = app[SETTINGS].gateway.rate_limit
        if spec.rate_limited and limits.enabled:
            keys = [("ip:" + client_ip(request), Limit(limits.ip_per_s, limits.ip_burst))]
            if principal is not None:
                keys.append(
                    ("user:" + principal.user_id, Limit(limits.user_per_s, limits.user_burst))
                )
            decision = await app[RESOURCES].limiter.hit(keys)
            if decision is not None:
                rate_headers = decision.headers()
                if not decision.allowed:
                    scope = (
                        "user"
                        if principal is not None and decision.limit == limits.user_burst
                        else "ip"
                    )
                    metrics.RATE_LIMITED.labels(scope).inc()
                    raise RateLimitedError(
                        "too many requests",
                        {"retry_after_s": rate_headers["Retry-After"]},
                        headers=rate_headers,
                    )
        if refused is not None:
            metrics.AUTH_FAILURES.labels(refused.code).inc()
            refused.headers = {**rate_headers, "WWW-Authenticate": 'Bearer error="invalid_token"'}
            raise refused
        response = await spec.handler(request, principal)
        if not response.prepared:  # a WebSocket has sent its headers (101) by now
            response.headers.update(rate_headers)
        return response

    return handle


@web.middleware
async def _errors(request: web.Request, handler: _Middleware) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource
    pattern = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except GatewayError as exc:
        response = respond(exc.body(), exc.status, exc.headers or None)
    except web.HTTPException as exc:  # routing: 404, 405; body too large: 413
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}.get(
            exc.status, exc.reason.upper().replace(" ", "_")
        )
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = respond({"error": exc.reason, "code": code, "details": {}}, exc.status, headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("gateway request failed", extra={"route": pattern})
        response = respond(
            {"error": "internal error", "code": "INTERNAL_ERROR", "details": {}}, 500
        )
    metrics.HTTP_REQUESTS.labels(request.method, pattern, str(response.status)).inc()
    metrics.HTTP_SECONDS.labels(request.method, pattern).observe(time.perf_counter() - started)
    return response


class _JsonErrorsRequestHandler(RequestHandler):
    """aiohttp's connection protocol, answering what it refuses itself (before the
    application and its middleware see a request) with the gateway's error body."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, BadHttpMessage) and status < 500:
            if request.writer.output_size > 0:  # as aiohttp: too late for another response
                raise ConnectionError("response already started, cannot send an error")
            status, body = _parser_error(exc)
            # No exception text: aiohttp's message quotes the refused bytes (a token's too).
            log.info(
                "gateway refused an unparsable request",
                extra={"code": body["code"], "remote": request.remote},
            )
            route = "unparsed"
        else:  # a handler failure the middleware did not render (aiohttp logs it)
            super().handle_error(request, status, exc, message)
            code = "INTERNAL_ERROR" if status == 500 else _status_code(status)
            body = {"error": HTTPStatus(status).phrase.lower(), "code": code, "details": {}}
            route = "unhandled"
        metrics.HTTP_REQUESTS.labels("-", route, str(status)).inc()
        response = respond(body, status)
        response.force_close()
        return response


def _parser_error(exc: BadHttpMessage) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, LineTooLong) or "too many headers" in exc.message.lower():
        return 431, {
            "error": "request header fields too large",
            "code": "HEADER_TOO_LARGE",
            "details": {"max_field_bytes": MAX_FIELD_BYTES},
        }
    return 400, {"error": "malformed HTTP request", "code": "BAD_HTTP_REQUEST", "details": {}}


def _status_code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.upper().replace(" ", "_")
    except ValueError:
        return "HTTP_ERROR"


class _JsonErrorsServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorsRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` with the gateway's HTTP limits (``RUNNER_ARGS``, overridable)
    whose connections render the HTTP parser's refusals as the standard error body.

    aiohttp answers a request its parser refuses (``LineTooLong``, ``BadHttpMessage``)
    from its connection protocol, before any application code or middleware runs;
    ``RequestHandler.handle_error`` is the one place that sees it.
    """

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **(RUNNER_ARGS | kwargs))

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application's own server (startup, handler, request factory, limits),
        # handing each connection to the protocol above.
        server.__class__ = _JsonErrorsServer
        return server


def serve(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Run one gateway process until SIGINT/SIGTERM (``reuse_port``: several processes
    share the port; the kernel spreads connections between them)."""
    asyncio.run(_serve(create_app(settings), host, port, reuse_port))


async def _serve(app: web.Application, host: str, port: int, reuse_port: bool) -> None:
    runner = GatewayRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        log.info("gateway listening", extra={"host": host, "port": port})
        await stop.wait()
    finally:
        await runner.cleanup()
