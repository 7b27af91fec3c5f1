"""Realistic ``te.executions`` data for tests and benchmarks, without a broker.

The seeded load generator's commands go through the matcher's own pure step
(``match_record``), so the messages are byte for byte what a matcher worker
would publish for that input; symbols are spread over partitions as the
matcher's key partitioning keeps them: one symbol, one partition.
"""

from __future__ import annotations

from collections.abc import Sequence

from trade_engine.agents.matcher.step import EXECUTIONS, StageCounters, match_record
from trade_engine.config import Settings, SymbolSettings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams import clients
from trade_engine.streams.codec import encode
from trade_engine.streams.records import ConsumedRecord
from trade_engine.tables.durable import PartitionBooks
from trade_engine.tables.symbols import rules_for


def executions(
    commands: int,
    seed: int,
    symbols: Sequence[SymbolSettings],
    partitions: int,
    *,
    start_ms: int,
    step_ms: int = 1,
) -> dict[int, list[bytes]]:
    """Execution messages per partition for ``commands`` seeded commands.

    Command ``i`` gets the log timestamp ``start_ms + i * step_ms`` (so a large
    step spreads the data over days and months of partitions).
    """
    rules = {spec.symbol: rules_for(spec) for spec in symbols}
    partition_of = {spec.symbol: i % partitions for i, spec in enumerate(symbols)}
    books = {p: PartitionBooks(p, rules) for p in range(partitions)}
    offsets = dict.fromkeys(range(partitions), 0)
    counters = StageCounters()
    out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    for i, command in enumerate(generate(commands, seed, symbols)):
        partition = partition_of[command.symbol]
        record = ConsumedRecord(
            topic="synthetic.accepted",
            partition=partition,
            offset=offsets[partition],
            timestamp_ms=start_ms + i * step_ms,
            key=command.symbol.encode(),
            value=encode(command),
        )
        offsets[partition] += 1
        for output in match_record(books[partition], record, counters):
            if output.role == EXECUTIONS and output.value is not None:
                out[partition].append(output.value)
    return out


def publish(settings: Settings, topic: str, messages: dict[int, list[bytes]]) -> int:
    """Produce ``messages`` to their partitions of ``topic`` (idempotent producer)."""
    producer = clients.producer(settings, **{"linger.ms": 10})
    count = 0
    for partition, values in messages.items():
        for value in values:
            while True:
                try:
                    producer.produce(topic, value=value, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
        producer.poll(0)
    producer.flush(60)
    return count
