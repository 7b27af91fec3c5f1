"""Faust (faust-streaming) on the real broker: it partitions keys like the engine does.

The risk and validation stages run on Faust; a key must land on the partition
Kafka's murmur2 gives it (``streams/partitioning.py``), whoever produced it.

The Faust apps live in ``tests/support/faust_apps.py`` and run as real worker
subprocesses (``python faust_apps.py worker``), the way the engine runs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

APPS = Path(__file__).resolve().parents[2] / "support" / "faust_apps.py"
SYMBOLS = [
    f"{base}/{quote}"
    for base in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "AVAX", "LINK")
    for quote in ("USDT", "USDC", "EUR", "BTC", "ETH")
]  # 50 symbols


def _producer(conf: dict[str, Any], **extra: object) -> Producer:
    return Producer({**conf, "enable.idempotence": True, "acks": "all", **extra})


def _produce(producer: Producer, topic: str, items: list[tuple[str, bytes]]) -> dict[str, int]:
    """Produce (key, value) pairs; return the partition each key went to."""
    partitions: dict[str, int] = {}
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
            return
        key, partition = msg.key(), msg.partition()
        assert key is not None
        assert partition is not None
        partitions[key.decode()] = partition

    for key, value in items:
        producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert not errors, errors
    return partitions


def _read_until(
    conf: dict[str, Any],
    topic: str,
    done: Callable[[list[Message]], bool],
    timeout_s: float,
    *,
    alive: subprocess.Popen[bytes] | None = None,
) -> list[Message]:
    """Read ``topic`` from the beginning until ``done(messages)`` or time out."""
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    while topic not in admin.list_topics(timeout=10).topics:  # e.g. a changelog topic
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"faust worker exited early with {alive.returncode}")
        assert time.monotonic() < deadline, f"topic {topic} never appeared"
        time.sleep(0.5)
    count = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer = Consumer(
        {**conf, "group.id": f"test-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, -2) for p in range(count)])
    messages: list[Message] = []
    try:
        while not done(messages):
            if alive is not None and alive.poll() is not None:
                pytest.fail(f"faust worker exited early with {alive.returncode}")
            assert time.monotonic() < deadline, (
                f"{topic}: gave up with {len(messages)} records, the last: "
                f"{[(m.key(), m.value()) for m in messages[-3:]]}"
            )
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                messages.append(msg)
    finally:
        consumer.close()
    return messages


@contextmanager
def _faust_worker(cfg: dict[str, Any], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a Faust worker of tests/support/faust_apps.py; SIGTERM it at the end."""
    env = {**os.environ, "FAUST_TEST_APP": json.dumps(cfg)}
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(APPS), "worker", "-l", "info", "--without-web"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            _stop(proc, signal.SIGTERM)


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _delete_topics_with_prefix(conf: dict[str, Any], prefix: str) -> None:
    """Delete the internal topics Faust created for an app (changelog, leader)."""
    admin = AdminClient(conf)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names).values():
            with suppress(Exception):
                future.result(timeout=30)


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-6000:] if path.exists() else "(no log)"


# -- a) partition agreement ---------------------------------------------------


@pytest.mark.broker
@pytest.mark.slow
def test_murmur2_random_partitions_like_faust(
    kafka_conf: dict[str, Any], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source = new_topic("faust-part-src", partitions=8)
    echo = new_topic("faust-part-echo", partitions=8)
    results = new_topic("faust-part-results", partitions=1)
    default_topic = new_topic("faust-part-default", partitions=8)
    items = [(symbol, b"{}") for symbol in SYMBOLS]

    # What confluent-kafka does with the engine's settings and with its default.
    confluent = _produce(_producer(kafka_conf, partitioner="murmur2_random"), source, items)
    librdkafka_default = _produce(_producer(kafka_conf), default_topic, items)
    assert len(confluent) == len(SYMBOLS)

    app_id = f"test-faust-part-{uuid.uuid4().hex[:10]}"
    cfg = {
        "kind": "partitions",
        "app_id": app_id,
        "broker": kafka_conf["bootstrap.servers"],
        "datadir": str(tmp_path / "data"),
        "source": source,
        "echo": echo,
        "results": results,
        "partitions": 8,
    }
    log_path = tmp_path / "worker.log"
    try:
        with _faust_worker(cfg, log_path) as proc:
            try:
                records = _read_until(
                    kafka_conf,
                    results,
                    lambda msgs: len(msgs) >= len(SYMBOLS),
                    timeout_s=60,
                    alive=proc,
                )
            except BaseException:
                print(_log_tail(log_path))
                raise
        echoed = _read_until(kafka_conf, echo, lambda msgs: len(msgs) >= len(SYMBOLS), 30)
    finally:
        _delete_topics_with_prefix(kafka_conf, app_id)

    reports = [json.loads(msg.value() or b"") for msg in records]
    received = {r["key"]: r["received_partition"] for r in reports}
    sent = {r["key"]: r["sent_partition"] for r in reports}
    landed = {(msg.key() or b"").decode(): msg.partition() for msg in echoed}
    # The Faust agent sees each key on the partition confluent's murmur2_random chose,
    assert received == confluent
    # and Faust's own producer (aiokafka, Java's murmur2) picks the same partition.
    assert sent == confluent
    assert landed == confluent
    # librdkafka's default (consistent_random, CRC32) sends keys elsewhere.
    differing = [s for s in SYMBOLS if librdkafka_default[s] != confluent[s]]
    assert differing, "the default partitioner unexpectedly agreed on every key"


# -- b) RocksDB table recovery from the changelog --------------------------------

COUNTER_SYMBOLS = SYMBOLS[:8]
