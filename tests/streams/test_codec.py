"""Decoding commands: strict shapes, stable error codes, nothing huge reaches int()."""

from __future__ import annotations

import json

import pytest

from trade_engine.streams.codec import MAX_MESSAGE_BYTES, decode_command, encode, header
from trade_engine.streams.commands import CancelOrder, PlaceOrder, TimeTick, rfc3339, utc_millis
from trade_engine.streams.exceptions import DecodeError

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
def test_bad_commands_get_a_stable_code(changes: dict[str, object]) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode_command(_raw(**changes))
    assert excinfo.value.code == "DECODE_INVALID"


def test_post_only_and_ascii_ids_decode() -> None:
    for flag in (True, False):
        command = decode_command(_raw(post_only=flag))
        assert isinstance(command, PlaceOrder)
        assert command.post_only is flag
    ids = {"order_id": "A-z_0.9:x", "client_order_id": "c-1", "user_id": "u_1:x"}
    command = decode_command(_raw(**ids))
    assert isinstance(command, PlaceOrder)
    assert (command.order_id, command.client_order_id, command.user_id) == tuple(ids.values())


def test_other_commands_refuse_non_ascii_ids() -> None:
    for raw in (
        '{"cmd":"cancel","symbol":"ETH/USDT","user_id":"юзер","order_id":"o"}',
        '{"cmd":"cancel","symbol":"ETH/USDT","user_id":"u","client_order_id":"ид"}',
        '{"cmd":"amend","symbol":"ETH/USDT","user_id":"u","order_id":"ордер","price":"1"}',
        '{"cmd":"mass_cancel","symbol":"ETH/USDT","user_id":"ü"}',
    ):
        with pytest.raises(DecodeError) as excinfo:
            decode_command(raw.encode())
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
def test_undecodable_bytes(raw: bytes | None, code: str) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode_command(raw)
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
