"""The books of one input partition and their durable state.

State is kept per order, not per book, so a command writes a few small
entries (the orders it touched, the symbol's header, the dedup window's new
ids and the partition's input position) instead of rewriting a whole book.

Keys (UTF-8), values JSON:

- ``h|<symbol>``                 the engine header (seq, clock, last price, ...)
- ``o|<symbol>|<order_id>``      one live order; deleted (tombstone) when it ends
- ``r|<symbol>|<n:012d>``        the n-th order id of the dedup window
- ``p|position``                 the next input offset to apply for this partition

The same entries go to a compacted changelog topic inside the engine's Kafka
transaction (with the outputs and the input offsets), and to the local
RocksDB store once that transaction committed. The local store also keeps
``__changelog_offset__`` (never in the changelog) so a restart only reads the
changelog past what the local store already has.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from trade_engine.tables.matching.codes import RejectCode
from trade_engine.tables.matching.engine import MatchingEngine
from trade_engine.tables.matching.enums import RequestKind
from trade_engine.tables.matching.executions import (
    Accepted,
    Amended,
    Execution,
    OrderEnded,
    Rejected,
    StpPrevented,
    Trade,
    Triggered,
)
from trade_engine.tables.matching.rules import SymbolRules

POSITION_KEY = b"p|position"
CHANGELOG_OFFSET_KEY = b"__changelog_offset__"

Changes = dict[bytes, bytes | None]

# Record types whose order ids ``note`` reads directly (``order_id`` is never None
# on these; the taker and maker ids never are on the two-order ones).
_ONE_ORDER = frozenset({Accepted, Triggered, Amended, OrderEnded})
_TWO_ORDERS = frozenset({Trade, StpPrevented})


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class _SymbolBook:
    engine: MatchingEngine
    # Index of the next dedup-window entry; entries below (next - window) are deleted.
    recent_next: int = 0
    dirty_orders: dict[str, None] = field(default_factory=dict)
    new_recent: list[str] = field(default_factory=list)
    # Any record at all took a ``seq`` (a REJECTED one too): the header must be saved,
    # or a restart would hand that ``seq`` out again.
    header_dirty: bool = False


class PartitionBooks:
    """In-memory engines for the symbols of one partition, with their pending changes."""

    def __init__(self, partition: int, rules: dict[str, SymbolRules]) -> None:
        self.partition = partition
        self.rules = rules
        self.books: dict[str, _SymbolBook] = {}
        self.position = 0

    # ------------------------------------------------------------ matching

    def engine(self, symbol: str) -> MatchingEngine | None:
        book = self._book(symbol)
        return None if book is None else book.engine

    def _book(self, symbol: str) -> _SymbolBook | None:
        book = self.books.get(symbol)
        if book is None:
            rules = self.rules.get(symbol)
            if rules is None:
                return None
            book = self.books[symbol] = _SymbolBook(MatchingEngine(rules))
        return book

    def note(self, symbol: str, records: Iterable[Execution]) -> None:
        """Remember what ``records`` changed so ``take_changes`` can persist it."""
        book = self.books[symbol]
        dirty = book.dirty_orders
        for r in records:
            book.header_dirty = True
            # Hot path by exact type (same effect as _touched, in the same order).
            cls = type(r)
            if cls is Rejected:
                # A refused command changes no order, but a refused first place joins
                # the dedup window exactly as the engine's ``_refuse_place`` does.
                if _remembers(r):  # type: ignore[arg-type]
                    book.new_recent.append(r.order_id)  # type: ignore[union-attr,arg-type]
                continue
            if cls in _ONE_ORDER:
                dirty[r.order_id] = None  # type: ignore[union-attr,index]
                if cls is Accepted:
                    book.new_recent.append(r.order_id)  # type: ignore[union-attr,arg-type]
            elif cls in _TWO_ORDERS:
                dirty[r.taker_order_id] = None  # type: ignore[union-attr]
                dirty[r.maker_order_id] = None  # type: ignore[union-attr]
            else:
                for order_id in _touched(r):
                    dirty[order_id] = None
                if isinstance(r, Accepted):
                    book.new_recent.append(r.order_id)

    def take_changes(self) -> Changes:
        """The entries changed since the last call, coalesced (last value per key)."""
        changes: Changes = {}
        for symbol, book in self.books.items():
            if not book.header_dirty:
                continue
            engine = book.engine
            for order_id in book.dirty_orders:
                state = engine.order_state(order_id)
                changes[_order_key(symbol, order_id)] = None if state is None else _dumps(state)
            window = engine.rules.dedup_window
            for order_id in book.new_recent:
                changes[_recent_key(symbol, book.recent_next)] = order_id.encode()
                expired = book.recent_next - window
                if expired >= 0:
                    changes[_recent_key(symbol, expired)] = None
                book.recent_next += 1
            header = engine.header()
            header["recent_next"] = book.recent_next
            changes[_header_key(symbol)] = _dumps(header)
            book.dirty_orders.clear()
            book.new_recent.clear()
            book.header_dirty = False
        changes[POSITION_KEY] = _dumps(self.position)
        return changes

    # ------------------------------------------------------------- restore

    @classmethod
    def restore(
        cls, partition: int, rules: dict[str, SymbolRules], items: Iterable[tuple[bytes, bytes]]
    ) -> PartitionBooks:
        """Rebuild from durable entries (any order); configured rules win over stored ones."""
        books = cls(partition, rules)
        headers: dict[str, dict[str, Any]] = {}
        orders: dict[str, list[dict[str, Any]]] = {}
        recent: dict[str, list[tuple[int, str]]] = {}
        for key, value in items:
            kind, _, rest = key.decode().partition("|")
            if kind == "h":
                headers[rest] = json.loads(value)
            elif kind == "o":
                symbol, _, _ = rest.rpartition("|")
                orders.setdefault(symbol, []).append(json.loads(value))
            elif kind == "r":
                symbol, _, index = rest.rpartition("|")
                recent.setdefault(symbol, []).append((int(index), value.decode()))
            elif key == POSITION_KEY:
                books.position = json.loads(value)
        for symbol, header in headers.items():
            recent_next = header.pop("recent_next", 0)
            if symbol in rules:
                header["rules"] = rules[symbol].to_dict()
            engine = MatchingEngine.from_states(
                header,
                orders.get(symbol, []),
                [order_id for _, order_id in sorted(recent.get(symbol, []))],
            )
            books.books[symbol] = _SymbolBook(engine, recent_next=recent_next)
        return books

    def state_hashes(self) -> dict[str, str]:
        return {symbol: book.engine.state_hash() for symbol, book in sorted(self.books.items())}

    def validate(self) -> None:
        for book in self.books.values():
            book.engine.validate()


def _remembers(record: Rejected) -> bool:
    """A refused PLACE of an id the engine had not answered before (see the engine)."""
    return (
        record.request is RequestKind.PLACE
        and record.order_id is not None
        and record.code is not RejectCode.MATCHING_DUPLICATE_ORDER_ID
    )


def _touched(record: Execution) -> Iterator[str]:
    if isinstance(record, Rejected):
        return  # a refused command changes no order
    for name in ("order_id", "taker_order_id", "maker_order_id"):
        value = getattr(record, name, None)
        if value is not None:
            yield value


def _header_key(symbol: str) -> bytes:
    return f"h|{symbol}".encode()


def _order_key(symbol: str, order_id: str) -> bytes:
    return f"o|{symbol}|{order_id}".encode()


def _recent_key(symbol: str, index: int) -> bytes:
    return f"r|{symbol}|{index:012d}".encode()
