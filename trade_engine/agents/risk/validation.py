"""The admission checks every command passes before the matcher sees it, and the
validation stage: ``te.commands`` -> ``te.commands.accepted`` without a wallet.

``admit`` decodes a command once and checks its shape, that its key is its
configured symbol on the partition that key maps to, and that it carries no
field only the engine sets; the risk stage (``agents.risk.stage``) runs the same
checks, then holds each place's funds. The validation stage forwards what
passes unchanged (``validate``); it reserves no funds and is the pipeline
without a wallet service. Anything else goes to the dead-letter topic with its
code (``agents.risk.worker`` sends both).

Delivery is at-least-once: a command forwarded twice after a crash is
answered by the matching core as a duplicate order id (a sequenced reject), so
no order is applied twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trade_engine.streams.codec import decode_command
from trade_engine.streams.commands import Command, PlaceOrder
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.partitioning import wrong_partition

STAGE = "validation"

Problem = tuple[str, str]  # (dead-letter code, reason)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What to do with one input record: forward ``value`` or dead-letter it."""

    value: bytes | None
    dead_letter: Problem | None = None


def admit(
    key: bytes | None,
    value: bytes | None,
    symbols: frozenset[str],
    *,
    partition: int | None = None,
    partitions: int | None = None,
) -> Command | Problem:
    """The decoded command when it may pass, else ``(code, reason)``. With ``partition``
    and ``partitions``, a command not on its key's partition is ``WRONG_PARTITION``."""
    try:
        command = decode_command(value)
    except DecodeError as exc:
        return exc.code, str(exc)
    if key is None or key != command.symbol.encode():
        return "KEY_SYMBOL_MISMATCH", f"key {key!r} is not the command's symbol {command.symbol}"
    if partition is not None and partitions is not None:
        misrouted = wrong_partition(key, partition, partitions)
        if misrouted is not None:
            return misrouted
    if command.symbol not in symbols:
        return "UNKNOWN_SYMBOL", f"{command.symbol} is not configured"
    if isinstance(command, PlaceOrder) and command.risk_reject is not None:
        return "FORBIDDEN_FIELD", "risk_reject is set by the risk stage only"
    return command


def check(
    key: bytes | None,
    value: bytes | None,
    symbols: frozenset[str],
    *,
    partition: int | None = None,
    partitions: int | None = None,
) -> Problem | None:
    """None when the command may pass, else ``(code, reason)`` (``admit`` without the command)."""
    outcome = admit(key, value, symbols, partition=partition, partitions=partitions)
    return outcome if isinstance(outcome, tuple) else None


class Validation:
    """The validation stage's decision for a batch: forward what passes, unchanged."""

    def __init__(self, symbols: frozenset[str], partitions: int | None = None) -> None:
        self.symbols = symbols
        self.partitions = partitions

    async def decide(
        self,
        inputs: Sequence[tuple[bytes | None, bytes | None]],
        partitions_of: Sequence[int] | None = None,
    ) -> list[Outgoing]:
        out = []
        for index, (key, value) in enumerate(inputs):
            partition = None if partitions_of is None else partitions_of[index]
            outcome = admit(
                key, value, self.symbols, partition=partition, partitions=self.partitions
            )
            out.append(Outgoing(value, outcome) if isinstance(outcome, tuple) else Outgoing(value))
        return out
