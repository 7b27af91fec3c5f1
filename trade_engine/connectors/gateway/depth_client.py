"""A reference client of the depth channel: the documented resync procedure, over the wire.

``DepthClient(session, base_url, symbol).run()`` subscribes to ``depth.<SYM>``
on ``/api/v1/ws``, buffers diffs, fetches ``GET /api/v1/depth/{symbol}`` and
then keeps ``book`` (a ``DepthSync``) equal to the engine's depth, starting over
with a new snapshot whenever a diff does not continue the book
(docs/market-data.md, "Keeping a local book"). Written for tests and as an
example for integrators; it uses only the public API.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from trade_engine.tables.market_data import DepthSync, ResyncNeededError


class DepthClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, symbol: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.symbol = symbol
        self.book = DepthSync(symbol)
        self.snapshots_fetched = 0
        self.resyncs = 0
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        """Follow the channel until cancelled."""
        async with self.session.ws_connect(f"{self.base_url}/api/v1/ws") as ws:
            await ws.send_json({"op": "subscribe", "channels": [f"depth.{self.symbol}"], "id": 1})
            snapshot_task: asyncio.Task[None] | None = None
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("type") == "subscribed":
                    self.subscribed.set()
                    snapshot_task = asyncio.create_task(self._snapshot())
                    continue
                if data.get("type") == "error":
                    raise RuntimeError(f"depth channel refused: {data}")
                if "channel" not in data:
                    continue
                try:
                    self.book.on_update(data["data"])
                except ResyncNeededError:
                    self.resyncs += 1  # the book was cleared: buffer again, fetch again
                    snapshot_task = asyncio.create_task(self._snapshot())
            if snapshot_task is not None:
                snapshot_task.cancel()

    async def _snapshot(self) -> None:
        """Fetch snapshots until one continues the buffered diffs."""
        url = f"{self.base_url}/api/v1/depth/{self.symbol.replace('/', '-')}?limit=5000"
        while not self.book.synced:
            async with self.session.get(url) as response:
                body: dict[str, Any] = await response.json()
            if response.status == 200:
                self.snapshots_fetched += 1
                try:
                    self.book.on_snapshot(body)
                except ResyncNeededError:
                    pass  # older than the first buffered diff: ask again
                else:
                    return
            await asyncio.sleep(0.2)
