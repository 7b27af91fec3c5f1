"""The committed JSON Schemas are the ones the models generate."""

from __future__ import annotations

from trade_engine.streams.schemas import SCHEMA_DIR, render, schemas


def test_committed_schemas_match_the_models() -> None:
    for name, schema in schemas().items():
        committed = (SCHEMA_DIR / name).read_text()
        assert committed == render(schema), (
            f"streams/schemas/{name} is stale: run python -m trade_engine.streams.schemas"
        )
