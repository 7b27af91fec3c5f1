"""Every Kafka client the engine builds, and the settings each one's guarantees rest on.

The one place where confluent-kafka's ``Consumer``, ``Producer`` and
``AdminClient`` are constructed: each factory starts from the connection part
of the ``Settings`` object (``settings.kafka.librdkafka()``), adds the settings
its kind of client must have, then the caller's ``**overrides`` for tuning
(``queued.min.messages``, ``linger.ms``, ``message.max.bytes`` ...; dotted
librdkafka keys, so pass them as ``**{"linger.ms": 5}``). A ``*_conf``
function beside a factory returns the same settings as a dict, for tests and
for callers that report them.

Kinds:

- producers (``producer``): idempotent, ``acks=all`` and
  ``partitioner=murmur2_random``: a key lands on the partition Faust and Java
  clients pick for it (librdkafka's default, CRC32, does not), and retries
  neither duplicate nor reorder. Every producer outside Faust is one of these;
  ``transactional_producer`` and ``dead_letter_producer`` build on it;
- consumers: ``consumer`` (bare: a group id, nothing else), ``reader``
  (read_committed, never commits: positions are assigned by hand or kept
  elsewhere), ``committing_consumer`` (at-least-once: the stage commits a
  batch's positions itself, after its effects), ``exactly_once_consumer``
  (the input of a transactional worker: positions commit inside the
  producer's transaction);
- ``admin_client``.

This module must never decide a stage's batching or commit policy (that is
``streams.runtime``); it only says how a client is configured.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from trade_engine.config import Settings

#: What every producer outside Faust must send with (DESIGN §1).
KEYED_PRODUCER: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "acks": "all",
}


# ------------------------------------------------------------------ producers


def producer_conf(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, ``acks=all``, murmur2-partitioned producer's settings."""
    return {**settings.kafka.librdkafka(), **KEYED_PRODUCER, **overrides}


def producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_conf(settings, **overrides))


def transactional_producer_conf(
    settings: Settings, transactional_id: str, **overrides: Any
) -> dict[str, Any]:
    """A producer whose transactions carry outputs, changelog and input positions."""
    return producer_conf(
        settings,
        **{
            "transactional.id": transactional_id,
            # A killed worker's open transaction blocks readers until this expires.
            "transaction.timeout.ms": 10000,
            "linger.ms": 2,
            "compression.type": "lz4",
            # The next transaction's first requests are answered
            # CONCURRENT_TRANSACTIONS while the broker still writes the last one's
            # markers; retrying after the default 100 ms puts that wait straight into
            # every record's latency.
            "retry.backoff.ms": 2,
            "retry.backoff.max.ms": 20,
            **overrides,
        },
    )


def transactional_producer(settings: Settings, transactional_id: str, **overrides: Any) -> Producer:
    return Producer(transactional_producer_conf(settings, transactional_id, **overrides))


def dead_letter_producer(settings: Settings, **overrides: Any) -> Producer:
    """For stages outside a transaction that dead-letter and flush before committing."""
    return producer(settings, **{"linger.ms": 5, **overrides})


# ------------------------------------------------------------------ consumers


def consumer_conf(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return {**settings.kafka.librdkafka(), "group.id": group_id, **overrides}


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A bare consumer (librdkafka's defaults), for metadata and watermark queries."""
    return Consumer(consumer_conf(settings, group_id, **overrides))


def reader_conf(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return consumer_conf(
        settings,
        group_id,
        **{"enable.auto.commit": False, "isolation.level": "read_committed", **overrides},
    )


def reader(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """Reads committed records only and never commits a position on its own: partitions are
    assigned by hand (replay, restore, standby, tails, probes) or followed without a stake."""
    return Consumer(reader_conf(settings, group_id, **overrides))


def committing_consumer_conf(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return reader_conf(settings, group_id, **{"auto.offset.reset": "earliest", **overrides})


def committing_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """At-least-once: a group member reading committed records from the earliest position,
    whose stage commits a batch's positions only after the batch's effects are done."""
    return Consumer(committing_consumer_conf(settings, group_id, **overrides))


def exactly_once_consumer_conf(
    settings: Settings, group_id: str, instance_id: str, **overrides: Any
) -> dict[str, Any]:
    return committing_consumer_conf(
        settings,
        group_id,
        **{
            # Static membership: a worker restarted under the same id takes its
            # partitions back at once instead of waiting out a rebalance; a worker that
            # stays dead loses them after the session timeout.
            "group.instance.id": instance_id,
            "partition.assignment.strategy": "range",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            # The broker answers a waiting fetch as soon as a record (or, read_committed,
            # a commit marker) lands, so this bounds only how often an idle consumer asks:
            # 10 ms made every idle worker send 100 fetches a second, the broker's largest
            # fixed cost. It also bounds how long a seek (an aborted transaction's rewind)
            # waits for the fetch in flight.
            "fetch.wait.max.ms": 100,
            **overrides,
        },
    )


def exactly_once_consumer(
    settings: Settings, group_id: str, instance_id: str, **overrides: Any
) -> Consumer:
    """The input of a transactional worker: reads only committed records and never commits
    on its own; positions are committed inside the producer's transaction."""
    return Consumer(exactly_once_consumer_conf(settings, group_id, instance_id, **overrides))


# ------------------------------------------------------------------ admin


def admin_client(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient({**settings.kafka.librdkafka(), **overrides})
