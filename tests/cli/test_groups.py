"""``trade-engine groups list|describe|rewind``: what an operator sees, exit codes, one-line
errors (the operations themselves: ``tests/operations/test_groups.py``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import TopicPartition

from trade_engine.cli import main
from trade_engine.config import Settings
from trade_engine.operations.groups import Groups
from trade_engine.streams import clients


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["groups", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stopped(
    new_topic: Callable[..., str], settings: Settings, forget: Callable[[str], str]
) -> tuple[str, str]:
    """(group, topic): 10 records on each of 2 partitions, offset 8 committed on both."""
    topic = new_topic("cli-rewind", partitions=2)
    group = forget(f"cli-rewind-{uuid.uuid4().hex[:8]}")
    producer = clients.producer(settings)
    for i in range(20):
        producer.produce(topic, value=b"x", partition=i % 2)
    producer.flush(30)
    consumer = clients.consumer(settings, group)
    consumer.commit(offsets=[TopicPartition(topic, p, 8) for p in (0, 1)], asynchronous=False)
    consumer.close()
    return group, topic


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    groups = Groups(settings)
    try:
        offsets, _ = groups.reader.committed_offsets(
            {group: [TopicPartition(topic, p) for p in (0, 1)]}
        )
    finally:
        groups.close()
    return {p: o for (_, _, p), o in offsets.items()}


@pytest.mark.broker
def test_rewind_is_a_dry_run_until_execute(
    stopped: tuple[str, str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    group, topic = stopped
    code, out, err = _run(capsys, "rewind", group, "--topic", topic, "--by", "-5")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"group {group} on {topic}, by -5 "
        "(dry run: nothing changed; add --execute to move the offsets)"
    )
    assert lines[1].split() == ["PARTITION", "BEFORE", "AFTER", "MOVE", "NOTE"]
    assert [line.split() for line in lines[2:]] == [["0", "8", "3", "-5"], ["1", "8", "3", "-5"]]
    assert _committed(settings, group, topic) == {0: 8, 1: 8}

    code, out, err = _run(
        capsys, "rewind", group, "--topic", topic, "--to-offset", "99", "--partition", "1",
        "--execute",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == f"group {group} on {topic}, to offset 99 (offsets moved)"
    assert out.splitlines()[2].split() == [
        "1", "8", "10", "+2", "99", "is", "out", "of", "range:", "clamped", "to", "the",
        "latest", "offset",
    ]  # fmt: skip
    assert _committed(settings, group, topic) == {0: 8, 1: 10}

    code, out, err = _run(
        capsys, "rewind", group, "--topic", topic, "--to-time", "2000-01-01T00:00:00Z",
        "--execute", "--json",
    )  # fmt: skip
    assert code == 0, err
    plan = json.loads(out)
    assert plan["executed"] is True
    assert [(m["partition"], m["after"]) for m in plan["partitions"]] == [(0, 0), (1, 0)]
    assert _committed(settings, group, topic) == {0: 0, 1: 0}


@pytest.mark.broker
def test_rewind_refuses_a_live_group(
    new_topic: Callable[..., str],
    settings: Settings,
    forget: Callable[[str], str],
    until_stable: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("cli-rewind-live", partitions=1)
    group = forget(f"cli-rewind-live-{uuid.uuid4().hex[:8]}")
    member = clients.committing_consumer(settings, group)
    member.subscribe([topic])
    try:
        # Its own assignment is not enough: the refusal reads the coordinator's description.
        until_stable(member, group)
        for execute in ([], ["--execute"]):
            code, out, err = _run(
                capsys, "rewind", group, "--topic", topic, "--to-earliest", *execute
            )
            assert (code, out) == (1, "")
            assert err.splitlines() == [
                f"groups: group {group} is active (STABLE, 1 member(s)): offsets can be moved "
                "only while no consumer is in the group; stop its workers first"
            ]
        code, out, err = _run(capsys, "describe", group)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith(f"group {group}: STABLE, 1 member(s), assignor ")
        assert lines[1].split() == ["MEMBER", "CLIENT_ID", "HOST", "INSTANCE", "ASSIGNMENT"]
        assert lines[2].endswith(f"{topic}[0]")
    finally:
        member.close()


@pytest.mark.broker
def test_list_and_describe(stopped: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    group, topic = stopped
    code, out, err = _run(capsys, "list", "--group", f"^{group}$")
    assert code == 0, err
    assert [line.split() for line in out.splitlines()] == [
        ["GROUP", "STAGE", "STATE", "MEMBERS", "TOPICS"],
        [group, "-", "EMPTY", "0", topic],
    ]
    code, out, err = _run(capsys, "list", "--group", "^$nothing")
    assert (code, out) == (0, "no consumer groups\n")
    code, out, err = _run(capsys, "describe", group, "--json")
    assert code == 0, err
    description = json.loads(out)
    assert (description["state"], description["members"]) == ("EMPTY", [])
    assert [(p["partition"], p["lag"], p["status"]) for p in description["partitions"]] == [
        (0, 2, "STOPPED"),
        (1, 2, "STOPPED"),
    ]
    code, out, err = _run(capsys, "describe", "no-such-group-at-all")
    assert (code, out, err) == (2, "", "groups: no such group: no-such-group-at-all\n")
    code, out, err = _run(capsys, "rewind", group, "--topic", "no.such.topic", "--to-latest")
    assert (code, err) == (2, "groups: no such topic: no.such.topic\n")


def test_an_unreachable_broker_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TE_KAFKA__CONNECT_TIMEOUT_S", "1")
    for argv in (["list"], ["describe", "g"], ["rewind", "g", "--topic", "t", "--to-latest"]):
        code, out, err = _run(capsys, *argv)
        assert (code, out) == (2, "")
        (line,) = err.splitlines()
        assert line.startswith("groups: kafka.bootstrap_servers: no broker answered at 127.0.0.1:1")


@pytest.mark.parametrize(
    "argv",
    [
        ["rewind", "g", "--topic", "t"],  # no target
        ["rewind", "g", "--topic", "t", "--by", "-1", "--to-latest"],  # two targets
        ["rewind", "g", "--topic", "t", "--to-time", "yesterday"],
        ["rewind", "g", "--to-latest"],  # no topic
    ],
)
def test_argument_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["groups", *argv])
    assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
