"""``trade-engine lag``: every group on the cluster, its status, the RabbitMQ queues; one
line and an exit code for what is missing or unreachable, never a traceback."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest
from confluent_kafka import TopicPartition

from trade_engine.cli import main
from trade_engine.config import Settings, load_settings
from trade_engine.operations.queues import bridged_queues
from trade_engine.streams import clients
from trade_engine.streams.topics import create_topics


def _run_lag(
    capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, dict[str, Any] | str, str]:
    """``trade-engine lag ARGV``: exit code, the JSON document (or the text) and stderr."""
    code = main(["lag", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in argv and out else out), err


@pytest.mark.broker
def test_an_outside_group_is_listed_with_its_lag(
    new_topic: Callable[..., str],
    settings: Settings,
    forget: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("outside", partitions=3)
    group = forget(f"outside-{uuid.uuid4().hex[:8]}")
    producer = clients.producer(settings)
    for i in range(30):
        producer.produce(topic, value=b"x", partition=i % 3)
    producer.flush(30)
    committer = clients.consumer(settings, group, **{"enable.auto.commit": False})
    committer.commit(
        offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 10)], asynchronous=False
    )
    committer.close()

    started = time.monotonic()
    code, doc, err = _run_lag(capsys, "--json")  # every group on the cluster
    elapsed = time.monotonic() - started
    assert isinstance(doc, dict)
    assert "Traceback" not in err
    groups = {g["group"]: g for g in doc["groups"]}
    mine = groups[group]
    assert (mine["stage"], mine["state"], mine["members"]) == (None, "EMPTY", 0)
    # Committed partitions only (kafka_exporter's way): 6 behind on 0, none on 1.
    parts = {p["partition"]: p for p in mine["partitions"]}
    assert set(parts) == {0, 1}
    assert (parts[0]["committed"], parts[0]["end"], parts[0]["lag"]) == (4, 10, 6)
    assert parts[0]["lag_seconds"] > 0
    assert parts[1]["lag"] == 0
    assert (mine["lag"], mine["status"]) == (6, "STOPPED")  # behind, nobody consuming
    assert code in (1, 2)  # 2 when this broker has none of the engine's topics
    assert elapsed < 6.0, elapsed
    assert isinstance(doc["queues"], list)

    # The same group alone, by regular expression.
    code, doc, err = _run_lag(capsys, "--json", "--group", f"^{group}$", "--no-queues")
    assert isinstance(doc, dict)
    assert [g["group"] for g in doc["groups"]] == [group]
    assert code == 1, err
    assert "queues" not in doc

    # By topic; the text table names it too.
    code, text, _ = _run_lag(capsys, "--topic", f"^{re.escape(topic)}$", "--no-queues")
    assert code == 1
    assert isinstance(text, str)
    assert f"{topic}[0]: committed 4 end 10 lag 6" in text
    assert "STOPPED" in text


@pytest.mark.broker
def test_a_live_group_that_does_not_commit_is_stalled(
    new_topic: Callable[..., str],
    settings: Settings,
    forget: Callable[[str], str],
    until_stable: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("stalled", partitions=1)
    group = forget(f"stalled-{uuid.uuid4().hex[:8]}")
    producer = clients.producer(settings)
    for _ in range(10):
        producer.produce(topic, value=b"x", partition=0)
    producer.flush(30)
    member = clients.committing_consumer(settings, group)
    member.subscribe([topic])
    try:
        until_stable(member, group)
        member.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        code, doc, err = _run_lag(capsys, "--json", "--group", f"^{group}$", "--no-queues")
    finally:
        member.close()
    assert isinstance(doc, dict)
    (mine,) = doc["groups"]
    assert (mine["state"], mine["members"]) == ("STABLE", 1)
    assert (mine["lag"], mine["status"]) == (7, "STALLED")
    assert doc["window"]["samples"] == 3
    assert code == 1, err


@pytest.mark.broker
def test_no_engine_topics_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"absent-{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("TE_TOPICS__PREFIX", prefix)
    code, _, err = _run_lag(capsys, "--no-queues")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "none of the engine's topics exist" in lines[0]
    assert f"{prefix}commands" in lines[0]
    assert "Traceback" not in err

    code, _, err = _run_lag(capsys, "--topic", f"^{re.escape(prefix)}", "--no-queues")
    assert code == 2
    assert err.splitlines() == [f"lag: no topic matches --topic '^{re.escape(prefix)}'"]

    code, _, err = _run_lag(capsys, "--group", f"^{re.escape(prefix)}", "--no-queues")
    assert code == 2
    assert err.splitlines() == [f"lag: no consumer group matches --group '^{re.escape(prefix)}'"]


def test_an_unreachable_broker_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TE_KAFKA__CONNECT_TIMEOUT_S", "1")
    code, _, err = _run_lag(capsys, "--no-queues")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lag: kafka.bootstrap_servers: no broker answered at 127.0.0.1:1")


@pytest.mark.broker
def test_topics_with_another_partition_count_than_the_settings(
    forget: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once: ``cimpl.KafkaException: Failed to get watermark offsets: Local: Unknown partition``."""
    prefix = f"lagparts-{uuid.uuid4().hex[:8]}."
    created = create_topics(load_settings(topics={"prefix": prefix, "partitions": 2}))
    try:
        settings = load_settings(topics={"prefix": prefix, "partitions": 4})
        committer = clients.consumer(settings, forget(f"{prefix}settlement"))
        committer.commit(
            offsets=[TopicPartition(settings.topic_names["executions"], p, 0) for p in (0, 1)],
            asynchronous=False,
        )
        committer.close()
        monkeypatch.setenv("TE_TOPICS__PREFIX", prefix)
        monkeypatch.setenv("TE_TOPICS__PARTITIONS", "4")
        code, doc, err = _run_lag(
            capsys, "--json", "--group", f"^{re.escape(prefix)}", "--no-queues"
        )
        assert code == 0, err
        assert isinstance(doc, dict)
        (group,) = doc["groups"]
        assert (group["stage"], group["status"]) == ("settlement", "OK")
        assert [p["partition"] for p in group["partitions"]] == [0, 1]
        assert doc["window"]["samples"] == 1  # nothing behind: one sample says it all
    finally:
        admin = clients.admin_client(load_settings())
        for future in admin.delete_topics(list(created)).values():
            future.result(timeout=30)


@pytest.mark.broker
def test_rabbitmq_unreachable_is_one_line_not_a_failure(
    new_topic: Callable[..., str],
    settings: Settings,
    forget: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("caughtup", partitions=1)
    group = forget(f"caughtup-{uuid.uuid4().hex[:8]}")
    committer = clients.consumer(settings, group)
    committer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    committer.close()
    monkeypatch.setenv("TE_RABBITMQ__MANAGEMENT_PORT", "1")
    code, text, err = _run_lag(capsys, "--group", f"^{group}$")
    assert code == 0, err
    assert isinstance(text, str)
    (line,) = [line for line in text.splitlines() if line.startswith("rabbitmq")]
    assert line.startswith("rabbitmq: management API at http://127.0.0.1:1 unreachable")
    assert group in text

    code, doc, err = _run_lag(capsys, "--json", "--group", f"^{group}$")
    assert code == 0
    assert isinstance(doc, dict)
    assert doc["queues"] == []
    assert doc["rabbitmq"]["error"].startswith("management API at http://127.0.0.1:1")
    assert err.splitlines() == [f"lag: rabbitmq: {doc['rabbitmq']['error']}"]


@pytest.fixture
async def bridged(settings: Settings) -> AsyncIterator[str]:
    """The bridge's queues declared under a fresh prefix, 2 messages in the wallet queue."""
    prefix = f"q{uuid.uuid4().hex[:8]}."
    names = bridged_queues(prefix)
    connection = await aio_pika.connect(settings.rabbitmq.url())
    try:
        channel = await connection.channel()
        for name in names:
            await channel.declare_queue(name, durable=False)
        for i in range(2):
            await channel.default_exchange.publish(
                aio_pika.Message(body=str(i).encode()), routing_key=names[0]
            )
        yield prefix
    finally:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        await connection.close()


@pytest.mark.rabbitmq
@pytest.mark.broker
async def test_lag_shows_the_bridged_queues(
    bridged: str, capsys: pytest.CaptureFixture[str]
) -> None:
    names = bridged_queues(bridged)
    deadline = time.monotonic() + 20
    while True:  # the management plugin publishes its figures every 5 s
        code = await asyncio.to_thread(
            main, ["lag", "--json", "--group", "^$nothing", "--queue-prefix", bridged]
        )
        out, err = capsys.readouterr()
        doc = json.loads(out)
        queue = doc["queues"][0]
        # The management plugin fills a queue's figures in (counts, then consumers) as
        # its stats come in; until then they read None, which is not a zero.
        if (
            queue["messages_ready"] == 2 and queue["consumers"] is not None
        ) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert code == 2  # no group matches: the Kafka part says so; RabbitMQ is shown all the same
    assert err.splitlines() == ["lag: no consumer group matches --group '^$nothing'"]
    assert doc["rabbitmq"]["error"] is None
    assert [q["queue"] for q in doc["queues"]] == names
    wallet = doc["queues"][0]
    assert (wallet["messages_ready"], wallet["messages_unacknowledged"]) == (2, 0)
    assert wallet["consumers"] == 0

    code = await asyncio.to_thread(main, ["lag", "--group", "^$nothing", "--queue-prefix", bridged])
    text = capsys.readouterr().out
    assert "rabbitmq queues (127.0.0.1:15672, vhost /)" in text
    assert re.search(rf"{re.escape(names[0])}\s+2\s+0\s+0", text), text
