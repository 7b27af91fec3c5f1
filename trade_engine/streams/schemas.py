"""JSON Schemas of the wire contracts, generated from the pydantic models.

``python -m trade_engine.streams.schemas`` rewrites ``streams/schemas/*.json``;
a test fails when the committed files differ from the models, so producers and
consumers in other languages can rely on them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from pydantic import TypeAdapter

from trade_engine.streams.commands import Command
from trade_engine.streams.executions import ExecutionMessage, TradeMessage
from trade_engine.streams.market_data import (
    CandleMessage,
    DepthSnapshotMessage,
    DepthUpdateMessage,
    TickerMessage,
)

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def schemas() -> dict[str, dict[str, Any]]:
    command: TypeAdapter[Any] = TypeAdapter(cast(Any, Command))
    return {
        "command.json": command.json_schema(),
        "execution.json": ExecutionMessage.model_json_schema(),
        "trade.json": TradeMessage.model_json_schema(),
        "md_depth_update.json": DepthUpdateMessage.model_json_schema(),
        "md_depth_snapshot.json": DepthSnapshotMessage.model_json_schema(),
        "md_candle.json": CandleMessage.model_json_schema(),
        "md_ticker.json": TickerMessage.model_json_schema(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path)
