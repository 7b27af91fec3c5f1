"""Whether the command log takes writes now, from what the gateway's producer saw.

No extra request to the brokers: the outcome of every delivery report. Metadata
cannot tell: a broker that lost its followers (their disks full, their
nodes gone) still answers metadata requests while no write reaches
``min.insync.replicas``. So the gateway is *failing* from the first failed
delivery after a success until the next success: ``/health/ready`` answers 503
with the reason meanwhile (a load balancer stops sending orders), the refusal
of every order says why, and one warning is logged when writes stop and one
when they resume. Only a write can show that writes work again, and a gateway
nobody sends orders to makes none: ``recent_s`` after the last failure the
readiness probe goes back to asking metadata (half open), and the next order
decides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from trade_engine.connectors.gateway.metrics import KAFKA_WRITES_FAILING

log = logging.getLogger(__name__)


@dataclass
class WriteHealth:
    """Fed by the producer's delivery reports (``succeeded``, ``failed``), read by the
    readiness probe and by the refusals (``reason``). librdkafka's per-broker connection
    states are no help here: a broker fenced after its death leaves the metadata, and
    one nobody needs sits in ``INIT``."""

    clock: Callable[[], float] = time.monotonic
    recent_s: float = 30.0
    failing_since: float | None = None
    last_failure: float = 0.0
    last_error: str | None = None

    def succeeded(self) -> None:
        if self.failing_since is None:  # every delivery: the common case stays cheap
            return
        log.warning(
            "Kafka acknowledges the command log's writes again after %.1f s: orders are accepted",
            self.clock() - self.failing_since,
        )
        self.failing_since = None
        self.last_error = None
        KAFKA_WRITES_FAILING.set(0)

    def failed(self, error: str) -> None:
        self.last_failure = self.clock()
        if self.failing_since is None:
            self.failing_since = self.last_failure
            log.warning("orders refused: Kafka does not take the command log's writes (%s)", error)
        self.last_error = error
        KAFKA_WRITES_FAILING.set(1)

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def reason(self) -> str | None:
        """Why writes fail, for people: None while they succeed, or when the last failure
        is more than ``recent_s`` old (the next write decides)."""
        if self.failing_since is None or self.clock() - self.last_failure > self.recent_s:
            return None
        return (
            f"writes to Kafka have failed for {self.clock() - self.failing_since:.0f} s "
            f"(last: {self.last_error})"
        )
