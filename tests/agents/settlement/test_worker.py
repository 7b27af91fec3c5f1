"""The settlement stage and the money pipeline end to end.

Real Kafka, PostgreSQL, the wallet service as a server, the matcher, risk and
settlement stages as subprocesses: a seeded flow settles with the ledger
balanced, every trade settled exactly once and every open order's hold equal to
the engine's; an underfunded order is refused with no hold; a SIGKILLed
settlement stage re-reads and settles nothing twice; a wallet outage is waited
out without dead letters; a dead-lettered record is re-driven; a drift is
reported by ``trade-engine reconcile``; every command sent again in every
pattern holds exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from confluent_kafka import Producer

from trade_engine.agents.matcher.replay import read_partition
from trade_engine.agents.reconcile import check, engine_holds
from trade_engine.agents.risk.stage import reserve_request
from trade_engine.agents.settlement.redrive import redrive
from trade_engine.cli.money import add_money_commands
from trade_engine.config import Settings, load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.connectors.wallet.models import (
    ReleaseRequest,
    ReserveRequest,
    TransferRequest,
)
from trade_engine.operations.lag import LagReader
from trade_engine.streams.codec import decode_command, encode, header, new_headers
from trade_engine.streams.commands import CancelOrder, PlaceOrder
from trade_engine.streams.records import ConsumedRecord
from trade_engine.streams.topics import create_topics
from trade_engine.tables.symbols import rules_for

REPO = Path(__file__).resolve().parents[3]

# ------------------------------------------------------------- the money pipeline

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
USERS = 8
FUNDS = {"USDT": "50000000", "BTC": "5000", "ETH": "50000", "SOL": "1000000"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_stack() -> None:
    for name in ("kafka", "postgres"):
        result = subprocess.run(
            ["bash", str(REPO / "ops" / name / f"{name}.sh"), "up"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"could not start local {name}:\n{result.stderr[-4000:]}", pytrace=False)


@dataclass
class Pipeline:
    settings: Settings
    schema: str
    env: dict[str, str]
    port: int
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, *argv: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", *argv], env=self.env, stdout=log, stderr=log
            )

    def start_wallet(self) -> None:
        self.start(
            "wallet", "trade_engine", "wallet", "serve", "--port", str(self.port),
            "--schema", self.schema,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("the wallet service did not become ready")

    def start_settlement(self) -> None:
        self.start(
            "settlement", "trade_engine.cli.money", "settlement", "run",
            "--metrics-port", "0", "--retry-budget-s", "120",
        )  # fmt: skip

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited: {(self.logs / f'{name}.log').read_text()}"

    def wallet(self) -> WalletClient:
        return WalletClient(self.url, self.settings.wallet.service_token)

    def publish(self, commands: list[Any]) -> None:
        producer = Producer(
            {
                **self.settings.kafka.librdkafka(),
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 10,
            }
        )
        topic = self.settings.topic_names["commands"]
        for command in commands:
            producer.produce(
                topic, key=command.symbol, value=encode(command), headers=new_headers()
            )
            producer.poll(0)
        assert producer.flush(30) == 0

    def flow(self, id_prefix: str, n: int, seed: int) -> list[Any]:
        specs = [s for s in self.settings.market.symbols if s.symbol in SYMBOLS]
        return generate(n, seed, specs, users=USERS, id_prefix=id_prefix)

    def wait_idle(self, timeout_s: float = 240) -> None:
        """Risk and matcher groups caught up, then reconcile until it passes."""
        names = self.settings.topic_names
        prefix = self.settings.topics.prefix
        reader = LagReader(self.settings)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                self.alive()
                lags = reader.read(f"{prefix}risk", names["commands"]) + reader.read(
                    f"{prefix}matcher", names["accepted"]
                )
                if all(lag.lag == 0 for lag in lags):
                    break
                assert time.monotonic() < deadline, [lag.as_dict() for lag in lags]
                time.sleep(0.5)
        finally:
            reader.close()

    def reconcile_ok(self) -> Any:
        report = check(self.settings, self.schema, wait_s=60)
        assert report.ok, report.problems
        assert report.wallet is not None
        for totals in report.wallet.assets:
            assert totals.postings_sum == 0, totals
        return report

    def records(self, topic: str) -> list[ConsumedRecord]:
        return [
            record
            for partition in range(self.settings.topics.partitions)
            for record in read_partition(self.settings, topic, partition)
        ]

    def settlement_dead_letters(self) -> list[ConsumedRecord]:
        return [
            r
            for r in self.records(self.settings.topic_names["dead_letter"])
            if header(r.headers, "dlq.stage") == "settlement"
        ]

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.settings.postgres.dsn())
        try:
            await conn.execute(f'SET search_path TO "{self.schema}"')
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()


async def _fund(pipeline: Pipeline) -> None:
    async with pipeline.wallet() as wallet:
        for n in range(1, USERS + 1):
            for asset, amount in FUNDS.items():
                await wallet.deposit(
                    TransferRequest(
                        user_id=f"u{n}",
                        asset=asset,
                        amount=amount,  # type: ignore[arg-type]
                        idempotency_key=f"fund-u{n}-{asset}",
                    )
                )
        await wallet.deposit(
            TransferRequest(user_id="poor", asset="USDT", amount="1", idempotency_key="fund-poor")  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    _ensure_stack()
    state = tmp_path_factory.mktemp("money")
    prefix = f"money-{uuid.uuid4().hex[:8]}."
    schema = f"wallet_money_{uuid.uuid4().hex[:10]}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TE_TOPICS__PREFIX": prefix,
        "TE_TOPICS__PARTITIONS": "2",
        "TE_STATE_DIR": str(state),
        "TE_WALLET__URL": url,
        "TE_LOG_LEVEL": "WARNING",
    }
    settings = load_settings(
        topics={"prefix": prefix, "partitions": 2}, state_dir=state, wallet={"url": url}
    )
    create_topics(settings)
    pipe = Pipeline(settings, schema, env, port, state, {})
    try:
        pipe.start_wallet()
        asyncio.run(_fund(pipe))
        pipe.start(
            "matcher", "trade_engine", "matcher", "run", "--worker-id", "w1",
            "--metrics-port", "0",
        )  # fmt: skip
        pipe.start("risk", "trade_engine.cli.money", "risk", "run", "--metrics-port", "0")
        pipe.start_settlement()
        yield pipe
    finally:
        for name in list(pipe.procs):
            pipe.stop(name)
        conn_drop = f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'

        async def drop() -> None:
            conn = await asyncpg.connect(settings.postgres.dsn())
            try:
                await conn.execute(conn_drop)
            finally:
                await conn.close()

        asyncio.run(drop())


def _order(order_id: str, user: str, side: str, quantity: str, price: str) -> PlaceOrder:
    return PlaceOrder.model_validate(
        {
            "symbol": "BTC/USDT",
            "order_id": order_id,
            "user_id": user,
            "side": side,
            "type": "LIMIT",
            "quantity": quantity,
            "price": price,
        }
    )


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def test_money_flow_end_to_end(pipeline: Pipeline) -> None:
    commands = pipeline.flow("a", 1500, seed=11)
    commands.insert(100, _order("poor-1", "poor", "BUY", "0.01000", "50000.00"))
    commands.insert(200, _order("ghost-1", "ghost", "SELL", "0.01000", "50000.00"))
    pipeline.publish(commands)
    pipeline.wait_idle()
    report = pipeline.reconcile_ok()
    assert report.trades > 100
    assert report.settled == report.trades
    assert report.open_orders > 0

    executions = [
        json.loads(r.value or b"")
        for r in pipeline.records(pipeline.settings.topic_names["executions"])
    ]
    mine = {e["order_id"]: e for e in executions if e.get("order_id") in ("poor-1", "ghost-1")}
    assert mine["poor-1"]["kind"] == "REJECTED"
    assert mine["poor-1"]["code"] == "RISK_INSUFFICIENT_BALANCE"
    assert Decimal(mine["poor-1"]["release"]) == 0
    assert mine["ghost-1"]["code"] == "RISK_ACCOUNT_NOT_FOUND"
    holds = asyncio.run(pipeline.sql("SELECT order_id FROM holds WHERE order_id LIKE 'poor%'"))
    assert holds == []
    assert pipeline.settlement_dead_letters() == []


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def _settled(pipeline: Pipeline) -> int:
    rows = asyncio.run(
        pipeline.sql("SELECT count(*) AS n FROM journal_entries WHERE op = 'settle'")
    )
    return int(rows[0]["n"])


def test_settlement_killed_mid_run_settles_nothing_twice(pipeline: Pipeline) -> None:
    before = _settled(pipeline)
    pipeline.publish(pipeline.flow("b", 3000, seed=12))
    deadline = time.monotonic() + 60
    while _settled(pipeline) == before:  # kill once settling has begun
        assert time.monotonic() < deadline, "settlement settled nothing"
        time.sleep(0.02)
    pipeline.stop("settlement", signal.SIGKILL)
    at_kill = _settled(pipeline) - before
    pipeline.start_settlement()
    pipeline.wait_idle()
    report = pipeline.reconcile_ok()
    assert 0 < at_kill < _settled(pipeline) - before, "the kill did not land mid-stream"
    settles = asyncio.run(
        pipeline.sql(
            "SELECT key, count(*) AS n FROM journal_entries WHERE op = 'settle' GROUP BY key"
        )
    )
    assert len(settles) == report.trades
    assert all(row["n"] == 1 for row in settles)
    assert pipeline.settlement_dead_letters() == []


def _reserves_of(pipeline: Pipeline, prefix: str) -> dict[str, int]:
    """Per order id, its order-id-keyed reserve entries (top-ups of amends have other keys)."""
    rows = asyncio.run(
        pipeline.sql(
            "SELECT ref, count(*) AS n FROM journal_entries"
            " WHERE op = 'reserve' AND key = ref AND ref LIKE $1 GROUP BY ref",
            f"{prefix}-%",
        )
    )
    return {row["ref"]: row["n"] for row in rows}


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def test_risk_killed_mid_run_reserves_each_order_once(pipeline: Pipeline) -> None:
    commands = pipeline.flow("rk", 3000, seed=15)
    pipeline.publish(commands)
    deadline = time.monotonic() + 60
    while not _reserves_of(pipeline, "rk"):  # kill as soon as the first batch is held
        assert time.monotonic() < deadline, "the risk stage reserved nothing"
        time.sleep(0.02)
    pipeline.stop("risk", signal.SIGKILL)
    held_at_kill = len(_reserves_of(pipeline, "rk"))
    pipeline.start("risk", "trade_engine.cli.money", "risk", "run", "--metrics-port", "0")
    pipeline.wait_idle()
    pipeline.reconcile_ok()

    accepted = [
        decode_command(r.value) for r in pipeline.records(pipeline.settings.topic_names["accepted"])
    ]
    places = [c for c in accepted if isinstance(c, PlaceOrder) and c.order_id.startswith("rk-")]
    sent = {c.order_id for c in commands if isinstance(c, PlaceOrder)}
    assert {c.order_id for c in places} == sent  # no place lost on the way to the matcher
    rules = {spec.symbol: rules_for(spec) for spec in pipeline.settings.market.symbols}
    # Funded: forwarded without a risk reject (the wallet replays a refusal to every copy,
    # so a copy refused before the kill is refused again on redelivery).
    funded = {
        c.order_id
        for c in places
        if c.risk_reject is None and reserve_request(c, rules[c.symbol]) is not None
    }
    reserves = _reserves_of(pipeline, "rk")
    assert held_at_kill < len(reserves), "the kill did not land mid-stream"
    assert set(reserves) == funded  # every forwarded place has its hold...
    assert set(reserves.values()) == {1}  # ...reserved exactly once
    holds = asyncio.run(pipeline.sql("SELECT count(*) AS n FROM holds WHERE order_id LIKE 'rk-%'"))
    assert holds[0]["n"] == len(funded)
    assert pipeline.settlement_dead_letters() == []


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def test_wallet_outage_is_waited_out(pipeline: Pipeline) -> None:
    commands = pipeline.flow("c", 3000, seed=13)
    places = sum(isinstance(c, PlaceOrder) for c in commands)
    pipeline.publish(commands)
    deadline = time.monotonic() + 60
    while not _reserves_of(pipeline, "c"):  # the outage starts mid-stream
        assert time.monotonic() < deadline, "the risk stage reserved nothing"
        time.sleep(0.02)
    pipeline.stop("wallet")
    held_at_outage = len(_reserves_of(pipeline, "c"))
    assert held_at_outage < places, "the outage did not land mid-stream"
    time.sleep(4)  # the outage itself: several of the stages' backoff rounds
    pipeline.alive()  # the agents wait, they do not crash
    pipeline.start_wallet()
    pipeline.wait_idle()
    pipeline.reconcile_ok()
    assert pipeline.settlement_dead_letters() == []
    log = (pipeline.logs / "settlement.log").read_text()
    assert "wallet unavailable; retrying" in log


TRADE = {
    "v": 1,
    "symbol": "BTC/USDT",
    "seq": 7,
    "kind": "TRADE",
    "input": {"partition": 0, "offset": 0},
    "at": "2026-12-03T10:00:00.000Z",
    "trade_id": "BTC/USDT:7",
    "price": "50000.00",
    "quantity": "0.50000",
    "quote_quantity": "25000.0000000",
    "taker_side": "BUY",
    "taker_order_id": "b1",
    "taker_user_id": "ub",
    "maker_order_id": "s1",
    "maker_user_id": "us",
    "buyer_fee": "0.00050",
    "seller_fee": "25.0000000",
    "taker_remaining": "0.00000",
    "maker_remaining": "0.00000",
    "buyer_order_id": "b1",
    "seller_order_id": "s1",
    "buyer_user_id": "ub",
    "seller_user_id": "us",
    "buyer_fee_asset": "BTC",
    "seller_fee_asset": "USDT",
    "is_buyer_maker": False,
}


def _fake_trade() -> dict[str, Any]:
    return {
        **TRADE,
        "symbol": "FAKE/USDT",
        "trade_id": "FAKE/USDT:1",
        "price": "100",
        "quantity": "1",
        "quote_quantity": "100",
        "buyer_order_id": "fake-b",
        "seller_order_id": "fake-s",
        "buyer_user_id": "fb",
        "seller_user_id": "fs",
        "buyer_fee": "0",
        "seller_fee": "0",
        "buyer_fee_asset": "FAKE",
    }


async def _hold_fake_orders(pipeline: Pipeline) -> None:
    async with pipeline.wallet() as wallet:
        for user, asset, amount, order in (
            ("fb", "USDT", "100", "fake-b"),
            ("fs", "FAKE", "1", "fake-s"),
        ):
            await wallet.deposit(
                TransferRequest(
                    user_id=user, asset=asset, amount=amount, idempotency_key=f"d-{user}"
                )  # type: ignore[arg-type]
            )
            await wallet.reserve(
                ReserveRequest(user_id=user, asset=asset, amount=amount, order_id=order)  # type: ignore[arg-type]
            )


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def test_dead_lettered_trade_is_redriven(pipeline: Pipeline) -> None:
    # A trade whose orders hold nothing (yet): the wallet refuses it, it is dead-lettered.
    producer = Producer(pipeline.settings.kafka.librdkafka())
    topic = pipeline.settings.topic_names["executions"]
    producer.produce(topic, key="FAKE/USDT", value=json.dumps(_fake_trade()).encode(), partition=0)
    assert producer.flush(30) == 0
    deadline = time.monotonic() + 30
    while not (dead := pipeline.settlement_dead_letters()):
        assert time.monotonic() < deadline, "the bad trade was not dead-lettered"
        time.sleep(0.5)
    assert header(dead[0].headers, "dlq.code") == "RESERVATION_NOT_FOUND"
    assert header(dead[0].headers, "dlq.topic") == topic

    report = asyncio.run(redrive(pipeline.settings, retry_budget_s=5))
    assert (report.applied, report.dead_lettered_again) == (0, 1)  # still refused
    asyncio.run(_hold_fake_orders(pipeline))
    report = asyncio.run(redrive(pipeline.settings, retry_budget_s=5))
    assert (report.read, report.applied, report.dead_lettered_again) == (1, 1, 0)
    assert asyncio.run(redrive(pipeline.settings)).read == 0
    settled = asyncio.run(
        pipeline.sql(
            "SELECT key FROM journal_entries WHERE op = 'settle' AND key = $1", "FAKE/USDT:1"
        )
    )
    assert len(settled) == 1
    pipeline.reconcile_ok()


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def test_reconcile_reports_drift(pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    resting = _bnb(f"drift{uuid.uuid4().hex[:6]}", "u3", "BUY", "0.010", "590.00")
    pipeline.publish([resting])  # an open order whose hold the test can take away
    pipeline.wait_idle()
    pipeline.reconcile_ok()
    victim = engine_holds(pipeline.settings)[resting.order_id]

    async def tamper() -> None:
        async with pipeline.wallet() as wallet:
            await wallet.release(
                ReleaseRequest(
                    user_id=victim.user_id,
                    asset=victim.asset,
                    order_id=victim.order_id,
                    amount=victim.remaining,
                    idempotency_key=f"{victim.order_id}:tamper",
                )
            )

    async def restore() -> None:
        async with pipeline.wallet() as wallet:
            await wallet.reserve(
                ReserveRequest(
                    user_id=victim.user_id,
                    asset=victim.asset,
                    order_id=victim.order_id,
                    amount=victim.remaining,
                    idempotency_key=f"{victim.order_id}:untamper",
                )
            )

    asyncio.run(tamper())
    try:
        parser = argparse.ArgumentParser(prog="trade-engine")
        add_money_commands(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["reconcile", "--schema", pipeline.schema, "--compact"])
        assert args.handler(args, pipeline.settings) == 1
        err = capsys.readouterr().err
        assert f"DRIFT: order {victim.order_id}" in err
    finally:
        asyncio.run(restore())  # the module's pipeline goes on: leave the ledger as found
    pipeline.reconcile_ok()


def _bnb(order_id: str, user: str, side: str, quantity: str, price: str, **kw: Any) -> PlaceOrder:
    fields = {"symbol": "BNB/USDT", "order_id": order_id, "user_id": user, "side": side}
    fields |= {"type": "LIMIT", "quantity": quantity, "price": price, **kw}
    return PlaceOrder.model_validate(fields)


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def test_every_command_sent_again_in_every_pattern_holds_exactly_once(
    pipeline: Pipeline,
) -> None:
    """The same commands published three times (the third after a restart of the risk
    stage and the matcher, and after the refused user was funded): each order id is
    answered ACCEPTED at most once, a rejected one never again, and the wallet holds
    exactly what the open orders need.

    Regression: a re-sent copy of a place first *rejected* (post-only would take; its
    hold released) was accepted on a hold that no longer existed."""
    dup = f"dup{uuid.uuid4().hex[:6]}"
    commands: list[Any] = [
        _bnb(f"{dup}-s1", "u1", "SELL", "0.100", "600.00"),  # rests, then cancelled
        _bnb(f"{dup}-x", "u2", "BUY", "0.100", "600.00", post_only=True),  # rejected
        CancelOrder(symbol="BNB/USDT", user_id="u1", order_id=f"{dup}-s1"),
        _bnb(f"{dup}-s2", "u1", "SELL", "0.050", "601.00"),  # filled by f
        _bnb(f"{dup}-f", "u2", "BUY", "0.050", "601.00"),  # fills s2: both end
        _bnb(f"{dup}-r", "u3", "BUY", "0.010", "599.00"),  # rests: the one open order
        _bnb(f"{dup}-p", "poor", "BUY", "1.000", "600.00"),  # the risk stage refuses it
    ]

    async def fund_bnb() -> None:
        async with pipeline.wallet() as wallet:
            await wallet.deposit(
                TransferRequest(
                    user_id="u1", asset="BNB", amount="10", idempotency_key=f"{dup}-bnb"
                )  # type: ignore[arg-type]
            )

    asyncio.run(fund_bnb())
    pipeline.publish(commands)
    pipeline.wait_idle()
    pipeline.publish(commands)  # what a crashed risk stage re-sends
    pipeline.wait_idle()

    async def fund_poor() -> None:
        async with pipeline.wallet() as wallet:
            await wallet.deposit(
                TransferRequest(
                    user_id="poor", asset="USDT", amount="10000", idempotency_key=f"{dup}-poor"
                )  # type: ignore[arg-type]
            )

    asyncio.run(fund_poor())
    for name, argv in (
        ("matcher", ("trade_engine", "matcher", "run", "--worker-id", "w1", "--metrics-port", "0")),
        ("risk", ("trade_engine.cli.money", "risk", "run", "--metrics-port", "0")),
    ):
        pipeline.stop(name)
        pipeline.start(name, *argv)
    pipeline.publish(commands)
    pipeline.wait_idle()
    pipeline.reconcile_ok()

    answers: dict[str, list[dict[str, Any]]] = {}
    for record in pipeline.records(pipeline.settings.topic_names["executions"]):
        execution = json.loads(record.value or b"")
        if str(execution.get("order_id", "")).startswith(dup) and (
            execution["kind"] == "ACCEPTED"
            or (execution["kind"] == "REJECTED" and execution["request"] == "PLACE")
        ):
            answers.setdefault(execution["order_id"], []).append(execution)
    accepted = {oid: sum(a["kind"] == "ACCEPTED" for a in got) for oid, got in answers.items()}
    assert accepted == {
        f"{dup}-s1": 1, f"{dup}-x": 0, f"{dup}-s2": 1, f"{dup}-f": 1, f"{dup}-r": 1, f"{dup}-p": 0,
    }  # fmt: skip
    first_x = answers[f"{dup}-x"][0]
    assert first_x["code"] == "MATCHING_POST_ONLY_WOULD_TAKE"
    assert Decimal(first_x["release"]) > 0
    assert answers[f"{dup}-p"][0]["code"] == "RISK_INSUFFICIENT_BALANCE"
    places = [c for c in commands if isinstance(c, PlaceOrder)]
    for order_id in (p.order_id for p in places):
        later = [a for a in answers[order_id] if a["kind"] == "REJECTED"][-2:]
        assert len(later) == 2, (order_id, answers[order_id])
        for answer in later:  # every copy: a duplicate (or the same risk refusal), release 0
            assert answer["code"] in ("MATCHING_DUPLICATE_ORDER_ID", "RISK_INSUFFICIENT_BALANCE")
            assert Decimal(answer["release"]) == 0
    holds = asyncio.run(
        pipeline.sql("SELECT order_id, remaining FROM holds WHERE order_id LIKE $1", f"{dup}-%")
    )
    assert {r["order_id"]: r["remaining"] for r in holds if r["remaining"]} == {
        f"{dup}-r": Decimal("5.99")
    }
    assert _reserves_of(pipeline, dup) == {f"{dup}-{n}": 1 for n in ("s1", "x", "s2", "f", "r")}
    # Every release and settle of these orders went through (the module's earlier tests
    # leave dead letters of their own in the topic).
    assert [r for r in pipeline.settlement_dead_letters() if dup.encode() in (r.value or b"")] == []
