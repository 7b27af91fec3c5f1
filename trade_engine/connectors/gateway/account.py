"""The caller's trades (Postgres history, keyset pages) and balances (proxied from the wallet)."""

from __future__ import annotations

from aiohttp import web

from trade_engine.connectors.gateway.common import (
    DB_UNAVAILABLE,
    RESOURCES,
    db_unavailable,
    query,
    respond,
    symbol_rules,
)
from trade_engine.connectors.gateway.context import SETTINGS, Principal
from trade_engine.connectors.gateway.exceptions import UnavailableError
from trade_engine.connectors.gateway.models import (
    AssetBalance,
    BalancesResponse,
    HistoryQuery,
    TradePage,
    TradeResponse,
)
from trade_engine.connectors.gateway.orders import history_window
from trade_engine.connectors.wallet.exceptions import NotFoundError as WalletNotFound
from trade_engine.connectors.wallet.exceptions import WalletError
from trade_engine.connectors.wallet.models import format_amount
from trade_engine.sinks.read_model import Repository


async def my_trades(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    assert principal is not None
    res = request.app[RESOURCES]
    params = query(request, HistoryQuery)
    symbol_rules(res, params.symbol)
    since, until = history_window(params, request.app[SETTINGS].gateway.history_days)
    repo = Repository(res.pool, res.schema)
    try:
        page = await repo.list_trades(
            principal.user_id,
            params.symbol,
            since,
            until,
            limit=params.limit,
            cursor=params.cursor,
        )
    except DB_UNAVAILABLE as exc:
        raise db_unavailable(exc) from None
    items = [
        TradeResponse(
            trade_id=t.trade_id,
            symbol=t.symbol,
            order_id=t.order_id,
            side=t.side,  # type: ignore[arg-type]
            price=format(t.price, "f"),
            quantity=format(t.quantity, "f"),
            quote_quantity=format(t.quote_quantity, "f"),
            fee=format(t.fee, "f"),
            fee_asset=t.fee_asset,
            is_maker=t.is_maker,
            executed_at=t.executed_at,
        )
        for t in page.items
    ]
    return respond(TradePage(items=items, next_cursor=page.next_cursor))


async def balances(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    assert principal is not None
    wallet = request.app[RESOURCES].wallet
    try:
        answer = await wallet.balances(principal.user_id)
    except WalletNotFound:
        return respond(BalancesResponse(user_id=principal.user_id, balances={}))
    except WalletError as exc:
        raise UnavailableError(
            f"wallet service: {exc.message}", {"wallet_code": exc.code}, code="WALLET_UNAVAILABLE"
        ) from None
    result = BalancesResponse(
        user_id=principal.user_id,
        balances={
            asset: AssetBalance(
                available=format_amount(b.available), reserved=format_amount(b.reserved)
            )
            for asset, b in sorted(answer.balances.items())
        },
    )
    return respond(result)
