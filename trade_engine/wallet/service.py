"""The wallet service: the ledger over HTTP (aiohttp).

Routes are listed in ``docs/wallet.md``. Every ``/api/`` route needs
``Authorization: Bearer <token>``, compared in constant time; admin routes take
the admin token when one is configured, else the service token. Every error is
``{"code", "message", "details"}`` with a stable code. Batch routes decode their
body once into msgspec Structs (``connectors/wallet/wire.py``; pydantic words the
errors of a body they refuse), apply the items in request order in one
transaction (``batch.py``) and answer 200 with one result per item, each result
the bytes stored as its key's answer: no pydantic model per item.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, SecretStr, ValidationError

from trade_engine.connectors.wallet import wire
from trade_engine.connectors.wallet.exceptions import (
    InternalError,
    UnauthorizedError,
    UnavailableError,
    ValidationFailedError,
    WalletError,
)
from trade_engine.connectors.wallet.models import (
    MAX_BATCH_ITEMS,
    ReleaseRequest,
    ReserveRequest,
    SettleTradeRequest,
    TransferRequest,
    UserId,
)
from trade_engine.wallet import metrics
from trade_engine.wallet.ledger import Ledger
from trade_engine.wallet.rules import Outcome
from trade_engine.wallet.schema import DEFAULT_SCHEMA, create_pool, migrate

log = logging.getLogger(__name__)

API = "/api/v1"
_ADMIN_PREFIX = f"{API}/admin/"
_MAX_BODY_BYTES = 4 * 1024 * 1024
_JSON = "application/json"
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.CannotConnectNowError,
)


@dataclass(frozen=True)
class ServiceConfig:
    dsn: str
    service_token: SecretStr
    admin_token: SecretStr | None = None
    schema: str = DEFAULT_SCHEMA
    pool_min_size: int = 2
    pool_max_size: int = 10


CONFIG = web.AppKey("wallet_config", ServiceConfig)
# (service token, admin token) as bytes, encoded once rather than on every request.
_TOKENS = web.AppKey("wallet_tokens", tuple[bytes, bytes | None])
LEDGER = web.AppKey("wallet_ledger", Ledger)

_Apply = Callable[[Ledger, Any, asyncpg.Connection | None], Awaitable[Outcome[Any]]]
_OPERATIONS: dict[str, tuple[type[BaseModel], _Apply]] = {
    "reserve": (ReserveRequest, lambda ledger, req, conn: ledger.reserve(req, conn)),
    "release": (ReleaseRequest, lambda ledger, req, conn: ledger.release(req, conn)),
    "settle-trade": (SettleTradeRequest, lambda ledger, req, conn: ledger.settle_trade(req, conn)),
    "deposit": (TransferRequest, lambda ledger, req, conn: ledger.deposit(req, conn)),
    "withdraw": (TransferRequest, lambda ledger, req, conn: ledger.withdraw(req, conn)),
}


def create_app(config: ServiceConfig) -> web.Application:
    """The service; its PostgreSQL schema is created or upgraded when it starts."""
    app = web.Application(middlewares=[_errors, _auth], client_max_size=_MAX_BODY_BYTES)
    app[CONFIG] = config
    admin = config.admin_token
    app[_TOKENS] = (
        config.service_token.get_secret_value().encode(),
        admin.get_secret_value().encode() if admin is not None else None,
    )
    app.cleanup_ctx.append(_database)
    for op in ("reserve", "release", "settle-trade"):
        app.router.add_post(f"{API}/wallets/{op}", _single(op))
        app.router.add_post(f"{API}/wallets/{op}/batch", _batch(op))
    app.router.add_post(f"{API}/admin/deposit", _single("deposit"))
    app.router.add_post(f"{API}/admin/withdraw", _single("withdraw"))
    app.router.add_get(API + "/wallets/{user_id}/balances", _balances)
    app.router.add_get("/health/live", _live)
    app.router.add_get("/health/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    conn = await asyncpg.connect(config.dsn)
    try:
        applied = await migrate(conn, config.schema)
    finally:
        await conn.close()
    if applied:
        log.info("wallet schema upgraded", extra={"schema": config.schema, "applied": applied})
    pool = await create_pool(
        config.dsn, config.schema, min_size=config.pool_min_size, max_size=config.pool_max_size
    )
    app[LEDGER] = Ledger(pool)
    try:
        yield
    finally:
        await pool.close()


# --- middlewares ---------------------------------------------------------------------

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except WalletError as exc:
        response = _error_response(exc)
    except web.HTTPException as exc:  # routing: 404, 405, 413
        code = exc.reason.upper().replace(" ", "_")
        response = _error_response(WalletError(exc.reason, code=code, status=exc.status))
    except _UNAVAILABLE as exc:
        log.warning("wallet database unavailable", extra={"route": route, "error": repr(exc)})
        response = _error_response(UnavailableError("the ledger database is unavailable"))
    except Exception:
        log.exception("wallet request failed", extra={"route": route})
        response = _error_response(InternalError("internal error"))
    metrics.HTTP_REQUESTS.labels(route, str(response.status)).inc()
    metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
    return response


@web.middleware
async def _auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
    path = request.path
    if path.startswith("/api/"):
        expected, admin = request.app[_TOKENS]
        if admin is not None and path.startswith(_ADMIN_PREFIX):
            expected = admin
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise UnauthorizedError("missing or invalid bearer token")
    return await handler(request)


def _error_response(exc: WalletError) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.retriable:
        headers = {"Retry-After": "1"}
    return _json(exc.body(), exc.status, headers)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=json.dumps)


# --- handlers ------------------------------------------------------------------------


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailedError(f"body is not valid JSON: {exc}") from None


def _validate(model: type[BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "<body>", "message": e["msg"]}
            for e in exc.errors(include_url=False)[:20]
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        raise ValidationFailedError(message, {"errors": errors}) from None


def _single(op: str) -> _Handler:
    model, apply = _OPERATIONS[op]

    async def handle(request: web.Request) -> web.StreamResponse:
        req = _validate(model, await _body(request))
        try:
            outcome = await apply(request.app[LEDGER], req, None)
        except WalletError as exc:
            metrics.OPERATIONS.labels(op, exc.code).inc()
            raise
        metrics.OPERATIONS.labels(op, "replayed" if outcome.replayed else "applied").inc()
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
        return _json(outcome.response.model_dump(mode="json"), headers=headers)

    return handle


_LEDGER_OP = {"reserve": "reserve", "release": "release", "settle-trade": "settle"}


def _batch(op: str) -> _Handler:
    model, _ = _OPERATIONS[op]
    ledger_op = _LEDGER_OP[op]

    async def handle(request: web.Request) -> web.StreamResponse:
        # One typed decode of the whole body (msgspec); anything it refuses takes the
        # pydantic path, which accepts it or words each error as it always did.
        items = None
        if request.charset in (None, "utf-8"):  # msgspec reads UTF-8 only
            items = wire.decode_batch(ledger_op, await request.read())
        if items is None:
            pending, results = await _validate_batch(request, op, model)
        else:
            pending, results = list(enumerate(items)), {}
        counts: Counter[str] = Counter()
        if pending:
            # One transaction for the batch; each item's answer is its own.
            answers = await request.app[LEDGER].apply_batch(
                ledger_op, [item for _, item in pending]
            )
            for (index, _), answer in zip(pending, answers, strict=True):
                if isinstance(answer, WalletError):
                    results[index] = _item_error(index, answer)
                    counts[answer.code] += 1
                else:
                    results[index] = wire.ItemResult(index, True, msgspec.Raw(answer.body))
                    counts["replayed" if answer.replayed else "applied"] += 1
        for result, n in counts.items():  # one label lookup per outcome, not per item
            metrics.OPERATIONS.labels(op, result).inc(n)
        reply = wire.BatchAnswer([results[i] for i in sorted(results)])
        return web.Response(body=wire.encode(reply), content_type=_JSON, charset="utf-8")

    return handle


async def _validate_batch(
    request: web.Request, op: str, model: type[BaseModel]
) -> tuple[list[tuple[int, wire.Item]], dict[int, wire.ItemResult]]:
    """The pydantic path: the body's valid items, and an error per invalid one."""
    body = await _body(request)
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise ValidationFailedError(
            f'body must be {{"items": [...]}} with 1 to {MAX_BATCH_ITEMS} items',
            {"max_items": MAX_BATCH_ITEMS},
        )
    ledger_op = _LEDGER_OP[op]
    pending: list[tuple[int, wire.Item]] = []
    errors: dict[int, wire.ItemResult] = {}
    for index, raw in enumerate(items):
        try:
            pending.append((index, wire.from_model(ledger_op, _validate(model, raw))))
        except ValidationFailedError as exc:
            metrics.OPERATIONS.labels(op, exc.code).inc()
            errors[index] = _item_error(index, exc)
    return pending, errors


def _item_error(index: int, exc: WalletError) -> wire.ItemResult:
    return wire.ItemResult(index, False, error=exc.body())


async def _balances(request: web.Request) -> web.StreamResponse:
    user_id = request.match_info["user_id"]
    _validate(_UserPath, {"user_id": user_id})
    balances = await request.app[LEDGER].balances(user_id)
    return _json(balances.model_dump(mode="json"))


class _UserPath(BaseModel):
    user_id: UserId


async def _live(request: web.Request) -> web.StreamResponse:
    return _json({"status": "ok"})


async def _ready(request: web.Request) -> web.StreamResponse:
    try:
        await asyncio.wait_for(request.app[LEDGER].ping(), timeout=2.0)
    except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
        return _json({"status": "unavailable", "database": repr(exc)}, status=503)
    return _json({"status": "ok", "database": "ok"})


async def _metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
