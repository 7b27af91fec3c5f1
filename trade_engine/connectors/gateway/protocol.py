"""The WebSocket: its message protocol, and the wiring of the gateway's market-data half.

``GET /api/v1/ws`` (protocol in docs/market-data.md): public channels
``trades.<SYM>``, ``depth.<SYM>``, ``candles.<SYM>``, ``ticker.<SYM>``; the
private ``orders`` channel after an ``auth`` message with a JWT. Each client
message gets one reply (``pong``, ``authenticated``, ``subscribed``,
``unsubscribed`` or ``error`` with a stable code); what the channels carry is
sent by the hub (``hub.py``), fed by the Kafka followers (``feeds.py``).

``setup_market_data(app)`` registers, on an app holding ``SETTINGS`` and
``AUTHENTICATOR``, the hub, the followers (``app[EXECUTION_FEED]`` is the one
follower of ``te.executions`` that REST waits on) and, with ``routes``, the
WebSocket and the REST snapshots (``snapshots.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import Gauge

from trade_engine.connectors.gateway import snapshots
from trade_engine.connectors.gateway.context import AUTHENTICATOR, EXECUTION_FEED, SETTINGS
from trade_engine.connectors.gateway.feeds import MARKET, ExecutionFollower, MarketDataFollower
from trade_engine.connectors.gateway.hub import HUB, Client, Hub, private_channel, public_name
from trade_engine.errors import TradeEngineError

API = "/api/v1"
HEARTBEAT_S = 20.0  # protocol pings; a peer that does not pong within half of it is closed
MAX_CHANNELS = 50
MAX_MESSAGE_BYTES = 16 * 1024
CLOSE_PROTOCOL = 4002
PUBLIC_KINDS = ("trades", "depth", "candles", "ticker")

CONNECTIONS = Gauge("te_gateway_ws_connections", "Open WebSocket connections")


class ChannelError(TradeEngineError):
    code = "WS_BAD_REQUEST"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    hub = request.app[HUB]
    client = Client(ws)
    sender = asyncio.create_task(_send(client))
    CONNECTIONS.inc()
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                await ws.close(code=CLOSE_PROTOCOL, message=b"text frames of JSON only")
                break
            reply = _on_message(request.app, hub, client, msg.data)
            hub.offer(client, json.dumps(reply, separators=(",", ":")))
    finally:
        CONNECTIONS.dec()
        hub.remove(client)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return ws


async def _send(client: Client) -> None:
    ws = client.ws
    while not ws.closed:
        text = await client.queue.get()
        try:
            await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return


def _on_message(app: web.Application, hub: Hub, client: Client, text: str) -> dict[str, Any]:
    """The reply to one client message (an ``error`` reply for anything unusable)."""
    request_id: Any = None
    try:
        msg = json.loads(text)
        if not isinstance(msg, dict):
            raise ChannelError("WS_BAD_MESSAGE", "messages are JSON objects")
        request_id = msg.get("id")
        op = msg.get("op")
        if op == "ping":
            return {"type": "pong", "id": request_id}
        if op == "auth":
            return {"type": "authenticated", "id": request_id, **_auth(app, hub, client, msg)}
        if op in ("subscribe", "unsubscribe"):
            channels = _subscription(app, hub, client, msg, subscribe=op == "subscribe")
            return {"type": f"{op}d", "id": request_id, "channels": channels}
        raise ChannelError("WS_UNKNOWN_OP", f"unknown op {op!r}")
    except ValueError:
        return {"type": "error", "id": None, "code": "WS_BAD_MESSAGE", "message": "not JSON"}
    except ChannelError as exc:
        return {"type": "error", "id": request_id, "code": exc.code, "message": str(exc)}


def _auth(app: web.Application, hub: Hub, client: Client, msg: dict[str, Any]) -> dict[str, Any]:
    token = msg.get("token")
    if not isinstance(token, str):
        raise ChannelError("AUTH_MISSING_TOKEN", "auth needs a token")
    try:
        principal = app[AUTHENTICATOR].verify(token)
    except TradeEngineError as exc:
        raise ChannelError(exc.code, str(exc)) from None
    if client.user_id is not None and client.user_id != principal.user_id:
        hub.unsubscribe(client, private_channel(client.user_id))  # another user's token
    client.user_id = principal.user_id
    return {"user_id": principal.user_id}


def _subscription(
    app: web.Application, hub: Hub, client: Client, msg: dict[str, Any], *, subscribe: bool
) -> list[str]:
    channels = msg.get("channels")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ChannelError("WS_BAD_MESSAGE", "channels must be a list of names")
    names = [_channel(app, client, c) for c in channels]
    if subscribe:
        if len(client.channels | set(names)) > MAX_CHANNELS:
            raise ChannelError("WS_TOO_MANY_CHANNELS", f"at most {MAX_CHANNELS} channels")
        for name in names:
            hub.subscribe(client, name)
    else:
        for name in names:
            hub.unsubscribe(client, name)
    return sorted(public_name(c) for c in client.channels)


def _channel(app: web.Application, client: Client, name: str) -> str:
    """The hub's name of a channel the client asked for, or ``ChannelError``."""
    if name == "orders":
        if client.user_id is None:
            raise ChannelError("AUTH_REQUIRED", "send an auth message before subscribing to orders")
        return private_channel(client.user_id)
    kind, _, text = name.partition(".")
    if kind not in PUBLIC_KINDS or not text:
        raise ChannelError("WS_UNKNOWN_CHANNEL", f"unknown channel {name!r}")
    symbol = snapshots.canonical_symbol(app[SETTINGS], text)
    if symbol is None:
        raise ChannelError(snapshots.UNKNOWN_SYMBOL, f"unknown symbol {text!r}")
    return f"{kind}.{symbol}"


def setup_market_data(app: web.Application, *, routes: bool = True) -> None:
    """Register the execution feed and, with ``routes``, the WebSocket and the market-data
    REST routes on ``app``.

    Needs ``app[SETTINGS]`` and ``app[AUTHENTICATOR]``; the Kafka followers start
    with the app and stop with it. The gateway's ``create_app`` passes ``routes=False``:
    its route table registers the same handlers behind its rate limits and documents
    them in the OpenAPI document.
    """
    settings = app[SETTINGS]
    hub = Hub()
    executions = ExecutionFollower(settings, hub)
    market = MarketDataFollower(settings, hub)
    app[HUB] = hub
    app[MARKET] = market
    app[EXECUTION_FEED] = executions
    if routes:
        symbol = snapshots.SYMBOL_PARAM
        app.router.add_get(f"{API}/ws", websocket)
        app.router.add_get(f"{API}/depth/{symbol}", snapshots.depth_snapshot)
        app.router.add_get(f"{API}/candles/{symbol}", snapshots.candles)
        app.router.add_get(f"{API}/ticker/{symbol}", snapshots.ticker)

    async def followers(app: web.Application) -> AsyncIterator[None]:
        await executions.start()
        await market.start()
        try:
            yield
        finally:
            await market.stop()
            await executions.stop()

    app.cleanup_ctx.append(followers)
