"""The committed JSON Schemas are the ones the models generate, in words every regex
dialect reads alike; what the encoders write validates against them, and decodes with
the topic's one decoder (``streams.execution_records``, ``streams.command_records``)
to the same values."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from trade_engine.agents.matcher.step import EXECUTIONS, TRADES, StageCounters, match_record
from trade_engine.config import load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams.codec import decode_command, encode
from trade_engine.streams.command_records import decode_command_record
from trade_engine.streams.commands import to_core
from trade_engine.streams.execution_records import (
    TradeExecution,
    decode_execution,
    decode_trade,
    execution_wire,
    public_trade,
    trade_wire,
)
from trade_engine.streams.executions import ExecutionMessage, TradeMessage, dumps
from trade_engine.streams.records import ConsumedRecord
from trade_engine.streams.schemas import SCHEMA_DIR, render, schemas
from trade_engine.tables.durable import PartitionBooks
from trade_engine.tables.symbols import rules_for

# Classes whose meaning depends on the dialect: ASCII in JSON Schema (ECMA-262),
# Unicode in pydantic's Rust engine and Python's re. A schema using them says one
# thing to a producer and another to the decoder.
_DIALECT_DEPENDENT = re.compile(r"(?<!\\)(?:\\\\)*\\[wWdDsSbB]")


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_committed_schemas_match_the_models() -> None:
    for name, schema in schemas().items():
        committed = (SCHEMA_DIR / name).read_text()
        assert committed == render(schema), (
            f"streams/schemas/{name} is stale: run python -m trade_engine.streams.schemas"
        )


def test_patterns_mean_the_same_in_every_dialect() -> None:
    found = 0
    for name, schema in schemas().items():
        for pattern in _patterns(schema):
            found += 1
            assert not _DIALECT_DEPENDENT.search(pattern), f"{name}: {pattern}"
    assert found > 0


def _same_values(record: Any, message: dict[str, Any]) -> None:
    """Every field of the wire dict, read from the record: decimals as ``Decimal``."""
    for name, text in message.items():
        value = record.kind if name == "kind" else getattr(record, name)
        if isinstance(value, Decimal):
            assert value == Decimal(text), (name, text)
            assert format(value, "f") == text, (name, text)
        elif name == "input":
            assert {"partition": value.partition, "offset": value.offset} == text
        else:
            assert value == text, (name, value, text)


@pytest.fixture(scope="module")
def outputs() -> dict[str, list[bytes]]:
    """What the matcher's step publishes for a seeded flow, by role."""
    settings = load_settings()
    symbols = settings.market.symbols[:4]
    books = PartitionBooks(0, {spec.symbol: rules_for(spec) for spec in symbols})
    out: dict[str, list[bytes]] = {EXECUTIONS: [], TRADES: []}
    for offset, command in enumerate(generate(4000, 3, symbols)):
        key, value = command.symbol.encode(), encode(command)
        record = ConsumedRecord("te.accepted", 0, offset, 1_767_225_600_000 + offset, key, value)
        for output in match_record(books, record, StageCounters()):
            assert output.value is not None
            out[output.role].append(output.value)
    return out


@pytest.fixture(scope="module")
def executions(outputs: dict[str, list[bytes]]) -> list[bytes]:
    return outputs[EXECUTIONS]


def test_encoded_executions_validate_and_decode_to_their_values(executions: list[bytes]) -> None:
    kinds = set()
    for value in executions:
        ExecutionMessage.model_validate_json(value)
        message = json.loads(value)
        record = decode_execution(value)
        kinds.add(record.kind)
        _same_values(record, message)
        assert execution_wire(record) == message
        assert dumps(execution_wire(record)) == value  # re-published bytes are the same
    assert {"ACCEPTED", "REJECTED", "TRADE", "ORDER_ENDED", "AMENDED"} <= kinds


def test_encoded_trades_validate_and_decode_to_their_values(
    outputs: dict[str, list[bytes]],
) -> None:
    executed = [r for r in map(decode_execution, outputs[EXECUTIONS]) if r.kind == "TRADE"]
    assert len(executed) == len(outputs[TRADES]) > 100
    for value, execution in zip(outputs[TRADES], executed, strict=True):
        TradeMessage.model_validate_json(value)
        record = decode_trade(value)
        _same_values(record, json.loads(value))
        assert isinstance(execution, TradeExecution)
        assert record == public_trade(execution)  # the trade of its execution
        assert dumps(trade_wire(record)) == value


def test_encoded_commands_decode_alike_with_both_decoders() -> None:
    settings = load_settings()
    rules = {spec.symbol: rules_for(spec) for spec in settings.market.symbols}
    for command in generate(3000, 9, settings.market.symbols):
        raw = encode(command)
        model, record = decode_command(raw), decode_command_record(raw)
        assert model == command
        assert to_core(record, rules[record.symbol]) == to_core(model, rules[model.symbol])
