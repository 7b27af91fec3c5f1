"""What every handler shares: app keys of the gateway's resources, body and query
parsing into the REST models, JSON responses, and the symbol catalogue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from trade_engine.connectors.gateway.exceptions import BadRequestError, UnavailableError
from trade_engine.connectors.gateway.producer import CommandProducer
from trade_engine.connectors.gateway.ratelimit import RateLimiter
from trade_engine.connectors.gateway.store import OrderStore
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.tables.matching.rules import SymbolRules

M = TypeVar("M", bound=BaseModel)

# Errors of a lost or refused database connection: 503, the request may succeed later.
DB_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.UndefinedTableError,
)


@dataclass
class Resources:
    """Everything a handler talks to, created when the app starts."""

    producer: CommandProducer
    store: OrderStore
    limiter: RateLimiter
    pool: asyncpg.Pool
    wallet: WalletClient
    rules: dict[str, SymbolRules]
    schema: str = "public"  # of the history tables the Postgres sink writes
    # user -> (read at, open orders): the open-orders cap's per-user count
    open_counts: dict[str, tuple[float, int]] = field(default_factory=dict)
    refreshing: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


RESOURCES = web.AppKey("gateway_resources", Resources)


def parse(model: type[M], raw: Any) -> M:
    """Validate ``raw`` into ``model``; a failure is a 400 whose code is the first error's
    own (``VALIDATION_NUMBER_FORMAT``...) or ``VALIDATION_ERROR``."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or "<body>",
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors(include_url=False)[:20]
        ]
        first = errors[0]
        code = first["type"] if first["type"].startswith("VALIDATION_") else "VALIDATION_ERROR"
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        raise BadRequestError(message, {"errors": errors}, code=code) from None


async def body(request: web.Request, model: type[M]) -> M:
    if request.content_type != "application/json":
        raise BadRequestError("send the body as application/json", code="VALIDATION_CONTENT_TYPE")
    try:
        raw = json.loads(await request.read())
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequestError("body is not valid JSON", code="VALIDATION_INVALID_JSON") from None
    return parse(model, raw)


def query(request: web.Request, model: type[M]) -> M:
    params: dict[str, str] = {}
    for name, value in request.query.items():
        if name in params:
            raise BadRequestError(f"query parameter {name!r} given twice", code="VALIDATION_ERROR")
        params[name] = value
    return parse(model, params)


def respond(
    payload: BaseModel | Mapping[str, Any],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json()
    else:
        text = json.dumps(payload, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def symbol_rules(resources: Resources, symbol: str) -> SymbolRules:
    rules = resources.rules.get(symbol)
    if rules is None:
        raise BadRequestError(
            f"unknown symbol {symbol}", {"symbol": symbol}, code="VALIDATION_UNKNOWN_SYMBOL"
        )
    return rules


def db_unavailable(exc: BaseException) -> UnavailableError:
    return UnavailableError(
        f"order history unavailable: {type(exc).__name__}", code="DATABASE_UNAVAILABLE"
    )
