"""The engine's state on its own: snapshot, restore, per-order states, hash, invariants."""

from __future__ import annotations

import random
from typing import Any

import pytest

from trade_engine.tables.matching import (
    Cancel,
    MatchingEngine,
    OrderType,
    Place,
    Side,
    SymbolRules,
    TimeInForce,
    TimeTick,
)
from trade_engine.tables.matching.exceptions import InvariantError, SnapshotError
from trade_engine.tables.matching.state import (
    SNAPSHOT_FORMAT,
    canonical_json,
    hash_snapshot,
    touched_order_ids,
)

BUY, SELL, LIMIT = Side.BUY, Side.SELL, OrderType.LIMIT
RULES = SymbolRules(
    "BTC/USDT", "0.01", "0.001", maker_fee_ppm=1_000, taker_fee_ppm=2_000, dedup_window=3
)
# The state hash of ``_busy()``: snapshots are persisted and compared across versions
# and replays, so a change to the format or its canonical JSON must be deliberate.
BUSY_HASH = "7e831ba193cfd272ee412254cd89515f0e4ad00bcc352c2b0748007233f26a44"


def _busy() -> MatchingEngine:
    """Bids and asks on two levels each, a partial fill, a pending stop of each side,
    a GTD order, a client order id and a full dedup window."""
    e = MatchingEngine(RULES)
    for command in (
        TimeTick(1_000),
        Place("b1", "u1", BUY, LIMIT, 5, 100, client_order_id="c1"),
        Place("b2", "u2", BUY, LIMIT, 3, 99, tif=TimeInForce.GTD, expire_at=9_000),
        Place("a1", "u3", SELL, LIMIT, 4, 105),
        Place("a2", "u1", SELL, LIMIT, 2, 106),
        Place("t1", "u3", SELL, LIMIT, 2, 100),  # trades 2 of b1
        Place("s1", "u2", SELL, OrderType.STOP, 1, stop_price=90, tif=TimeInForce.IOC),
        Place("s2", "u4", BUY, OrderType.STOP_LIMIT, 1, 120, stop_price=110),
    ):
        e.apply(command)
    return e


def test_state_hash_is_pinned() -> None:
    e = _busy()
    e.validate()
    assert e.state_hash() == hash_snapshot(e.snapshot()) == BUSY_HASH


def test_snapshot_is_the_header_plus_orders_in_canonical_order() -> None:
    e = _busy()
    snap = e.snapshot()
    assert snap["format"] == SNAPSHOT_FORMAT
    assert {k: v for k, v in snap.items() if k in e.header()} == e.header()
    ids = [row[snap["order_fields"].index("order_id")] for row in snap["orders"]]
    assert ids == ["b1", "b2", "a1", "a2", "s1", "s2"]  # bids, asks, stops by seq
    assert snap["recent_order_ids"] == ["t1", "s1", "s2"]  # the window of 3


def test_restore_continues_exactly_where_the_snapshot_was_taken() -> None:
    e = _busy()
    copy = MatchingEngine.restore(e.snapshot())
    assert isinstance(copy, MatchingEngine)
    copy.validate()
    assert copy.snapshot() == e.snapshot()
    for command in (Place("x", "u9", SELL, LIMIT, 9, 99), TimeTick(10_000), Cancel("u1", "a2")):
        assert copy.apply(command) == e.apply(command)
    assert copy.state_hash() == e.state_hash()


def test_from_states_takes_per_order_states_in_any_order() -> None:
    e = _busy()
    states: list[dict[str, Any]] = [e.order_state(o.order_id) or {} for o in e.iter_orders()]
    random.Random(5).shuffle(states)
    rebuilt = MatchingEngine.from_states(e.header(), states, list(e.recent))
    assert isinstance(rebuilt, MatchingEngine)
    rebuilt.validate()
    assert rebuilt.state_hash() == e.state_hash()
    assert e.order_state("t1") is None  # ended: its per-order key is deleted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 99}, "unknown snapshot format"),
        ({"order_fields": ["order_id"]}, "order_fields differ"),
    ],
)
def test_restore_refuses_another_format(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        MatchingEngine.restore({**_busy().snapshot(), **change})


def test_restore_refuses_an_order_that_is_neither_resting_nor_pending() -> None:
    snap = _busy().snapshot()
    where = snap["order_fields"].index("where")
    snap["orders"][0][where] = 0
    with pytest.raises(SnapshotError, match="neither resting nor pending"):
        MatchingEngine.restore(snap)


def test_validate_names_each_broken_index() -> None:
    e = _busy()
    del e.client_ids[("u1", "c1")]
    e.buy_stops.clear()
    e.recent.append("zz")
    with pytest.raises(InvariantError) as caught:
        e.validate()
    text = str(caught.value)
    for broken in ("client order id index", "buy stop index", "dedup window"):
        assert broken in text


def test_validate_names_a_broken_order() -> None:
    e = _busy()
    e.orders["a1"].filled += 1
    with pytest.raises(InvariantError, match="a1: quantity not conserved"):
        e.validate()


def test_touched_order_ids_in_first_touch_order_without_repeats() -> None:
    e = _busy()
    records = e.apply(Place("t2", "u5", BUY, LIMIT, 6, 106))  # takes a1, then a2
    assert touched_order_ids(records) == ["t2", "a1", "a2"]
    assert touched_order_ids([]) == []


def test_canonical_json_sorts_keys_drops_spaces_and_escapes() -> None:
    assert canonical_json({"b": [1, None], "a": "é"}) == b'{"a":"\\u00e9","b":[1,null]}'
    assert hash_snapshot({"a": 1, "b": 2}) == hash_snapshot({"b": 2, "a": 1})
