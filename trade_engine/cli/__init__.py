"""The ``trade-engine`` command line.

Each subcommand is registered by a small ``_add_*`` function; handlers load the
settings lazily so ``--help`` works without any configuration. Configuration
errors end the process with exit code 2 and one line naming the setting.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from trade_engine.cli.gateway import add_gateway_commands
from trade_engine.cli.groups import add_group_commands
from trade_engine.cli.money import add_money_commands
from trade_engine.cli.producer import add_connector_commands
from trade_engine.cli.sinks import add_sink_commands
from trade_engine.cli.stages import add_agent_commands
from trade_engine.cli.wallet import add_wallet_commands
from trade_engine.config import CONFIG_FILE_ENV, Settings, load_settings
from trade_engine.errors import ConfigError

OPS_DIR = Path(__file__).resolve().parents[2] / "ops"  # the checkout's service scripts

Handler = Callable[[argparse.Namespace, Settings], int]


def _cmd_config_show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.redacted(), indent=2, default=str))
    return 0


def _cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.operations.preflight import run_checks

    results = run_checks(settings, args.service or None)
    for service, outcome in results.items():
        print(f"{service}: {outcome}")
    return 0 if all(outcome == "ok" for outcome in results.values()) else 2


def _cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    return subprocess.call(["bash", str(OPS_DIR / "stack.sh"), args.action])


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="show the effective settings (secrets masked)")
    p.add_argument("action", choices=["show"])
    p.set_defaults(handler=_cmd_config_show)


def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="connect to each configured service; name what is wrong")
    p.add_argument("--service", action="append", choices=["kafka", "postgres", "rabbitmq"])
    p.set_defaults(handler=_cmd_check)


def _add_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev", help="the local stack: Kafka, PostgreSQL, RabbitMQ")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(handler=_cmd_dev)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trade-engine",
        description="Trade engine of a white-label crypto exchange.",
        epilog=f"Settings come from TE_* environment variables (nested with __, e.g. "
        f"TE_KAFKA__BOOTSTRAP_SERVERS) and an optional YAML file ({CONFIG_FILE_ENV} or --config).",
    )
    parser.add_argument(
        "--config", metavar="FILE", help=f"YAML settings file (env {CONFIG_FILE_ENV})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_config,
        _add_check,
        _add_dev,
        add_agent_commands,
        add_money_commands,
        add_connector_commands,
        add_wallet_commands,
        add_gateway_commands,
        add_sink_commands,
        add_group_commands,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        settings = load_settings(args.config)
        return handler(args, settings)
    except ConfigError as exc:
        print(f"trade-engine: configuration error: {exc}", file=sys.stderr)
        return 2
