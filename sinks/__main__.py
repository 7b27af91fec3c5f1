"""``python -m trade_engine.sinks db|sink|replay-sink ...``: the sink commands on their own.

The same commands as ``trade-engine db|sink|replay-sink``; this entry point lets
tests and operators run them before (or without) the main CLI.
"""

from __future__ import annotations

import argparse
import sys

from trade_engine.config import load_settings
from trade_engine.errors import ConfigError
from trade_engine.sinks.cli import add_sink_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trade_engine.sinks")
    parser.add_argument("--config", metavar="FILE")
    add_sink_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"trade-engine: configuration error: {exc}", file=sys.stderr)
        return 2
    code: int = args.handler(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
