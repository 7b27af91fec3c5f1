"""Per-order durable state: the coalesced changes rebuild the same books (same hashes)."""

from __future__ import annotations

import random

from trade_engine.agents.matcher.step import StageCounters, match_record
from trade_engine.config import load_settings
from trade_engine.streams.codec import encode
from trade_engine.streams.commands import CancelOrder, PlaceOrder
from trade_engine.streams.records import ConsumedRecord
from trade_engine.tables.durable import POSITION_KEY, PartitionBooks
from trade_engine.tables.matching.rules import SymbolRules
from trade_engine.tables.symbols import rules_for


def _rules(dedup_window: int | None = None) -> dict[str, SymbolRules]:
    rules = {s.symbol: rules_for(s) for s in load_settings().market.symbols}
    if dedup_window is not None:
        rules = {
            k: SymbolRules.from_dict({**r.to_dict(), "dedup_window": dedup_window})
            for k, r in rules.items()
        }
    return rules


def _flow(n: int, seed: int) -> list[PlaceOrder | CancelOrder]:
    rng = random.Random(seed)
    live: list[tuple[str, str]] = []
    out: list[PlaceOrder | CancelOrder] = []
    for i in range(n):
        if live and rng.random() < 0.25:
            order_id, user = live.pop(rng.randrange(len(live)))
            out.append(CancelOrder(symbol="BTC/USDT", user_id=user, order_id=order_id))
            continue
        user = f"u{rng.randint(1, 5)}"
        price = f"{50000 + rng.randint(-10, 10)}.00"
        out.append(
            PlaceOrder(
                symbol="BTC/USDT",
                order_id=f"o{i}",
                user_id=user,
                side=rng.choice(["BUY", "SELL"]),
                type="LIMIT",
                quantity=f"0.{rng.randint(1, 9)}0000",
                price=price,
            )
        )
        live.append((f"o{i}", user))
    return out


def _feed(books: PartitionBooks, commands: list[PlaceOrder | CancelOrder], start: int) -> None:
    counters = StageCounters()
    for offset, command in enumerate(commands, start):
        record = ConsumedRecord("in", 0, offset, 1_795_000_000_000, b"BTC/USDT", encode(command))
        books.position = offset + 1
        match_record(books, record, counters)


def _apply(store: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def test_changes_rebuild_identical_books_batch_after_batch() -> None:
    rules = _rules(dedup_window=50)
    live = PartitionBooks(0, rules)
    store: dict[bytes, bytes] = {}
    commands = _flow(600, seed=3)
    for start in range(0, len(commands), 97):
        _feed(live, commands[start : start + 97], start)
        _apply(store, live.take_changes())
        restored = PartitionBooks.restore(0, rules, store.items())
        restored.validate()
        assert restored.position == live.position
        assert restored.state_hashes() == live.state_hashes()
    # The dedup window is bounded: old entries are deleted, not kept forever.
    recent_keys = [k for k in store if k.startswith(b"r|")]
    assert len(recent_keys) == 50


def test_changes_are_small_per_command() -> None:
    rules = _rules()
    books = PartitionBooks(0, rules)
    _feed(books, _flow(500, seed=5), 0)
    books.take_changes()
    _feed(books, _flow(1, seed=99), 500)
    changes = books.take_changes()
    # One order, the header, the dedup entry and the position: not the whole book.
    assert len(changes) <= 4
    assert POSITION_KEY in changes


def _record(offset: int, command: PlaceOrder | CancelOrder) -> ConsumedRecord:
    return ConsumedRecord(
        "in", 0, offset, 1_795_000_000_000, command.symbol.encode(), encode(command)
    )


def _restart(live: PartitionBooks, store: dict[bytes, bytes]) -> PartitionBooks:
    _apply(store, live.take_changes())
    return PartitionBooks.restore(0, live.rules, store.items())


def test_a_batch_of_only_rejections_saves_the_seq() -> None:
    """Regression: the header was saved only when an order changed, so a restart after a
    batch of REJECTED records handed their seq values out again."""
    rules = _rules()
    store: dict[bytes, bytes] = {}
    live = PartitionBooks(0, rules)
    place = PlaceOrder(
        symbol="BNB/USDT",
        order_id="b1",
        user_id="u1",
        side="BUY",
        type="LIMIT",
        quantity="0.100",
        price="600.00",
    )
    counters = StageCounters()
    match_record(live, _record(0, place), counters)
    live = _restart(live, store)
    unknown = CancelOrder(symbol="BNB/USDT", user_id="u1", order_id="nope-1")
    first = match_record(live, _record(1, unknown), counters)
    assert b'"seq":2' in (first[0].value or b"")
    live = _restart(live, store)
    again = CancelOrder(symbol="BNB/USDT", user_id="u1", order_id="nope-2")
    second = match_record(live, _record(2, again), counters)
    assert b'"seq":3' in (second[0].value or b""), second[0].value


def test_a_rejected_place_is_refused_again_after_a_restart() -> None:
    """A re-sent copy of a rejected place is a duplicate (release 0), even across restarts."""
    rules = _rules()
    store: dict[bytes, bytes] = {}
    live = PartitionBooks(0, rules)
    counters = StageCounters()
    bad = PlaceOrder(
        symbol="BNB/USDT",
        order_id="x1",
        user_id="u1",
        side="BUY",
        type="LIMIT",
        quantity="0.100",
        price="600.001",  # off tick: rejected
    )
    assert b"VALIDATION_PRICE_OFF_TICK" in (
        match_record(live, _record(0, bad), counters)[0].value or b""
    )
    live = _restart(live, store)
    good = bad.model_copy(update={"price": "600.00"})
    out = match_record(live, _record(1, good), counters)
    assert len(out) == 1
    assert b"MATCHING_DUPLICATE_ORDER_ID" in (out[0].value or b"")
    engine = live.engine("BNB/USDT")
    assert engine is not None
    assert "x1" in engine.recent_set
