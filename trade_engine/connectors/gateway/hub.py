"""Fan-out of the gateway's WebSocket channels: which client follows what, and sending.

``Hub`` maps channel names to clients. ``publish`` wraps a message once and
offers it to every subscriber's bounded queue; it never waits on a client: a
client whose queue is full is disconnected (close code 4008) instead of
slowing anyone else. Channel names inside the hub are the public ones
(``trades.BTC/USDT``, ``depth.BTC/USDT`` ...) and ``orders:<user>`` for one
user's private order updates, shown to that user as ``orders``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter

SEND_QUEUE = 1000  # messages buffered per client before it counts as slow
CLOSE_SLOW_CONSUMER = 4008

SENT = Counter("te_gateway_ws_messages_total", "Messages queued to WebSocket clients", ["channel"])
DROPPED = Counter(
    "te_gateway_ws_disconnects_total", "WebSocket clients closed by the gateway", ["reason"]
)


def private_channel(user_id: str) -> str:
    """The hub's name of one user's order updates."""
    return f"orders:{user_id}"


def public_name(channel: str) -> str:
    """The name a client sees: ``orders`` for its own private channel."""
    return "orders" if channel.startswith("orders:") else channel


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
        text = f'{{"channel":{json.dumps(public_name(channel))},"data":{data}}}'
        kind = channel.split(".", 1)[0]
        for client in list(members):
            self.offer(client, text, kind)

    def publish_private(self, user_id: str, data: str) -> None:
        self.publish(private_channel(user_id), data)

    def listens_privately(self, user_id: str) -> bool:
        """Whether any client follows ``user_id``'s order updates."""
        return private_channel(user_id) in self.channels

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

HUB: web.AppKey[Hub] = web.AppKey("market_data_hub", Hub)
