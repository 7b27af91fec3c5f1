"""Order routes: place, query, cancel, amend, mass cancel, open orders, history.

A place is validated exactly as the matching core would (its own parser and
``static_problem``), so anything the engine would reject statically is a 400
here and never reaches the log. It is answered ``201 PENDING`` once the broker
acknowledged it (``acks=all``); ``?wait=true`` also waits for the engine's first
answer (the execution feed) and returns that status. Cancels, amends and mass
cancels are answered ``202`` once durable; their outcome arrives as executions.

Ownership: every lookup is by (user, id); another user's order is a 404, the
same as an order that does not exist, and nothing is produced. Every read of the
order history goes through the read model (``sinks/read_model.py``): no SQL here.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from trade_engine.connectors.gateway import metrics
from trade_engine.connectors.gateway.common import (
    DB_UNAVAILABLE,
    RESOURCES,
    Resources,
    body,
    db_unavailable,
    query,
    respond,
    symbol_rules,
)
from trade_engine.connectors.gateway.context import (
    EXECUTION_FEED,
    SETTINGS,
    ExecutionFeed,
    Principal,
)
from trade_engine.connectors.gateway.exceptions import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    NotImplementedFeatureError,
    UnprocessableError,
)
from trade_engine.connectors.gateway.models import (
    ID_PATTERN,
    AmendOrderRequest,
    CommandResponse,
    HistoryQuery,
    MassCancelQuery,
    OrderPage,
    OrderResponse,
    PlaceOrderRequest,
    PlaceQuery,
    SymbolQuery,
)
from trade_engine.connectors.gateway.store import OrderRecord, fingerprint
from trade_engine.sinks.read_model import Order, Repository, decode_cursor
from trade_engine.streams.command_builders import (
    CommandModel,
    build_amend,
    build_cancel,
    build_mass_cancel,
    build_place,
    new_order_id,
)
from trade_engine.streams.commands import PlaceOrder, to_core
from trade_engine.streams.exceptions import InvalidCommandError
from trade_engine.streams.execution_records import AcceptedExecution, RejectedExecution
from trade_engine.tables.matching.checks import parse_place, static_problem
from trade_engine.tables.matching.commands import PlaceRequest
from trade_engine.tables.matching.enums import OrderType, TimeInForce
from trade_engine.tables.matching.exceptions import NumberFormatError
from trade_engine.tables.matching.rules import SymbolRules

FINAL_STATUSES = frozenset({"FILLED", "CANCELLED", "EXPIRED", "REJECTED"})
_ANSWER_STATUSES = FINAL_STATUSES | {"OPEN", "PENDING"}
_ID = re.compile(ID_PATTERN)
_COUNT_TTL_S = 1.0


# --- place -------------------------------------------------------------------------------


async def place_order(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    user = _user(principal)
    res = request.app[RESOURCES]
    settings = request.app[SETTINGS].gateway
    params = query(request, PlaceQuery)
    req = await body(request, PlaceOrderRequest)
    feed = request.app.get(EXECUTION_FEED)
    if params.wait and feed is None:
        raise NotImplementedFeatureError(
            "waiting for the engine's answer needs the execution feed, not running here",
            code="WAIT_NOT_AVAILABLE",
        )
    rules = symbol_rules(res, req.symbol)
    now = datetime.now(UTC)
    command = _place_command(req, user, rules, now)
    await _check_open_cap(res, settings.max_open_orders_per_user, user, command)
    record = OrderRecord(
        order_id=command.order_id,
        user_id=user,
        symbol=command.symbol,
        client_order_id=command.client_order_id,
        fingerprint=fingerprint(req.model_dump(mode="json")),
        created_at=now.timestamp(),
    )
    if record.client_order_id is not None:
        replay = await _claim(res, record)
        if replay is not None:
            metrics.ORDERS.labels("place", "replayed").inc()
            return respond(replay, 201, {"Idempotent-Replayed": "true"})
    try:
        await res.producer.send(command)
    except BaseException:
        await res.store.drop(record)
        metrics.ORDERS.labels("place", "failed").inc()
        raise
    metrics.ORDERS.labels("place", "accepted").inc()
    _placed(res, user)
    response = _pending_response(command, now)
    await res.store.put(record.with_response(response))
    if params.wait and feed is not None:
        timeout_ms = params.wait_timeout_ms or settings.wait_timeout_ms
        first = await feed.first_execution(command.order_id, timeout_ms / 1000)
        if first is not None:
            response = _apply_first(response, first)
            await res.store.put(record.with_response(response))
    return respond(response, 201, {"Location": f"/api/v1/orders/{command.order_id}"})


def _place_command(
    req: PlaceOrderRequest, user: str, rules: SymbolRules, now: datetime
) -> PlaceOrder:
    try:
        command = build_place(
            symbol=req.symbol,
            side=req.side,
            user_id=user,
            type=req.type,
            quantity=req.quantity,
            price=req.price,
            time_in_force=req.time_in_force,
            order_id=new_order_id(),
            client_order_id=req.client_order_id,
            stop_price=req.stop_price,
            quote_quantity=req.quote_quantity,
            post_only=req.post_only,
            stp_mode=req.stp_mode,
            expire_at=req.expire_at,
            ts=now,
        )
    except InvalidCommandError as exc:
        raise BadRequestError(str(exc), {"field": exc.field}) from None
    core = to_core(command, rules)
    assert isinstance(core, PlaceRequest)
    try:
        place = parse_place(core, rules)
    except NumberFormatError as exc:
        raise BadRequestError(
            _grid_message(exc, rules),
            {"tick_size": rules.tick_size, "step_size": rules.step_size},
            code=exc.reject.value,
        ) from None
    except ValueError as exc:
        raise BadRequestError(str(exc)[:200], code="VALIDATION_BAD_ENUM") from None
    problem = static_problem(place, rules)
    if problem is not None:
        raise BadRequestError(problem[1], {"symbol": rules.symbol}, code=problem[0].value)
    return command


def _grid_message(exc: NumberFormatError, rules: SymbolRules) -> str:
    code = exc.reject.value
    if code.endswith("OFF_TICK"):
        return f"price is not a multiple of the tick size {rules.tick_size}"
    if code.endswith("OFF_STEP"):
        return f"quantity is not a multiple of the step size {rules.step_size}"
    if code.endswith("OFF_UNIT"):
        return "quote_quantity is not a multiple of tick size x step size"
    return str(exc)


async def _claim(res: Resources, record: OrderRecord) -> dict[str, Any] | None:
    """Claim the client order id; the original response when this is a repeat."""
    assert record.client_order_id is not None
    holder = await res.store.claim(record)
    if holder is None:
        if await _live_client_id(res, record.user_id, record.client_order_id):
            await res.store.drop(record)
            raise ConflictError(
                "client_order_id belongs to an open order",
                {"client_order_id": record.client_order_id},
                code="CLIENT_ORDER_ID_IN_USE",
            )
        return None
    if holder.fingerprint == record.fingerprint:
        if holder.response is None:
            raise ConflictError(
                "the original request is still in flight",
                code="IDEMPOTENCY_IN_PROGRESS",
                headers={"Retry-After": "1"},
            )
        return holder.response
    if await _has_ended(res, holder) and await res.store.take_over(holder, record):
        return None
    raise ConflictError(
        "client_order_id was used with another request for an open order",
        {"client_order_id": record.client_order_id, "order_id": holder.order_id},
        code="CLIENT_ORDER_ID_IN_USE",
    )


async def _has_ended(res: Resources, holder: OrderRecord) -> bool:
    response = holder.response or {}
    if response.get("status") in FINAL_STATUSES:
        return True
    row = await _order_row(res, holder.order_id, holder.user_id)
    return row is not None and row.status in FINAL_STATUSES


async def _live_client_id(res: Resources, user: str, client_order_id: str) -> bool:
    """An open order with this client id in the history (placed before the store remembers)."""
    try:
        return await _history(res).has_open_client_order_id(client_order_id, user)
    except DB_UNAVAILABLE as exc:
        raise db_unavailable(exc) from None


async def _check_open_cap(res: Resources, cap: int, user: str, command: PlaceOrder) -> None:
    """At most ``cap`` open orders per user (those that can rest: not IOC/FOK, or stops).

    The count is the history's open orders (read at most once a second per user)
    plus this process's places since: approximate by the sink's lag, which is why
    the matcher's per-symbol ``max_open_orders`` stays the hard limit.
    """
    rests = command.type in (OrderType.STOP, OrderType.STOP_LIMIT) or command.time_in_force not in (
        TimeInForce.IOC,
        TimeInForce.FOK,
    )
    if not cap or not rests:
        return
    count = await _open_count(res, user)
    if count >= cap:
        raise UnprocessableError(
            f"at most {cap} open orders per user",
            {"open_orders": count, "limit": cap},
            code="LIMIT_OPEN_ORDERS",
        )


async def _open_count(res: Resources, user: str) -> int:
    """The user's open orders: read once, then refreshed in the background at most once
    a second (stale-while-revalidate), so the hot path waits on PostgreSQL only for a
    user's first order."""
    cached = res.open_counts.get(user)
    if cached is None:
        return await _read_open_count(res, user)
    if time.monotonic() - cached[0] >= _COUNT_TTL_S and user not in res.refreshing:
        res.refreshing.add(user)
        task = asyncio.create_task(_refresh_open_count(res, user))
        res.tasks.add(task)
        task.add_done_callback(res.tasks.discard)
    return cached[1]


async def _refresh_open_count(res: Resources, user: str) -> None:
    try:
        await _read_open_count(res, user)
    except Exception:  # noqa: S110 (the stale count stays; the next request retries)
        pass
    finally:
        res.refreshing.discard(user)


async def _read_open_count(res: Resources, user: str) -> int:
    try:
        count = await _history(res).count_open_orders(user)
    except DB_UNAVAILABLE as exc:
        raise db_unavailable(exc) from None
    if len(res.open_counts) > 100_000:
        res.open_counts.clear()
    res.open_counts[user] = (time.monotonic(), count)
    return count


def _placed(res: Resources, user: str) -> None:
    cached = res.open_counts.get(user)
    if cached is not None:
        res.open_counts[user] = (cached[0], cached[1] + 1)


def _pending_response(command: PlaceOrder, now: datetime) -> dict[str, Any]:
    response = OrderResponse(
        order_id=command.order_id,
        client_order_id=command.client_order_id,
        symbol=command.symbol,
        side=command.side,
        type=command.type,
        time_in_force=command.time_in_force,
        status="PENDING",
        quantity=command.quantity,
        quote_quantity=command.quote_quantity,
        price=command.price,
        stop_price=command.stop_price,
        post_only=command.post_only,
        stp_mode=command.stp_mode,
        expire_at=command.expire_at,
        created_at=now,
        updated_at=now,
    )
    return response.model_dump(mode="json")


def _apply_first(
    response: dict[str, Any], first: AcceptedExecution | RejectedExecution
) -> dict[str, Any]:
    """The status the engine's first answer gives the order."""
    out = dict(response)
    if isinstance(first, RejectedExecution):
        out["status"] = "REJECTED"
        out["reject_code"] = first.code.value
        out["reject_reason"] = first.message
    elif first.status in _ANSWER_STATUSES:
        out["status"] = first.status.value
    return out


# --- queries ---------------------------------------------------------------------------


def _history(res: Resources) -> Repository:
    """The read model over the history tables the Postgres sink writes."""
    return Repository(res.pool, res.schema)


async def _order_row(res: Resources, order_id: str, user: str) -> Order | None:
    try:
        return await _history(res).get_order(order_id, user)
    except DB_UNAVAILABLE as exc:
        raise db_unavailable(exc) from None


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def row_response(row: Order, record: OrderRecord | None = None) -> dict[str, Any]:
    extra = record.response if record is not None and record.response else {}
    response = OrderResponse(
        order_id=row.order_id,
        client_order_id=row.client_order_id,
        symbol=row.symbol,
        side=row.side,  # type: ignore[arg-type]
        type=row.order_type,  # type: ignore[arg-type]
        time_in_force=row.time_in_force,  # type: ignore[arg-type]
        status=row.status,  # type: ignore[arg-type]
        quantity=_text(row.quantity),
        quote_quantity=_text(row.funds),
        price=_text(row.price),
        stop_price=_text(row.stop_price),
        filled_quantity=_text(row.filled_quantity) or "0",
        quote_filled=_text(row.quote_filled) or "0",
        post_only=bool(extra.get("post_only", False)),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
    return response.model_dump(mode="json")


async def _find(
    res: Resources, order_id: str, user: str, feed: ExecutionFeed | None
) -> tuple[dict[str, Any], str]:
    """The caller's order as a response and its symbol, or 404 (also for others' orders).

    An order the history does not hold yet is answered from the gateway's record; while
    that still says PENDING, the execution feed's remembered first answer (if it saw
    one) gives the engine's status: a rejected order never becomes an open row, so
    this is how a caller that did not wait learns it was REJECTED and why."""
    row = await _order_row(res, order_id, user)
    if row is not None:
        return row_response(row), row.symbol
    record = await res.store.get(order_id)
    if record is not None and record.user_id == user and record.response is not None:
        response = record.response
        if response.get("status") == "PENDING" and feed is not None:
            first = await feed.first_execution(order_id, 0.0)  # remembered only, no wait
            if first is not None:
                response = _apply_first(response, first)
        return response, record.symbol
    raise NotFoundError("order not found", {"order_id": order_id}, code="ORDER_NOT_FOUND")


async def _find_by_client_id(
    res: Resources, client_order_id: str, user: str, feed: ExecutionFeed | None
) -> tuple[dict[str, Any], str]:
    record = await res.store.by_client_id(user, client_order_id)
    if record is not None and record.user_id == user:
        return await _find(res, record.order_id, user, feed)
    try:
        order = await _history(res).order_by_client_id(client_order_id, user)
    except DB_UNAVAILABLE as exc:
        raise db_unavailable(exc) from None
    if order is None:
        raise NotFoundError(
            "order not found", {"client_order_id": client_order_id}, code="ORDER_NOT_FOUND"
        )
    return row_response(order), order.symbol


def _path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    return parse_id(value, name)


def parse_id(value: str, name: str) -> str:
    if not _ID.fullmatch(value):
        raise NotFoundError("order not found", {name: value[:64]}, code="ORDER_NOT_FOUND")
    return value


async def get_order(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    res = request.app[RESOURCES]
    response, _ = await _find(
        res, _path_id(request, "order_id"), _user(principal), request.app.get(EXECUTION_FEED)
    )
    return respond(response)


async def get_order_by_client_id(
    request: web.Request, principal: Principal | None
) -> web.StreamResponse:
    res = request.app[RESOURCES]
    coid = _path_id(request, "client_order_id")
    response, _ = await _find_by_client_id(
        res, coid, _user(principal), request.app.get(EXECUTION_FEED)
    )
    return respond(response)


async def open_orders(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    res = request.app[RESOURCES]
    params = query(request, SymbolQuery)
    user = _user(principal)
    if params.symbol is not None:
        symbol_rules(res, params.symbol)
    try:
        rows = await _history(res).open_orders(user, params.symbol)
    except DB_UNAVAILABLE as exc:
        raise db_unavailable(exc) from None
    items = [row_response(row) for row in rows]
    return respond({"items": items, "next_cursor": None})


def history_window(params: HistoryQuery, days: int) -> tuple[datetime, datetime | None]:
    since = params.since or datetime.now(UTC) - timedelta(days=days)
    if params.until is not None and params.until <= since:
        raise BadRequestError("until must be after since", code="VALIDATION_ERROR")
    if params.cursor is not None:
        try:
            at, _ = decode_cursor(params.cursor)
            if at.tzinfo is None or not datetime(2000, 1, 1, tzinfo=UTC) <= at <= datetime(
                9000, 1, 1, tzinfo=UTC
            ):
                raise ValueError("cursor time out of range")
        except (ValueError, TypeError, OverflowError):
            raise BadRequestError("invalid cursor", code="VALIDATION_INVALID_CURSOR") from None
    return since, params.until


async def order_history(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    res = request.app[RESOURCES]
    params = query(request, HistoryQuery)
    symbol_rules(res, params.symbol)
    since, until = history_window(params, request.app[SETTINGS].gateway.history_days)
    try:
        page = await _history(res).list_orders(
            _user(principal), params.symbol, since, until, limit=params.limit, cursor=params.cursor
        )
    except DB_UNAVAILABLE as exc:
        raise db_unavailable(exc) from None
    result = OrderPage(
        items=[OrderResponse.model_validate(row_response(o)) for o in page.items],
        next_cursor=page.next_cursor,
    )
    return respond(result)


# --- cancel, amend, mass cancel ----------------------------------------------------------


async def _submit(res: Resources, command: CommandModel, cmd: str) -> None:
    try:
        await res.producer.send(command)
    except BaseException:
        metrics.ORDERS.labels(cmd, "failed").inc()
        raise
    metrics.ORDERS.labels(cmd, "accepted").inc()


def _ensure_open(response: dict[str, Any]) -> None:
    if response.get("status") in FINAL_STATUSES:
        raise ConflictError(
            f"order already {response['status']}",
            {"order_id": response.get("order_id"), "status": response.get("status")},
            code="ORDER_ALREADY_CLOSED",
        )


async def cancel_order(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    res = request.app[RESOURCES]
    user = _user(principal)
    response, symbol = await _find(
        res, _path_id(request, "order_id"), user, request.app.get(EXECUTION_FEED)
    )
    return await _cancel(res, response, symbol, user)


async def cancel_order_by_client_id(
    request: web.Request, principal: Principal | None
) -> web.StreamResponse:
    res = request.app[RESOURCES]
    user = _user(principal)
    coid = _path_id(request, "client_order_id")
    response, symbol = await _find_by_client_id(res, coid, user, request.app.get(EXECUTION_FEED))
    return await _cancel(res, response, symbol, user)


async def _cancel(
    res: Resources, response: dict[str, Any], symbol: str, user: str
) -> web.StreamResponse:
    _ensure_open(response)
    order_id = str(response["order_id"])
    await _submit(res, build_cancel(symbol=symbol, user_id=user, order_id=order_id), "cancel")
    result = CommandResponse(
        request="CANCEL",
        symbols=[symbol],
        order_id=order_id,
        client_order_id=response.get("client_order_id"),
    )
    return respond(result, 202)


async def amend_order(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    res = request.app[RESOURCES]
    user = _user(principal)
    order_id = _path_id(request, "order_id")
    req = await body(request, AmendOrderRequest)
    if req.quantity is None and req.price is None:
        raise BadRequestError(
            "send a new quantity, a new price or both", code="VALIDATION_AMEND_NOTHING"
        )
    response, symbol = await _find(res, order_id, user, request.app.get(EXECUTION_FEED))
    _ensure_open(response)
    rules = symbol_rules(res, symbol)
    try:
        if req.price is not None:
            rules.price_scale.parse(req.price)
        if req.quantity is not None:
            rules.qty_scale.parse(req.quantity)
    except NumberFormatError as exc:
        raise BadRequestError(_grid_message(exc, rules), code=exc.reject.value) from None
    command = build_amend(
        symbol=symbol, user_id=user, order_id=order_id, quantity=req.quantity, price=req.price
    )
    await _submit(res, command, "amend")
    return respond(CommandResponse(request="AMEND", symbols=[symbol], order_id=order_id), 202)


async def mass_cancel(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    res = request.app[RESOURCES]
    user = _user(principal)
    params = query(request, MassCancelQuery)
    if params.symbol is not None:
        symbols = [symbol_rules(res, params.symbol).symbol]
    else:
        symbols = sorted(res.rules)
    commands = [build_mass_cancel(symbol=s, user_id=user, side=params.side) for s in symbols]
    await asyncio.gather(*(_submit(res, c, "mass_cancel") for c in commands))
    return respond(CommandResponse(request="MASS_CANCEL", symbols=symbols), 202)


def _user(principal: Principal | None) -> str:
    assert principal is not None, "route registered without authentication"
    return principal.user_id
