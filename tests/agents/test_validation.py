"""The validation stage (Faust): good commands forwarded in order, bad ones dead-lettered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from trade_engine.agents.validation import check
from trade_engine.config import load_settings
from trade_engine.streams.codec import encode, header, new_headers
from trade_engine.streams.commands import PlaceOrder
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
    producer.flush(30)

    worker = subprocess.Popen(
        [sys.executable, "-m", "trade_engine", "validation", "run", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        accepted = _drain(conf, names["accepted"], settings.topics.partitions, 200)
        dead = _drain(conf, names["dead_letter"], settings.topics.partitions, 2)
    finally:
        worker.terminate()
        worker.wait(30)

    assert [m.value() for m in accepted] == [encode(_place(f"o{i}")) for i in range(200)]  # type: ignore[attr-defined]
    assert header(accepted[0].headers(), "trace_id") == "trace-0"  # type: ignore[attr-defined]
    codes = sorted(header(m.headers(), "dlq.code") or "" for m in dead)  # type: ignore[attr-defined]
    assert codes == ["DECODE_INVALID", "KEY_SYMBOL_MISMATCH"]
