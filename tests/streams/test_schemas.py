"""The committed JSON Schemas are the ones the models generate, in words every regex
dialect reads alike."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from trade_engine.streams.schemas import SCHEMA_DIR, render, schemas

# Classes whose meaning depends on the dialect: ASCII in JSON Schema (ECMA-262),
# Unicode in pydantic's Rust engine and Python's re. A schema using them says one
# thing to a producer and another to the decoder.
_DIALECT_DEPENDENT = re.compile(r"(?<!\\)(?:\\\\)*\\[wWdDsSbB]")


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_committed_schemas_match_the_models() -> None:
    for name, schema in schemas().items():
        committed = (SCHEMA_DIR / name).read_text()
        assert committed == render(schema), (
            f"streams/schemas/{name} is stale: run python -m trade_engine.streams.schemas"
        )


def test_patterns_mean_the_same_in_every_dialect() -> None:
    found = 0
    for name, schema in schemas().items():
        for pattern in _patterns(schema):
            found += 1
            assert not _DIALECT_DEPENDENT.search(pattern), f"{name}: {pattern}"
    assert found > 0
