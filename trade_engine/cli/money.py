"""``trade-engine risk run``, ``settlement run|redrive`` and ``reconcile``: the money stages.

``add_money_commands(sub)`` registers them on the main parser. Until that is
wired, ``python -m trade_engine.cli.money ...`` runs the same commands.
Subcommands import their heavy modules (Faust, asyncpg, ...) only when run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from trade_engine.config import Settings


def _prepare(settings: Settings, service: str) -> None:
    from trade_engine import logs, tracing
    from trade_engine.operations.preflight import check_kafka
    from trade_engine.streams.topics import create_topics

    logs.configure(settings.log_level)
    tracing.configure(settings, service)
    check_kafka(settings)
    create_topics(settings)


def _serve(settings: Settings, metrics_port: int | None, checks: dict[str, Any]) -> None:
    """/metrics and /health on ``metrics_port``; ready = Kafka + the wallet + ``checks``."""
    from trade_engine import metrics
    from trade_engine.health import Health, http_check, kafka_check

    health = Health(
        {
            "kafka": kafka_check(settings),
            "wallet": http_check(settings.wallet.url.rstrip("/") + "/health/ready"),
            **checks,
        }
    )
    metrics.serve(
        metrics_port or 0, health, addr=settings.metrics_host, state_dir=settings.state_dir
    )


def _cmd_risk_run(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.agents.risk.worker import AdmissionWorker, run_risk

    _prepare(settings, "te-risk")
    worker = AdmissionWorker(settings, "risk", batch_size=args.batch_size)
    _serve(settings, args.metrics_port, {"group": worker.group_joined})
    worker.install_signal_handlers()
    asyncio.run(run_risk(settings, worker, max_idle_s=args.exit_when_idle))
    return 0


def _cmd_settlement_run(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.agents.settlement.worker import SettlementWorker

    _prepare(settings, "te-settlement")
    worker = SettlementWorker(
        settings, batch_size=args.batch_size, retry_budget_s=args.retry_budget_s
    )
    _serve(settings, args.metrics_port, {"group": worker.group_joined})
    worker.install_signal_handlers()
    worker.run(max_idle_s=args.exit_when_idle)
    return 0


def _cmd_settlement_redrive(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine import logs
    from trade_engine.agents.settlement.redrive import redrive

    logs.configure(settings.log_level)
    report = asyncio.run(
        redrive(settings, dry_run=args.dry_run, retry_budget_s=args.retry_budget_s)
    )
    print(json.dumps(report.as_dict()))
    return 1 if report.dead_lettered_again else 0


def _cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.agents.reconcile import check

    if args.every is not None:
        return _reconcile_loop(args, settings)
    try:
        report = check(settings, args.schema, wait_s=args.wait)
    except OSError as exc:
        print(f"reconcile: cannot connect: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=None if args.compact else 2))
    for problem in report.problems:
        print(f"DRIFT: {problem}", file=sys.stderr)
    return 0 if report.ok else 1


def _reconcile_loop(args: argparse.Namespace, settings: Settings) -> int:
    """Reconcile every ``--every`` seconds and export the result (``ReconcileDrift``)."""
    import time

    import asyncpg

    from trade_engine import logs, metrics
    from trade_engine.agents.reconcile import RUNS, DriftTracker, Reconciler, export
    from trade_engine.health import Health, Recent, kafka_check, postgres_check

    logs.configure(settings.log_level)
    ran = Recent("reconcile run", max_age_s=2 * args.every + 300)
    health = Health(
        {
            "kafka": kafka_check(settings),
            "postgres": postgres_check(settings.postgres.dsn()),
            "runs": ran,
        }
    )
    metrics.serve(
        args.metrics_port or 0, health, addr=settings.metrics_host, state_dir=settings.state_dir
    )
    tracker = DriftTracker()
    # One reconciler for the loop's life: each run reads only what was written since.
    reconciler = Reconciler(settings, args.schema)
    while True:
        started = time.monotonic()
        try:
            report = reconciler.check(wait_s=args.wait)
        except (OSError, asyncpg.PostgresError) as exc:
            RUNS.labels("error").inc()
            print(f"reconcile: {exc!r}", file=sys.stderr)
        else:
            drift = export(report, tracker)
            ran.touch()
            print(json.dumps({"ok": report.ok, "drift": drift, "problems": report.problems[:5]}))
        sys.stdout.flush()
        time.sleep(max(args.every - (time.monotonic() - started), 1.0))


def add_money_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    risk = sub.add_parser("risk", help="the risk stage: validate and hold funds")
    risk_sub = risk.add_subparsers(dest="risk_command", required=True)
    run = risk_sub.add_parser("run", help="te.commands -> wallet reserve -> te.commands.accepted")
    run.add_argument("--metrics-port", type=int, default=None)
    run.add_argument("--batch-size", type=int, default=500, help="commands per reserve batch")
    run.add_argument(
        "--exit-when-idle", type=float, default=None, metavar="SECONDS", help="stop when idle"
    )
    run.set_defaults(handler=_cmd_risk_run)

    settlement = sub.add_parser("settlement", help="settle trades and release holds")
    settlement_sub = settlement.add_subparsers(dest="settlement_command", required=True)
    srun = settlement_sub.add_parser("run", help="te.executions -> wallet settle/release")
    srun.add_argument("--metrics-port", type=int, default=None)
    srun.add_argument("--batch-size", type=int, default=1000)
    srun.add_argument(
        "--retry-budget-s",
        type=float,
        default=300.0,
        help="how long a record is retried while the wallet is unavailable before it is"
        " dead-lettered",
    )
    srun.add_argument(
        "--exit-when-idle", type=float, default=None, metavar="SECONDS", help="for tests"
    )
    srun.set_defaults(handler=_cmd_settlement_run)
    redrive = settlement_sub.add_parser(
        "redrive", help="apply dead-lettered settlement records again"
    )
    redrive.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    redrive.add_argument("--retry-budget-s", type=float, default=60.0)
    redrive.set_defaults(handler=_cmd_settlement_redrive)

    reconcile = sub.add_parser(
        "reconcile",
        help="wallet ledger vs engine: invariants, holds of open orders, trades settled once",
    )
    reconcile.add_argument("--schema", default="wallet", help="the wallet's PostgreSQL schema")
    reconcile.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="repeat while drift is found, up to this long (in-flight orders settle)",
    )
    reconcile.add_argument("--compact", action="store_true", help="one-line JSON")
    reconcile.add_argument(
        "--every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="run forever, every SECONDS, exporting te_reconcile_* metrics (see --metrics-port)",
    )
    reconcile.add_argument("--metrics-port", type=int, default=None)
    reconcile.set_defaults(handler=_cmd_reconcile)


def main(argv: Sequence[str] | None = None) -> int:
    from trade_engine.config import load_settings
    from trade_engine.errors import ConfigError

    parser = argparse.ArgumentParser(prog="trade-engine")
    add_money_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    handler = args.handler
    result: int = handler(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())
