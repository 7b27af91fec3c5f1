"""Start-up checks: can each configured service be reached with these settings?

Each failure becomes a ``ConfigError`` naming the setting to fix, so a wrong
port or password stops a worker at start with one readable line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import aio_pika
import asyncpg

from trade_engine.config import Settings
from trade_engine.errors import ConfigError
from trade_engine.streams import clients


def check_kafka(settings: Settings) -> None:
    # Without log_level 0 librdkafka retries forever and logs every attempt to stderr.
    admin = clients.admin_client(settings, log_level=0)
    try:
        admin.list_topics(timeout=settings.kafka.connect_timeout_s)
    except Exception as exc:
        raise ConfigError(
            "kafka.bootstrap_servers",
            f"no broker answered at {settings.kafka.bootstrap_servers} "
            f"within {settings.kafka.connect_timeout_s:g}s ({exc})",
        ) from None


async def check_postgres(settings: Settings) -> None:
    pg = settings.postgres
    try:
        conn = await asyncpg.connect(pg.dsn(), timeout=pg.connect_timeout_s)
    except asyncpg.InvalidPasswordError:
        raise ConfigError(
            "postgres.password", f"authentication failed for user {pg.user!r}"
        ) from None
    except asyncpg.InvalidCatalogNameError:
        raise ConfigError("postgres.database", f"database {pg.database!r} does not exist") from None
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise ConfigError(
            "postgres.host", f"cannot connect to {pg.host}:{pg.port}: {exc}"
        ) from None
    await conn.close()


async def check_rabbitmq(settings: Settings) -> None:
    mq = settings.rabbitmq
    try:
        conn = await aio_pika.connect(mq.url(), timeout=mq.connect_timeout_s)
    except aio_pika.exceptions.ProbableAuthenticationError:
        raise ConfigError(
            "rabbitmq.password", f"authentication failed for user {mq.user!r}"
        ) from None
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise ConfigError(
            "rabbitmq.host", f"cannot connect to {mq.host}:{mq.port}: {exc}"
        ) from None
    await conn.close()


def _run(check: Callable[[Settings], Coroutine[Any, Any, None]], settings: Settings) -> None:
    asyncio.run(check(settings))


CHECKS: dict[str, Callable[[Settings], None]] = {
    "kafka": check_kafka,
    "postgres": lambda s: _run(check_postgres, s),
    "rabbitmq": lambda s: _run(check_rabbitmq, s),
}


def run_checks(settings: Settings, services: list[str] | None = None) -> dict[str, str]:
    """Run the named checks (all by default); return service -> "ok" or the error."""
    results: dict[str, str] = {}
    for name in services or list(CHECKS):
        try:
            CHECKS[name](settings)
        except ConfigError as exc:
            results[name] = str(exc)
        else:
            results[name] = "ok"
    return results
