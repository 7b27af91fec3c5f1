"""The gateway's Kafka followers: background consumers that feed the hub and REST.

Two confluent-kafka consumers run in threads (the client blocks) and hand
batches of records to the event loop:

- ``ExecutionFollower``: ``te.executions`` from its end. It remembers each
  order's first answer (ACCEPTED or REJECTED) for REST callers that wait on it
  (``first_execution``, used by ``orders.py``) and publishes every user's
  order updates and fills to that user's private channel;
- ``MarketDataFollower``: ``te.trades`` from its end; the ``te.md.*`` topics
  from the latest snapshot on. It keeps each symbol's depth book, recent
  candles and ticker for the REST snapshots and publishes every message to
  its public channel.

Each record is decoded once (``streams.execution_records`` for executions and
trades) and serialised once for every subscriber.
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
from typing import Any

from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter

from trade_engine.config import Settings
from trade_engine.connectors.gateway.hub import Hub
from trade_engine.streams import clients
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.execution_records import (
    AcceptedExecution,
    ExecutionRecord,
    RejectedExecution,
    TradeExecution,
    decode_execution,
    decode_trade,
    execution_wire,
    trade_wire,
)
from trade_engine.tables.market_data import DepthSync, ResyncNeededError

log = logging.getLogger(__name__)

CANDLES_KEPT = 1440
RECENT_FIRST = 20_000  # first answers kept for REST callers that ask after they arrived

FOLLOWED = Counter(
    "te_gateway_feed_records_total", "Records read by the gateway's followers", ["topic"]
)
RESYNCS = Counter("te_gateway_depth_resyncs_total", "Depth books that lost continuity")

FirstAnswer = AcceptedExecution | RejectedExecution
Batch = list[tuple[str, bytes | None, bytes, int]]  # (topic, key, value, timestamp ms)


class Follower:
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
            # A waiting fetch is answered as soon as a record is committed: a longer wait
            # costs no latency, only fewer empty fetches while the market is quiet.
            **{"fetch.wait.max.ms": 100},
        )

    def assignment(self, consumer: Consumer) -> list[TopicPartition]:
        raise NotImplementedError

    def handle(self, records: Batch) -> None:
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

    def _handle_safely(self, batch: Batch) -> None:
        try:
            self.handle(batch)
        except Exception:
            log.exception("gateway follower failed on a batch", extra={"follower": self.name})


def end_offsets(consumer: Consumer, topic: str, attempts: int = 20) -> list[TopicPartition]:
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


class ExecutionFollower(Follower):
    """``te.executions`` from its end: first answers for REST, order updates for ``orders``."""

    name = "execution-feed"

    def __init__(self, settings: Settings, hub: Hub) -> None:
        super().__init__(settings)
        self.hub = hub
        self.topic = settings.topic_names["executions"]
        self.first: OrderedDict[str, FirstAnswer] = OrderedDict()
        self.waiters: dict[str, list[asyncio.Future[FirstAnswer]]] = {}

    def assignment(self, consumer: Consumer) -> list[TopicPartition]:
        return end_offsets(consumer, self.topic)

    async def first_execution(self, order_id: str, timeout_s: float) -> FirstAnswer | None:
        found = self.first.get(order_id)
        if found is not None:
            return found
        future: asyncio.Future[FirstAnswer] = asyncio.get_running_loop().create_future()
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

    def handle(self, records: Batch) -> None:
        for _, _, value, _ in records:
            try:
                record = decode_execution(value)
            except DecodeError as exc:
                log.warning("undecodable execution skipped", extra={"reason": str(exc)[:300]})
                continue
            self._first(record)
            # Every execution passes here; most concern users with no socket open, and
            # building their updates was most of the gateway's CPU per order.
            if not any(self.hub.listens_privately(user) for user in _users(record)):
                continue
            for user, update in private_updates(record):
                self.hub.publish_private(user, json.dumps(update, separators=(",", ":")))

    def _first(self, record: ExecutionRecord) -> None:
        if not isinstance(record, AcceptedExecution | RejectedExecution):
            return
        order_id = record.order_id
        if order_id is None or order_id in self.first:
            return
        self.first[order_id] = record
        if len(self.first) > RECENT_FIRST:
            self.first.popitem(last=False)
        for future in self.waiters.pop(order_id, []):
            if not future.done():
                future.set_result(record)


def private_updates(record: ExecutionRecord) -> list[tuple[str, dict[str, Any]]]:
    """(user, message) for each user an execution concerns; a trade becomes one fill per side,
    without the counterparty's ids. An order update is the record's wire form minus ``input``."""
    msg = execution_wire(record)
    if isinstance(record, TradeExecution):
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
    if not isinstance(user, str):
        return []
    return [(user, {"type": "order_update", **{k: v for k, v in msg.items() if k != "input"}})]


def _users(record: ExecutionRecord) -> tuple[str, ...]:
    """The users an execution's private updates go to (``private_updates``' recipients)."""
    if isinstance(record, TradeExecution):
        return (record.taker_user_id, record.maker_user_id)
    user = getattr(record, "user_id", None)
    return (user,) if isinstance(user, str) else ()


def _other(side: str) -> str:
    return "SELL" if side == "BUY" else "BUY"


class MarketDataFollower(Follower):
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
            for t in end_offsets(consumer, topic)
        ]
        out.extend(end_offsets(consumer, self.trades_topic))
        oldest = self._oldest_latest_snapshot_ms(consumer)
        depth = end_offsets(consumer, self.depth_topic)
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
            ends = end_offsets(reader, self.snapshot_topic)
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

    def handle(self, records: Batch) -> None:
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
        try:
            t = trade_wire(decode_trade(value))
        except DecodeError as exc:
            log.warning("undecodable trade skipped", extra={"reason": str(exc)[:300]})
            return
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


MARKET: web.AppKey[MarketDataFollower] = web.AppKey("market_data", MarketDataFollower)
