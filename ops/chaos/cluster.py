"""The local three-node Kafka cluster as the chaos tests see it.

Nodes are started, killed and restarted only through ``ops/kafka/cluster.sh`` (the same
script an operator runs); this module adds what a test needs to aim a fault: which node
leads a partition, and a wait for a new leader or a replica back in sync.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from ops.chaos.toxiproxy import Proxy, ToxiproxyClient

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "ops" / "kafka" / "cluster.sh"
STATE = Path(os.environ.get("TE_STATE_DIR", REPO / ".state"))
NODES = (1, 2, 3)


class ClusterError(Exception):
    """The cluster script failed, or the cluster did not reach the state waited for."""


@dataclass(frozen=True, slots=True)
class KafkaCluster:
    """Ports follow ops/kafka/cluster.sh: node N listens on ``base_port + N - 1``."""

    host: str = "127.0.0.1"
    base_port: int = int(os.environ.get("TE_KAFKA_CLUSTER_PORT", "19092"))

    def port(self, node: int) -> int:
        return self.base_port + node - 1

    def proxied_port(self, node: int) -> int:
        """The PROXIED listener's real bind address: Toxiproxy's upstream."""
        return self.base_port + 300 + node - 1

    def proxy_port(self, node: int) -> int:
        """Where Toxiproxy listens for node N: what the PROXIED listener advertises."""
        return self.base_port + 10000 + node - 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{self.port(n)}" for n in NODES)

    @property
    def proxied_bootstrap(self) -> str:
        return ",".join(f"{self.host}:{self.proxy_port(n)}" for n in NODES)

    def node_of_port(self, port: int) -> int:
        return port - self.base_port + 1

    def run(self, *args: str, timeout_s: float = 240.0) -> str:
        """``cluster.sh ARGS``; its stdout, or ClusterError with the end of its stderr."""
        result = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise ClusterError(f"cluster.sh {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result.stdout

    def up(self) -> None:
        self.run("up")

    def down(self) -> None:
        self.run("down")

    def status(self) -> subprocess.CompletedProcess[str]:
        """``cluster.sh status``: a line per node; exit 0 only when all three are up."""
        return subprocess.run(
            ["bash", str(SCRIPT), "status"], capture_output=True, text=True, check=False, timeout=30
        )

    def running(self) -> bool:
        """True when all three nodes are up."""
        return self.status().returncode == 0

    def kill(self, node: int) -> None:
        """SIGKILL: no controlled shutdown, no flush; the page cache keeps what was written."""
        self.run("kill", str(node))

    def stop(self, node: int) -> None:
        self.run("stop", str(node))

    def start(self, node: int) -> None:
        self.run("start", str(node))

    def fill(self, node: int) -> None:
        """Fill node N's log dir (its own tmpfs) to the last byte: its next write fails."""
        self.run("fill", str(node))

    def unfill(self, node: int) -> None:
        """Space returns: the ballast ``fill`` wrote is removed."""
        self.run("unfill", str(node))

    def disks_on_tmpfs(self) -> bool:
        """Every node's log dir on a tmpfs of its own (``fill`` is possible)."""
        lines = self.run("disk").splitlines()
        return len(lines) == len(NODES) and all(": tmpfs " in line for line in lines)

    def node_up(self, node: int) -> bool:
        """Node N's process is alive (``cluster.sh status`` does not say "down" for it)."""
        return f"kafka node {node}: down" not in self.status().stdout

    def wait_down(self, node: int, timeout_s: float = 120.0) -> float:
        """Seconds until node N's process ended by itself (a halt), or ClusterError."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if not self.node_up(node):
                return round(time.monotonic() - started, 2)
            time.sleep(0.25)
        raise ClusterError(f"node {node} still running after {timeout_s:g}s")

    def log_lines(self, node: int, *needles: str) -> list[str]:
        """Lines of node N's server log holding any of ``needles`` (its own words)."""
        logs = STATE / "kafka-cluster" / str(node) / "logs"
        found = []
        for path in sorted(logs.glob("server.log*")):
            for line in path.read_text(errors="replace").splitlines():
                if any(n in line for n in needles):
                    found.append(line.strip())
        return found

    def install_proxies(self, client: ToxiproxyClient) -> list[Proxy]:
        """One Toxiproxy proxy per node, ``kafka-N``: proxy port to the PROXIED listener."""
        return [
            client.create_proxy(
                f"kafka-{n}",
                listen=f"{self.host}:{self.proxy_port(n)}",
                upstream=f"{self.host}:{self.proxied_port(n)}",
            )
            for n in NODES
        ]


def leader(admin: AdminClient, topic: str, partition: int, timeout_s: float = 30.0) -> int:
    """The node id leading ``topic``/``partition`` now (-1 while it has none). A topic just
    created reaches each broker's metadata a moment apart: an unknown topic is asked
    again until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(topic, timeout=10).topics[topic]
        if meta.error is None and partition in meta.partitions:
            return int(meta.partitions[partition].leader)
        if time.monotonic() > deadline:
            raise ClusterError(f"metadata of {topic}: {meta.error}")
        time.sleep(0.2)


def in_sync(admin: AdminClient, topic: str, partition: int) -> list[int]:
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    return sorted(int(n) for n in meta.partitions[partition].isrs)


def wait_for_leader(
    admin: AdminClient, topic: str, partition: int, not_on: int, timeout_s: float = 60.0
) -> int:
    """Wait until a node other than ``not_on`` leads the partition; that node's id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        node = leader(admin, topic, partition)
        if node not in (-1, not_on):
            return node
        time.sleep(0.2)
    raise ClusterError(f"{topic}[{partition}] has no leader but {not_on} after {timeout_s}s")


def wait_in_sync(
    admin: AdminClient, topic: str, partition: int, node: int, timeout_s: float = 60.0
) -> float:
    """Wait until ``node`` is back in the partition's ISR; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if node in in_sync(admin, topic, partition):
            return time.monotonic() - start
        time.sleep(0.2)
    raise ClusterError(f"node {node} not in sync on {topic}[{partition}] after {timeout_s}s")
