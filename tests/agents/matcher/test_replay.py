"""Replay against the real pipeline: equal records and hashes; rebuild repairs the changelog."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from trade_engine.agents.matcher.replay import compare, read_partition, rebuild
from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.config import Settings, load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams.codec import encode
from trade_engine.streams.topics import create_topics


def _run_matcher(settings: Settings, state_dir: Path) -> None:
    env = {
        **os.environ,
        "TE_TOPICS__PREFIX": settings.topics.prefix,
        "TE_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "TE_STATE_DIR": str(state_dir),
        "TE_LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trade_engine",
            "matcher",
            "run",
            "--worker-id",
            "w1",
            "--exit-when-idle",
            "3",
            "--metrics-port",
            "0",
        ],
        env=env,
        check=True,
        timeout=180,
    )


@pytest.mark.broker
@pytest.mark.slow
def test_replay_matches_and_rebuild_repairs_a_damaged_changelog(tmp_path: Path) -> None:
    prefix = f"replay-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 2}, state_dir=tmp_path)
    topics = MatcherTopics.from_settings(settings)
    create_topics(settings)
    producer = Producer({**settings.kafka.librdkafka(), "partitioner": "murmur2_random"})
    symbols = settings.market.symbols[:3]
    for command in generate(3000, 5, symbols):
        producer.produce(topics.input, key=command.symbol, value=encode(command))
    producer.flush(30)
    _run_matcher(settings, tmp_path)

    result = compare(settings, topics)
    assert result.ok, [p.as_dict() for p in result.partitions]
    assert sum(len(t) for t in result.actual_trades.values()) > 100

    # Damage partition 0's durable state: tombstone every order it holds.
    orders = [
        r.key
        for r in read_partition(settings, topics.changelog, 0)
        if r.key is not None and r.key.startswith(b"o|") and r.value is not None
    ]
    assert orders
    for key in orders:
        producer.produce(topics.changelog, key=key, value=None, partition=0)
    producer.flush(30)
    assert compare(settings, topics).partitions[0].hash_equal is False

    assert rebuild(settings, 0, topics) >= len(orders)
    repaired = compare(settings, topics)
    assert repaired.ok, [p.as_dict() for p in repaired.partitions]
