"""The engine's topics and their declaration.

All topics on the order path share one partition count and are keyed by
symbol, so a symbol's whole history lives in one partition of each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from trade_engine.config import Settings
from trade_engine.streams import clients
from trade_engine.streams.exceptions import TopicAdminError


@dataclass(frozen=True, slots=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    retention = {"retention.ms": str(t.retention_ms)}
    # Executions and trades are the record of what happened; they are kept as long
    # as the commands so a replay can always be compared with them.
    specs = []
    for role, name in settings.topic_names.items():
        config = dict(retention)
        if role == "matcher_changelog":
            # Book state: the latest value per key is the state; keep it forever.
            config = {"cleanup.policy": "compact", "retention.ms": "-1"}
        elif role.startswith("md_"):
            config = _market_data_config(role, settings)
        if role != "dead_letter":
            config["min.insync.replicas"] = str(min(2, t.replication_factor))
        specs.append(TopicSpec(role, name, t.partitions, t.replication_factor, config))
    return specs


def _market_data_config(role: str, settings: Settings) -> dict[str, str]:
    """Market data is derived (rebuilt from te.executions): kept only as long as readers need.

    Diffs age out; the latest snapshot and ticker per symbol are compacted state;
    candles are compacted per symbol and minute and age out after their retention.
    """
    md = settings.market_data
    if role == "md_depth":
        return {"retention.ms": str(md.depth_retention_ms)}
    if role == "md_candles":
        return {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(md.candles_retention_ms),
            "segment.ms": str(3600 * 1000),
        }
    return {"cleanup.policy": "compact", "retention.ms": "-1", "segment.ms": str(3600 * 1000)}


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create every missing topic; existing ones are left alone. Returns name -> outcome."""
    admin = clients.admin_client(settings)
    specs = topic_specs(settings)
    existing = admin.list_topics(timeout=timeout_s).topics
    outcome: dict[str, str] = {}
    missing = []
    for spec in specs:
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have != spec.partitions:
                raise TopicAdminError(
                    f"topic {spec.name} has {have} partitions, settings say {spec.partitions}: "
                    "order-path topics must be co-partitioned"
                )
            outcome[spec.name] = "exists"
        else:
            missing.append(
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    config=spec.config,
                )
            )
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise TopicAdminError(f"cannot create topic {name}: {exc}") from exc
                outcome[name] = "exists"
            else:
                outcome[name] = "created"
        _wait_for_leaders(admin, [t.topic for t in missing], timeout_s)
    return outcome


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """New partitions answer requests only once they have a leader."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout_s).topics
        if all(
            name in topics
            and topics[name].partitions
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        ):
            return
        time.sleep(0.1)
    raise TopicAdminError(f"topics {names} have no leader after {timeout_s}s")


def partition_count(client: Any, topic: str, timeout_s: float = 30.0) -> int:
    """The partition count of ``topic`` from the broker's metadata (a Consumer, Producer or
    AdminClient); never from settings, so a check against it cannot disagree with the log."""
    metadata = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        reason = "unknown topic" if metadata is None else str(metadata.error or "no partitions")
        raise TopicAdminError(f"cannot read the partitions of {topic}: {reason}")
    return len(metadata.partitions)
