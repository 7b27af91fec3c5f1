"""``make chaos``, short: three faults on the three-node cluster lose and duplicate nothing.

The money pipeline (wallet, risk, matcher, settlement, Postgres sink, RabbitMQ bridge)
runs under a small seeded load while, one scenario at a time, the broker leading the
busiest partition is killed, the wallet service is killed mid-batch, and every stage
talks to Kafka through 200 ms of latency with connection resets. Independent readers
then find every trade once on ``te.trades``, in Postgres, in RabbitMQ and in the
ledger, and the ledger reconciles (``ops/chaos/checks.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ops.chaos.cluster import REPO, KafkaCluster
from ops.chaos.scenarios import SHORT, coordinator_partition, java_string_hash
from ops.chaos.toxiproxy import ToxiproxyClient


def test_java_string_hash_matches_java() -> None:
    # Values of String.hashCode() computed by a JVM.
    assert java_string_hash("") == 0
    assert java_string_hash("a") == 97
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert coordinator_partition("polygenelubricants", 50) == 0  # abs(MIN_VALUE) is 0


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.timeout(900)
def test_short_chaos_run_loses_nothing(
    kafka_cluster: KafkaCluster, toxiproxy: ToxiproxyClient
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ops.chaos.run", "--short", "--seed", "11"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=840,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-6000:]
    report = json.loads(lines[-1])
    brief = {k: v for k, v in report.items() if k != "details"}
    assert report["scenarios"] == len(SHORT), brief
    assert report["faults_injected"] >= len(SHORT), brief
    assert report["all_landed"], brief
    assert report["lost"] == 0, brief
    assert report["duplicated"] == 0, brief
    assert report["negative_balances"] == 0, brief
    assert report["stuck_holds"] == 0, brief
    assert report["reconcile_clean"], brief
    assert report["seq_gaps"] == 0, brief
    assert result.returncode == 0, (brief, result.stderr[-4000:])
