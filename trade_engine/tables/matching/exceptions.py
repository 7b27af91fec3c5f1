"""Errors of the matching core: one root, one-line classes."""

from __future__ import annotations

from trade_engine.errors import TradeEngineError
from trade_engine.tables.matching.codes import RejectCode


class MatchingError(TradeEngineError):
    code = "MATCHING_ERROR"


class NumberFormatError(MatchingError):
    """A decimal string failed strict parsing; ``reject`` is the stable code."""

    def __init__(self, reject: RejectCode, text: str) -> None:
        super().__init__(f"{reject.value}: {text[:40]!r}")
        self.reject = reject


class InvariantError(MatchingError):
    """validate() found broken internal state: stop the partition, page an operator."""

    code = "MATCHING_INVARIANT_VIOLATION"


class SnapshotError(MatchingError):
    code = "MATCHING_SNAPSHOT_INVALID"
