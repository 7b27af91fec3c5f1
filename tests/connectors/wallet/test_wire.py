"""The batch path's msgspec Structs against the pydantic models they stand in for.

What the Structs accept, pydantic accepts with the same canonical dump and the same
request hash (an idempotency key's hash must not depend on the endpoint or the
version that stored it); what pydantic refuses, the Structs refuse (the service then
takes the pydantic path, which words the error). Answers encode to the bytes
pydantic's ``model_dump_json`` writes.

The client's side: ``wire.build`` accepts exactly what the pydantic request accepts
(raising its ``ValidationError`` otherwise) with the same payload and request hash;
``encode_items`` sends what ``model_dump(mode="json", exclude_none=True)`` sent, so
the service stores the same request hash; ``decode_answers`` reads an answer as the
pydantic responses read it, or leaves it to them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from trade_engine.connectors.wallet import wire
from trade_engine.connectors.wallet.models import (
    AssetBalance,
    ReleaseRequest,
    ReleaseResponse,
    ReserveRequest,
    ReserveResponse,
    SettleTradeRequest,
    SettleTradeResponse,
)
from trade_engine.connectors.wallet.models import format_amount as f

_MODELS: dict[str, type[BaseModel]] = {
    "reserve": ReserveRequest,
    "release": ReleaseRequest,
    "settle": SettleTradeRequest,
}

_AMOUNTS = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "1.50",
            "0.0",
            "0.000000000000000001",
            "100.000000000000000000",
            "99999999999999999999.999999999999999999",
            "01",
            "1e5",
            "-1",
            "1\n",
            "1.",
            ".5",
            " 1",
            "NaN",
            "",
        ]
    ),
    st.from_regex(r"\A(0|[1-9][0-9]{0,21})(\.[0-9]{1,19})?\Z"),
    st.integers(0, 10),
    st.none(),
)
_NAMES = st.one_of(
    st.sampled_from(["u1", "BTC", "USDT", "o-1", "BTC/USDT:7", "a@b", "BTC\n", "", "_x", "é"]),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,8}\Z"),
    st.text(max_size=4),
)
_ASSETS = st.sampled_from(["BTC", "USDT", "ETH", "btc", "BTC\n", ""])
_FREE_TEXT = st.one_of(
    st.none(), st.text(max_size=70), st.sampled_from(["é", "a\\b", "\x7f", "\n"])
)


def _item(op: str) -> st.SearchStrategy[dict[str, Any]]:
    if op == "settle":
        fields: dict[str, st.SearchStrategy[Any]] = {
            "trade_id": _NAMES,
            "buyer_user_id": st.sampled_from(["b", "b\n"]),
            "seller_user_id": st.just("s"),
            "buyer_order_id": st.sampled_from(["ob", "os"]),
            "seller_order_id": st.just("os"),
            "base_asset": _ASSETS,
            "quote_asset": _ASSETS,
            "quantity": _AMOUNTS,
            "price": _AMOUNTS,
            "quote_quantity": _AMOUNTS,
            "buyer_fee": _AMOUNTS,
            "seller_fee": _AMOUNTS,
            "buyer_fee_asset": st.one_of(st.none(), _ASSETS),
            "seller_fee_asset": st.one_of(st.none(), _ASSETS),
            "symbol": st.one_of(st.none(), st.sampled_from(["BTC/USDT", "ETH/USDT"]), _FREE_TEXT),
        }
    else:
        fields = {
            "user_id": _NAMES,
            "asset": _ASSETS,
            "amount": _AMOUNTS,
            "order_id": _NAMES,
            "reason": _FREE_TEXT,
            "idempotency_key": st.one_of(st.none(), _NAMES),
        }
        if op == "release":
            fields["reservation_id"] = _FREE_TEXT
    optional = st.fixed_dictionaries({}, optional={**fields, "extra": st.just(1)})
    return st.builds(
        lambda required, more: {**required, **more},
        st.fixed_dictionaries({k: v for k, v in fields.items() if k in _REQUIRED[op]}),
        optional,
    )


_REQUIRED = {
    "reserve": {"user_id", "asset", "amount", "order_id"},
    "release": {"user_id", "asset", "order_id"},
    "settle": {
        "trade_id",
        "buyer_user_id",
        "seller_user_id",
        "buyer_order_id",
        "seller_order_id",
        "base_asset",
        "quote_asset",
        "quantity",
        "price",
    },
}


def _check(op: str, raw: dict[str, Any]) -> None:
    items = wire.decode_batch(op, json.dumps({"items": [raw]}).encode())
    try:
        model = _MODELS[op].model_validate(raw)
    except ValidationError:
        assert items is None, raw  # pydantic refuses: so must the Structs
        return
    if items is None:
        return  # stricter than pydantic: the pydantic path takes it
    (item,) = items
    assert wire.to_builtins(item) == model.model_dump(mode="json")
    assert wire.request_hash(item) == model.request_hash()  # type: ignore[attr-defined]
    again = wire.from_model(op, model)
    assert again == item
    assert wire.request_hash(again) == wire.request_hash(item)


@pytest.mark.parametrize("op", ["reserve", "release", "settle"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_structs_accept_a_subset_of_pydantic_with_the_same_hash(
    op: str, data: st.DataObject
) -> None:
    _check(op, data.draw(_item(op)))


def test_valid_settles_decode_on_the_fast_path() -> None:
    trade = {
        "trade_id": "BTC/USDT:7",
        "buyer_user_id": "b",
        "seller_user_id": "s",
        "buyer_order_id": "ob",
        "seller_order_id": "os",
        "base_asset": "BTC",
        "quote_asset": "USDT",
        "quantity": "0.50",
        "price": "50000.00",
        "quote_quantity": "25000",
        "buyer_fee": "0.0005",
        "symbol": "BTC/USDT",
    }
    (item,) = wire.decode_batch("settle", json.dumps({"items": [trade], "x": 1}).encode()) or []
    assert isinstance(item, wire.SettleItem)
    assert (item.quantity, item.price, item.notional()) == ("0.5", "50000", Decimal(25000))
    for bad in ({"quote_quantity": "25000.01"}, {"seller_fee": "25000.01"}, {"symbol": "X/Y"}):
        assert wire.decode_batch("settle", json.dumps({"items": [trade | bad]}).encode()) is None
    assert wire.decode_batch("settle", b'{"items": []}') is None


def test_non_ascii_and_escapes_hash_as_json_dumps() -> None:
    for reason in ("café", 'quote " and \\', "tab\there", "\x7f", "\u2028"):
        model = ReserveRequest.model_validate(
            {"user_id": "u", "asset": "BTC", "amount": "1", "order_id": "o", "reason": reason}
        )
        assert wire.request_hash(wire.from_model("reserve", model)) == model.request_hash()


@settings(max_examples=200, deadline=None)
@given(
    amounts=st.lists(
        st.decimals(min_value=0, max_value=10**19, places=18, allow_nan=False),
        min_size=4,
        max_size=4,
    ),
    entry=st.integers(1, 2**62),
)
def test_answers_encode_as_pydantic_does(amounts: list[Decimal], entry: int) -> None:
    a, b, c, d = amounts
    fields = {"reservation_id": "r", "order_id": "o", "user_id": "u", "asset": "BTC"}
    reserve = wire.ReserveResult(
        **fields,
        amount=f(a),
        hold_remaining=f(b),
        available_balance=f(c),
        reserved_balance=f(d),
        entry_id=entry,
    )
    expected = ReserveResponse(
        **fields,
        amount=a,
        hold_remaining=b,
        available_balance=c,
        reserved_balance=d,
        entry_id=entry,
    )
    assert wire.encode(reserve) == expected.model_dump_json().encode()
    release = wire.ReleaseResult(
        **fields,
        released_amount=f(a),
        hold_remaining=f(b),
        available_balance=f(c),
        reserved_balance=f(d),
        entry_id=entry,
    )
    assert (
        wire.encode(release)
        == ReleaseResponse(
            **fields,
            released_amount=a,
            hold_remaining=b,
            available_balance=c,
            reserved_balance=d,
            entry_id=entry,
        )
        .model_dump_json()
        .encode()
    )
    settle = wire.SettleResult(
        trade_id="t",
        quote_quantity=f(a),
        buyer_hold_remaining=f(b),
        seller_hold_remaining=f(c),
        buyer_balances={"BTC": wire.Balance(f(c), f(d)), "USDT": wire.Balance(f(a), "0")},
        seller_balances={"BTC": wire.Balance(f(d), f(b))},
    )
    settle.set_entry(entry)
    expected_settle = SettleTradeResponse(
        trade_id="t",
        entry_id=entry,
        buyer_ledger_entry_id=entry,
        seller_ledger_entry_id=entry,
        quote_quantity=a,
        buyer_hold_remaining=b,
        seller_hold_remaining=c,
        buyer_balances={
            "BTC": AssetBalance(available=c, reserved=d),
            "USDT": AssetBalance(available=a, reserved=Decimal(0)),
        },
        seller_balances={"BTC": AssetBalance(available=d, reserved=b)},
    )
    assert wire.encode(settle) == expected_settle.model_dump_json().encode()
    assert wire.decode_result("settle", wire.encode(settle)) == settle


# --- the client's side ------------------------------------------------------------------

_DECIMALS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=0, max_value=10**21, places=19),
    st.sampled_from([Decimal(0), Decimal("1.50"), Decimal("1E+3"), Decimal("-0"), Decimal(-1)]),
)


def _with_decimals(op: str, raw: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Some amounts as Decimals, as the settlement records carry them."""
    fields = dict(raw)
    for name in wire._AMOUNT_FIELDS[op]:
        if name in fields and data.draw(st.booleans()):
            fields[name] = data.draw(_DECIMALS)
    return fields


def _old_payload(models: list[BaseModel]) -> bytes:
    """What the client sent before the Structs."""
    items = [m.model_dump(mode="json", exclude_none=True) for m in models]
    return json.dumps({"items": items}).encode()


@pytest.mark.parametrize("op", ["reserve", "release", "settle"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_build_accepts_and_refuses_as_pydantic(op: str, data: st.DataObject) -> None:
    fields = _with_decimals(op, data.draw(_item(op)), data)
    try:
        model = _MODELS[op].model_validate(fields)
    except ValidationError as exc:
        expected = exc.errors(include_context=False)
        with pytest.raises(ValidationError) as refused:
            wire.build(op, fields)
        assert refused.value.errors(include_context=False) == expected
        return
    item = wire.build(op, fields)
    assert wire.to_builtins(item) == model.model_dump(mode="json")
    assert wire.request_hash(item) == model.request_hash()  # type: ignore[attr-defined]
    # The bytes sent: the service reads the same items, hashes and stores the same.
    sent = wire.decode_batch(op, wire.encode_items([item]))
    before = wire.decode_batch(op, _old_payload([model]))
    assert sent == before
    if sent is not None:
        assert wire.request_hash(sent[0]) == model.request_hash()  # type: ignore[attr-defined]
    assert json.loads(wire.encode_items([item])) == json.loads(_old_payload([model]))


def test_build_takes_decimals_as_parse_amount_does() -> None:
    fields = {"user_id": "u", "asset": "BTC", "order_id": "o", "amount": Decimal("1E+3")}
    item = wire.build("reserve", fields)
    assert item == wire.from_model("reserve", ReserveRequest.model_validate(fields))
    assert wire.encode_items([item]) == (
        b'{"items":[{"user_id":"u","asset":"BTC","amount":"1000","order_id":"o"}]}'
    )
    with pytest.raises(ValidationError, match="must be a decimal string"):
        wire.build("reserve", fields | {"amount": Decimal(-1)})
    with pytest.raises(ValidationError, match="greater than 0"):
        wire.build("reserve", fields | {"amount": Decimal(0)})


def test_as_item_takes_pydantic_requests() -> None:
    model = SettleTradeRequest.model_validate(
        {
            "trade_id": "t",
            "buyer_user_id": "b",
            "seller_user_id": "s",
            "buyer_order_id": "ob",
            "seller_order_id": "os",
            "base_asset": "BTC",
            "quote_asset": "USDT",
            "quantity": "0.50",
            "price": "10",
        }
    )
    item = wire.as_item("settle", model)
    assert wire.as_item("settle", item) is item
    assert wire.request_hash(item) == model.request_hash()


_OK: dict[str, dict[str, Any]] = {
    "reserve": {
        "success": True,
        "reservation_id": "r",
        "order_id": "o",
        "user_id": "u",
        "asset": "BTC",
        "amount": "1.50",
        "hold_remaining": "1.5",
        "available_balance": "0",
        "reserved_balance": "1.5",
        "entry_id": 3,
    },
    "release": {
        "reservation_id": "r",
        "order_id": "o",
        "user_id": "u",
        "asset": "BTC",
        "released_amount": "0",
        "hold_remaining": "0",
        "available_balance": "2",
        "reserved_balance": "0",
        "entry_id": 4,
    },
    "settle": {
        "success": True,
        "trade_id": "t",
        "entry_id": 5,
        "buyer_ledger_entry_id": 5,
        "seller_ledger_entry_id": 5,
        "quote_quantity": "5",
        "buyer_hold_remaining": "0",
        "seller_hold_remaining": "0.5",
        "buyer_balances": {"BTC": {"available": "0.5", "reserved": "0"}},
        "seller_balances": {"USDT": {"available": "5", "reserved": "0"}},
    },
}
_RESPONSES: dict[str, type[BaseModel]] = {
    "reserve": ReserveResponse,
    "release": ReleaseResponse,
    "settle": SettleTradeResponse,
}


def _plain(answer: Any) -> Any:
    """An answer as pydantic's JSON dump writes it (amounts canonical)."""
    if isinstance(answer, Decimal):
        return f(answer)
    if isinstance(answer, dict):
        return {k: _plain(v) for k, v in answer.items()}
    if isinstance(answer, msgspec.Struct):
        return _plain(msgspec.structs.asdict(answer))
    return answer


def _body(results: list[dict[str, Any]]) -> bytes:
    return json.dumps({"results": results}).encode()


@pytest.mark.parametrize("op", ["reserve", "release", "settle"])
def test_answers_read_as_the_pydantic_responses(op: str) -> None:
    error = {"code": "INSUFFICIENT_BALANCE", "message": "no", "details": {}}
    body = _body(
        [{"index": 1, "ok": False, "error": error}, {"index": 0, "ok": True, "result": _OK[op]}]
    )
    answers = wire.decode_answers(op, body)
    assert answers is not None
    assert [a.index for a in answers] == [0, 1]
    expected = _RESPONSES[op].model_validate(_OK[op])
    assert _plain(answers[0].result) == expected.model_dump(mode="json")
    assert answers[0].result == wire.answer_from_json(op, _OK[op])
    assert (answers[1].ok, answers[1].error) == (False, error)


@pytest.mark.parametrize(
    "change",
    [
        {"entry_id": "3"},  # pydantic's lax int: the dict reading takes it
        {"amount": "-1"},
        {"amount": "NaN"},
        {"amount": "Infinity"},
        {"amount": "123456789012345678901"},
        {"success": False},
        {"extra": 1},
    ],
)
def test_what_the_structs_refuse_is_left_to_pydantic(change: dict[str, Any]) -> None:
    result = _OK["reserve"] | change
    body = _body([{"index": 0, "ok": True, "result": result}])
    assert wire.decode_answers("reserve", body) is None
    try:
        expected = ReserveResponse.model_validate(result)
    except ValidationError:
        with pytest.raises(ValidationError):
            wire.answer_from_json("reserve", result)
        return
    answer = wire.answer_from_json("reserve", result)
    assert _plain(answer) == expected.model_dump(mode="json")


def test_answers_the_structs_cannot_read() -> None:
    for body in (b"not json", b"null", b'{"results": [{"index": 0, "ok": true}]}'):
        assert wire.decode_answers("reserve", body) is None
    assert wire.decode_answers("reserve", b'{"results": [], "more": 1}') == []


def test_answer_amounts_in_other_spellings_read_as_their_value() -> None:
    """The one leniency: an amount spelled otherwise than ``parse_amount`` demands is read
        as the value it spells, and so is one of more than 18 decimals (the service writes
    canonical ``numeric(38,18)`` text; no stage reads these values)."""
    for spelling, value in (
        ("01.5", "1.5"),
        (1.5, "1.5"),
        ("1.5e0", "1.5"),
        ("1e5", "100000"),
        ("1E-19", "1E-19"),
    ):
        result = _OK["reserve"] | {"amount": spelling}
        body = _body([{"index": 0, "ok": True, "result": result}])
        (answer,) = wire.decode_answers("reserve", body) or []
        assert answer.result.amount == Decimal(value)
