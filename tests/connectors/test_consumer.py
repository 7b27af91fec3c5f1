"""The trade-consumer SDK against the real broker: typed records, a consumer killed
mid-stream resumes without loss, deduplication across the restart, start from a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from trade_engine.config import Settings, load_settings
from trade_engine.connectors.consumer import SeenIds, TradeConsumer
from trade_engine.streams import clients
from trade_engine.streams.execution_records import InputRef, PublicTrade
from trade_engine.streams.topics import create_topics

pytestmark = pytest.mark.broker

CONSUMER = """
import sys
from pathlib import Path
from trade_engine.config import load_settings
from trade_engine.connectors.consumer import TradeConsumer

out = Path(sys.argv[1]).open("a", buffering=1)
with TradeConsumer(load_settings(), "sdk-test", dedup_path=Path(sys.argv[2])) as consumer:
    consumer.run(lambda trade: out.write(trade.trade_id + "\\n"), idle_s=float(sys.argv[3]))
"""


def _trade(n: int) -> PublicTrade:
    return PublicTrade(
        trade_id=f"BTC/USDT:{n}",
        seq=n,
        symbol="BTC/USDT",
        price=Decimal("50000.10"),
        quantity=Decimal("0.01000"),
        quote_quantity=Decimal("500.0010000"),
        buyer_order_id=f"b{n}",
        seller_order_id=f"s{n}",
        buyer_user_id="u1",
        seller_user_id="u2",
        buyer_fee=Decimal("0.00001"),
        seller_fee=Decimal("0.5000010"),
        buyer_fee_asset="BTC",
        seller_fee_asset="USDT",
        is_buyer_maker=n % 2 == 0,
        executed_at="2026-12-03T00:00:00.000Z",
        input=InputRef(partition=0, offset=n),
    )


def _publish(settings: Settings, first: int, count: int) -> None:
    producer = clients.producer(settings)
    topic = settings.topic_names["trades"]
    for n in range(first, first + count):
        producer.produce(topic, key=b"BTC/USDT", value=msgspec.json.encode(_trade(n)))
        producer.poll(0)
    assert producer.flush(30) == 0


def _settings(tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    prefix = f"sdk-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 2}, state_dir=tmp_path)
    create_topics(settings)
    env = {**os.environ, "TE_TOPICS__PREFIX": prefix, "TE_TOPICS__PARTITIONS": "2"}
    return settings, env


def test_typed_records_from_a_time(tmp_path: Path) -> None:
    settings, _ = _settings(tmp_path)
    _publish(settings, 1, 5)
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    _publish(settings, 6, 5)
    with TradeConsumer(settings, "sdk-from-time", start=middle) as consumer:
        got: list[PublicTrade] = []
        consumer.run(got.append, max_records=5, idle_s=10)  # type: ignore[arg-type]
    assert [t.seq for t in got] == [6, 7, 8, 9, 10]
    assert got[0].price == Decimal("50000.10")
    assert isinstance(got[0].quantity, Decimal)


def test_a_consumer_killed_mid_stream_resumes_without_loss(tmp_path: Path) -> None:
    settings, env = _settings(tmp_path)
    total = 20_000
    _publish(settings, 1, total)
    out, seen = tmp_path / "handled.txt", tmp_path / "seen.sqlite"

    def start(idle_s: float) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-c", CONSUMER, str(out), str(seen), str(idle_s)]
        return subprocess.Popen(argv, env=env)

    first = start(60)
    deadline = time.monotonic() + 60
    while not out.exists() or len(out.read_text().splitlines()) < 2_000:
        assert first.poll() is None, "the consumer exited early"
        assert time.monotonic() < deadline, "the consumer handled nothing"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    at_kill = len(out.read_text().splitlines())
    assert at_kill < total, "the kill did not land mid-stream"
    second = start(3)
    assert second.wait(120) == 0
    handled = out.read_text().splitlines()
    assert {int(h.split(":")[1]) for h in handled} == set(range(1, total + 1))  # nothing lost
    # Deduplicated across the restart: at most the record handled as the kill struck.
    assert len(handled) - total <= 1
    assert f"BTC/USDT:{total}" in SeenIds(seen)
