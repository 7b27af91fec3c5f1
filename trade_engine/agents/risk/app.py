"""The engine's Faust application, built from the settings.

Settings worth knowing (measured in ops/benchmarks/bench_baseline.py, see
docs/benchmarks.md): larger poll batches, a larger stream buffer and a small
producer linger are what lift Faust's per-event throughput; raw serializers
keep Faust from decoding JSON twice (the stages validate with pydantic).
"""

from __future__ import annotations

from typing import Any

import faust

from trade_engine.config import Settings
from trade_engine.health import Flag

FAUST_TUNED: dict[str, Any] = {
    "broker_max_poll_records": 2_000,
    "stream_buffer_maxsize": 16_384,
    "producer_linger": 0.005,
    "producer_max_batch_size": 1_048_576,
    "producer_acks": -1,
}


def create_app(settings: Settings, app_id: str) -> faust.App:
    datadir = settings.state_dir / "faust" / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        f"{settings.topics.prefix}{app_id}",
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap_servers.split(",")],
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        # Our topics exist already (`trade-engine topics create`); this lets Faust
        # declare its own internal leader-election topic.
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        **FAUST_TUNED,
    )


def raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def assignment_flag(app: faust.App) -> Flag:
    """Readiness of a Faust worker: set once the group assigned it partitions (and
    cleared on revocation until the next assignment)."""
    flag = Flag("no partitions assigned by the group yet")

    async def assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        flag.set(detail=f"{len(args[0]) if args else 0} partition(s) assigned")

    async def revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        flag.clear("rebalancing")

    # Strong references: the flag keeps the handlers alive as long as the app.
    app.on_partitions_assigned.connect(assigned)
    app.on_partitions_revoked.connect(revoked)
    return flag
