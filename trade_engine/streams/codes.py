"""Stable dead-letter codes: what a stage puts in ``dlq.code`` when it sets an input aside.

The wire layer's closed vocabulary, beside the matching core's reject codes
(``tables/matching/codes.py``): a reject is a sequenced answer to a well-formed
command; a dead letter is an input no stage could apply. Values never change
once released; add new members, never rename. Every member is listed in
``docs/topics.md`` (a test reads this enum). Settlement also dead-letters with
the wallet's own error codes (``connectors/wallet/exceptions.py``), which are
the wallet's vocabulary, not this one.
"""

from __future__ import annotations

from enum import StrEnum


class DeadLetterCode(StrEnum):
    # The command decoder (``streams.codec``): the value is not a te.commands command.
    DECODE_EMPTY = "DECODE_EMPTY"
    DECODE_TOO_LARGE = "DECODE_TOO_LARGE"
    DECODE_INVALID = "DECODE_INVALID"
    # Routing: the record is not where its symbol's history lives.
    KEY_SYMBOL_MISMATCH = "KEY_SYMBOL_MISMATCH"
    WRONG_PARTITION = "WRONG_PARTITION"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    # A field only a later stage may set (``risk_reject``) arrived on te.commands.
    FORBIDDEN_FIELD = "FORBIDDEN_FIELD"
    # The matching core raised on this input; the partition moves on without it.
    ENGINE_ERROR = "ENGINE_ERROR"
    # Settlement: a te.executions record that cannot become a wallet call.
    SETTLEMENT_BAD_RECORD = "SETTLEMENT_BAD_RECORD"
