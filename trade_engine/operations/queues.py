"""Depth of the RabbitMQ queues the bridge feeds, from the management HTTP API.

The bridge's topology (``sinks.rabbitmq.Topology``) declares the consumers'
queues ``wallet.service.trades`` and ``notification.service.trades`` and the
dead letters' ``dlx.failed``. For each, ``GET /api/queues/<vhost>/<name>`` on the
management port (``rabbitmq.management_port``, 15672; the plugin is enabled by
``ops/rabbitmq/rabbitmq.sh``) gives the messages ready, the messages delivered
and not yet acknowledged, and the consumers. The management plugin refreshes
these every few seconds (``collect_statistics_interval``, 5 s by default).

``trade-engine lag`` shows them beside the consumer groups and its exporter
exports them (``te_rabbitmq_queue_*``). RabbitMQ being unreachable is one line,
never a failure of the Kafka part.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import quote

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trade_engine.config import Settings
from trade_engine.sinks.rabbitmq import Topology

TIMEOUT_S = 3.0


def bridged_queues(prefix: str = "") -> list[str]:
    """The queues of the bridge's topology (``sink rabbitmq run --name-prefix``)."""
    topology = Topology(prefix=prefix)
    return [topology.wallet_queue, topology.notification_queue, topology.dead_letter_queue]


@dataclass(frozen=True, slots=True)
class QueueDepth:
    queue: str
    exists: bool
    # None: the management plugin has not published the figure yet (a new queue).
    messages_ready: int | None = None
    messages_unacknowledged: int | None = None
    consumers: int | None = None
    state: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "queue": self.queue,
            "exists": self.exists,
            "messages_ready": self.messages_ready,
            "messages_unacknowledged": self.messages_unacknowledged,
            "consumers": self.consumers,
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class QueueView:
    endpoint: str  # host:port and vhost, for the operator
    queues: list[QueueDepth] = field(default_factory=list)
    error: str | None = None  # set: the management API could not be read

    def as_dict(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "error": self.error,
            "queues": [q.as_dict() for q in self.queues],
        }


class _UnavailableError(Exception):
    pass


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def read_queues(settings: Settings, names: list[str], timeout_s: float = TIMEOUT_S) -> QueueView:
    """Ready, unacknowledged and consumers of each queue; never raises."""
    mq = settings.rabbitmq
    base = f"http://{mq.host}:{mq.management_port}"
    endpoint = f"{mq.host}:{mq.management_port}, vhost {mq.vhost}"
    token = base64.b64encode(f"{mq.user}:{mq.password.get_secret_value()}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
    vhost = quote(mq.vhost, safe="")
    columns = "name,messages_ready,messages_unacknowledged,consumers,state"

    def get(name: str) -> dict[str, object] | None:
        url = f"{base}/api/queues/{vhost}/{quote(name, safe='')}?columns={columns}"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http on purpose)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                body: dict[str, object] = json.load(response)
                return body
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401:
                raise _UnavailableError(
                    f"rabbitmq.password: the management API refused user {mq.user!r} (HTTP 401)"
                ) from None
            raise _UnavailableError(f"the management API answered HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _UnavailableError(f"management API at {base} unreachable ({reason})") from None

    depths = []
    try:
        for name in names:
            body = get(name)
            if body is None:
                depths.append(QueueDepth(name, exists=False))
                continue
            depths.append(
                QueueDepth(
                    name,
                    exists=True,
                    messages_ready=_optional_int(body.get("messages_ready")),
                    messages_unacknowledged=_optional_int(body.get("messages_unacknowledged")),
                    consumers=_optional_int(body.get("consumers")),
                    state=str(body.get("state") or ""),
                )
            )
    except _UnavailableError as exc:
        return QueueView(endpoint, error=str(exc))
    return QueueView(endpoint, depths)


def render(view: QueueView) -> list[str]:
    if view.error is not None:
        return [f"rabbitmq: {view.error}"]

    def cell(value: int | None) -> str:
        return "-" if value is None else str(value)

    width = max([len("QUEUE"), *(len(q.queue) for q in view.queues)])
    lines = [
        f"rabbitmq queues ({view.endpoint})",
        f"{'QUEUE':<{width}}  {'READY':>9}  {'UNACKED':>9}  {'CONSUMERS':>9}",
    ]
    for q in view.queues:
        if not q.exists:
            lines.append(f"{q.queue:<{width}}  (not declared)")
            continue
        lines.append(
            f"{q.queue:<{width}}  {cell(q.messages_ready):>9}  "
            f"{cell(q.messages_unacknowledged):>9}  {cell(q.consumers):>9}"
        )
    return lines


class QueueCollector(Collector):
    """The latest ``QueueView`` as ``te_rabbitmq_*`` gauges, read at scrape time."""

    def __init__(self) -> None:
        self._view: QueueView | None = None
        self._lock = threading.Lock()

    def update(self, view: QueueView) -> None:
        with self._lock:
            self._view = view

    def collect(self) -> list[GaugeMetricFamily]:
        with self._lock:
            view = self._view
        up = GaugeMetricFamily(
            "te_rabbitmq_management_up", "1 when the last read of the management API succeeded"
        )
        ready = GaugeMetricFamily(
            "te_rabbitmq_queue_messages_ready", "Messages ready for delivery", labels=["queue"]
        )
        unacked = GaugeMetricFamily(
            "te_rabbitmq_queue_messages_unacknowledged",
            "Messages delivered and not yet acknowledged",
            labels=["queue"],
        )
        consumers = GaugeMetricFamily(
            "te_rabbitmq_queue_consumers", "Consumers of the queue", labels=["queue"]
        )
        families = [up, ready, unacked, consumers]
        if view is None:
            return families
        up.add_metric([], 0 if view.error is not None else 1)
        for q in view.queues:
            for family, value in (
                (ready, q.messages_ready),
                (unacked, q.messages_unacknowledged),
                (consumers, q.consumers),
            ):
                if value is not None:
                    family.add_metric([q.queue], value)
        return families
