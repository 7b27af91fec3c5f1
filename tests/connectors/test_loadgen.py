"""The load generator: seeded, on the grid, a realistic mix, valid commands."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from trade_engine.config import MarketSettings, SymbolSettings
from trade_engine.connectors.loadgen import (
    FlowMix,
    GeneratedCommand,
    LoadStats,
    generate,
    iter_commands,
    publish,
)
from trade_engine.streams import codec
from trade_engine.streams.commands import (
    AmendOrder,
    CancelOrder,
    MassCancel,
    PlaceOrder,
    to_core,
)
from trade_engine.tables.matching import MatchingEngine, Rejected, Trade
from trade_engine.tables.matching.codes import RejectCode
from trade_engine.tables.matching.enums import OrderType, Side, TimeInForce
from trade_engine.tables.matching.numbers import Scale
from trade_engine.tables.symbols import rules_for

SYMBOLS = MarketSettings().symbols


def _wire(commands: list[GeneratedCommand]) -> list[bytes]:
    return [codec.encode(c) for c in commands]


def test_same_seed_same_commands() -> None:
    first = generate(3000, 42, SYMBOLS, 50)
    again = generate(3000, 42, SYMBOLS, 50)
    assert _wire(first) == _wire(again)
    assert first == again
    other = generate(3000, 43, SYMBOLS, 50)
    assert _wire(first) != _wire(other)


def test_generate_is_a_prefix_of_iter_commands() -> None:
    stream = iter_commands(SYMBOLS, 7, 10)
    head = [next(stream) for _ in range(500)]
    assert _wire(head) == _wire(generate(500, 7, SYMBOLS, 10))


def test_id_prefix_changes_ids_only() -> None:
    a = generate(500, 5, SYMBOLS, id_prefix="runA")
    b = generate(500, 5, SYMBOLS, id_prefix="runB")
    assert [c.cmd for c in a] == [c.cmd for c in b]
    places = [c for c in a if isinstance(c, PlaceOrder)]
    assert places
    assert all(c.order_id.startswith("runA-") for c in places)
    assert [getattr(c, "price", None) for c in a] == [getattr(c, "price", None) for c in b]


def test_every_command_validates_and_decodes() -> None:
    for command in generate(5000, 1, SYMBOLS):
        raw = codec.encode(command)
        assert type(command).model_validate(dict(command)) == command
        assert codec.decode_command(raw) == command


def test_prices_on_tick_and_quantities_on_step() -> None:
    specs = {s.symbol: s for s in SYMBOLS}
    seen_symbols = set()
    for command in generate(8000, 3, SYMBOLS):
        spec = specs[command.symbol]
        seen_symbols.add(command.symbol)
        tick, step = Scale(spec.tick_size), Scale(spec.step_size)
        quote = tick.times(step, RejectCode.VALIDATION_FUNDS_OFF_UNIT)
        if isinstance(command, PlaceOrder | AmendOrder):
            if command.price is not None:
                assert tick.parse(command.price) > 0
                assert tick.format(tick.parse(command.price)) == command.price
            if command.quantity is not None:
                assert step.parse(command.quantity) > 0
                assert step.format(step.parse(command.quantity)) == command.quantity
        if isinstance(command, PlaceOrder):
            if command.stop_price is not None:
                assert tick.parse(command.stop_price) > 0
            if command.quote_quantity is not None:
                assert quote.parse(command.quote_quantity) > 0
    assert seen_symbols == set(specs)


def test_prices_stay_near_the_reference() -> None:
    for command in generate(20000, 11, SYMBOLS):
        if isinstance(command, PlaceOrder) and command.price is not None:
            spec = next(s for s in SYMBOLS if s.symbol == command.symbol)
            assert spec.reference_price is not None
            tick = Scale(spec.tick_size)
            ratio = tick.parse(command.price) / tick.parse(spec.reference_price)
            assert 0.85 < ratio < 1.15, (command, ratio)


def test_the_mix_has_every_kind() -> None:
    commands = generate(10000, 42, SYMBOLS, 100)
    kinds: Counter[str] = Counter()
    for c in commands:
        if isinstance(c, PlaceOrder):
            kinds[f"{c.type.value}/{c.time_in_force.value}"] += 1
            if c.post_only:
                kinds["post_only"] += 1
            if c.type is OrderType.MARKET:
                # Market buys spend funds, market sells give quantity.
                assert (c.quote_quantity is not None) == (c.side is Side.BUY)
                assert (c.quantity is not None) == (c.side is Side.SELL)
                assert c.time_in_force is TimeInForce.IOC
        else:
            kinds[c.cmd] += 1
    n = len(commands)
    assert kinds["LIMIT/GTC"] > 0.4 * n
    assert kinds["cancel"] > 0.15 * n
    assert kinds["amend"] > 0.02 * n
    for kind in ("LIMIT/IOC", "LIMIT/FOK", "MARKET/IOC", "STOP_LIMIT/GTC", "post_only"):
        assert kinds[kind] > 0, kind
    assert kinds["mass_cancel"] > 0
    users = {c.user_id for c in commands if isinstance(c, PlaceOrder)}
    assert len(users) == 100


def test_cancels_and_amends_target_own_orders() -> None:
    placed: dict[str, str] = {}
    client_ids: dict[str, str] = {}
    for c in generate(5000, 9, SYMBOLS):
        if isinstance(c, PlaceOrder):
            placed[c.order_id] = c.user_id
            if c.client_order_id:
                client_ids[c.client_order_id] = c.user_id
        elif isinstance(c, CancelOrder):
            if c.order_id is not None:
                assert placed[c.order_id] == c.user_id
            else:
                assert c.client_order_id is not None
                assert client_ids[c.client_order_id] == c.user_id
        elif isinstance(c, AmendOrder):
            assert placed[c.order_id] == c.user_id
            assert (c.quantity is None) != (c.price is None)
        else:
            assert isinstance(c, MassCancel)


def test_flow_trades_in_the_matching_core() -> None:
    """Crossing orders cause trades; the flow is mostly accepted by the real core."""
    engines = {s.symbol: MatchingEngine(rules_for(s)) for s in SYMBOLS}
    rules = {s.symbol: rules_for(s) for s in SYMBOLS}
    trades = 0
    rejects: Counter[RejectCode] = Counter()
    places = 0
    for command in generate(10000, 42, SYMBOLS):
        places += isinstance(command, PlaceOrder)
        for record in engines[command.symbol].apply(to_core(command, rules[command.symbol])):
            if isinstance(record, Trade):
                trades += 1
            elif isinstance(record, Rejected):
                rejects[record.code] += 1
    assert trades > 1000
    # No reject for being malformed, off the grid, outside the band or too small.
    assert not [code for code in rejects if code.value.startswith("VALIDATION_NUMBER")]
    for code in (
        RejectCode.VALIDATION_PRICE_OFF_TICK,
        RejectCode.VALIDATION_QUANTITY_OFF_STEP,
        RejectCode.VALIDATION_FUNDS_OFF_UNIT,
        RejectCode.VALIDATION_NOTIONAL_BELOW_MIN,
        RejectCode.VALIDATION_QUANTITY_BELOW_MIN,
        RejectCode.VALIDATION_TIF_NOT_ALLOWED,
    ):
        assert rejects[code] == 0, code
    assert not [code for code in rejects if "BAND" in code.value]
    # Rejected places (FOK not fillable, post-only would take) are a small share.
    place_rejects = sum(
        v for k, v in rejects.items() if k.value.startswith(("MATCHING_FOK", "MATCHING_POST"))
    )
    assert place_rejects < 0.1 * places
    for engine in engines.values():
        engine.validate()


def test_symbol_without_reference_price() -> None:
    spec = SymbolSettings(symbol="FOO/BAR", tick_size="0.5", step_size="2")
    for c in generate(500, 2, [spec]):
        if isinstance(c, PlaceOrder) and c.price is not None:
            assert Scale("0.5").parse(c.price) > 0
        if isinstance(c, PlaceOrder) and c.quantity is not None:
            assert Scale("2").parse(c.quantity) > 0


def test_mix_weights_are_configurable() -> None:
    only_markets = FlowMix(
        passive_limit=0,
        post_only=0,
        crossing_limit=0,
        ioc=0,
        fok=0,
        market=1,
        stop_limit=0,
        cancel=0,
        amend=0,
        mass_cancel=0,
    )
    commands = generate(100, 1, SYMBOLS, mix=only_markets)
    assert all(isinstance(c, PlaceOrder) and c.type is OrderType.MARKET for c in commands)


@pytest.mark.parametrize(("users", "symbols"), [(0, SYMBOLS), (1, [])])
def test_bad_arguments(users: int, symbols: list[SymbolSettings]) -> None:
    with pytest.raises(ValueError, match=r"symbol|users"):
        generate(1, 1, symbols, users)


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list[GeneratedCommand] = []
        self.delivered = 0
        self.flushed = False

    def send(self, command: GeneratedCommand) -> object:
        self.sent.append(command)
        self.delivered += 1
        return command

    def flush(self, timeout: float | None = None) -> None:
        self.flushed = True


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_publish_paces_to_the_rate() -> None:
    clock = _Clock()
    producer = _FakeProducer()
    report = io.StringIO()
    stats = publish(
        producer,
        iter_commands(SYMBOLS, 1),
        rate=1000,
        count=5000,
        report=report,
        clock=clock,
        sleep=clock.sleep,
    )
    assert stats.sent == 5000 == len(producer.sent)
    assert producer.flushed
    # 5000 messages at 1000/s with a 50-message burst: just under 5 s of fake time.
    assert 4.9 <= clock.now <= 5.01
    lines = report.getvalue().splitlines()
    assert len(lines) >= 4
    assert "rate=" in lines[-1]
    assert "target=1000/s" in lines[-1]


def test_publish_stops_at_the_duration() -> None:
    clock = _Clock()
    producer = _FakeProducer()
    stats = publish(
        producer,
        iter_commands(SYMBOLS, 1),
        rate=200,
        duration_s=2.0,
        report=None,
        clock=clock,
        sleep=clock.sleep,
    )
    assert 395 <= stats.sent <= 411
    assert isinstance(stats, LoadStats)
    assert stats.as_dict()["sent"] == stats.sent
