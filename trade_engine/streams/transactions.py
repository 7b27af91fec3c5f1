"""Kafka client settings of the workers that consume, produce and commit their
input positions in one transaction (the matcher and the market-data agent)."""

from __future__ import annotations

from typing import Any

from trade_engine.config import Settings


def exactly_once_consumer_conf(
    settings: Settings, group_id: str, instance_id: str, **extra: Any
) -> dict[str, Any]:
    """A group member that reads only committed records and never commits on its
    own: positions are committed inside the producer's transaction."""
    return {
        **settings.kafka.librdkafka(),
        "group.id": group_id,
        # Static membership: a worker restarted under the same id takes its
        # partitions back at once instead of waiting out a rebalance; a worker that
        # stays dead loses them after the session timeout.
        "group.instance.id": instance_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 10,
        **extra,
    }


def transactional_producer_conf(
    settings: Settings, transactional_id: str, **extra: Any
) -> dict[str, Any]:
    """An idempotent producer whose transactions carry outputs and positions."""
    return {
        **settings.kafka.librdkafka(),
        "transactional.id": transactional_id,
        # A killed worker's open transaction blocks readers until this expires.
        "transaction.timeout.ms": 10000,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        # The next transaction's first requests are answered
        # CONCURRENT_TRANSACTIONS while the broker still writes the last one's
        # markers; retrying after the default 100 ms puts that wait straight into
        # every record's latency.
        "retry.backoff.ms": 2,
        "retry.backoff.max.ms": 20,
        **extra,
    }
