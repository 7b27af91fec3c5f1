"""The matcher's pure step: bad input is dead-lettered with a code, good input is deterministic."""

from __future__ import annotations

import json

import pytest

from trade_engine.agents.matcher.step import (
    DEAD_LETTER,
    EXECUTIONS,
    TRADES,
    Output,
    StageCounters,
    match_record,
)
from trade_engine.config import load_settings
from trade_engine.streams.codec import encode, header
from trade_engine.streams.commands import PlaceOrder
from trade_engine.streams.records import ConsumedRecord
from trade_engine.tables.durable import PartitionBooks
from trade_engine.tables.symbols import rules_for

TS = 1_795_000_000_000


def _books() -> PartitionBooks:
    return PartitionBooks(0, {s.symbol: rules_for(s) for s in load_settings().market.symbols})


def _record(offset: int, key: bytes | None, value: bytes | None) -> ConsumedRecord:
    return ConsumedRecord("te.commands.accepted", 0, offset, TS, key, value, [("trace_id", b"t")])


def _place(order_id: str, side: str, price: str, user: str = "u1") -> bytes:
    return encode(
        PlaceOrder(
            symbol="BTC/USDT",
            order_id=order_id,
            user_id=user,
            side=side,
            type="LIMIT",
            quantity="0.10000",
            price=price,
        )
    )


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        (b"BTC/USDT", b"not json", "DECODE_INVALID"),
        (b"BTC/USDT", None, "DECODE_EMPTY"),
        (b"ETH/USDT", _place("o1", "BUY", "50000.00"), "KEY_SYMBOL_MISMATCH"),
        (None, _place("o1", "BUY", "50000.00"), "KEY_SYMBOL_MISMATCH"),
        (
            b"ZZZ/USDT",
            _place("o1", "BUY", "50000.00").replace(b"BTC/USDT", b"ZZZ/USDT"),
            "UNKNOWN_SYMBOL",
        ),
    ],
)
def test_bad_input_is_dead_lettered_and_changes_nothing(
    key: bytes | None, value: bytes | None, code: str
) -> None:
    books = _books()
    counters = StageCounters()
    outputs = match_record(books, _record(5, key, value), counters)
    assert [o.role for o in outputs] == [DEAD_LETTER]
    assert header(outputs[0].headers, "dlq.code") == code
    assert header(outputs[0].headers, "dlq.offset") == "5"
    assert header(outputs[0].headers, "trace_id") == "t"
    assert counters.dead_letters[code] == 1
    assert books.books == {} or all(b.engine.seq == 0 for b in books.books.values())


def test_off_tick_price_is_a_sequenced_reject_not_a_dead_letter() -> None:
    outputs = match_record(
        _books(), _record(0, b"BTC/USDT", _place("o1", "BUY", "50000.001")), StageCounters()
    )
    assert [o.role for o in outputs] == [EXECUTIONS]
    message = json.loads(outputs[0].value or b"")
    assert message["kind"] == "REJECTED"
    assert message["code"] == "VALIDATION_PRICE_OFF_TICK"
    assert message["seq"] == 1


def _run() -> list[Output]:
    books = _books()
    counters = StageCounters()
    outputs: list[Output] = []
    flow = [
        _place("s1", "SELL", "50000.00", "maker"),
        _place("s2", "SELL", "50001.00", "maker"),
        _place("b1", "BUY", "50001.00", "taker"),
    ]
    for offset, value in enumerate(flow):
        outputs += match_record(books, _record(offset, b"BTC/USDT", value), counters)
    return outputs


def test_trades_carry_maker_price_deterministic_ids_and_input_position() -> None:
    outputs = _run()
    assert outputs == _run()  # byte for byte on a second run
    trades = [json.loads(o.value or b"") for o in outputs if o.role == TRADES]
    assert len(trades) == 1
    trade = trades[0]
    assert trade["price"] == "50000.00"  # the resting order's price, not the taker's limit
    assert trade["trade_id"] == f"BTC/USDT:{trade['seq']}"
    assert trade["buyer_order_id"] == "b1"
    assert trade["seller_order_id"] == "s1"
    assert trade["is_buyer_maker"] is False
    assert trade["input"] == {"partition": 0, "offset": 2}
    seqs = [json.loads(o.value or b"")["seq"] for o in outputs if o.role == EXECUTIONS]
    assert seqs == list(range(1, len(seqs) + 1))


def test_holds_are_decimal_strings_in_the_asset_the_order_gives_up() -> None:
    books = _books()
    counters = StageCounters()
    cancel = b'{"cmd":"cancel","symbol":"BTC/USDT","user_id":"u1","order_id":"b1"}'
    outputs = match_record(
        books, _record(0, b"BTC/USDT", _place("b1", "BUY", "50000.00")), counters
    )
    outputs += match_record(books, _record(1, b"BTC/USDT", cancel), counters)
    outputs += match_record(
        books, _record(2, b"BTC/USDT", _place("s1", "SELL", "50000.00")), counters
    )
    messages = [json.loads(o.value or b"") for o in outputs]
    accepted, ended, sell = messages[0], messages[1], messages[2]
    assert accepted["reserved"] == "5000.0000000"  # quote: 0.1 BTC x 50000.00 USDT
    assert ended["kind"] == "ORDER_ENDED"
    assert ended["release"] == "5000.0000000"
    assert ended["side"] == "BUY"
    assert sell["reserved"] == "0.10000"  # base: the sell holds the BTC it offers


def test_a_risk_reject_is_answered_in_sequence_and_holds_nothing() -> None:
    books = _books()
    refused = PlaceOrder.model_validate(
        {
            **json.loads(_place("r1", "BUY", "50000.00")),
            "risk_reject": {"code": "RISK_INSUFFICIENT_BALANCE", "message": "needs 5000 USDT"},
        }
    )
    outputs = match_record(books, _record(0, b"BTC/USDT", encode(refused)), StageCounters())
    message = json.loads(outputs[0].value or b"")
    assert message["kind"] == "REJECTED"
    assert message["code"] == "RISK_INSUFFICIENT_BALANCE"
    assert message["release"] == "0.0000000"
    assert message["seq"] == 1
    engine = books.engine("BTC/USDT")
    assert engine is not None
    assert engine.orders == {}
