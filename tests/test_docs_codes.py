"""The docs list every stable code: the reject codes of the matching core in
``docs/matching.md``'s table, the dead-letter codes in ``docs/topics.md``'s."""

from __future__ import annotations

import re
from pathlib import Path

from trade_engine.tables.matching.codes import RejectCode

REPO = Path(__file__).resolve().parent.parent

# What the stages put in ``dlq.code``. The source scan below adds any code the
# decoder, the validation check or the matching stage grows later.
DEAD_LETTER_CODES = {
    "DECODE_EMPTY",
    "DECODE_TOO_LARGE",
    "DECODE_INVALID",
    "KEY_SYMBOL_MISMATCH",
    "UNKNOWN_SYMBOL",
    "FORBIDDEN_FIELD",
    "WRONG_PARTITION",
    "ENGINE_ERROR",
}
_SOURCES = {
    "streams/codec.py": r'DecodeError\(\s*"([A-Z][A-Z_]+)"',
    "agents/risk/validation.py": r'return\s+"([A-Z][A-Z_]+)",',
    "agents/matcher/step.py": r'_dead_letter\(\s*record,\s*"([A-Z][A-Z_]+)"',
}


def _section(doc: str, heading: str) -> str:
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def _dead_letter_codes_in_source() -> set[str]:
    found: set[str] = set()
    for path, pattern in _SOURCES.items():
        source = REPO / "trade_engine" / path
        if source.is_file():
            found.update(re.findall(pattern, source.read_text(encoding="utf-8")))
    return found


def test_topics_md_lists_every_dead_letter_code() -> None:
    section = _section("topics.md", "## Dead letters")
    table = set(re.findall(r"^\| `([A-Z][A-Z_]+)` \|", section, re.MULTILINE))
    expected = DEAD_LETTER_CODES | _dead_letter_codes_in_source()
    assert expected <= table, f"missing from docs/topics.md: {sorted(expected - table)}"
    assert "murmur2 partition of its key" in section


def test_matching_md_lists_every_reject_code_in_its_stage_row() -> None:
    section = _section("matching.md", "## Checks order and reject codes")
    rows = {
        stage: row for stage, row in re.findall(r"^\| ([A-Z]+) \| (.*) \|$", section, re.MULTILINE)
    }
    missing = []
    for code in RejectCode:
        stage, _, name = code.value.partition("_")
        if not re.search(rf"\b{name}\b", rows.get(stage, "")):
            missing.append(code.value)
    assert not missing, f"missing from docs/matching.md's codes table: {missing}"
    assert (
        "DUPLICATE_ORDER_ID (an order id the engine has answered (accepted or rejected) "
        "within the dedup window" in rows["MATCHING"]
    )
