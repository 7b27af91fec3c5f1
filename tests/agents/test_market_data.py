"""The market-data agent against the real broker and the real matcher.

Commands go through the matcher (a subprocess on its own topic prefix), then
the agent. A reader following the documented procedure (latest snapshot from
``te.md.depth.snapshot`` + diffs from ``te.md.depth``) must hold, for every
symbol, the book of an offline replay of the same input through the core.
The agent is then killed with SIGKILL mid-run and restarted: the diffs stay
gap-free and duplicate-free (U = previous u + 1 over the whole topic) and the
books still match.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from trade_engine.agents.matcher.replay import read_partition
from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.config import Settings, load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams.codec import encode
from trade_engine.streams.topics import create_topics
from trade_engine.tables.market_data import DepthSync


def _env(settings: Settings, state_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TE_TOPICS__PREFIX": settings.topics.prefix,
        "TE_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "TE_STATE_DIR": str(state_dir),
        "TE_LOG_LEVEL": "WARNING",
        "TE_MARKET_DATA__SNAPSHOT_EVERY": "300",
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trade_engine", *args, "--metrics-port", "0"]


def _run(settings: Settings, state_dir: Path, *args: str) -> None:
    subprocess.run(
        _cli(*args, "--exit-when-idle", "3"),
        env=_env(settings, state_dir),
        check=True,
        timeout=300,
    )


def _produce(settings: Settings, n: int, seed: int, id_prefix: str) -> None:
    producer = Producer({**settings.kafka.librdkafka(), "partitioner": "murmur2_random"})
    topic = MatcherTopics.from_settings(settings).input
    for command in generate(n, seed, settings.market.symbols[:3], users=5, id_prefix=id_prefix):
        producer.produce(topic, key=command.symbol, value=encode(command))
    producer.flush(30)


def _read(settings: Settings, role: str) -> dict[int, list[dict[str, Any]]]:
    topic = settings.topic_names[role]
    return {
        p: [json.loads(r.value or b"") for r in read_partition(settings, topic, p)]
        for p in range(settings.topics.partitions)
    }


def _check(settings: Settings, engine_depth: Callable[[Settings], Any]) -> int:
    """Diffs gap-free per symbol; snapshot + diffs = the engine's books. Returns #diffs."""
    diffs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for messages in _read(settings, "md_depth").values():
        for m in messages:
            diffs[m["symbol"]].append(m)
    snapshots: dict[str, dict[str, Any]] = {}
    for messages in _read(settings, "md_depth_snapshot").values():
        for m in messages:
            snapshots[m["symbol"]] = m  # the latest one per symbol, as compaction keeps
    engine = engine_depth(settings)
    assert set(engine) == set(diffs)
    for symbol, updates in diffs.items():
        assert updates[0]["U"] == 1
        for before, after in itertools.pairwise(updates):
            assert after["U"] == before["u"] + 1, f"{symbol}: gap or duplicate at {after['U']}"
        sync = DepthSync(symbol)
        for update in updates:
            sync.on_update(update)
        sync.on_snapshot(snapshots[symbol])
        assert snapshots[symbol]["lastUpdateId"] > 0
        assert {"bids": sync.levels("bids"), "asks": sync.levels("asks")} == engine[symbol]
    return sum(len(u) for u in diffs.values())


def _end_offsets(settings: Settings, role: str) -> list[int]:
    topic = settings.topic_names[role]
    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": "md-test-watermarks"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(settings.topics.partitions)
        ]
    finally:
        consumer.close()


def _lag(settings: Settings) -> int:
    """Executions the agent's group has not committed yet."""
    topic = settings.topic_names["executions"]
    group = f"{settings.topics.prefix}market-data"
    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        committed = consumer.committed(tps, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
        return sum(end - max(tp.offset, 0) for tp, end in zip(committed, ends, strict=True))
    finally:
        consumer.close()


@pytest.mark.broker
@pytest.mark.slow
def test_depth_follows_the_matcher_and_survives_kill_9(
    tmp_path: Path, engine_depth: Callable[[Settings], Any]
) -> None:
    prefix = f"md-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 2}, state_dir=tmp_path)
    create_topics(settings)
    _produce(settings, 3000, 11, "a")
    _run(settings, tmp_path, "matcher", "run", "--worker-id", "w1")
    _run(settings, tmp_path, "market-data", "run")
    first = _check(settings, engine_depth)
    assert first > 500
    candles = [m for ms in _read(settings, "md_candles").values() for m in ms]
    tickers = [m for ms in _read(settings, "md_tickers").values() for m in ms]
    assert candles
    assert {t["symbol"] for t in tickers} == {s.symbol for s in settings.market.symbols[:3]}

    # More flow; the agent is killed while it works, then finishes after a restart.
    _produce(settings, 6000, 12, "b")
    _run(settings, tmp_path, "matcher", "run", "--worker-id", "w1")
    proc = subprocess.Popen(
        _cli("market-data", "run", "--batch-size", "50"), env=_env(settings, tmp_path)
    )
    # Kill it as soon as it has published part of the new flow, never after it is done.
    before = _end_offsets(settings, "md_depth")
    deadline = time.monotonic() + 60
    while _end_offsets(settings, "md_depth") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert _lag(settings) > 0, "the agent finished before it was killed: nothing was tested"
    _run(settings, tmp_path, "market-data", "run")
    assert _check(settings, engine_depth) > first
