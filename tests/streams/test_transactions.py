"""The exactly-once workers' client settings: what their correctness rests on."""

from __future__ import annotations

from trade_engine.config import load_settings
from trade_engine.streams.transactions import (
    exactly_once_consumer_conf,
    transactional_producer_conf,
)


def test_consumer_reads_committed_and_leaves_commits_to_the_transaction() -> None:
    conf = exactly_once_consumer_conf(load_settings(), "g", "w1", **{"queued.min.messages": 5})
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.auto.commit"] is False
    assert (conf["group.id"], conf["group.instance.id"]) == ("g", "w1")
    assert conf["queued.min.messages"] == 5
    assert "bootstrap.servers" in conf


def test_producer_is_transactional_and_idempotent() -> None:
    conf = transactional_producer_conf(load_settings(), "g-w1", partitioner="murmur2_random")
    assert conf["transactional.id"] == "g-w1"
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["partitioner"] == "murmur2_random"
