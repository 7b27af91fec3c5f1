"""Strict decimal parsing and formatting."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trade_engine.tables.matching.codes import RejectCode
from trade_engine.tables.matching.exceptions import NumberFormatError
from trade_engine.tables.matching.numbers import Scale, format_fixed, split_decimal

TICK = Scale("0.01")
STEP = Scale("0.001", RejectCode.VALIDATION_QUANTITY_OFF_STEP)
ODD = Scale("0.25")
BIG = Scale("5")


@pytest.mark.parametrize(
    "text",
    [
        "1e5",
        "1E5",
        "NaN",
        "nan",
        "Infinity",
        "inf",
        "-0",
        "-1",
        "+1",
        "1e999999999",
        "",
        " 1",
        "1 ",
        "01",
        "00.1",
        ".5",
        "5.",
        "1,5",
        "0x10",
        "1_000",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: str.isdigit() is true, the regex is ASCII-only
        "1.0.0",
    ],
)
def test_rejects_non_plain_decimals(text: str) -> None:
    with pytest.raises(NumberFormatError) as info:
        TICK.parse(text)
    assert info.value.reject is RejectCode.VALIDATION_NUMBER_FORMAT


@pytest.mark.parametrize("text", ["9" * 19, "1" * 5000, "1." + "0" * 19, "1" * 10**6])
def test_rejects_huge_digit_strings(text: str) -> None:
    with pytest.raises(NumberFormatError):
        TICK.parse(text)


def test_off_grid_is_rejected_not_rounded() -> None:
    with pytest.raises(NumberFormatError) as info:
        TICK.parse("1.005")
    assert info.value.reject is RejectCode.VALIDATION_PRICE_OFF_TICK
    with pytest.raises(NumberFormatError) as info:
        STEP.parse("0.0001")
    assert info.value.reject is RejectCode.VALIDATION_QUANTITY_OFF_STEP
    with pytest.raises(NumberFormatError):
        ODD.parse("1.1")
    assert ODD.parse("1.75") == 7
    assert BIG.parse("15") == 3
    with pytest.raises(NumberFormatError):
        BIG.parse("12")


def test_known_values() -> None:
    assert TICK.parse("50000.25") == 5_000_025
    assert TICK.parse("0") == 0
    assert TICK.parse("7") == 700
    assert TICK.parse("1.100000000000000000") == 110
    assert TICK.format(5_000_025) == "50000.25"
    assert TICK.format(5) == "0.05"
    assert STEP.format(1) == "0.001"
    assert split_decimal("123.450") == (123450, 3)
    assert format_fixed(-5, 2) == "-0.05"
    quote = TICK.times(STEP, RejectCode.VALIDATION_FUNDS_OFF_UNIT)
    assert quote.text == "0.00001"
    assert quote.parse("1.5") == 150_000


@given(st.integers(min_value=0, max_value=10**17))
def test_round_trip_units(units: int) -> None:
    for scale in (TICK, STEP, ODD, BIG):
        text = scale.format(units)
        if len(text.split(".")[0]) <= 18:
            assert scale.parse(text) == units


@given(
    st.from_regex(r"(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?", fullmatch=True),
)
def test_any_plain_decimal_parses_or_is_off_grid(text: str) -> None:
    mantissa, decimals = split_decimal(text)
    assert Decimal(format_fixed(mantissa, decimals)) == Decimal(text)
    if (mantissa * 10 ** max(2 - decimals, 0)) % 10 ** max(decimals - 2, 0):
        with pytest.raises(NumberFormatError) as info:
            TICK.parse(text)
        assert info.value.reject is RejectCode.VALIDATION_PRICE_OFF_TICK
    else:
        units = TICK.parse(text)
        assert units * 10 ** max(decimals - 2, 0) == mantissa * 10 ** max(2 - decimals, 0)


@given(st.text(max_size=60))
def test_arbitrary_text_never_crashes(text: str) -> None:
    with contextlib.suppress(NumberFormatError):
        TICK.parse(text)
