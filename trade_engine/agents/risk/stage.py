"""The risk stage: ``te.commands`` -> ``te.commands.accepted`` (a Faust agent).

It replaces the validation stage: each command is checked exactly like there
(``validation.check``: same dead-letter codes and headers, ``dlq.stage=risk``),
and each PLACE gets its funds held in the wallet before the matcher sees it.

Per batch (``stream.take_events``):

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
from dataclasses import dataclass
from typing import Any, Literal

import faust
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from trade_engine import metrics, tracing
from trade_engine.agents.risk.app import create_app, raw_topic
from trade_engine.agents.risk.validation import check, send_dead_letter
from trade_engine.config import Settings
from trade_engine.connectors.wallet.client import stage_client
from trade_engine.connectors.wallet.exceptions import WalletError
from trade_engine.connectors.wallet.models import ReserveRequest, ReserveResponse
from trade_engine.streams.codec import decode_command, encode, header
from trade_engine.streams.commands import PlaceOrder, RiskReject, to_core
from trade_engine.tables.matching.checks import parse_place as core_parse_place
from trade_engine.tables.matching.checks import required_hold
from trade_engine.tables.matching.commands import Place, PlaceRequest
from trade_engine.tables.matching.enums import Side
from trade_engine.tables.matching.exceptions import NumberFormatError
from trade_engine.tables.matching.rules import SymbolRules
from trade_engine.tables.symbols import rules_for

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


def reserve_request(command: PlaceOrder, rules: SymbolRules) -> ReserveRequest | None:
    """The hold a place needs, or None when it needs none (unparseable, or a hold of 0).

    Raises ``pydantic.ValidationError`` when the wallet cannot express it (an
    order id or user id outside the wallet's alphabet, an amount out of range).
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
    return ReserveRequest(
        user_id=command.user_id,
        asset=asset,
        amount=amount,  # type: ignore[arg-type]
        order_id=command.order_id,
        reason=f"{place.side.value}_ORDER",
    )


def risk_code(error: WalletError) -> RiskCode:
    if error.code == "INSUFFICIENT_BALANCE":
        return "RISK_INSUFFICIENT_BALANCE"
    if error.code in ("ACCOUNT_NOT_FOUND", "USER_NOT_FOUND"):
        return "RISK_ACCOUNT_NOT_FOUND"
    return "RISK_REJECTED"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What to do with one input event: forward ``value`` or dead-letter it."""

    value: bytes | None
    dead_letter: tuple[str, str] | None = None


Reserve = Callable[[Sequence[ReserveRequest]], Awaitable[list[ReserveResponse | WalletError]]]


class RiskStage:
    """The decision logic of one batch, free of Faust (the agent only sends)."""

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
        pending: list[tuple[int, PlaceOrder, ReserveRequest]] = []
        for index, (key, value) in enumerate(inputs):
            partition = None if partitions_of is None else partitions_of[index]
            problem = check(
                key, value, self.symbols, partition=partition, partitions=self.partitions
            )
            if problem is not None:
                out.append(Outgoing(value, problem))
                continue
            command = decode_command(value)
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

    async def _hold(self, requests: list[ReserveRequest]) -> list[ReserveResponse | WalletError]:
        """Per request the wallet's answer; retriable failures are retried until they pass."""
        started = time.perf_counter()
        results: list[ReserveResponse | WalletError | None] = [None] * len(requests)
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


def build(settings: Settings, *, batch_size: int = 500, within_s: float = 0.005) -> faust.App:
    app = create_app(settings, "risk")
    names = settings.topic_names
    commands = raw_topic(app, names["commands"])
    accepted = raw_topic(app, names["accepted"])
    dead_letter = raw_topic(app, names["dead_letter"])
    rules = {spec.symbol: rules_for(spec) for spec in settings.market.symbols}

    @app.agent(commands)
    async def risk(stream: faust.StreamT[bytes]) -> None:
        async with stage_client(settings, STAGE) as wallet:
            stage = RiskStage(rules, wallet.reserve_many, partitions=settings.topics.partitions)
            batches = stream.take_events(batch_size, within=within_s)  # type: ignore[attr-defined]
            async for events in batches:
                BATCH_SIZE.observe(len(events))
                with tracing.span(
                    "risk.batch",
                    attributes={"te.commands": len(events)},
                    links=tracing.links([e.message.headers for e in events]),
                ):
                    decisions = await stage.decide(
                        [(e.key, e.value) for e in events],
                        [e.message.partition for e in events],
                    )
                for event, decision in zip(events, decisions, strict=True):
                    if tracing.enabled():
                        await _send_traced(event, decision, accepted, dead_letter)
                    else:
                        await _send(event, decision, accepted, dead_letter)

    return app


async def _send_traced(event: Any, decision: Outgoing, accepted: Any, dead_letter: Any) -> None:
    """``_send`` inside a span of the command's trace; the forwarded command carries it."""
    message = event.message
    with tracing.span(
        "risk.process",
        parent_headers=message.headers,
        attributes={
            "messaging.kafka.partition": message.partition,
            "messaging.kafka.offset": message.offset,
            "te.dead_letter": decision.dead_letter[0] if decision.dead_letter else None,
        },
    ):
        headers = message.headers
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        await _send(event, decision, accepted, dead_letter, tracing.inject(items))


async def _send(
    event: Any, decision: Outgoing, accepted: Any, dead_letter: Any, headers: Any = None
) -> None:
    message = event.message
    if decision.dead_letter is None:
        await accepted.send(
            key=event.key,
            value=decision.value,
            partition=message.partition,
            timestamp=message.timestamp,
            headers=message.headers if headers is None else headers,
        )
        return
    code, reason = decision.dead_letter
    COMMANDS.labels("invalid", "dead_lettered").inc()
    metrics.DEAD_LETTERS.labels(STAGE, code).inc()
    log.warning(
        "command dead-lettered",
        extra={
            "stage": STAGE,
            "code": code,
            "reason": reason,
            "partition": message.partition,
            "offset": message.offset,
            "trace_id": header(message.headers, "trace_id"),
        },
    )
    await send_dead_letter(dead_letter, event, code, reason, STAGE)
