"""Decoding commands: strict shapes, stable error codes, nothing huge reaches int().

Both decoders of the contract are held to the same rules: the pydantic one
(``codec.decode_command``, the risk stage's) and the msgspec one
(``command_records.decode_command_record``, the matcher's). They must accept
exactly the same inputs, with the same values, and refuse the rest with the same
code and message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trade_engine.config import load_settings
from trade_engine.streams.codec import MAX_MESSAGE_BYTES, decode_command, encode, header
from trade_engine.streams.command_records import decode_command_record
from trade_engine.streams.commands import (
    CancelOrder,
    PlaceOrder,
    TimeTick,
    rfc3339,
    to_core,
    utc_millis,
)
from trade_engine.streams.exceptions import DecodeError
from trade_engine.tables.symbols import rules_for

DECODERS: list[Callable[[bytes | None], Any]] = [decode_command, decode_command_record]

PLACE = {
    "v": 1,
    "cmd": "place",
    "symbol": "BTC/USDT",
    "order_id": "o-1",
    "user_id": "u-1",
    "side": "BUY",
    "type": "LIMIT",
    "quantity": "0.5",
    "price": "50000.00",
}


def _raw(**changes: object) -> bytes:
    return json.dumps({**PLACE, **changes}).encode()


def test_place_round_trips() -> None:
    command = decode_command(_raw())
    assert isinstance(command, PlaceOrder)
    assert command.price == "50000.00"
    assert decode_command(encode(command)) == command


@pytest.mark.parametrize(
    "changes",
    [
        {"quantity": "1e5"},
        {"quantity": "NaN"},
        {"quantity": "Infinity"},
        {"quantity": "-0"},
        {"quantity": "-1"},
        {"price": "1e999999999"},
        {"price": "9" * 40},
        {"price": 50000.0},
        {"side": "buy"},
        {"type": "ICEBERG"},
        {"v": 2},
        {"symbol": "btc-usdt"},
        {"unknown_field": 1},
        {"ts": "2026-11-22T10:00:00+02:00"},
        # Booleans are JSON booleans (schema: "type": "boolean"), never coerced.
        {"post_only": "yes"},
        {"post_only": "true"},
        {"post_only": "1"},
        {"post_only": 1},
        {"post_only": 0},
        {"post_only": None},
        # Ids are ASCII (schema: "^[A-Za-z0-9_.:\\-]+$"); Unicode letters and digits are not.
        {"order_id": "заказ-1"},
        {"order_id": "o٣"},
        {"order_id": "\uff4f1"},  # fullwidth o
        {"client_order_id": "клиент"},
        {"user_id": "пользователь"},
        {"order_id": "o 1"},
        {"order_id": ""},
        {"order_id": "o" * 65},
    ],
)
@pytest.mark.parametrize("decode", DECODERS)
def test_bad_commands_get_a_stable_code(
    changes: dict[str, object], decode: Callable[[bytes], Any]
) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode(_raw(**changes))
    assert excinfo.value.code == "DECODE_INVALID"


@pytest.mark.parametrize("decode", DECODERS)
def test_post_only_and_ascii_ids_decode(decode: Callable[[bytes], Any]) -> None:
    for flag in (True, False):
        command = decode(_raw(post_only=flag))
        assert command.cmd == "place"
        assert command.post_only is flag
    ids = {"order_id": "A-z_0.9:x", "client_order_id": "c-1", "user_id": "u_1:x"}
    command = decode(_raw(**ids))
    assert command.cmd == "place"
    assert (command.order_id, command.client_order_id, command.user_id) == tuple(ids.values())


@pytest.mark.parametrize("decode", DECODERS)
def test_other_commands_refuse_non_ascii_ids(decode: Callable[[bytes], Any]) -> None:
    for raw in (
        '{"cmd":"cancel","symbol":"ETH/USDT","user_id":"юзер","order_id":"o"}',
        '{"cmd":"cancel","symbol":"ETH/USDT","user_id":"u","client_order_id":"ид"}',
        '{"cmd":"amend","symbol":"ETH/USDT","user_id":"u","order_id":"ордер","price":"1"}',
        '{"cmd":"mass_cancel","symbol":"ETH/USDT","user_id":"ü"}',
    ):
        with pytest.raises(DecodeError) as excinfo:
            decode(raw.encode())
        assert excinfo.value.code == "DECODE_INVALID", raw


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "DECODE_EMPTY"),
        (b"", "DECODE_EMPTY"),
        (b"{", "DECODE_INVALID"),
        (b"\xff\xfe", "DECODE_INVALID"),
        (b"[]", "DECODE_INVALID"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "DECODE_TOO_LARGE"),
    ],
)
@pytest.mark.parametrize("decode", DECODERS)
def test_undecodable_bytes(raw: bytes | None, code: str, decode: Callable[[bytes], Any]) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode(raw)
    assert excinfo.value.code == code


def test_each_command_kind_decodes() -> None:
    cancel = decode_command(b'{"cmd":"cancel","symbol":"ETH/USDT","user_id":"u","order_id":"o"}')
    assert isinstance(cancel, CancelOrder)
    tick = decode_command(b'{"cmd":"time_tick","symbol":"ETH/USDT","now":"2026-11-22T00:00:00Z"}')
    assert isinstance(tick, TimeTick)
    assert rfc3339(utc_millis(tick.now)) == "2026-11-22T00:00:00.000Z"


def test_header_reads_both_client_shapes() -> None:
    assert header([("trace_id", b"abc")], "trace_id") == "abc"
    assert header({"trace_id": b"abc"}, "trace_id") == "abc"
    assert header(None, "trace_id") is None


RULES = {spec.symbol: rules_for(spec) for spec in load_settings().market.symbols}
# Values that sit on either side of some rule, for any field.
TRICKY: list[object] = [
    None, True, False, 0, 1, 1.0, 2, -1, 1.5, 1_732_269_600, "", " ", "1", "0", "0.5", "00.5",
    "1e5", "NaN", "-0", "50000.00", "50000.00\n", "9" * 19, "0." + "1" * 18, "0." + "1" * 19,
    "BUY", "SELL", "buy", "LIMIT", "MARKET", "STOP", "GTC", "IOC", "GTD", "NONE",
    "DECREMENT", "HALT", "TRADING", "BTC/USDT", "ETH/USDT", "NOPE/USDT", "btc/usdt",
    "BTC/USDT\n", "o-1", "o-1\n", "o 1", "заказ", "u_1:x", "A" * 64, "A" * 65,
    "2026-11-22T10:00:00Z", "2026-11-22T10:00:00.123456Z", "2026-11-22T10:00:00.1234567Z",
    "2026-11-22T10:00:00+00:00", "2026-11-22T10:00:00+02:00", "2026-11-22T10:00:00",
    "2026-11-22 10:00:00Z", "2026-11-22t10:00:00z", "2026-11-22T10:00Z", "2026-02-30T10:00:00Z",
    "2026-11-22T24:00:00Z", "2026-11-22", "1732269600", "2026-11-22T10:00:00Z\n",
    {"code": "RISK_REJECTED"}, {"code": "RISK_REJECTED", "message": "x" * 201},
    {"code": "NOPE"}, {"code": "RISK_REJECTED", "extra": 1}, [], {},
]  # fmt: skip
FIELDS = [
    "v", "cmd", "symbol", "ts", "order_id", "client_order_id", "user_id", "side", "type",
    "time_in_force", "quantity", "quote_quantity", "price", "stop_price", "post_only",
    "stp_mode", "expire_at", "risk_reject", "trading_state", "reference_price", "now", "extra",
]  # fmt: skip
BASES: list[dict[str, object]] = [
    PLACE,
    {"cmd": "cancel", "symbol": "BTC/USDT", "user_id": "u1", "order_id": "o1"},
    {"cmd": "amend", "symbol": "BTC/USDT", "user_id": "u1", "order_id": "o1", "price": "1.00"},
    {"cmd": "mass_cancel", "symbol": "BTC/USDT", "user_id": "u1"},
    {"cmd": "symbol_admin", "symbol": "BTC/USDT", "trading_state": "HALT"},
    {"cmd": "time_tick", "symbol": "BTC/USDT", "now": "2026-11-22T00:00:00Z"},
]


def _outcome(decode: Callable[[bytes], Any], raw: bytes) -> tuple[str, object]:
    try:
        command = decode(raw)
    except DecodeError as exc:
        return exc.code, str(exc)
    try:
        return "ok", to_core(command, RULES[command.symbol])
    except Exception as exc:  # the core refuses it: the same way for both, or not
        return "core", repr(exc)


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(BASES),
    st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(TRICKY), max_size=3),
    st.sets(st.sampled_from(FIELDS), max_size=2),
)
def test_both_decoders_give_the_same_answer(
    base: dict[str, object], changes: dict[str, object], dropped: set[str]
) -> None:
    message = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    raw = json.dumps(message, ensure_ascii=False).encode()
    assert _outcome(decode_command_record, raw) == _outcome(decode_command, raw), raw
