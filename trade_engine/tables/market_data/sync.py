"""A local copy of one symbol's depth: a snapshot plus diffs, with the resync rules.

This is the reader's side of ``depth`` (docs/market-data.md, "Keeping a local
book"), written once and used by the gateway (snapshot topic + diff topic) and
by clients of the WebSocket (REST snapshot + ``depth.<SYM>`` channel):

1. Buffer diffs while no snapshot is applied.
2. Apply a snapshot (``lastUpdateId`` = L); drop buffered diffs with ``u <= L``.
3. The first diff applied must have ``U <= L + 1 <= u``; if the oldest buffered
   diff starts after L + 1 the snapshot is older than the buffer: fetch another.
4. Every later diff must have ``U`` = the previous ``u`` + 1; anything else is a
   gap (``ResyncNeededError``): clear and start again from 1.

Quantities are absolute (a level's new total); ``"0"`` removes the level.
Prices and quantities stay the decimal strings of the wire, compared as
``Decimal`` only to order the levels.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from trade_engine.tables.market_data.exceptions import ResyncNeededError

MAX_BUFFER = 10_000


class DepthSync:
    __slots__ = ("asks", "bids", "buffer", "last_update_id", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.last_update_id: int | None = None  # None until a snapshot is applied
        self.buffer: list[dict[str, Any]] = []

    @property
    def synced(self) -> bool:
        return self.last_update_id is not None

    def reset(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.last_update_id = None
        self.buffer.clear()

    def on_update(self, msg: dict[str, Any]) -> bool:
        """Take one ``depth_update``; True if it changed the book.

        Raises ``ResyncNeededError`` on a gap (the book is then cleared).
        """
        if self.last_update_id is None:
            if len(self.buffer) >= MAX_BUFFER:
                self.buffer.pop(0)  # the snapshot will be asked for again if this mattered
            self.buffer.append(msg)
            return False
        return self._apply(msg)

    def on_snapshot(self, snap: dict[str, Any]) -> None:
        """Apply a snapshot, then the buffered diffs after it (rules 2 and 3)."""
        last = int(snap["lastUpdateId"])
        pending = [m for m in self.buffer if int(m["u"]) > last]
        if pending and int(pending[0]["U"]) > last + 1:
            # Keep the buffer: a newer snapshot will cover the gap.
            raise ResyncNeededError(
                f"{self.symbol}: snapshot {last} is older than the first buffered diff "
                f"U={pending[0]['U']}"
            )
        self.bids = {p: q for p, q in snap["bids"]}
        self.asks = {p: q for p, q in snap["asks"]}
        self.last_update_id = last
        self.buffer.clear()
        for msg in pending:
            self._apply(msg)

    def _apply(self, msg: dict[str, Any]) -> bool:
        first, final = int(msg["U"]), int(msg["u"])
        last = self.last_update_id
        assert last is not None
        if final <= last:
            return False  # already covered by the snapshot
        if not first <= last + 1 <= final:
            self.reset()
            raise ResyncNeededError(f"{self.symbol}: diff U={first} after {last}: a gap")
        for side, book in (("bids", self.bids), ("asks", self.asks)):
            for price, qty in msg[side]:
                if Decimal(qty) == 0:
                    book.pop(price, None)
                else:
                    book[price] = qty
        self.last_update_id = final
        return True

    def levels(self, side: str, limit: int | None = None) -> list[list[str]]:
        """``[[price, qty], ...]`` of ``"bids"`` (high to low) or ``"asks"`` (low to high)."""
        book = self.bids if side == "bids" else self.asks
        ordered = sorted(book.items(), key=lambda item: Decimal(item[0]), reverse=side == "bids")
        if limit is not None:
            ordered = ordered[:limit]
        return [[p, q] for p, q in ordered]

    def snapshot(self, limit: int | None = None) -> dict[str, Any]:
        """The local book in the REST snapshot's shape."""
        return {
            "symbol": self.symbol,
            "lastUpdateId": self.last_update_id,
            "bids": self.levels("bids", limit),
            "asks": self.levels("asks", limit),
        }
