"""The matcher's pure step: one input record and the partition's books -> output records.

No I/O here: the worker (``agents.matcher``) and the offline replay
(``agents.replay``) call the same function, so a replay reproduces the
pipeline's records byte for byte.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from trade_engine.streams.codec import Headers
from trade_engine.streams.codes import DeadLetterCode
from trade_engine.streams.command_records import decode_command_record
from trade_engine.streams.commands import to_core
from trade_engine.streams.dead_letter import dead_letter
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.executions import InputTail, encode_execution
from trade_engine.streams.partitioning import wrong_partition
from trade_engine.streams.records import ConsumedRecord
from trade_engine.tables.durable import PartitionBooks
from trade_engine.tables.matching.exceptions import MatchingError

EXECUTIONS, TRADES, DEAD_LETTER = "executions", "trades", "dead_letter"
STAGE = "matcher"


class Output(NamedTuple):
    """One record to publish (a tuple: cheap to build, compared by value)."""

    role: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


@dataclass
class StageCounters:
    """Per-batch tallies, folded into Prometheus once per batch (not per record)."""

    executions: Counter[str] = field(default_factory=Counter)
    trades: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)


class CorePanicError(Exception):
    """The matching core raised on one input: a bug. The worker undoes the batch and
    dead-letters that input on the retry, so one record cannot stop a partition."""

    def __init__(self, partition: int, offset: int, cause: BaseException) -> None:
        super().__init__(f"partition {partition} offset {offset}: {cause!r}")
        self.partition = partition
        self.offset = offset
        self.cause = cause


def match_record(
    books: PartitionBooks,
    record: ConsumedRecord,
    counters: StageCounters,
    *,
    poisoned: bool = False,
    partitions: int | None = None,
) -> list[Output]:
    """Apply one input to the books; return what must be published for it.

    ``partitions``: the input topic's partition count; a record whose key maps to
    another partition is dead-lettered ``WRONG_PARTITION`` instead of opening a
    second book of its symbol here (None only where records are made up in memory).
    """
    if poisoned:
        return [
            _dead_letter(
                record,
                DeadLetterCode.ENGINE_ERROR,
                "the matching core failed on this input",
                counters,
            )
        ]
    try:
        command = decode_command_record(record.value)
    except DecodeError as exc:
        return [_dead_letter(record, exc.code, str(exc), counters)]
    symbol = command.symbol
    misplaced = _misplaced(record, symbol, partitions)
    if misplaced is not None:
        return [_dead_letter(record, *misplaced, counters)]
    engine = books.engine(symbol)
    if engine is None:
        return [
            _dead_letter(
                record, DeadLetterCode.UNKNOWN_SYMBOL, f"{symbol} is not configured", counters
            )
        ]
    rules = engine.rules
    try:
        core_command = to_core(command, rules)
    except MatchingError as exc:
        return [_dead_letter(record, DeadLetterCode.DECODE_INVALID, str(exc), counters)]
    try:
        records = engine.apply(core_command)
    except Exception as exc:
        raise CorePanicError(record.partition, record.offset, exc) from exc
    books.note(symbol, records)
    key = record.key
    outputs = []
    partition, offset, timestamp_ms = record.partition, record.offset, record.timestamp_ms
    at = _TAIL.at(timestamp_ms)
    tail, input_obj = _TAIL.tail(partition, offset, timestamp_ms)
    kinds = counters.executions
    for execution in records:
        value, trade = encode_execution(
            execution,
            rules,
            tail=tail,
            input_obj=input_obj,
            at=at,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
        )
        outputs.append(Output(EXECUTIONS, key, value))
        kinds[execution.kind] += 1
        if trade is not None:
            outputs.append(Output(TRADES, key, trade))
            counters.trades[symbol] += 1
    counters.commands[symbol] += 1
    return outputs


def _misplaced(
    record: ConsumedRecord, symbol: str, partitions: int | None
) -> tuple[str, str] | None:
    """The record is keyed by another symbol, or sits on a partition its key does not map to."""
    if record.key is None or record.key != symbol.encode():
        return DeadLetterCode.KEY_SYMBOL_MISMATCH, f"key {record.key!r} != {symbol}"
    if partitions is None:
        return None
    return wrong_partition(record.key, record.partition, partitions)


# Caches the RFC 3339 text of the last input timestamp (a pure conversion).
_TAIL = InputTail()


def _dead_letter(record: ConsumedRecord, code: str, reason: str, counters: StageCounters) -> Output:
    counters.dead_letters[code] += 1
    value, headers = dead_letter(record, code, reason, stage=STAGE)
    return Output(DEAD_LETTER, record.key, value, headers)
