"""A confirming AMQP publisher: one connection, one channel in confirm mode, on the caller's loop.

pika's ``AsyncioConnection`` runs on the running asyncio loop. ``publish`` only
frames a message into the connection's write buffer (no task and no future per
message), the loop flushes the buffer, and ``wait_for_confirms`` waits until the
broker has acked every message published so far, honouring ``multiple=True``.
That costs about 20-25 µs of CPU per message where aio-pika (a future, a task and
a write per message) costs about 190 µs (DESIGN §9).

What it must never do: report a message as confirmed that the broker did not
ack. A basic.nack, a closed channel or connection, or the timeout fails the
wait, and the publisher stays failed: it is one connection's lifetime, so the
caller closes it and connects a new one, whose delivery tags start again at 1.
It never retries or republishes by itself; what to publish again is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel
from pika.exceptions import AMQPError
from pika.spec import Basic, BasicProperties

from trade_engine.sinks.exceptions import (
    AmqpConnectionError,
    ConfirmTimeoutError,
    PublishNackedError,
    SinkError,
)

#: Seconds ``close`` waits for the broker's close-ok before it lets the connection go.
CLOSE_TIMEOUT_S = 5.0


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class ConfirmingPublisher:
    """One connection and its confirm-mode channel. ``connect`` opens one; after a failure
    (``is_open`` False) or ``close``, connect a new one."""

    def __init__(self, connection: AsyncioConnection, closed: asyncio.Future[None]) -> None:
        self._connection = connection
        self._closed = closed  # resolved when the connection is gone, whatever the cause
        self._channel: Channel | None = None
        self._failure: SinkError | None = None
        self._rpcs: set[asyncio.Future[Any]] = set()
        self._waiter: asyncio.Future[None] | None = None
        # The broker numbers a confirm-mode channel's publishes 1, 2, ...: the tag of the
        # last one published, every tag below ``_acked_below`` acked, and tags above it
        # acked one by one (out of order) waiting for the gap to close.
        self._published = 0
        self._acked_below = 1
        self._acked_singly: set[int] = set()

    # ------------------------------------------------------------ lifetime

    @classmethod
    async def connect(
        cls, url: str, *, connection_name: str, timeout_s: float
    ) -> ConfirmingPublisher:
        """Connect, open a channel and select confirm mode; raises ``AmqpConnectionError``."""
        loop = asyncio.get_running_loop()
        parameters = pika.URLParameters(url)
        parameters.client_properties = {"connection_name": connection_name}
        parameters.connection_attempts = 1  # the caller retries, with its own backoff
        parameters.socket_timeout = timeout_s
        parameters.stack_timeout = timeout_s
        opened: asyncio.Future[None] = loop.create_future()
        closed: asyncio.Future[None] = loop.create_future()
        publisher: ConfirmingPublisher | None = None

        def on_open(_connection: AsyncioConnection) -> None:
            _settle(opened, None)

        def on_open_error(_connection: AsyncioConnection, error: BaseException | str) -> None:
            if not opened.done():
                opened.set_exception(AmqpConnectionError(f"cannot connect to rabbitmq: {error!r}"))
            _settle(closed, None)

        def on_close(_connection: AsyncioConnection, reason: BaseException) -> None:
            _settle(closed, None)
            if publisher is not None:
                publisher._fail(AmqpConnectionError(f"rabbitmq connection closed: {reason!r}"))

        connection = AsyncioConnection(
            parameters, on_open, on_open_error, on_close, custom_ioloop=loop
        )
        publisher = cls(connection, closed)
        try:
            async with asyncio.timeout(timeout_s):
                await opened
                await publisher._open_channel()
        except TimeoutError:
            await publisher.close()
            raise AmqpConnectionError(f"rabbitmq: no open channel after {timeout_s}s") from None
        except BaseException:
            await publisher.close()
            raise
        return publisher

    async def _open_channel(self) -> None:
        opened: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        self._rpcs.add(opened)  # a connection lost meanwhile fails it
        channel = self._connection.channel(on_open_callback=lambda ch: _settle(opened, ch))
        channel.add_on_close_callback(self._on_channel_closed)
        self._channel = channel
        try:
            await opened
        finally:
            self._rpcs.discard(opened)
        await self._rpc(lambda done: channel.confirm_delivery(self._on_confirm, callback=done))

    @property
    def is_open(self) -> bool:
        channel = self._channel
        return self._failure is None and channel is not None and bool(channel.is_open)

    async def close(self) -> None:
        """Close the connection (waits up to ``CLOSE_TIMEOUT_S`` for the broker); fails
        whatever still waits. Idempotent."""
        self._fail(AmqpConnectionError("publisher closed"))
        connection = self._connection
        if not (connection.is_closed or connection.is_closing):
            # Already closing underneath us: the wait below covers it.
            with contextlib.suppress(AMQPError):
                connection.close()
        if not connection.is_closed:
            # A dead peer may never answer: pika drops the socket when its own timers fire.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.shield(self._closed)

    # ------------------------------------------------------------ topology

    async def declare_exchange(self, name: str, kind: str, *, durable: bool) -> None:
        channel = self._open_channel_or_raise()
        await self._rpc(
            lambda done: channel.exchange_declare(
                name, exchange_type=kind, durable=durable, callback=done
            )
        )

    async def declare_queue(
        self, name: str, *, durable: bool, arguments: Mapping[str, Any] | None = None
    ) -> None:
        channel = self._open_channel_or_raise()
        await self._rpc(
            lambda done: channel.queue_declare(
                name, durable=durable, arguments=dict(arguments or {}), callback=done
            )
        )

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        channel = self._open_channel_or_raise()
        await self._rpc(
            lambda done: channel.queue_bind(queue, exchange, routing_key=routing_key, callback=done)
        )

    # ------------------------------------------------------------ publishing

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: BasicProperties
    ) -> None:
        """Frame one message into the write buffer; the loop sends it. Never waits.

        ``mandatory`` stays off, as it always was here: an unroutable message (an
        ``order.events`` key nobody binds) is acked by the broker and dropped."""
        channel = self._open_channel_or_raise()
        try:
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=False)
        except AMQPError as exc:
            raise self._fail(AmqpConnectionError(f"publish failed: {exc!r}")) from exc
        self._published += 1

    async def wait_for_confirms(self, timeout_s: float) -> None:
        """Return once the broker has acked every message published on this connection;
        raise if any is nacked, the channel or connection closes, or ``timeout_s`` passes."""
        if self._failure is not None:
            raise self._failure
        if self._acked_below > self._published:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            unconfirmed = self._published - self._acked_below + 1 - len(self._acked_singly)
            raise self._fail(
                ConfirmTimeoutError(f"{unconfirmed} message(s) unconfirmed after {timeout_s}s")
            ) from None
        finally:
            self._waiter = None

    # ------------------------------------------------------------ callbacks (pika's)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag: int = method.delivery_tag
        if isinstance(method, Basic.Nack):
            self._fail(PublishNackedError(f"basic.nack tag={tag} multiple={method.multiple}"))
            return
        if method.multiple:
            if tag >= self._acked_below:
                self._acked_below = tag + 1
                if self._acked_singly:
                    self._acked_singly = {t for t in self._acked_singly if t > tag}
        elif tag == self._acked_below:
            self._acked_below += 1
        elif tag > self._acked_below:
            self._acked_singly.add(tag)
        while self._acked_below in self._acked_singly:
            self._acked_singly.remove(self._acked_below)
            self._acked_below += 1
        waiter = self._waiter
        if waiter is not None and self._acked_below > self._published:
            _settle(waiter, None)

    def _on_channel_closed(self, _channel: Channel, reason: BaseException) -> None:
        self._fail(AmqpConnectionError(f"rabbitmq channel closed: {reason!r}"))

    # ------------------------------------------------------------ helpers

    def _open_channel_or_raise(self) -> Channel:
        if self._failure is not None:
            raise self._failure
        if self._channel is None:
            raise AmqpConnectionError("rabbitmq channel not open")
        return self._channel

    async def _rpc(self, call: Callable[[Callable[[Any], None]], None]) -> Any:
        """Send one synchronous AMQP method; its ok-frame, or the failure that closed the
        channel or connection first (pika never calls back on a closed channel)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._rpcs.add(future)
        try:
            try:
                call(lambda frame: _settle(future, frame))
            except AMQPError as exc:
                raise self._fail(AmqpConnectionError(f"rabbitmq call failed: {exc!r}")) from exc
            return await future
        finally:
            self._rpcs.discard(future)

    def _fail(self, error: SinkError) -> SinkError:
        """Record the first failure, fail everything waiting; returns the recorded one."""
        if self._failure is None:
            self._failure = error
        failure = self._failure
        for future in (*self._rpcs, self._waiter):
            if future is not None and not future.done():
                future.set_exception(failure)
        return failure
