"""Kafka client settings: what each kind of client's guarantees rest on."""

from __future__ import annotations

from trade_engine.config import load_settings
from trade_engine.streams.clients import (
    KEYED_PRODUCER,
    committing_consumer_conf,
    exactly_once_consumer_conf,
    producer_conf,
    reader_conf,
    transactional_producer_conf,
)


def test_exactly_once_input_reads_committed_and_leaves_commits_to_the_transaction() -> None:
    conf = exactly_once_consumer_conf(load_settings(), "g", "w1", **{"queued.min.messages": 5})
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.auto.commit"] is False
    assert conf["auto.offset.reset"] == "earliest"
    assert (conf["group.id"], conf["group.instance.id"]) == ("g", "w1")
    assert conf["queued.min.messages"] == 5
    assert "bootstrap.servers" in conf


def test_transactional_producer_is_idempotent_and_keyed_like_faust() -> None:
    conf = transactional_producer_conf(load_settings(), "g-w1", **{"linger.ms": 7})
    assert conf["transactional.id"] == "g-w1"
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["partitioner"] == "murmur2_random"
    assert conf["linger.ms"] == 7  # tuning keys are the caller's


def test_every_producer_sends_keys_where_faust_does() -> None:
    conf = producer_conf(load_settings(), **{"linger.ms": 10, "message.max.bytes": 2_000_000})
    assert KEYED_PRODUCER.items() <= conf.items()
    assert (conf["linger.ms"], conf["message.max.bytes"]) == (10, 2_000_000)


def test_readers_never_commit_and_see_only_committed_records() -> None:
    conf = reader_conf(load_settings(), "r", **{"enable.partition.eof": True})
    assert conf["enable.auto.commit"] is False
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.partition.eof"] is True
    assert "group.instance.id" not in conf


def test_at_least_once_consumers_commit_by_hand_from_the_earliest_position() -> None:
    conf = committing_consumer_conf(load_settings(), "s", **{"session.timeout.ms": 6000})
    assert conf["enable.auto.commit"] is False
    assert conf["isolation.level"] == "read_committed"
    assert conf["auto.offset.reset"] == "earliest"
    assert conf["session.timeout.ms"] == 6000
