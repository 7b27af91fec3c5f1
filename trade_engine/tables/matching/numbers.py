"""Strict decimal strings <-> integer units (ticks, lots, quote units).

Accepted form: ``0`` or ``[1-9][0-9]{0,17}``, optionally ``.`` and 1..18 digits.
No sign (so no ``-0``), no exponent, no NaN/Infinity, no spaces, no leading
zeros, no bare ``.5``/``5.``. The length is checked before the regex, so a huge
string or exponent never reaches ``int()``. A value that is not an exact
multiple of the unit is rejected, never rounded. Never use floats here.
"""

from __future__ import annotations

import re

from trade_engine.tables.matching.codes import RejectCode
from trade_engine.tables.matching.exceptions import NumberFormatError

MAX_INT_DIGITS = 18
MAX_FRAC_DIGITS = 18
_MAX_LEN = MAX_INT_DIGITS + 1 + MAX_FRAC_DIGITS
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,17})(?:\.([0-9]{1,18}))?")
# Prices and sizes repeat a lot in a flow: each Scale memoises its recent
# parse/format results (pure functions of the argument), bounded by this size.
_CACHE_SIZE = 4096


def split_decimal(text: str) -> tuple[int, int]:
    """Parse ``text`` to ``(mantissa, decimals)`` with value = mantissa * 10**-decimals."""
    if not isinstance(text, str):
        raise NumberFormatError(RejectCode.VALIDATION_NUMBER_FORMAT, repr(text))
    if len(text) > _MAX_LEN:
        raise NumberFormatError(RejectCode.VALIDATION_NUMBER_TOO_LARGE, text)
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise NumberFormatError(RejectCode.VALIDATION_NUMBER_FORMAT, text)
    whole, frac = match.group(1), match.group(2) or ""
    return int(whole + frac), len(frac)


class Scale:
    """The size of one unit, e.g. tick ``"0.01"``: parses and formats amounts of it."""

    __slots__ = ("_formatted", "_parsed", "decimals", "mantissa", "off_grid", "text")

    def __init__(
        self,
        text: str,
        off_grid: RejectCode = RejectCode.VALIDATION_PRICE_OFF_TICK,
        *,
        mantissa: int | None = None,
        decimals: int | None = None,
    ) -> None:
        if mantissa is None or decimals is None:
            mantissa, decimals = split_decimal(text)
        if mantissa <= 0:
            raise ValueError(f"unit size must be positive: {text!r}")
        self.mantissa = mantissa
        self.decimals = decimals
        self.off_grid = off_grid
        self.text = text
        self._parsed: dict[str, int] = {}
        self._formatted: dict[int, str] = {}

    def times(self, other: Scale, off_grid: RejectCode) -> Scale:
        """The unit of a product, e.g. quote unit = tick * step."""
        m, d = self.mantissa * other.mantissa, self.decimals + other.decimals
        return Scale(format_fixed(m, d), off_grid, mantissa=m, decimals=d)

    def parse(self, text: str) -> int:
        """Exact number of units in ``text``; off-grid raises, never rounds."""
        if type(text) is str:  # only exact str results are memoised (hashable, immutable)
            units = self._parsed.get(text)
            if units is not None:
                return units
        value, frac = split_decimal(text)
        num = value * 10 ** max(self.decimals - frac, 0)
        den = self.mantissa * 10 ** max(frac - self.decimals, 0)
        units, rest = divmod(num, den)
        if rest:
            raise NumberFormatError(self.off_grid, text)
        units = int(units)
        cache = self._parsed
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[text] = units
        return units

    def format(self, units: int) -> str:
        """Canonical string of ``units`` with exactly this unit's decimals."""
        text = self._formatted.get(units) if type(units) is int else None
        if text is None:
            text = format_fixed(units * self.mantissa, self.decimals)
            if type(units) is int:
                cache = self._formatted
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[units] = text
        return text

    def __repr__(self) -> str:
        return f"Scale({self.text!r})"


def format_fixed(mantissa: int, decimals: int) -> str:
    """``mantissa * 10**-decimals`` as a plain decimal string (no exponent)."""
    sign = "-" if mantissa < 0 else ""
    digits = str(abs(mantissa))
    if decimals == 0:
        return sign + digits
    digits = digits.rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"
