"""The risk stage's decisions: holds computed like the core, refusals, back-pressure, order.

The stage running as a Faust worker against Kafka, the matcher and the wallet
is tested end to end in ``test_settlement.py`` (the money pipeline).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal

import pytest

from trade_engine.agents.risk.stage import RiskStage, parse_place, reserve_request, risk_code
from trade_engine.config import SymbolSettings
from trade_engine.connectors.wallet import wire
from trade_engine.connectors.wallet.exceptions import (
    AccountNotFoundError,
    CircuitOpenError,
    IdempotencyConflictError,
    InsufficientBalanceError,
    UnavailableError,
    UserNotFoundError,
    WalletError,
)
from trade_engine.connectors.wallet.models import ReserveRequest
from trade_engine.streams.codec import decode_command, encode
from trade_engine.streams.commands import CancelOrder, PlaceOrder, to_core
from trade_engine.tables.matching.checks import required_hold
from trade_engine.tables.matching.commands import PlaceRequest
from trade_engine.tables.symbols import rules_for

RULES = rules_for(
    SymbolSettings(
        symbol="BTC/USDT", tick_size="0.01", step_size="0.00001", reference_price="50000.00"
    )
)
KEY = b"BTC/USDT"


def place(order_id: str = "o1", **fields: object) -> PlaceOrder:
    values: dict[str, object] = {
        "symbol": "BTC/USDT",
        "order_id": order_id,
        "user_id": "u1",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "0.50000",
        "price": "50000.00",
    }
    values.update(fields)
    return PlaceOrder.model_validate(values)


def test_hold_is_the_cores_required_hold() -> None:
    buy = reserve_request(place(), RULES)
    assert buy is not None
    assert (buy.asset, buy.amount, buy.order_id, buy.user_id) == (
        "USDT",
        "25000",
        "o1",
        "u1",
    )
    sell = reserve_request(place(side="SELL"), RULES)
    assert sell is not None
    assert (sell.asset, sell.amount) == ("BTC", "0.5")
    market = reserve_request(
        place(type="MARKET", time_in_force="IOC", quantity=None, price=None, quote_quantity="100"),
        RULES,
    )
    assert market is not None
    assert (market.asset, market.amount) == ("USDT", "100")
    # What the pydantic request made of the same place: same payload, same request hash.
    for item, command in ((buy, place()), (sell, place(side="SELL"))):
        model = ReserveRequest.model_validate(wire.to_builtins(item))
        assert wire.to_builtins(item) == model.model_dump(mode="json")
        assert wire.request_hash(item) == model.request_hash()
        assert item.reason == f"{command.side}_ORDER"
    # Same number as the core computes, in quote units of the symbol.
    core = to_core(place(), RULES)
    assert isinstance(core, PlaceRequest)
    parsed = parse_place(core, RULES)
    assert parsed is not None
    assert RULES.quote_scale.format(required_hold(parsed)) == "25000.0000000"


def test_unparseable_or_holdless_places_reserve_nothing() -> None:
    assert reserve_request(place(price="50000.001"), RULES) is None  # off tick: core rejects
    assert reserve_request(place(quantity="0.000001"), RULES) is None  # off step
    assert reserve_request(place(price=None), RULES) is None  # a LIMIT without price holds 0


def test_risk_codes() -> None:
    assert risk_code(InsufficientBalanceError("x")) == "RISK_INSUFFICIENT_BALANCE"
    assert risk_code(AccountNotFoundError("x")) == "RISK_ACCOUNT_NOT_FOUND"
    assert risk_code(UserNotFoundError("x")) == "RISK_ACCOUNT_NOT_FOUND"
    assert risk_code(IdempotencyConflictError("x")) == "RISK_REJECTED"


def _ok(req: wire.ReserveItem) -> wire.ReserveAnswer:
    amount = Decimal(req.amount)
    return wire.ReserveAnswer(
        reservation_id="r",
        order_id=req.order_id,
        user_id=req.user_id,
        asset=req.asset,
        amount=amount,
        hold_remaining=amount,
        available_balance=Decimal(0),
        reserved_balance=amount,
        entry_id=1,
    )


class FakeWallet:
    """Refuses order ids starting with 'poor'/'ghost'; fails the first ``outages`` calls."""

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.calls: list[list[str]] = []

    async def reserve_many(
        self, reqs: Sequence[wire.ReserveItem]
    ) -> list[wire.ReserveAnswer | WalletError]:
        self.calls.append([r.order_id for r in reqs])
        if self.outages:
            self.outages -= 1
            raise (UnavailableError("down") if self.outages % 2 else CircuitOpenError("open"))
        out: list[wire.ReserveAnswer | WalletError] = []
        for r in reqs:
            if r.order_id.startswith("poor"):
                out.append(InsufficientBalanceError("not enough USDT"))
            elif r.order_id.startswith("ghost"):
                out.append(AccountNotFoundError("no USDT account"))
            else:
                out.append(_ok(r))
        return out


async def _no_sleep(_: float) -> None:
    return None


async def test_batch_is_forwarded_in_order_with_refusals_marked() -> None:
    wallet = FakeWallet(outages=3)
    stage = RiskStage({"BTC/USDT": RULES}, wallet.reserve_many, sleep=_no_sleep)
    cancel = CancelOrder(symbol="BTC/USDT", user_id="u1", order_id="o1")
    inputs = [
        (KEY, encode(place("o1"))),
        (KEY, encode(cancel)),
        (KEY, encode(place("poor-1"))),
        (KEY, b"not json"),
        (KEY, encode(place("off-tick", price="1.001"))),
        (KEY, encode(place("ghost-1", side="SELL"))),
        (b"ETH/USDT", encode(place("o2"))),
    ]
    out = await stage.decide(inputs)
    # Three outages: the same batch is retried (back-pressure), one reserve per batch.
    assert wallet.calls == [["o1", "poor-1", "ghost-1"]] * 4
    assert out[0].value == inputs[0][1]
    assert out[1].value == inputs[1][1]
    refused = decode_command(out[2].value)
    assert isinstance(refused, PlaceOrder)
    assert refused.risk_reject is not None
    assert refused.risk_reject.code == "RISK_INSUFFICIENT_BALANCE"
    assert out[3].dead_letter is not None
    assert out[3].dead_letter[0] == "DECODE_INVALID"
    assert out[4].value == inputs[4][1]  # forwarded: the matcher rejects it in sequence
    ghost = json.loads(out[5].value or b"")
    assert ghost["risk_reject"]["code"] == "RISK_ACCOUNT_NOT_FOUND"
    assert out[6].dead_letter is not None
    assert out[6].dead_letter[0] == "KEY_SYMBOL_MISMATCH"


async def test_ids_the_wallet_cannot_take_are_refused_not_dropped() -> None:
    wallet = FakeWallet()
    stage = RiskStage({"BTC/USDT": RULES}, wallet.reserve_many, sleep=_no_sleep)
    out = await stage.decide([(KEY, encode(place("_odd")))])
    assert wallet.calls == []
    refused = json.loads(out[0].value or b"")
    assert refused["risk_reject"]["code"] == "RISK_REJECTED"
    # pydantic's words, as before the Structs.
    assert refused["risk_reject"]["message"] == (
        "the wallet cannot hold funds for this order: "
        "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,199}$'"
    )


@pytest.mark.parametrize("outages", [0, 1])
async def test_no_places_no_wallet_call(outages: int) -> None:
    wallet = FakeWallet(outages)
    stage = RiskStage({"BTC/USDT": RULES}, wallet.reserve_many, sleep=_no_sleep)
    cancel = encode(CancelOrder(symbol="BTC/USDT", user_id="u1", order_id="o1"))
    out = await stage.decide([(KEY, cancel)])
    assert [o.value for o in out] == [cancel]
    assert wallet.calls == []
