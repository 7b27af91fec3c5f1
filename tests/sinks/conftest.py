"""Factories for the sinks' tests: fresh schemas, topics of realistic executions, sinks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from trade_engine.config import Settings, load_settings
from trade_engine.migrations.runner import migrate_schema
from trade_engine.operations import synthetic
from trade_engine.sinks.rows import BatchRows, fold
from trade_engine.streams.execution_records import (
    ExecutionRecord,
    TradeExecution,
    decode_execution,
)

REPO = Path(__file__).resolve().parents[2]
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class Feed:
    """A topic prefix whose ``executions`` topic holds seeded matcher output."""

    prefix: str
    settings: Settings
    messages: dict[int, list[bytes]] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return self.settings.topic_names["executions"]

    def decoded(self) -> list[ExecutionRecord]:
        return [decode_execution(v) for p in sorted(self.messages) for v in self.messages[p]]

    def trade_ids(self) -> set[str]:
        return {m.trade_id for m in self.decoded() if isinstance(m, TradeExecution)}

    def expected(self) -> BatchRows:
        return fold(self.decoded())

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "TE_TOPICS__PREFIX": self.prefix,
            "TE_LOG_LEVEL": "WARNING",
            **extra,
        }


def _run(coro_factory: Callable[[], Any]) -> Any:
    """asyncio.run in a worker thread: usable from sync and async tests alike."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result()


@pytest.fixture
def pg_schema(settings: Settings) -> Iterator[Callable[[], str]]:
    """Factory: a fresh, migrated schema; dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        _run(lambda: migrate_schema(settings.postgres.dsn(), name))
        made.append(name)
        return name

    yield make

    async def drop() -> None:
        conn = await asyncpg.connect(settings.postgres.dsn())
        try:
            for name in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()

    if made:
        _run(drop)


@pytest.fixture
def feed(settings: Settings) -> Iterator[Callable[..., Feed]]:
    """Factory: a unique topic prefix with a 4-partition executions topic, optionally filled."""
    admin = AdminClient(settings.kafka.librdkafka())
    topics: list[str] = []

    def make(commands: int = 0, seed: int = 1, step_ms: int = 1, symbols: int = 4) -> Feed:
        prefix = f"sinktest-{uuid.uuid4().hex[:10]}."
        feed = Feed(prefix, load_settings(topics={"prefix": prefix, "partitions": 4}))
        futures = admin.create_topics(
            [NewTopic(feed.topic, num_partitions=4, replication_factor=1)]
        )
        futures[feed.topic].result(timeout=30)
        topics.append(feed.topic)
        if commands:
            feed.messages = synthetic.executions(
                commands,
                seed,
                feed.settings.market.symbols[:symbols],
                4,
                start_ms=START_MS,
                step_ms=step_ms,
            )
            synthetic.publish(feed.settings, feed.topic, feed.messages)
        return feed

    yield make
    if topics:
        for future in admin.delete_topics(topics).values():
            future.result(timeout=30)


def sink_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trade_engine", *args]


def run_sink(feed: Feed, schema: str, *args: str, timeout: float = 90, **env: str) -> int:
    proc = subprocess.run(
        sink_command("sink", "postgres", "run", "--schema", schema, *args),
        env=feed.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode not in (0, -9):
        sys.stderr.write(proc.stderr[-4000:])
    return proc.returncode


async def fetch_state(settings: Settings, schema: str) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.postgres.dsn(), server_settings={"search_path": schema})
    try:
        trades = await conn.fetch("SELECT trade_id FROM trades")
        orders = await conn.fetch(
            "SELECT order_id, status::text, filled_quantity, quote_filled, last_seq FROM orders"
        )
        offsets = await conn.fetch("SELECT partition, next_offset FROM sink_offsets")
        return {
            "trade_ids": [r["trade_id"] for r in trades],
            "orders": {
                r["order_id"]: (r["status"], r["filled_quantity"], r["quote_filled"], r["last_seq"])
                for r in orders
            },
            "offsets": {r["partition"]: r["next_offset"] for r in offsets},
        }
    finally:
        await conn.close()


def expected_orders(rows: BatchRows) -> dict[str, tuple[Any, ...]]:
    return {
        oid: (r["status"], r["filled_quantity"], r["quote_filled"], r["last_seq"])
        for oid, r in rows.new_orders.items()
    }


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Helpers:
    """The module's helpers as one fixture (test modules cannot import conftest)."""

    run_sink = staticmethod(run_sink)
    sink_command = staticmethod(sink_command)
    fetch_state = staticmethod(fetch_state)
    expected_orders = staticmethod(expected_orders)
    wait_for = staticmethod(wait_for)


@pytest.fixture
def helpers() -> type[Helpers]:
    return Helpers
