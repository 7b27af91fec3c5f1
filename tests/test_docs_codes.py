"""The docs list every stable code: the reject codes of the matching core in
``docs/matching.md``'s table, the dead-letter codes (``streams.codes.DeadLetterCode``)
in ``docs/topics.md``'s."""

from __future__ import annotations

import re
from pathlib import Path

from trade_engine.streams.codes import DeadLetterCode
from trade_engine.tables.matching.codes import RejectCode

REPO = Path(__file__).resolve().parent.parent


def _section(doc: str, heading: str) -> str:
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_topics_md_lists_every_dead_letter_code() -> None:
    section = _section("topics.md", "## Dead letters")
    table = set(re.findall(r"^\| `([A-Z][A-Z_]+)` \|", section, re.MULTILINE))
    expected = {code.value for code in DeadLetterCode}
    assert expected <= table, f"missing from docs/topics.md: {sorted(expected - table)}"
    assert table <= expected, f"not a DeadLetterCode: {sorted(table - expected)}"
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
