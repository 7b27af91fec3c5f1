"""Routes without an order: symbols and their rules, symbol admin (admin scope), health,
status, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from trade_engine.connectors.gateway.common import RESOURCES, body, query, respond, symbol_rules
from trade_engine.connectors.gateway.context import SETTINGS, Principal
from trade_engine.connectors.gateway.exceptions import (
    BadRequestError,
    ForbiddenError,
    UnavailableError,
)
from trade_engine.connectors.gateway.models import (
    CommandResponse,
    HealthResponse,
    StatusResponse,
    SymbolAdminRequest,
    SymbolInfo,
    SymbolList,
    SymbolQuery,
)
from trade_engine.streams.command_builders import build_symbol_admin
from trade_engine.tables.matching.enums import OrderType, TimeInForce
from trade_engine.tables.matching.exceptions import NumberFormatError

_CHECK_TIMEOUT_S = 2.0


async def symbols(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    params = query(request, SymbolQuery)
    specs = settings.market.symbols
    if params.symbol is not None:
        symbol_rules(request.app[RESOURCES], params.symbol)
        specs = [s for s in specs if s.symbol == params.symbol]
    rules = request.app[RESOURCES].rules
    items = [
        SymbolInfo(
            symbol=s.symbol,
            base_asset=s.base_asset,
            quote_asset=s.quote_asset,
            tick_size=s.tick_size,
            step_size=s.step_size,
            min_qty=s.min_qty or s.step_size,
            min_notional=s.min_notional,
            price_band_pct=s.price_band_pct,
            max_open_orders=rules[s.symbol].max_open_orders,
            maker_fee_rate=s.maker_fee_rate,
            taker_fee_rate=s.taker_fee_rate,
            reference_price=s.reference_price,
            order_types=list(OrderType),
            time_in_force=list(TimeInForce),
        )
        for s in specs
    ]
    return respond(SymbolList(symbols=items))


async def symbol_admin(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    assert principal is not None
    if not principal.is_admin:
        raise ForbiddenError("needs the admin scope", code="AUTH_SCOPE_REQUIRED")
    res = request.app[RESOURCES]
    req = await body(request, SymbolAdminRequest)
    rules = symbol_rules(res, req.symbol)
    if req.reference_price is not None:
        try:
            rules.price_scale.parse(req.reference_price)
        except NumberFormatError as exc:
            raise BadRequestError(
                f"reference_price is not a multiple of the tick size {rules.tick_size}",
                code=exc.reject.value,
            ) from None
    command = build_symbol_admin(
        symbol=req.symbol, trading_state=req.trading_state, reference_price=req.reference_price
    )
    await res.producer.send(command)
    return respond(CommandResponse(request="SYMBOL_ADMIN", symbols=[req.symbol]), 202)


async def live(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    return respond(HealthResponse(status="ok"))


async def ready(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """Ready when Kafka, PostgreSQL and the wallet all answer within two seconds."""
    checks = await check_dependencies(request.app)
    ok = all(v == "ok" for v in checks.values())
    return respond(
        HealthResponse(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503
    )


async def check_dependencies(app: web.Application) -> dict[str, str]:
    """Kafka, PostgreSQL and the wallet, probed at once (two seconds each at most):
    ``{"kafka": "ok", "wallet": "unavailable: TimeoutError", ...}``."""
    res = app[RESOURCES]
    settings = app[SETTINGS]

    async def kafka() -> None:
        await res.producer.ping(_CHECK_TIMEOUT_S)

    async def postgres() -> None:
        await asyncio.wait_for(res.pool.fetchval("SELECT 1"), _CHECK_TIMEOUT_S)

    async def wallet() -> None:
        timeout = aiohttp.ClientTimeout(total=_CHECK_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(settings.wallet.url.rstrip("/") + "/health/ready") as resp,
        ):
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")

    names = ("kafka", "postgres", "wallet")
    outcomes = await asyncio.gather(kafka(), postgres(), wallet(), return_exceptions=True)
    return {name: _state(outcome) for name, outcome in zip(names, outcomes, strict=True)}


def _state(outcome: BaseException | None) -> str:
    """``ok``, the gateway's own reason (e.g. why Kafka refuses writes), or the error type."""
    if outcome is None:
        return "ok"
    if isinstance(outcome, UnavailableError):
        return f"unavailable: {outcome.message}"
    return f"unavailable: {type(outcome).__name__}"


def _version() -> str:
    try:
        return metadata.version("trade-engine")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


class GatewayStatus:
    """What ``GET /api/v1/status`` reports: the build, the process's start, and the
    dependencies' states, probed at most once per ``ttl_s`` however often it is asked
    (concurrent askers share one probe), so the route stays cheap."""

    def __init__(self, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.version = _version()
        self.started_at = datetime.now(UTC)
        self._clock = clock
        self._started = clock()
        self._ttl_s = ttl_s
        # (monotonic time, wall time, states) of the last check
        self._checked: tuple[float, datetime, dict[str, str]] | None = None
        self._probe: asyncio.Future[tuple[float, datetime, dict[str, str]]] | None = None

    @property
    def uptime_s(self) -> float:
        return self._clock() - self._started

    async def dependencies(self, app: web.Application) -> tuple[datetime, dict[str, str]]:
        """(when checked, states), from a check at most ``ttl_s`` old."""
        checked = self._checked
        if checked is None or self._clock() - checked[0] >= self._ttl_s:
            if self._probe is None:
                self._probe = asyncio.ensure_future(self._check(app))
            # Shielded: a caller that goes away does not cancel the others' probe.
            checked = await asyncio.shield(self._probe)
        return checked[1], checked[2]

    async def _check(self, app: web.Application) -> tuple[float, datetime, dict[str, str]]:
        try:
            states = await check_dependencies(app)
            self._checked = (self._clock(), datetime.now(UTC), states)
            return self._checked
        finally:
            self._probe = None


GATEWAY_STATUS = web.AppKey("gateway_status", GatewayStatus)


async def status(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    """The build, the uptime and the dependencies' states; always 200 (information: the
    probe that answers 503 is ``/health/ready``)."""
    gateway = request.app[GATEWAY_STATUS]
    checked_at, states = await gateway.dependencies(request.app)
    return respond(
        StatusResponse(
            version=gateway.version,
            status="ok" if all(v == "ok" for v in states.values()) else "degraded",
            started_at=gateway.started_at,
            uptime_s=round(gateway.uptime_s, 3),
            dependencies=states,
            checked_at=checked_at,
        )
    )


async def metrics(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
