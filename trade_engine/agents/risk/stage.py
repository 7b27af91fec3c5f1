"""The risk stage's decision: ``te.commands`` -> ``te.commands.accepted``.

It replaces the validation stage: each command is admitted exactly like there
(``validation.admit``, decoded once: same dead-letter codes, ``dlq.stage=risk``),
and each PLACE gets its funds held in the wallet before the matcher sees it.
``agents.risk.worker`` runs it on the worker runtime and sends what it decides.

Per batch:

1. every PLACE is parsed with its symbol's rules exactly as the matching core
   does; one that does not parse (off tick, off step...) is forwarded
   unchanged: the matcher rejects it in sequence with release 0, nothing held;
2. the hold is ``required_hold`` of the parsed order (quote units for buys,
   lots for sells; formatted with ``quote_scale`` / ``qty_scale``); holds of 0
   are not reserved;
3. one ``reserve_many`` for the batch, keyed by ``order_id``;
4. the batch is forwarded in its original order, to the same partition with the
   original timestamp and headers: a reserved place unchanged, a refused one
   with ``risk_reject`` (``RISK_INSUFFICIENT_BALANCE``,
   ``RISK_ACCOUNT_NOT_FOUND`` or ``RISK_REJECTED``), which the matcher answers
   with a sequenced REJECTED record, release 0.

While the wallet is unreachable (or answers 5xx, or its circuit is open) the
batch is retried with backoff and nothing is forwarded or skipped:
back-pressure, money correctness over latency.

Redelivery is safe: a reserve with the same order id and payload replays the
original answer, a granted hold or a refusal alike (the wallet stores both), and
the matcher answers every copy of a place whose id it has answered before,
accepted or rejected, as ``MATCHING_DUPLICATE_ORDER_ID`` with release 0: one
order id, one hold, released or used once. A command whose partition is not its
key's is dead-lettered ``WRONG_PARTITION`` before any hold is taken. Amends,
cancels, mass cancels, admin and ticks pass through in order; an amend that
would need a larger hold is refused by the matcher (``MATCHING_AMEND_EXCEEDS_HOLD``,
docs/money-flow.md), so nothing is held here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from trade_engine import metrics
from trade_engine.agents.risk.validation import Outgoing, admit
from trade_engine.connectors.wallet import wire
from trade_engine.connectors.wallet.exceptions import WalletError
from trade_engine.streams.codec import encode
from trade_engine.streams.commands import PlaceOrder, RiskReject, to_core
from trade_engine.tables.matching.checks import parse_place as core_parse_place
from trade_engine.tables.matching.checks import required_hold
from trade_engine.tables.matching.commands import Place, PlaceRequest
from trade_engine.tables.matching.enums import Side
from trade_engine.tables.matching.exceptions import NumberFormatError
from trade_engine.tables.matching.rules import SymbolRules

log = logging.getLogger(__name__)

STAGE = "risk"

RiskCode = Literal["RISK_INSUFFICIENT_BALANCE", "RISK_ACCOUNT_NOT_FOUND", "RISK_REJECTED"]

COMMANDS = Counter(
    "te_risk_commands_total",
    "Commands handled by the risk stage, by command and result",
    ["cmd", "result"],
)
WALLET_RETRIES = Counter(
    "te_risk_wallet_retries_total", "Reserve batches retried because the wallet was unavailable"
)
BATCH_SIZE = Histogram(
    "te_risk_batch_commands",
    "Commands per risk batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500),
)
RESERVE_SECONDS = Histogram(
    "te_risk_reserve_seconds",
    "Time to hold the funds of one batch (retries included)",
    buckets=(*metrics.LATENCY_BUCKETS, 5.0, 10.0, 30.0),
)


def parse_place(request: PlaceRequest, rules: SymbolRules) -> Place | None:
    """The core's ``Place`` for a wire place, parsed by the core's own function;
    None when the core would reject it as unparseable (it then releases 0)."""
    try:
        return core_parse_place(request, rules)
    except (NumberFormatError, ValueError):
        return None


def reserve_request(command: PlaceOrder, rules: SymbolRules) -> wire.ReserveItem | None:
    """The hold a place needs, or None when it needs none (unparseable, or a hold of 0).

    Raises ``pydantic.ValidationError`` when the wallet cannot express it (an
    order id or user id outside the wallet's alphabet, an amount out of range):
    ``wire.build`` accepts exactly what ``ReserveRequest`` accepts.
    """
    core = to_core(command, rules)
    assert isinstance(core, PlaceRequest)
    place = parse_place(core, rules)
    if place is None:
        return None
    hold = required_hold(place)
    if hold <= 0:
        return None
    base, _, quote = rules.symbol.partition("/")
    if place.side is Side.BUY:
        asset, amount = quote, rules.quote_scale.format(hold)
    else:
        asset, amount = base, rules.qty_scale.format(hold)
    fields = {
        "user_id": command.user_id,
        "asset": asset,
        "amount": amount,
        "order_id": command.order_id,
        "reason": f"{place.side.value}_ORDER",
    }
    item = wire.build("reserve", fields)
    assert isinstance(item, wire.ReserveItem)
    return item


def risk_code(error: WalletError) -> RiskCode:
    if error.code == "INSUFFICIENT_BALANCE":
        return "RISK_INSUFFICIENT_BALANCE"
    if error.code in ("ACCOUNT_NOT_FOUND", "USER_NOT_FOUND"):
        return "RISK_ACCOUNT_NOT_FOUND"
    return "RISK_REJECTED"


Reserve = Callable[[Sequence[wire.ReserveItem]], Awaitable[list[wire.ReserveAnswer | WalletError]]]


class RiskStage:
    """The decision for one batch: admitted, held, refused or dead-lettered (the worker,
    ``agents.risk.worker``, only sends)."""

    def __init__(
        self,
        rules: dict[str, SymbolRules],
        reserve: Reserve,
        *,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        partitions: int | None = None,
    ) -> None:
        self.rules = rules
        self.partitions = partitions
        self.symbols = frozenset(rules)
        self._reserve = reserve
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep

    async def decide(
        self,
        inputs: Sequence[tuple[bytes | None, bytes | None]],
        partitions_of: Sequence[int] | None = None,
    ) -> list[Outgoing]:
        """One ``Outgoing`` per ``(key, value)``, in input order; holds funds first.
        ``partitions_of``: each input's partition, checked against its key."""
        out: list[Outgoing] = []
        pending: list[tuple[int, PlaceOrder, wire.ReserveItem]] = []
        for index, (key, value) in enumerate(inputs):
            partition = None if partitions_of is None else partitions_of[index]
            command = admit(
                key, value, self.symbols, partition=partition, partitions=self.partitions
            )
            if isinstance(command, tuple):  # refused: dead-lettered with its code
                out.append(Outgoing(value, command))
                COMMANDS.labels("invalid", "dead_lettered").inc()
                continue
            if not isinstance(command, PlaceOrder):
                COMMANDS.labels(command.cmd, "forwarded").inc()
                out.append(Outgoing(value))
                continue
            try:
                request = reserve_request(command, self.rules[command.symbol])
            except ValidationError as exc:
                reason = f"the wallet cannot hold funds for this order: {exc.errors()[0]['msg']}"
                out.append(Outgoing(_refused(command, "RISK_REJECTED", reason)))
                COMMANDS.labels("place", "rejected").inc()
                continue
            if request is None:
                COMMANDS.labels("place", "forwarded").inc()
                out.append(Outgoing(value))
                continue
            pending.append((len(out), command, request))
            out.append(Outgoing(value))  # replaced below when the wallet refuses
        if pending:
            results = await self._hold([request for _, _, request in pending])
            for (index, command, _), result in zip(pending, results, strict=True):
                if isinstance(result, WalletError):
                    code = risk_code(result)
                    out[index] = Outgoing(_refused(command, code, result.message))
                    COMMANDS.labels("place", code.removeprefix("RISK_").lower()).inc()
                else:
                    COMMANDS.labels("place", "reserved").inc()
        return out

    async def _hold(
        self, requests: list[wire.ReserveItem]
    ) -> list[wire.ReserveAnswer | WalletError]:
        """Per request the wallet's answer; retriable failures are retried until they pass."""
        started = time.perf_counter()
        results: list[wire.ReserveAnswer | WalletError | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        attempt = 0
        while todo:
            error: WalletError | None = None
            try:
                answers = await self._reserve([requests[i] for i in todo])
            except WalletError as exc:
                retry, error = todo, exc
            else:
                retry = []
                for i, answer in zip(todo, answers, strict=True):
                    if isinstance(answer, WalletError) and answer.retriable:
                        retry.append(i)
                        error = answer
                    else:
                        results[i] = answer
            if not retry:
                break
            WALLET_RETRIES.inc()
            delay = min(self.backoff_max_s, self.backoff_base_s * 2.0**attempt)
            delay = delay / 2 + random.random() * delay / 2
            log.warning(
                "wallet unavailable; holding the batch back",
                extra={
                    "stage": STAGE,
                    "code": getattr(error, "code", None),
                    "items": len(retry),
                    "delay_s": round(delay, 3),
                },
            )
            await self._sleep(delay)
            attempt += 1
            todo = retry
        RESERVE_SECONDS.observe(time.perf_counter() - started)
        return [r for r in results if r is not None]


def _refused(command: PlaceOrder, code: RiskCode, message: str) -> bytes:
    reject = RiskReject(code=code, message=message[:200])
    return encode(command.model_copy(update={"risk_reject": reject}))
