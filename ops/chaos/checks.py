"""The verdict of one chaos scenario, from readers independent of the stages under test.

Run after the load stopped and every group drained:

- **trades**: ``te.trades`` (read_committed, by trade id) against an offline replay of
  ``te.commands.accepted`` (``agents.matcher.replay.compare``: the same executions and
  trades byte for byte, the same book state); no trade id twice; each symbol's
  execution ``seq`` 1, 2, 3 ... with no gap or repeat;
- **orders**: every place command the broker acknowledged to the feeder has an answer
  on ``te.executions`` (accepted or rejected), and none was accepted twice;
- **history**: the Postgres sink's ``trades`` equal ``te.trades`` (once each), its
  ``orders`` hold every accepted order once, with the status the log ended it with;
- **rabbitmq**: the bridge's notification queue, drained, holds every trade at least
  once (``message_id`` = trade id; redeliveries are counted, not failed);
- **wallet**: the engine's reconcile (``agents.reconcile``: ledger invariants, each
  open order's hold, each trade settled exactly once), no negative balance, no hold
  left on an order the engine has ended, the postings summing to zero per asset.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg

from ops.chaos.feeder import Feeder
from ops.chaos.pipeline import Pipeline
from trade_engine.agents.matcher.replay import compare, read_partition
from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.agents.reconcile import Reconciler
from trade_engine.streams.codec import header
from trade_engine.streams.execution_records import (
    AcceptedExecution,
    OrderEndedExecution,
    RejectedExecution,
    decode_execution,
    decode_trade,
)


def _records(p: Pipeline, role: str) -> list[Any]:
    topic = p.settings.topic_names[role]
    return [
        record
        for partition in range(p.settings.topics.partitions)
        for record in read_partition(p.settings, topic, partition)
    ]


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def check_trades(p: Pipeline) -> tuple[dict[str, Any], list[str]]:
    topics = MatcherTopics.from_settings(p.settings)
    # A killed or fenced matcher's open transaction holds back read_committed readers
    # until the broker aborts it: compare again until equal or the wait is over.
    deadline = time.monotonic() + 30
    result = compare(p.settings, topics)
    while not result.ok and time.monotonic() < deadline:
        time.sleep(2)
        result = compare(p.settings, topics)
    expected: set[str] = set()
    actual: list[str] = []
    for partition in result.expected_trades:
        expected.update(decode_trade(v).trade_id for v in result.expected_trades[partition])
        actual.extend(decode_trade(v).trade_id for v in result.actual_trades[partition])
    return {
        "trades": len(set(actual)),
        "lost": len(expected - set(actual)),
        "duplicated": len(actual) - len(set(actual)),
        "unexpected": len(set(actual) - expected),
        "hash_equal": all(bool(r.hash_equal) for r in result.partitions),
        "changelog_equal": all(bool(r.changelog_equal) for r in result.partitions),
        "executions_compared": sum(r.executions for r in result.partitions),
        "first_difference": next(
            (r.first_difference for r in result.partitions if r.first_difference), None
        ),
    }, actual


def check_orders(p: Pipeline, feeder: Feeder) -> dict[str, Any]:
    seqs: dict[str, list[int]] = {}
    accepted: Counter[str] = Counter()
    answered: set[str] = set()
    ended: dict[str, str] = {}
    for record in _records(p, "executions"):
        execution = decode_execution(record.value)
        seqs.setdefault(execution.symbol, []).append(execution.seq)
        if isinstance(execution, AcceptedExecution):
            accepted[execution.order_id] += 1
            answered.add(execution.order_id)
        elif isinstance(execution, RejectedExecution) and execution.order_id:
            if _text(execution.request).lower() == "place":
                answered.add(execution.order_id)
        elif isinstance(execution, OrderEndedExecution):
            ended[execution.order_id] = _text(execution.status)
    dead = [r for r in _records(p, "dead_letter")]
    stages = Counter(header(r.headers, "dlq.stage") or "?" for r in dead)
    places = feeder.acked_places
    return {
        "places_acked": len(places),
        "unanswered": len(places - answered),
        "unanswered_sample": sorted(places - answered)[:5],
        "accepted": len(accepted),
        "accepted_twice": sum(1 for n in accepted.values() if n > 1),
        "seq_gaps": sum(
            1 for values in seqs.values() for i, seq in enumerate(values) if seq != i + 1
        ),
        "dead_letters": dict(stages),
        "_accepted": set(accepted),
        "_ended": ended,
    }


async def _history(p: Pipeline) -> tuple[Counter[str], dict[str, list[str]]]:
    conn = await asyncpg.connect(p.settings.postgres.dsn())
    try:
        trades = await conn.fetch(f'SELECT trade_id FROM "{p.history}".trades')  # noqa: S608
        orders = await conn.fetch(f'SELECT order_id, status::text FROM "{p.history}".orders')  # noqa: S608
    finally:
        await conn.close()
    statuses: dict[str, list[str]] = {}
    for row in orders:
        statuses.setdefault(row["order_id"], []).append(row["status"])
    return Counter(r["trade_id"] for r in trades), statuses


def check_history(p: Pipeline, trade_ids: list[str], orders: dict[str, Any]) -> dict[str, Any]:
    trades, statuses = asyncio.run(_history(p))
    log_trades = set(trade_ids)
    accepted: set[str] = orders["_accepted"]
    ended: dict[str, str] = orders["_ended"]
    wrong = [o for o, s in ended.items() if o in statuses and statuses[o] != [s]]
    return {
        "trades": len(trades),
        "trades_missing": len(log_trades - set(trades)),
        "trades_twice": sum(1 for n in trades.values() if n > 1),
        "trades_unexpected": len(set(trades) - log_trades),
        "orders": len(statuses),
        "orders_missing": len(accepted - set(statuses)),
        "orders_twice": sum(1 for s in statuses.values() if len(s) > 1),
        "orders_wrong_status": len(wrong),
        "orders_wrong_status_sample": wrong[:5],
    }


def check_rabbitmq(p: Pipeline, trade_ids: list[str]) -> dict[str, Any]:
    """Drain the bridge's notification queue: every trade once at least, by message_id."""
    conn = p.rabbit()
    delivered: list[str] = []
    try:
        channel = conn.channel()
        queue = p.prefix + "notification.service.trades"
        while True:
            method, props, _body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            delivered.append(str(props.message_id))
    finally:
        conn.close()
    log_trades = set(trade_ids)
    return {
        "delivered": len(delivered),
        "missing": len(log_trades - set(delivered)),
        "redelivered": len(delivered) - len(set(delivered)),
        "unexpected": len(set(delivered) - log_trades),
    }


async def _wallet_sql(p: Pipeline) -> dict[str, Any]:
    conn = await asyncpg.connect(p.settings.postgres.dsn())
    try:
        negative = await conn.fetchval(
            f'SELECT count(*) FROM "{p.schema}".accounts'  # noqa: S608
            " WHERE user_id <> '@system' AND balance < 0"
        )
        holds = await conn.fetch(
            f'SELECT order_id FROM "{p.schema}".holds WHERE remaining <> 0'  # noqa: S608
        )
        settles = await conn.fetch(
            f'SELECT key, count(*) AS n FROM "{p.schema}".journal_entries'  # noqa: S608
            " WHERE op = 'settle' GROUP BY key"
        )
        sums = await conn.fetch(
            f'SELECT asset, sum(amount) AS total FROM "{p.schema}".postings GROUP BY asset'  # noqa: S608
        )
    finally:
        await conn.close()
    return {
        "negative": int(negative),
        "holds": {r["order_id"] for r in holds},
        "settled": {r["key"]: int(r["n"]) for r in settles},
        "sums": {r["asset"]: r["total"] for r in sums},
    }


def check_wallet(p: Pipeline, trade_ids: list[str]) -> dict[str, Any]:
    reconciler = Reconciler(p.settings, p.schema)
    report = reconciler.check(wait_s=60)
    engine_open = set(reconciler.engine_holds())
    sql = asyncio.run(_wallet_sql(p))
    stuck = sorted(sql["holds"] - engine_open)
    settled: dict[str, int] = sql["settled"]
    log_trades = set(trade_ids)
    return {
        "reconcile_clean": report.ok,
        "problems": report.problems[:10],
        "negative_balances": sql["negative"],
        "stuck_holds": len(stuck),
        "stuck_holds_sample": stuck[:5],
        "open_orders": report.open_orders,
        "unsettled": len(log_trades - set(settled)),
        "settled_twice": sum(1 for n in settled.values() if n > 1),
        "settled_unexpected": len(set(settled) - log_trades),
        "ledger_zero": all(v == 0 for v in sql["sums"].values()),
    }


def verdict(p: Pipeline, feeder: Feeder) -> dict[str, Any]:
    trades, trade_ids = check_trades(p)
    orders = check_orders(p, feeder)
    history = check_history(p, trade_ids, orders)
    rabbit = check_rabbitmq(p, trade_ids)
    wallet = check_wallet(p, trade_ids)
    orders = {k: v for k, v in orders.items() if not k.startswith("_")}
    lost = (
        trades["lost"]
        + orders["unanswered"]
        + history["trades_missing"]
        + history["orders_missing"]
        + rabbit["missing"]
        + wallet["unsettled"]
    )
    duplicated = (
        trades["duplicated"]
        + orders["accepted_twice"]
        + history["trades_twice"]
        + history["orders_twice"]
        + wallet["settled_twice"]
    )
    unexpected = (
        trades["unexpected"]
        + history["trades_unexpected"]
        + rabbit["unexpected"]
        + wallet["settled_unexpected"]
    )
    ok = (
        lost == duplicated == unexpected == 0
        and orders["seq_gaps"] == 0
        and trades["first_difference"] is None
        and trades["hash_equal"]
        and trades["changelog_equal"]
        and history["orders_wrong_status"] == 0
        and wallet["reconcile_clean"]
        and wallet["negative_balances"] == 0
        and wallet["stuck_holds"] == 0
        and wallet["ledger_zero"]
    )
    return {
        "ok": ok,
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "seq_gaps": orders["seq_gaps"],
        "negative_balances": wallet["negative_balances"],
        "stuck_holds": wallet["stuck_holds"],
        "reconcile_clean": wallet["reconcile_clean"],
        "trades": trades,
        "orders": orders,
        "history": history,
        "rabbitmq": rabbit,
        "wallet": wallet,
    }
