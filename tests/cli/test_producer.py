"""``trade-engine orders|symbols|topics|load|tail`` through ``trade_engine.cli.main``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient

from trade_engine.cli import build_parser, main
from trade_engine.cli.producer import parse_duration
from trade_engine.config import Settings, load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams import codec
from trade_engine.streams.commands import CancelOrder, PlaceOrder, SymbolAdmin

PLACE = [
    "orders",
    "place",
    "--symbol",
    "BTC/USDT",
    "--side",
    "BUY",
    "--type",
    "LIMIT",
    "--quantity",
    "0.5",
    "--price",
    "50000.00",
]


@pytest.mark.broker
def test_place_round_trip(
    new_topic: Callable[..., str],
    read_topic: Callable[..., list[Message]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("cli", partitions=4)
    argv = [*PLACE, "--tif", "GTC", "--user", "u7", "--client-order-id", "my-1", "--topic", topic]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    [msg] = read_topic(topic, 1)
    command = codec.decode_command(msg.value())
    assert isinstance(command, PlaceOrder)
    assert command.symbol == "BTC/USDT"
    assert (command.side.value, command.type.value, command.time_in_force.value) == (
        "BUY",
        "LIMIT",
        "GTC",
    )
    assert (command.quantity, command.price) == ("0.5", "50000.00")
    assert (command.user_id, command.client_order_id) == ("u7", "my-1")
    assert msg.key() == b"BTC/USDT"
    assert out["topic"] == topic
    assert (out["partition"], out["offset"]) == (msg.partition(), msg.offset())
    assert out["command"]["order_id"] == command.order_id


@pytest.mark.broker
def test_other_commands_round_trip(
    new_topic: Callable[..., str],
    read_topic: Callable[..., list[Message]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("cli", partitions=1)
    common = ["--symbol", "ETH/USDT", "--topic", topic]
    assert main(["orders", "cancel", *common, "--user", "u1", "--order-id", "o-1"]) == 0
    assert main(["orders", "amend", *common, "--user", "u1", "--order-id", "o-1",
                 "--quantity", "1.5"]) == 0  # fmt: skip
    assert main(["orders", "mass-cancel", *common, "--user", "u1", "--side", "sell"]) == 0
    assert main(["symbols", "admin", *common, "--state", "HALT"]) == 0
    capsys.readouterr()
    decoded = [codec.decode_command(m.value()) for m in read_topic(topic, 4)]
    assert [c.cmd for c in decoded] == ["cancel", "amend", "mass_cancel", "symbol_admin"]
    assert isinstance(decoded[0], CancelOrder)
    assert decoded[0].order_id == "o-1"
    assert isinstance(decoded[3], SymbolAdmin)
    assert decoded[3].trading_state.value == "HALT"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--quantity", "1e5"], "quantity"),
        (["--side", "SIDEWAYS"], "side"),
        (["--tif", "FOREVER"], "time_in_force"),
        (["--price", "-5"], "price"),
        (["--price", "50000.005"], "price"),  # off the 0.01 tick
        (["--quantity", "0.000001"], "quantity"),  # off the 0.00001 step
        (["--symbol", "FOO/BAR"], "symbol"),
        (["--symbol", "btc-usdt"], "symbol"),
        (["--user", "bad user"], "user_id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    extra: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing is sent: validation happens before a producer exists.
    assert main([*PLACE, *extra, "--topic", "never.created"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("trade-engine: invalid input: ")
    assert f"{field}:" in lines[0]
    assert "Traceback" not in captured.err


def test_quantity_exponent_message_shows_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*PLACE, "--quantity", "1e5"]) == 2
    err = capsys.readouterr().err
    assert "quantity: String should match pattern" in err
    assert "'1e5'" in err


def test_cancel_needs_a_target() -> None:
    with pytest.raises(SystemExit) as info:
        main(["orders", "cancel", "--symbol", "BTC/USDT", "--user", "u1"])
    assert info.value.code == 2


def test_load_rejects_unknown_symbols(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "--symbols", "BTC/USDT,NOPE/USDT", "--count", "1"]) == 2
    assert "NOPE/USDT" in capsys.readouterr().err


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120
    assert parse_duration("1h") == 3600
    assert parse_duration("7") == 7
    with pytest.raises(SystemExit):
        build_parser().parse_args(["load", "--duration", "soon"])


@pytest.mark.broker
def test_load_publishes_the_seeded_flow(
    settings: Settings,
    new_topic: Callable[..., str],
    read_topic: Callable[..., list[Message]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic("cli", partitions=4)
    argv = ["load", "--rate", "2000", "--count", "300", "--seed", "5", "--users", "10",
            "--symbols", "BTC/USDT,ETH/USDT", "--topic", topic, "--run-id", "lg5"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["sent"] == summary["delivered"] == 300
    assert summary["run_id"] == "lg5"
    assert "seed=5" in captured.err
    specs = [s for s in settings.market.symbols if s.symbol in ("BTC/USDT", "ETH/USDT")]
    expected = generate(300, 5, specs, 10)
    got = [codec.decode_command(m.value()) for m in read_topic(topic, 300)]
    by_symbol = {s.symbol: [c for c in got if c.symbol == s.symbol] for s in specs}
    for spec in specs:
        got_symbol = sorted(by_symbol[spec.symbol], key=expected.index)
        assert got_symbol == by_symbol[spec.symbol]  # per-symbol order kept
        assert got_symbol == [c for c in expected if c.symbol == spec.symbol]


@pytest.mark.broker
def test_tail_prints_json_lines(
    new_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic("cli", partitions=2)
    for side in ("BUY", "SELL"):
        assert main([*PLACE, "--side", side, "--order-id", f"o-{side}", "--topic", topic]) == 0
    assert main([*PLACE, "--symbol", "ETH/USDT", "--price", "3000.00", "--topic", topic]) == 0
    capsys.readouterr()

    argv = ["tail", "commands", "--topic", topic, "--from-beginning", "--idle-timeout", "3s"]
    assert main([*argv, "--symbol", "BTC/USDT"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["order_id"] for line in lines] == ["o-BUY", "o-SELL"]

    assert main([*argv, "--max", "3", "--verbose"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["topic"] == topic
        assert record["key"] == record["value"]["symbol"]
        assert record["headers"]["v"] == "1"
        assert isinstance(record["partition"], int)
        assert isinstance(record["offset"], int)


@pytest.mark.broker
def test_tail_of_a_missing_topic_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "trades", "--topic", f"missing.{uuid.uuid4().hex}", "--max", "1"]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert "Traceback" not in err


@pytest.mark.broker
def test_topics_create_is_idempotent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"test{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("TE_TOPICS__PREFIX", prefix)
    settings = load_settings()
    try:
        assert main(["topics", "create"]) == 0
        first = capsys.readouterr().out
        assert f"{prefix}commands: created" in first
        assert main(["topics", "create"]) == 0
        second = capsys.readouterr().out
        assert f"{prefix}commands: exists" in second
        assert len(second.splitlines()) == len(settings.topic_names)
    finally:
        admin = AdminClient(settings.kafka.librdkafka())
        for future in admin.delete_topics(list(settings.topic_names.values())).values():
            future.result(timeout=30)
