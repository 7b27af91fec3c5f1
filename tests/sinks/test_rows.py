"""The pure fold from execution records to rows."""

from __future__ import annotations

from trade_engine.config import load_settings
from trade_engine.operations import synthetic
from trade_engine.sinks.rows import fold
from trade_engine.streams.execution_records import ExecutionRecord, decode_execution


def _messages() -> list[ExecutionRecord]:
    symbols = load_settings().market.symbols[:2]
    out = synthetic.executions(800, 4, symbols, 1, start_ms=1_767_225_600_000)
    return [decode_execution(v) for v in out[0]]


def test_redelivered_messages_are_skipped_and_gaps_counted() -> None:
    messages = _messages()
    whole = fold(messages)
    half = len(messages) // 2
    again = fold(messages, last_seq=fold(messages[:half]).last_seq)
    assert again.skipped == half
    assert again.last_seq == whole.last_seq
    gapped = fold([m for i, m in enumerate(messages) if i != 10])
    assert sum(gapped.seq_gaps.values()) == 1


def test_orders_living_within_a_batch_need_no_update() -> None:
    rows = fold(_messages())
    assert rows.new_orders
    assert not rows.changes
    statuses = {r["status"] for r in rows.new_orders.values()}
    assert "FILLED" in statuses
    assert "CANCELLED" in statuses
    for row in rows.new_orders.values():
        if row["quantity"] is not None:
            assert row["filled_quantity"] + row["cancelled_quantity"] <= row["quantity"]
