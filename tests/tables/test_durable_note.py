"""``PartitionBooks.note`` (typed fast path) marks exactly what the generic ``_touched`` does."""

from __future__ import annotations

from trade_engine.config import load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams.commands import to_core
from trade_engine.tables.durable import PartitionBooks, _touched
from trade_engine.tables.matching.codes import RejectCode
from trade_engine.tables.matching.enums import RequestKind
from trade_engine.tables.matching.executions import Accepted, Rejected
from trade_engine.tables.symbols import rules_for


def test_note_marks_the_same_orders_in_the_same_order_as_the_generic_walk() -> None:
    settings = load_settings()
    rules = {s.symbol: rules_for(s) for s in settings.market.symbols}
    books = PartitionBooks(0, rules)
    kinds: set[str] = set()
    for command in generate(5000, 5, settings.market.symbols):
        symbol = command.symbol
        engine = books.engine(symbol)
        assert engine is not None
        records = engine.apply(to_core(command, engine.rules))
        kinds.update(r.kind for r in records)
        expected_dirty: dict[str, None] = {}
        expected_recent: list[str] = []
        for r in records:
            for order_id in _touched(r):
                expected_dirty[order_id] = None
            if isinstance(r, Accepted):
                expected_recent.append(r.order_id)
            elif (
                isinstance(r, Rejected)
                and r.request is RequestKind.PLACE
                and r.code is not RejectCode.MATCHING_DUPLICATE_ORDER_ID
            ):
                expected_recent.append(r.order_id)  # type: ignore[arg-type]
        book = books.books[symbol]
        book.dirty_orders.clear()
        book.new_recent.clear()
        books.note(symbol, records)
        assert list(book.dirty_orders) == list(expected_dirty)
        assert book.new_recent == expected_recent
        # What is persisted is what the engine remembered: the window's newest ids.
        if expected_recent:
            assert list(engine.recent)[-len(expected_recent) :] == expected_recent
    assert {"ACCEPTED", "REJECTED", "TRADE", "ORDER_ENDED", "AMENDED"} <= kinds
