"""The hot-path encoder writes exactly the bytes of the reference dict + json.dumps path,
and the topic's decoder reads them back to the same wire dict and bytes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trade_engine.streams.execution_records import (
    TradeExecution,
    decode_execution,
    decode_trade,
    execution_wire,
    public_trade,
    trade_wire,
)
from trade_engine.streams.executions import (
    InputTail,
    dumps,
    encode_execution,
    execution_message,
    trade_message,
)
from trade_engine.tables.matching.codes import EndReason, RejectCode
from trade_engine.tables.matching.enums import (
    OrderStatus,
    OrderType,
    RequestKind,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)
from trade_engine.tables.matching.executions import (
    Accepted,
    Amended,
    Execution,
    OrderEnded,
    Rejected,
    StpPrevented,
    Trade,
    TradingStateChanged,
    Triggered,
)
from trade_engine.tables.matching.numbers import Scale
from trade_engine.tables.matching.rules import SymbolRules

RULES = [
    SymbolRules("BTC/USDT", "0.01", "0.00001"),
    SymbolRules("DOGE/USDT", "0.00001", "1"),
    SymbolRules("X1/Y2", "0.25", "5"),
]

# Any text, including quotes, backslashes, control and non-ASCII characters.
text = st.text(max_size=12)
ints = st.integers(min_value=-(10**20), max_value=10**20)
opt_int = st.none() | ints
seqs = st.integers(min_value=1, max_value=10**12)


def _enum(cls: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(list(cls))


records: st.SearchStrategy[Execution] = st.one_of(
    st.builds(
        Accepted,
        seqs,
        text,
        text,
        st.none() | text,
        _enum(Side),
        _enum(OrderType),
        _enum(TimeInForce),
        opt_int,
        opt_int,
        opt_int,
        opt_int,
        opt_int,
        _enum(StpMode),
        st.booleans(),
        ints,
        _enum(OrderStatus),
    ),
    st.builds(
        Rejected,
        seqs,
        _enum(RequestKind),
        st.none() | text,
        st.none() | text,
        _enum(RejectCode),
        text,
        ints,
        st.none() | _enum(Side),
    ),
    st.builds(
        OrderEnded,
        seqs,
        text,
        text,
        _enum(OrderStatus),
        _enum(EndReason),
        ints,
        ints,
        ints,
        ints,
        ints,
        _enum(Side),
    ),
    st.builds(Triggered, seqs, text, text, ints, ints),
    st.builds(Amended, seqs, text, text, ints, ints, ints, ints, ints, st.booleans(), _enum(Side)),
    st.builds(StpPrevented, seqs, _enum(StpMode), text, text, text, ints, ints),
    st.builds(TradingStateChanged, seqs, _enum(TradingState), _enum(TradingState), opt_int),
)


@st.composite
def trades(draw: st.DrawFn, rules: SymbolRules) -> Trade:
    seq = draw(seqs)
    return Trade(
        seq,
        draw(st.just(f"{rules.symbol}:{seq}") | text),
        rules.symbol,
        draw(ints),
        draw(ints),
        draw(ints),
        draw(_enum(Side)),
        draw(text),
        draw(text),
        draw(text),
        draw(text),
        draw(ints),
        draw(ints),
        draw(ints),
        draw(ints),
    )


def _check(record: Execution, rules: SymbolRules, partition: int, offset: int, ts: int) -> None:
    tail = InputTail()
    fragment, input_obj = tail.tail(partition, offset, ts)
    value, trade = encode_execution(
        record,
        rules,
        tail=fragment,
        input_obj=input_obj,
        at=tail.at(ts),
        partition=partition,
        offset=offset,
        timestamp_ms=ts,
    )
    message = execution_message(record, rules, partition, offset, ts)
    assert value == dumps(message)
    # The one decoder reads back what was written: the same wire dict, the same bytes.
    decoded = decode_execution(value)
    assert execution_wire(decoded) == message
    assert dumps(execution_wire(decoded)) == value
    if isinstance(record, Trade):
        assert trade == dumps(trade_message(message))
        assert isinstance(decoded, TradeExecution)
        assert decode_trade(trade) == public_trade(decoded)
        assert dumps(trade_wire(decode_trade(trade))) == trade
    else:
        assert trade is None


positions = st.integers(min_value=0, max_value=2**31 - 1)
offsets = st.integers(min_value=0, max_value=2**62)
timestamps = st.integers(min_value=0, max_value=4_102_444_800_000)


@settings(max_examples=400)
@given(records, st.sampled_from(RULES), positions, offsets, timestamps)
def test_fast_encoding_equals_reference(
    record: Execution, rules: SymbolRules, partition: int, offset: int, ts: int
) -> None:
    _check(record, rules, partition, offset, ts)


@settings(max_examples=200)
@given(st.data(), st.sampled_from(RULES), positions, offsets, timestamps)
def test_fast_trade_encoding_equals_reference(
    data: st.DataObject, rules: SymbolRules, partition: int, offset: int, ts: int
) -> None:
    _check(data.draw(trades(rules)), rules, partition, offset, ts)


def test_input_tail_caches_only_the_same_timestamp() -> None:
    tail = InputTail()
    assert tail.at(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert tail.at(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert tail.at(0) == "1970-01-01T00:00:00.000Z"


@given(st.sampled_from(["0.01", "0.00001", "0.25", "5", "1"]), st.lists(ints, max_size=50))
def test_memoised_scale_format_and_parse_agree_with_the_plain_path(
    unit: str, values: list[int]
) -> None:
    scale = Scale(unit)
    for value in values + values:  # the second pass is served from the memo
        formatted = scale.format(value)
        assert formatted == Scale(unit).format(value)
        if 0 <= value < 10**15:  # within the 18 integer digits parse accepts
            assert scale.parse(formatted) == value
