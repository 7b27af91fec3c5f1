"""The Postgres sink against real Kafka and Postgres: exactly once across kills and restarts."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections import Counter

import pytest

from trade_engine.config import Settings
from trade_engine.operations import synthetic
from trade_engine.streams.execution_records import TradeExecution, decode_execution

pytestmark = [pytest.mark.postgres, pytest.mark.broker]
REPO_OPS = "ops/postgres/postgres.sh"


def _committed_prefix_trades(feed, offsets: dict[int, int]) -> set[str]:
    """Trade ids of the messages below the stored positions."""

    ids = set()
    for partition, values in feed.messages.items():
        for value in values[: offsets.get(partition, 0)]:
            record = decode_execution(value)
            if isinstance(record, TradeExecution):
                ids.add(record.trade_id)
    return ids


def test_sigkill_between_insert_and_commit_loses_and_duplicates_nothing(
    settings: Settings, feed, pg_schema, helpers
) -> None:
    f = feed(commands=4000, seed=11)
    schema = pg_schema()
    code = helpers.run_sink(f, schema, "--batch-size", "400", TE_SINK_FAULT="kill-before-commit:3")
    assert code == -9
    killed = asyncio.run(helpers.fetch_state(settings, schema))
    # Two batches committed, the third rolled back with the process: rows match positions.
    assert sorted(killed["trade_ids"]) == sorted(_committed_prefix_trades(f, killed["offsets"]))
    assert 0 < sum(killed["offsets"].values()) < sum(len(v) for v in f.messages.values())

    assert helpers.run_sink(f, schema, "--batch-size", "400", "--exit-when-idle", "2") == 0
    state = asyncio.run(helpers.fetch_state(settings, schema))
    assert Counter(state["trade_ids"]).most_common(1)[0][1] == 1
    assert set(state["trade_ids"]) == f.trade_ids()
    assert state["orders"] == helpers.expected_orders(f.expected())
    assert state["offsets"] == {p: len(v) for p, v in f.messages.items() if v}


def test_postgres_restart_during_load_recovers_without_loss(
    settings: Settings, feed, pg_schema, helpers
) -> None:
    f = feed()
    schema = pg_schema()
    messages = synthetic.executions(
        6000, 12, f.settings.market.symbols[:4], 4, start_ms=1_767_225_600_000
    )
    f.messages = messages
    chunks = [
        {p: v[len(v) * i // 6 : len(v) * (i + 1) // 6] for p, v in messages.items()}
        for i in range(6)
    ]

    def produce() -> None:
        for chunk in chunks:
            synthetic.publish(f.settings, f.topic, chunk)
            time.sleep(0.7)

    producer = threading.Thread(target=produce)
    proc = subprocess.Popen(
        helpers.sink_command(
            "sink",
            "postgres",
            "run",
            "--schema",
            schema,
            "--batch-size",
            "300",
            "--exit-when-idle",
            "6",
        ),
        env=f.env(TE_SINK_FAULT="sleep-before-commit:0.05"),
    )
    producer.start()
    try:
        helpers.wait_for(
            lambda: sum(asyncio.run(helpers.fetch_state(settings, schema))["offsets"].values()) > 0,
            30,
            "the sink's first batch",
        )
        subprocess.run(["bash", REPO_OPS, "down"], check=True)
        time.sleep(2)
        assert proc.poll() is None, "the sink must survive the database going away"
    finally:
        subprocess.run(["bash", REPO_OPS, "up"], check=True)
    producer.join()
    assert proc.wait(timeout=90) == 0
    state = asyncio.run(helpers.fetch_state(settings, schema))
    assert len(state["trade_ids"]) == len(set(state["trade_ids"]))
    assert set(state["trade_ids"]) == f.trade_ids()
    assert state["orders"] == helpers.expected_orders(f.expected())
