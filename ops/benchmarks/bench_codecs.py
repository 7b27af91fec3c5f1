"""Benchmark: what one stage pays to decode one record, per topic, old decoder and new.

Run with ``make bench-codecs`` (or ``python -m ops.benchmarks.bench_codecs``).
Progress goes to stderr; the last stdout line is one JSON object of figures.
No broker: the records are what the matcher's own step (``match_record``)
publishes for the seeded load generator's commands, byte for byte.

Per record, best of ``--repeat`` passes over the same records (old and new
passes interleaved, so background load slows both alike):

- ``te.executions``: the baseline is ``json.loads`` to a dict, what every
  consumer did before (and each then parsed the decimal strings it needed);
  ``decode_execution`` gives the typed record, decimals already ``Decimal``;
- ``te.trades``: ``json.loads`` against ``decode_trade``;
- ``te.commands.accepted``: the pydantic contract models
  (``codec.decode_command``, the risk stage's) against the msgspec records
  (``command_records.decode_command_record``, the matcher's).

``*_ratio`` is new over old (below 1: the new decoder is cheaper).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from trade_engine.agents.matcher.step import EXECUTIONS, TRADES, StageCounters, match_record
from trade_engine.config import load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams.codec import decode_command, encode
from trade_engine.streams.command_records import decode_command_record
from trade_engine.streams.execution_records import decode_execution, decode_trade
from trade_engine.streams.records import ConsumedRecord
from trade_engine.tables.durable import PartitionBooks
from trade_engine.tables.symbols import rules_for


def records(commands: int, seed: int) -> dict[str, list[bytes]]:
    """The accepted commands and what the matcher publishes for them, by topic role."""
    settings = load_settings()
    symbols = settings.market.symbols
    books = PartitionBooks(0, {spec.symbol: rules_for(spec) for spec in symbols})
    out: dict[str, list[bytes]] = {"commands": [], EXECUTIONS: [], TRADES: []}
    counters = StageCounters()
    for offset, command in enumerate(generate(commands, seed, symbols)):
        value = encode(command)
        out["commands"].append(value)
        record = ConsumedRecord(
            "te.commands.accepted", 0, offset, 1_767_225_600_000 + offset,
            command.symbol.encode(), value,
        )  # fmt: skip
        for output in match_record(books, record, counters):
            if output.value is not None:
                out[output.role].append(output.value)
    return out


def _pass_s(decode: Callable[[bytes], Any], values: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for value in values:
        decode(value)
    return time.perf_counter() - started


def compare_us(
    old: Callable[[bytes], Any], new: Callable[[bytes], Any], values: Sequence[bytes], repeat: int
) -> tuple[float, float]:
    """(old, new) in microseconds per record: the best of ``repeat`` passes each, the
    passes interleaved so that a noisy neighbour slows both alike."""
    best_old = best_new = float("inf")
    for _ in range(repeat):
        best_old = min(best_old, _pass_s(old, values))
        best_new = min(best_new, _pass_s(new, values))
    scale = 1e6 / len(values)
    return round(best_old * scale, 3), round(best_new * scale, 3)


def _pair(
    name: str,
    old: Callable[[bytes], Any],
    new: Callable[[bytes], Any],
    values: Sequence[bytes],
    repeat: int,
) -> dict[str, float]:
    old_us, new_us = compare_us(old, new, values, repeat)
    print(f"[bench-codecs] {name}: old {old_us} us, new {new_us} us", file=sys.stderr)
    return {
        f"{name}_old_us": old_us,
        f"{name}_new_us": new_us,
        f"{name}_ratio": _ratio(new_us, old_us),
    }


def _ratio(new: float, old: float) -> float:
    return round(new / old, 3) if old else 0.0


def run(commands: int, seed: int, repeat: int) -> dict[str, Any]:
    data = records(commands, seed)
    executions, trades = data[EXECUTIONS], data[TRADES]
    print(
        f"[bench-codecs] {len(data['commands'])} commands, {len(executions)} executions, "
        f"{len(trades)} trades",
        file=sys.stderr,
    )
    result: dict[str, Any] = {
        "commands": len(data["commands"]),
        "executions": len(executions),
        "trades": len(trades),
    }
    result.update(_pair("executions", json.loads, decode_execution, executions, repeat))
    result.update(_pair("trades", json.loads, decode_trade, trades, repeat))
    result.update(
        _pair("commands", decode_command, decode_command_record, data["commands"], repeat)
    )
    by_kind: dict[str, list[bytes]] = defaultdict(list)
    for value in executions:
        by_kind[decode_execution(value).kind].append(value)
    result["executions_by_kind_us"] = {
        kind: dict(
            zip(
                ("old", "new"),
                compare_us(json.loads, decode_execution, values, repeat),
                strict=True,
            ),
            records=len(values),
        )
        for kind, values in sorted(by_kind.items())
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commands", type=int, default=20_000, help="seeded commands to match")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=9, help="passes; the best one counts")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.commands, args.seed, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
