"""The validation stage (Faust): good commands forwarded in order, bad ones dead-lettered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from trade_engine.agents.risk.validation import check
from trade_engine.config import load_settings
from trade_engine.streams.codec import encode, header, new_headers
from trade_engine.streams.commands import PlaceOrder
from trade_engine.streams.dead_letter import MAX_VALUE_BYTES
from trade_engine.streams.partitioning import partition_for
from trade_engine.streams.topics import create_topics

SYMBOLS = frozenset({"BTC/USDT"})


def _place(order_id: str, symbol: str = "BTC/USDT") -> PlaceOrder:
    return PlaceOrder(
        symbol=symbol,
        order_id=order_id,
        user_id="u1",
        side="BUY",
        type="LIMIT",
        quantity="0.00100",
        price="50000.00",
    )


def test_check_names_the_problem() -> None:
    good = encode(_place("o1"))
    assert check(b"BTC/USDT", good, SYMBOLS) is None
    assert check(b"ETH/USDT", good, SYMBOLS) is not None
    assert check(b"BTC/USDT", b"{}", SYMBOLS) is not None
    problem = check(b"SOL/USDT", encode(_place("o1", "SOL/USDT")), SYMBOLS)
    assert problem is not None
    assert problem[0] == "UNKNOWN_SYMBOL"
    forged = json.loads(encode(_place("o2")))
    forged["risk_reject"] = {"code": "RISK_REJECTED", "message": "x"}
    problem = check(b"BTC/USDT", json.dumps(forged).encode(), SYMBOLS)
    assert problem is not None
    assert problem[0] == "FORBIDDEN_FIELD"


def test_check_refuses_a_command_off_its_keys_partition() -> None:
    good = encode(_place("o1"))
    home = partition_for(b"BTC/USDT", 4)
    assert check(b"BTC/USDT", good, SYMBOLS, partition=home, partitions=4) is None
    problem = check(b"BTC/USDT", good, SYMBOLS, partition=(home + 1) % 4, partitions=4)
    assert problem is not None
    assert problem[0] == "WRONG_PARTITION"


def _drain(conf: dict[str, object], topic: str, partitions: int, expect: int) -> list[object]:
    consumer = Consumer({**conf, "group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[object] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


@pytest.mark.broker
@pytest.mark.slow
def test_stage_forwards_in_order_and_dead_letters_bad_input(tmp_path: Path) -> None:
    prefix = f"val-{uuid.uuid4().hex[:8]}."
    env = {**os.environ, "TE_TOPICS__PREFIX": prefix, "TE_STATE_DIR": str(tmp_path)}
    settings = load_settings(topics={"prefix": prefix}, state_dir=tmp_path)
    create_topics(settings)
    names = settings.topic_names
    conf = settings.kafka.librdkafka()
    producer = Producer({**conf, "partitioner": "murmur2_random", "enable.idempotence": True})
    for i in range(200):
        command = _place(f"o{i}")
        producer.produce(
            names["commands"],
            key=command.symbol,
            value=encode(command),
            headers=new_headers(f"trace-{i}"),
        )
    producer.produce(names["commands"], key="BTC/USDT", value=b"not json")
    producer.produce(names["commands"], key="ETH/USDT", value=encode(_place("x")))
    home = partition_for(b"BTC/USDT", settings.topics.partitions)
    stray = (home + 1) % settings.topics.partitions
    producer.produce(
        names["commands"], key="BTC/USDT", value=encode(_place("stray")), partition=stray
    )
    # About 1 MB: the broker takes it, a dead letter of it whole would not fit.
    huge = encode(_place("huge")).replace(b'"huge"', b'"' + b"h" * 1_000_000 + b'"')
    big = Producer({**conf, "message.max.bytes": 2_000_000})
    big.produce(names["commands"], key="BTC/USDT", value=huge, partition=home)
    assert big.flush(30) == 0
    producer.flush(30)

    worker = subprocess.Popen(
        [sys.executable, "-m", "trade_engine", "validation", "run", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        accepted = _drain(conf, names["accepted"], settings.topics.partitions, 200)
        dead = _drain(conf, names["dead_letter"], settings.topics.partitions, 4)
    finally:
        worker.terminate()
        worker.wait(30)

    assert [m.value() for m in accepted] == [encode(_place(f"o{i}")) for i in range(200)]  # type: ignore[attr-defined]
    assert header(accepted[0].headers(), "trace_id") == "trace-0"  # type: ignore[attr-defined]
    codes = sorted(header(m.headers(), "dlq.code") or "" for m in dead)  # type: ignore[attr-defined]
    assert codes == ["DECODE_INVALID", "DECODE_TOO_LARGE", "KEY_SYMBOL_MISMATCH", "WRONG_PARTITION"]
    (letter,) = [m for m in dead if header(m.headers(), "dlq.code") == "DECODE_TOO_LARGE"]  # type: ignore[attr-defined]
    assert header(letter.headers(), "dlq.original_size") == str(len(huge))  # type: ignore[attr-defined]
    assert letter.value() == huge[:MAX_VALUE_BYTES]  # type: ignore[attr-defined]


@pytest.mark.broker
@pytest.mark.slow
def test_stage_loses_no_command_across_kills_and_restarts_under_backlog(tmp_path: Path) -> None:
    """At-least-once through crashes: SIGKILL mid-stream, then a graceful restart
    with a backlog waiting (where Faust's recovery has dropped records when it
    resumed fetching before seeking: docs/recovery.md), then a last run. Every
    command comes out, in order per symbol; duplicates are allowed (the matcher
    answers them as MATCHING_DUPLICATE_ORDER_ID)."""
    prefix = f"valkill-{uuid.uuid4().hex[:8]}."
    env = {**os.environ, "TE_TOPICS__PREFIX": prefix, "TE_STATE_DIR": str(tmp_path)}
    settings = load_settings(topics={"prefix": prefix}, state_dir=tmp_path)
    create_topics(settings)
    names = settings.topic_names
    conf = settings.kafka.librdkafka()
    symbols = [s.symbol for s in settings.market.symbols][:3]
    producer = Producer({**conf, "partitioner": "murmur2_random", "enable.idempotence": True})
    sent: dict[str, list[str]] = {symbol: [] for symbol in symbols}
    watermarks = Consumer({**conf, "group.id": f"t-{uuid.uuid4().hex}"})

    def forwarded() -> int:
        """Records on the accepted topic (not transactional: its high watermarks)."""
        return sum(
            watermarks.get_watermark_offsets(TopicPartition(names["accepted"], p), timeout=10)[1]
            for p in range(settings.topics.partitions)
        )

    def produce(count: int) -> None:
        start = sum(len(ids) for ids in sent.values())
        for i in range(start, start + count):
            symbol = symbols[i % len(symbols)]
            command = _place(f"k{i}", symbol)
            producer.produce(names["commands"], key=symbol, value=encode(command))
            sent[symbol].append(command.order_id)
            if i % 1000 == 0:
                producer.poll(0)
        assert producer.flush(30) == 0

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "trade_engine", "validation", "run", "--metrics-port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def run_until_forwarded(at_least: int, sig: signal.Signals) -> int:
        """Run a worker until ``at_least`` records were forwarded, stop it with
        ``sig``; return the records forwarded by then."""
        worker = start()
        deadline = time.monotonic() + 90
        try:
            while forwarded() < at_least:
                assert worker.poll() is None, f"validation exited with {worker.returncode}"
                assert time.monotonic() < deadline, "validation stopped forwarding"
                time.sleep(0.05)
        finally:
            worker.send_signal(sig)
            worker.wait(30)
        return forwarded()

    produce(30_000)
    after_kill = run_until_forwarded(2_000, signal.SIGKILL)  # offsets uncommitted
    produce(5_000)  # more backlog while nothing runs
    after_term = run_until_forwarded(after_kill + 2_000, signal.SIGTERM)
    total = sum(len(ids) for ids in sent.values())
    # Both stops landed mid-stream, with a backlog left for the next start.
    assert after_kill < after_term < total, (after_kill, after_term, total)
    worker = start()
    try:
        accepted = _drain_ids(conf, names["accepted"], settings.topics.partitions, total)
    finally:
        worker.terminate()
        worker.wait(30)
        watermarks.close()

    for symbol in symbols:
        seen = list(dict.fromkeys(accepted.get(symbol, [])))  # first deliveries, in order
        assert seen == sent[symbol], f"{symbol}: {len(set(sent[symbol]) - set(seen))} lost"


def _drain_ids(
    conf: dict[str, Any], topic: str, partitions: int, distinct: int
) -> dict[str, list[str]]:
    """Order ids per symbol, in log order, until ``distinct`` different ids were read."""
    consumer = Consumer({**conf, "group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    ids: dict[str, list[str]] = {}
    unique: set[str] = set()
    deadline = time.monotonic() + 120
    try:
        while len(unique) < distinct and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5_000, timeout=0.5):
                if msg.error() is None:
                    order_id = json.loads(msg.value() or b"{}")["order_id"]
                    ids.setdefault((msg.key() or b"").decode(), []).append(order_id)
                    unique.add(order_id)
    finally:
        consumer.close()
    return ids
