"""Warm standby: a follower's local stores hold the same books as the changelog."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from trade_engine.agents.matcher.replay import read_partition
from trade_engine.agents.matcher.standby import StandbyReplicator
from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.config import load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams.codec import encode
from trade_engine.streams.topics import create_topics
from trade_engine.tables.durable import PartitionBooks
from trade_engine.tables.symbols import rules_for


@pytest.mark.broker
@pytest.mark.slow
def test_standby_stores_follow_the_changelog(tmp_path: Path) -> None:
    prefix = f"standby-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 2}, state_dir=tmp_path)
    topics = MatcherTopics.from_settings(settings)
    create_topics(settings)
    producer = Producer({**settings.kafka.librdkafka(), "partitioner": "murmur2_random"})
    for command in generate(3000, 9, settings.market.symbols[:4]):
        producer.produce(topics.input, key=command.symbol, value=encode(command))
    producer.flush(30)
    env = {
        **os.environ,
        "TE_TOPICS__PREFIX": prefix,
        "TE_TOPICS__PARTITIONS": "2",
        "TE_STATE_DIR": str(tmp_path),
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
            "active",
            "--exit-when-idle",
            "3",
            "--metrics-port",
            "0",
        ],
        env=env,
        check=True,
        timeout=180,
    )

    rules = {s.symbol: rules_for(s) for s in settings.market.symbols}
    standby = StandbyReplicator(settings, topics.changelog, tmp_path / "standby")
    try:
        standby.follow({0, 1})
        deadline = time.monotonic() + 60
        applied = 0
        while time.monotonic() < deadline:
            n = standby.poll(timeout_s=0.5)
            applied += n
            if n == 0 and applied:
                break
        assert applied > 0
        for partition in (0, 1):
            entries: dict[bytes, bytes | None] = {}
            for record in read_partition(settings, topics.changelog, partition):
                if record.key is not None:
                    entries[record.key] = record.value
            expected = PartitionBooks.restore(
                partition, rules, [(k, v) for k, v in entries.items() if v is not None]
            )
            followed = PartitionBooks.restore(partition, rules, standby.stores[partition].items())
            assert followed.position == expected.position > 0
            assert followed.state_hashes() == expected.state_hashes()
    finally:
        standby.close()
