"""``trade-engine db ...``, ``trade-engine sink ...`` and ``trade-engine replay-sink ...``.

Wired into the main parser by ``add_sink_commands(sub)``. Handlers import asyncpg,
aio-pika and the sinks only when they run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from trade_engine.config import Settings


def _policy(args: argparse.Namespace) -> Any:
    from trade_engine.migrations.partitions import PartitionPolicy

    return PartitionPolicy(
        orders_months_ahead=args.orders_months_ahead,
        trades_days_ahead=args.trades_days_ahead,
        orders_retention_months=args.orders_retention_months,
        trades_retention_days=args.trades_retention_days,
    )


def _cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.migrations.partitions import maintain
    from trade_engine.migrations.runner import MigrationRunner, connect

    async def run() -> int:
        conn = await connect(settings.postgres.dsn(), args.schema)
        try:
            runner = MigrationRunner(conn, args.schema)
            if args.db_command == "migrate":
                for m in await runner.migrate(args.to):
                    print(f"applied {m.version:03d}_{m.name}")
                print(f"schema {args.schema}: up to date")
            elif args.db_command == "rollback":
                for m in await runner.rollback(args.steps, args.to):
                    print(f"rolled back {m.version:03d}_{m.name}")
            elif args.db_command == "status":
                drifted = False
                for state in await runner.status():
                    mark = "applied" if state.applied else "pending"
                    if state.drifted:
                        mark, drifted = "applied, FILE CHANGED SINCE", True
                    print(f"{state.version:03d}_{state.name}: {mark}")
                return 1 if drifted else 0
            else:
                report = await maintain(conn, args.schema, _policy(args))
                print(json.dumps(report.as_dict()))
                return 1 if any(report.default_rows.values()) else 0
            return 0
        finally:
            await conn.close()

    return asyncio.run(run())


def _cmd_sink_postgres(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine import logs, metrics, tracing
    from trade_engine.health import Health, kafka_check, postgres_check
    from trade_engine.sinks.kafka import FaultHook
    from trade_engine.sinks.postgres import PostgresSink

    logs.configure(settings.log_level)
    tracing.configure(settings, "te-sink-postgres")

    async def run() -> None:
        sink = PostgresSink(
            settings,
            args.schema,
            batch_size=args.batch_size,
            policy=_policy(args),
            maintenance_interval_s=args.maintenance_interval,
            fault=FaultHook.from_env(),
        )
        health = Health(
            {
                "kafka": kafka_check(settings),
                "postgres": postgres_check(settings.postgres.dsn()),
                "group": sink.group_joined,
            }
        )
        metrics.serve(
            args.metrics_port, health, addr=settings.metrics_host, state_dir=settings.state_dir
        )
        sink.install_signal_handlers()
        stats = await sink.run(args.exit_when_idle)
        print(json.dumps(stats.__dict__))

    asyncio.run(run())
    return 0


def _cmd_sink_rabbitmq(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine import logs, metrics, tracing
    from trade_engine.health import Health, kafka_check
    from trade_engine.sinks.rabbitmq import RabbitBridge, Topology

    logs.configure(settings.log_level)
    tracing.configure(settings, "te-sink-rabbitmq")

    async def run() -> None:
        bridge = RabbitBridge(
            settings, Topology(prefix=args.name_prefix), batch_size=args.batch_size
        )
        health = Health(
            {
                "kafka": kafka_check(settings),
                "rabbitmq": bridge.connection_open,
                "group": bridge.group_joined,
            }
        )
        metrics.serve(
            args.metrics_port, health, addr=settings.metrics_host, state_dir=settings.state_dir
        )
        bridge.install_signal_handlers()
        stats = await bridge.run(args.exit_when_idle)
        print(json.dumps(stats.__dict__))

    asyncio.run(run())
    return 0


def _cmd_replay_sink(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine import logs
    from trade_engine.sinks.rebuild import rebuild

    logs.configure(settings.log_level)
    report = asyncio.run(
        rebuild(settings, args.schema, args.live_schema, until=args.until, replace=args.replace)
    )
    print(json.dumps(report.as_dict()))
    if not report.equal:
        print("replay-sink: the rebuilt tables differ from the live ones", file=sys.stderr)
        return 1
    return 0


def _schema_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", default="public", help="target schema (default: public)")


def _partition_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--orders-months-ahead", type=int, default=3)
    parser.add_argument("--trades-days-ahead", type=int, default=14)
    parser.add_argument(
        "--orders-retention-months", type=int, default=0, help="detach older (0: keep all)"
    )
    parser.add_argument(
        "--trades-retention-days", type=int, default=0, help="detach older (0: keep all)"
    )


def _add_db(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="the Postgres schema: migrations and partitions")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply pending migrations")
    migrate.add_argument("--to", type=int, default=None, metavar="VERSION")
    rollback = db_sub.add_parser("rollback", help="undo the last migration(s)")
    rollback.add_argument("--steps", type=int, default=1)
    rollback.add_argument("--to", type=int, default=None, metavar="VERSION", help="0 = all")
    db_sub.add_parser("status", help="applied and pending migrations (exit 1 on drift)")
    partitions = db_sub.add_parser(
        "partitions", help="create partitions ahead, detach old ones (exit 1 if DEFAULT has rows)"
    )
    _partition_args(partitions)
    for parser in (migrate, rollback, partitions, db_sub.choices["status"]):
        _schema_arg(parser)
        parser.set_defaults(handler=_cmd_db)


def _add_sink(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sink = sub.add_parser("sink", help="run a sink of te.executions")
    sink_sub = sink.add_subparsers(dest="sink_command", required=True)
    pg = sink_sub.add_parser("postgres", help="orders and trades into Postgres, exactly once")
    pg.add_argument("action", choices=["run"])
    _schema_arg(pg)
    _partition_args(pg)
    pg.add_argument("--batch-size", type=int, default=5000)
    pg.add_argument("--maintenance-interval", type=float, default=3600.0, metavar="SECONDS")
    mq = sink_sub.add_parser("rabbitmq", help="trade and order events to RabbitMQ")
    mq.add_argument("action", choices=["run"])
    mq.add_argument("--name-prefix", default="", help="prefix of exchange and queue names")
    mq.add_argument("--batch-size", type=int, default=1000)
    for parser in (pg, mq):
        parser.add_argument("--metrics-port", type=int, default=0, help="0: no /metrics")
        parser.add_argument(
            "--exit-when-idle", type=float, default=None, metavar="SECONDS", help="for tests"
        )
    pg.set_defaults(handler=_cmd_sink_postgres)
    mq.set_defaults(handler=_cmd_sink_rabbitmq)


def _add_replay_sink(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay-sink", help="rebuild the sink's tables from te.executions into a fresh schema"
    )
    p.add_argument("sink", choices=["postgres"])
    p.add_argument("--schema", required=True, help="the schema to build (must be new)")
    p.add_argument("--live-schema", default="public", help="the schema to compare with")
    p.add_argument(
        "--until",
        choices=["live", "end"],
        default="live",
        help="live: up to the live sink's positions; end: to the topic's end",
    )
    p.add_argument("--replace", action="store_true", help="drop --schema first if it exists")
    p.set_defaults(handler=_cmd_replay_sink)


def add_sink_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for add in (_add_db, _add_sink, _add_replay_sink):
        add(sub)
