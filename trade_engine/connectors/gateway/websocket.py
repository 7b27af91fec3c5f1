"""Market data and private order updates for people: WebSocket channels and REST snapshots.

``setup_market_data(app)`` registers, on an app holding ``SETTINGS`` and
``AUTHENTICATOR``:

- ``GET /api/v1/ws``: the WebSocket (protocol in docs/market-data.md). Public
  channels ``trades.<SYM>``, ``depth.<SYM>``, ``candles.<SYM>``, ``ticker.<SYM>``;
  the private ``orders`` channel after an ``auth`` message with a JWT;
- ``GET /api/v1/depth/{symbol}`` (snapshot with ``lastUpdateId``),
  ``GET /api/v1/candles/{symbol}``, ``GET /api/v1/ticker/{symbol}``;
- ``app[EXECUTION_FEED]``: the one follower of ``te.executions`` that REST
  waits on (``first_execution``) and the ``orders`` channel reads.

Two background confluent-kafka consumers (threads: the client blocks) hand
records to the event loop: ``ExecutionFollower`` (``te.executions`` from its
end) and ``MarketDataFollower`` (``te.trades`` from its end, the ``te.md.*``
topics from the latest snapshot on). Each message is serialised once and
offered to every subscriber's bounded queue; a subscriber whose queue is full
is disconnected (close code 4008) instead of slowing anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge

from trade_engine.config import Settings
from trade_engine.connectors.gateway.context import AUTHENTICATOR, EXECUTION_FEED, SETTINGS
from trade_engine.errors import TradeEngineError
from trade_engine.streams import clients
from trade_engine.tables.market_data import DepthSync, ResyncNeededError

log = logging.getLogger(__name__)

API = "/api/v1"
HEARTBEAT_S = 20.0  # protocol pings; a peer that does not pong within half of it is closed
SEND_QUEUE = 1000  # messages buffered per client before it counts as slow
MAX_CHANNELS = 50
MAX_MESSAGE_BYTES = 16 * 1024
CLOSE_SLOW_CONSUMER = 4008
CLOSE_PROTOCOL = 4002
CANDLES_KEPT = 1440
RECENT_FIRST = 20_000  # first answers kept for REST callers that ask after they arrived
PUBLIC_KINDS = ("trades", "depth", "candles", "ticker")
# aiohttp's pattern of the symbol in market-data paths: BTC-USDT, BTC_USDT or BTC/USDT.
SYMBOL_PARAM = "{symbol:[A-Za-z0-9]{1,16}[-_/][A-Za-z0-9]{1,16}}"

CONNECTIONS = Gauge("te_gateway_ws_connections", "Open WebSocket connections")
SENT = Counter("te_gateway_ws_messages_total", "Messages queued to WebSocket clients", ["channel"])
DROPPED = Counter(
    "te_gateway_ws_disconnects_total", "WebSocket clients closed by the gateway", ["reason"]
)
FOLLOWED = Counter(
    "te_gateway_feed_records_total", "Records read by the gateway's followers", ["topic"]
)
RESYNCS = Counter("te_gateway_depth_resyncs_total", "Depth books that lost continuity")


class ChannelError(TradeEngineError):
    code = "WS_BAD_REQUEST"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- fan-out


@dataclass(eq=False)
class Client:
    """One connection: its bounded send queue, channels and (after ``auth``) user."""

    ws: web.WebSocketResponse
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE))
    channels: set[str] = field(default_factory=set)
    user_id: str | None = None
    closing: bool = False


class Hub:
    """Channel -> clients; ``publish`` never waits on a client."""

    def __init__(self) -> None:
        self.channels: dict[str, set[Client]] = {}

    def subscribe(self, client: Client, channel: str) -> None:
        self.channels.setdefault(channel, set()).add(client)
        client.channels.add(channel)

    def unsubscribe(self, client: Client, channel: str) -> None:
        members = self.channels.get(channel)
        if members is not None:
            members.discard(client)
            if not members:
                del self.channels[channel]
        client.channels.discard(channel)

    def remove(self, client: Client) -> None:
        for channel in list(client.channels):
            self.unsubscribe(client, channel)

    def publish(self, channel: str, data: str) -> None:
        """``data`` is the JSON text of the message; wrapped once for every subscriber."""
        members = self.channels.get(channel)
        if not members:
            return
        text = f'{{"channel":{json.dumps(_public_name(channel))},"data":{data}}}'
        kind = channel.split(".", 1)[0]
        for client in list(members):
            self.offer(client, text, kind)

    def publish_private(self, user_id: str, data: str) -> None:
        self.publish(_private(user_id), data)

    def offer(self, client: Client, text: str, kind: str = "control") -> None:
        if client.closing:
            return
        try:
            client.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.drop(client, "slow_consumer")
            return
        SENT.labels(kind).inc()

    def drop(self, client: Client, reason: str) -> None:
        """Disconnect without waiting: the close runs in its own task."""
        client.closing = True
        self.remove(client)
        DROPPED.labels(reason).inc()
        message = b"slow consumer: messages were not read fast enough"
        task = asyncio.get_running_loop().create_task(
            client.ws.close(code=CLOSE_SLOW_CONSUMER, message=message)
        )
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[Any]] = set()


# ---------------------------------------------------------------- Kafka followers


class _Follower:
    """A confluent-kafka consumer in a thread, handing batches of records to the loop."""

    name = "follower"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.consumer: Consumer | None = None

    def _consumer(self) -> Consumer:
        return clients.reader(
            self.settings,
            f"{self.settings.topics.prefix}gateway-{uuid.uuid4().hex[:8]}",
            **{"fetch.wait.max.ms": 10},
        )

    def assignment(self, consumer: Consumer) -> list[TopicPartition]:
        raise NotImplementedError

    def handle(self, records: list[tuple[str, bytes | None, bytes, int]]) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        consumer = self.consumer = self._consumer()
        # Positions are resolved before the app serves: nothing answered after start is missed.
        assignment = await asyncio.to_thread(self.assignment, consumer)
        consumer.assign(assignment)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        if self.consumer is not None:
            self.consumer.close()

    def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        loop = self._loop
        assert loop is not None
        while not self._stop.is_set():
            messages = consumer.consume(1000, 0.1)
            batch = []
            for msg in messages:
                if msg.error() is not None:
                    continue
                value = msg.value()
                if value is None:
                    continue
                FOLLOWED.labels(msg.topic() or "").inc()
                key = msg.key()
                batch.append((msg.topic() or "", key, value, msg.timestamp()[1]))
            if batch:
                loop.call_soon_threadsafe(self._handle_safely, batch)

    def _handle_safely(self, batch: list[tuple[str, bytes | None, bytes, int]]) -> None:
        try:
            self.handle(batch)
        except Exception:
            log.exception("gateway follower failed on a batch", extra={"follower": self.name})


def _end_offsets(consumer: Consumer, topic: str, attempts: int = 20) -> list[TopicPartition]:
    """The end of every partition; retried while a new topic's leaders settle."""
    for attempt in range(attempts):
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            out = []
            for p in sorted(meta.partitions):
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                out.append(TopicPartition(topic, p, high if high >= 0 else OFFSET_END))
            return out
        except KafkaException:
            if attempt + 1 == attempts:  # NOT_LEADER is not flagged retriable, yet passes
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


class ExecutionFollower(_Follower):
    """``te.executions`` from its end: first answers for REST, order updates for ``orders``."""

    name = "execution-feed"

    def __init__(self, settings: Settings, hub: Hub) -> None:
        super().__init__(settings)
        self.hub = hub
        self.topic = settings.topic_names["executions"]
        self.first: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}

    def assignment(self, consumer: Consumer) -> list[TopicPartition]:
        return _end_offsets(consumer, self.topic)

    async def first_execution(self, order_id: str, timeout_s: float) -> dict[str, Any] | None:
        found = self.first.get(order_id)
        if found is not None:
            return found
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(order_id, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            waiting = self.waiters.get(order_id)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(future)
                if not waiting:
                    del self.waiters[order_id]

    def handle(self, records: list[tuple[str, bytes | None, bytes, int]]) -> None:
        for _, _, value, _ in records:
            msg = json.loads(value)
            if not isinstance(msg, dict):
                continue
            self._first(msg)
            for user, update in private_updates(msg):
                self.hub.publish_private(user, json.dumps(update, separators=(",", ":")))

    def _first(self, msg: dict[str, Any]) -> None:
        order_id = msg.get("order_id")
        if msg.get("kind") not in ("ACCEPTED", "REJECTED") or not isinstance(order_id, str):
            return
        if order_id in self.first:
            return
        self.first[order_id] = msg
        if len(self.first) > RECENT_FIRST:
            self.first.popitem(last=False)
        for future in self.waiters.pop(order_id, []):
            if not future.done():
                future.set_result(msg)


def private_updates(msg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(user, message) for each user an execution concerns; a trade becomes one fill per side,
    without the counterparty's ids."""
    kind = msg.get("kind")
    if kind == "TRADE":
        out = []
        for role, liquidity in (("taker", "TAKER"), ("maker", "MAKER")):
            side = msg["taker_side"] if role == "taker" else _other(msg["taker_side"])
            buyer = side == "BUY"
            out.append(
                (
                    msg[f"{role}_user_id"],
                    {
                        "type": "fill",
                        "symbol": msg["symbol"],
                        "seq": msg["seq"],
                        "trade_id": msg["trade_id"],
                        "order_id": msg[f"{role}_order_id"],
                        "side": side,
                        "liquidity": liquidity,
                        "price": msg["price"],
                        "quantity": msg["quantity"],
                        "quote_quantity": msg["quote_quantity"],
                        "fee": msg["buyer_fee"] if buyer else msg["seller_fee"],
                        "fee_asset": msg["buyer_fee_asset"] if buyer else msg["seller_fee_asset"],
                        "remaining": msg[f"{role}_remaining"],
                        "at": msg["at"],
                    },
                )
            )
        return out
    user = msg.get("user_id")
    if not isinstance(user, str) or kind == "TRADING_STATE":
        return []
    return [(user, {"type": "order_update", **{k: v for k, v in msg.items() if k != "input"}})]


def _other(side: str) -> str:
    return "SELL" if side == "BUY" else "BUY"


class MarketDataFollower(_Follower):
    """Public data: ``te.trades`` from its end; depth from the latest snapshot, then diffs."""

    name = "market-data-feed"

    def __init__(self, settings: Settings, hub: Hub) -> None:
        super().__init__(settings)
        self.hub = hub
        names = settings.topic_names
        self.trades_topic = names["trades"]
        self.depth_topic = names["md_depth"]
        self.snapshot_topic = names["md_depth_snapshot"]
        self.candles_topic = names["md_candles"]
        self.tickers_topic = names["md_tickers"]
        symbols = [spec.symbol for spec in settings.market.symbols]
        self.books: dict[str, DepthSync] = {symbol: DepthSync(symbol) for symbol in symbols}
        self.candles: dict[str, OrderedDict[str, dict[str, Any]]] = {
            symbol: OrderedDict() for symbol in self.books
        }
        self.tickers: dict[str, dict[str, Any]] = {}

    def assignment(self, consumer: Consumer) -> list[TopicPartition]:
        """Snapshots, candles and tickers from the start (compacted); trades from the end;
        depth diffs from shortly before the oldest latest snapshot, so none is missing."""
        out = [
            TopicPartition(t.topic, t.partition, OFFSET_BEGINNING)
            for topic in (self.snapshot_topic, self.candles_topic, self.tickers_topic)
            for t in _end_offsets(consumer, topic)
        ]
        out.extend(_end_offsets(consumer, self.trades_topic))
        oldest = self._oldest_latest_snapshot_ms(consumer)
        depth = _end_offsets(consumer, self.depth_topic)
        if oldest is None:
            out.extend(TopicPartition(t.topic, t.partition, OFFSET_BEGINNING) for t in depth)
        else:
            since = [TopicPartition(t.topic, t.partition, oldest - 5_000) for t in depth]
            for tp in consumer.offsets_for_times(since, timeout=10):
                out.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        return out

    def _oldest_latest_snapshot_ms(self, consumer: Consumer) -> int | None:
        """The log time of the oldest of the symbols' latest snapshots (reads the topic once)."""
        reader = self._consumer()
        try:
            ends = _end_offsets(reader, self.snapshot_topic)
            todo = {tp.partition: tp.offset for tp in ends if tp.offset > 0}
            if not todo:
                return None
            reader.assign([TopicPartition(self.snapshot_topic, p, OFFSET_BEGINNING) for p in todo])
            latest: dict[bytes, int] = {}
            deadline = time.monotonic() + 30
            while todo and time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.5):
                    partition, offset = msg.partition(), msg.offset()
                    if msg.error() is not None or partition is None or offset is None:
                        continue
                    latest[msg.key() or b""] = msg.timestamp()[1]
                    if offset + 1 >= todo.get(partition, 0):
                        todo.pop(partition, None)
            return min(latest.values()) if latest else None
        finally:
            reader.close()

    def handle(self, records: list[tuple[str, bytes | None, bytes, int]]) -> None:
        for topic, _, value, _ in records:
            if topic == self.trades_topic:
                self._trade(value)
                continue
            msg = json.loads(value)
            symbol = msg.get("symbol")
            if symbol not in self.books:
                continue
            if topic == self.depth_topic:
                self._depth(symbol, msg, value)
            elif topic == self.snapshot_topic:
                self._snapshot(symbol, msg)
            elif topic == self.candles_topic:
                kept = self.candles[symbol]
                kept[msg["open_time"]] = msg
                kept.move_to_end(msg["open_time"])
                while len(kept) > CANDLES_KEPT:
                    kept.popitem(last=False)
                self.hub.publish(f"candles.{symbol}", value.decode())
            elif topic == self.tickers_topic:
                self.tickers[symbol] = msg
                self.hub.publish(f"ticker.{symbol}", value.decode())

    def _trade(self, value: bytes) -> None:
        t = json.loads(value)
        public = {
            "type": "trade",
            "symbol": t["symbol"],
            "trade_id": t["trade_id"],
            "seq": t["seq"],
            "price": t["price"],
            "quantity": t["quantity"],
            "quote_quantity": t["quote_quantity"],
            "is_buyer_maker": t["is_buyer_maker"],
            "executed_at": t["executed_at"],
        }
        self.hub.publish(f"trades.{t['symbol']}", json.dumps(public, separators=(",", ":")))

    def _depth(self, symbol: str, msg: dict[str, Any], value: bytes) -> None:
        # Clients get every diff as it is and keep their own books (docs/market-data.md);
        # the gateway's book answers GET /depth with the same update ids.
        self.hub.publish(f"depth.{symbol}", value.decode())
        book = self.books[symbol]
        if not book.synced and not book.buffer and msg.get("U") == 1:
            # The topic still holds the symbol's first diff: the empty book is the snapshot.
            book.on_snapshot({"lastUpdateId": 0, "bids": [], "asks": []})
        try:
            book.on_update(msg)
        except ResyncNeededError as exc:
            RESYNCS.inc()
            log.warning("depth lost continuity; waiting for a snapshot", extra={"error": str(exc)})

    def _snapshot(self, symbol: str, msg: dict[str, Any]) -> None:
        book = self.books[symbol]
        if book.synced and int(msg["lastUpdateId"]) <= (book.last_update_id or 0):
            return
        if book.synced:
            book.reset()  # a newer snapshot is as good as the diffs it covers
        with contextlib.suppress(ResyncNeededError):  # older than the buffer: wait for the next
            book.on_snapshot(msg)


HUB: web.AppKey[Hub] = web.AppKey("market_data_hub", Hub)
MARKET: web.AppKey[MarketDataFollower] = web.AppKey("market_data", MarketDataFollower)


# -------------------------------------------------------------------- handlers


def _canonical(app: web.Application, text: str) -> str:
    """``BTC/USDT``, ``BTC-USDT`` or ``BTC_USDT`` -> the configured ``BTC/USDT``."""
    symbol = text.upper().replace("-", "/").replace("_", "/")
    if app[SETTINGS].market.get(symbol) is None:
        raise ChannelError("VALIDATION_UNKNOWN_SYMBOL", f"unknown symbol {text!r}")
    return symbol


def _error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    return web.json_response(
        {"error": message, "code": code, "details": details or {}}, status=status
    )


def _symbol_or_error(request: web.Request) -> str | web.Response:
    try:
        return _canonical(request.app, request.match_info["symbol"])
    except ChannelError as exc:
        return _error(400, exc.code, str(exc), {"symbol": request.match_info["symbol"]})


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
        hub.unsubscribe(client, _private(client.user_id))  # another user's token: start over
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
    return sorted(_public_name(c) for c in client.channels)


def _private(user_id: str) -> str:
    return f"orders:{user_id}"


def _public_name(channel: str) -> str:
    return "orders" if channel.startswith("orders:") else channel


def _channel(app: web.Application, client: Client, name: str) -> str:
    """The hub's name of a channel the client asked for, or ``ChannelError``."""
    if name == "orders":
        if client.user_id is None:
            raise ChannelError("AUTH_REQUIRED", "send an auth message before subscribing to orders")
        return _private(client.user_id)
    kind, _, symbol = name.partition(".")
    if kind not in PUBLIC_KINDS or not symbol:
        raise ChannelError("WS_UNKNOWN_CHANNEL", f"unknown channel {name!r}")
    return f"{kind}.{_canonical(app, symbol)}"


# ----------------------------------------------------------------------- wiring


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
        app.router.add_get(f"{API}/ws", websocket)
        app.router.add_get(f"{API}/depth/{SYMBOL_PARAM}", depth_snapshot)
        app.router.add_get(f"{API}/candles/{SYMBOL_PARAM}", candles)
        app.router.add_get(f"{API}/ticker/{SYMBOL_PARAM}", ticker)

    async def followers(app: web.Application) -> AsyncIterator[None]:
        await executions.start()
        await market.start()
        try:
            yield
        finally:
            await market.stop()
            await executions.stop()

    app.cleanup_ctx.append(followers)
