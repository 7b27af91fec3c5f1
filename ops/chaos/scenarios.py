"""The faults of ``make chaos``: each injected mid-stream, with the evidence that it landed.

A scenario function gets a ``Run`` (the pipeline under load, the cluster, Toxiproxy)
and does three things: waits for the moment (records flowing), injects the fault and
records proof that it hit what it aimed at (the killed pid is gone, the node led the
partition, the toxic was active while records were in flight, a group stalled), then
heals it (``Run.healed``). ``Run.recover`` measures the time from the heal until every
stage has moved again; the driver (``ops.chaos.run``) drains and judges.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from ops.chaos import toxiproxy as tx
from ops.chaos.cluster import (
    NODES,
    ClusterError,
    KafkaCluster,
    leader,
    wait_for_leader,
    wait_in_sync,
)
from ops.chaos.feeder import Feeder
from ops.chaos.pipeline import KAFKA_STAGES, MQ_PROXY, PG_PROXY, Pipeline, log, wait_ready
from ops.chaos.toxiproxy import ToxiproxyClient
from trade_engine.connectors.gateway.auth import mint_token

TXN_STATE = "__transaction_state"


def java_string_hash(text: str) -> int:
    """``String.hashCode()`` of Java (UTF-16 code units, 32-bit signed overflow)."""
    h = 0
    for unit in text.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def coordinator_partition(transactional_id: str, partitions: int) -> int:
    """The ``__transaction_state`` partition of a transactional id (Kafka's
    ``Utils.abs(hashCode) % partitions``, where abs(MIN_VALUE) is 0)."""
    h = java_string_hash(transactional_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


@dataclass
class Run:
    p: Pipeline
    feeder: Feeder
    cluster: KafkaCluster
    toxi: ToxiproxyClient
    short: bool
    rng: random.Random
    evidence: dict[str, Any] = field(default_factory=dict)
    faults: int = 0
    fault_at: float | None = None
    heal_at: float | None = None
    since: dict[str, int] = field(default_factory=dict)
    executions_at_heal: int = 0
    recovery_s: float | None = None
    first_output_s: float | None = None
    recovered: bool = False

    # ---------------------------------------------------------------- moments

    def wait_flowing(self, share: float = 0.3, timeout_s: float = 300.0) -> None:
        """Until the feeder sent ``share`` of its load and trades are coming out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sent = self.feeder.sent >= share * len(self.feeder.items)
            if sent and self.p.end("trades") > 0:
                self.evidence["before"] = self.flow()
                return
            time.sleep(0.5)
        raise TimeoutError("no trades came out of the pipeline before the fault")

    def flow(self) -> dict[str, int]:
        ends = self.p.sample()["end"]
        return {"fed": self.feeder.sent, **{role: int(n) for role, n in ends.items()}}

    def injected(self, count: int = 1) -> None:
        self.faults += count
        if self.fault_at is None:
            self.fault_at = time.monotonic()

    def healed(self) -> None:
        self.heal_at = time.monotonic()
        sample = self.p.sample()  # one sample: the positions and ends at the heal
        self.since = dict(sample["committed"])
        self.executions_at_heal = int(sample["end"]["executions"])
        self.evidence["at_heal"] = {"fed": self.feeder.sent, **sample["end"]}

    def recover(self, timeout_s: float | None = None) -> None:
        """Time from the heal to the first new output, and until every stage moved again."""
        if timeout_s is None:
            timeout_s = 120.0 if self.short else 240.0
        if self.heal_at is None:
            self.healed()
        assert self.heal_at is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.first_output_s is None:
            if self.p.end("executions") > self.executions_at_heal:
                self.first_output_s = round(time.monotonic() - self.heal_at, 2)
                break
            if self.feeder.done.is_set() and not any(self.p.lags().values()):
                break  # nothing left to answer: no new output can prove anything
            time.sleep(0.25)
        if self.p.wait_progress(self.since, max(deadline - time.monotonic(), 1.0)) is not None:
            self.recovery_s = round(time.monotonic() - self.heal_at, 2)
        self.evidence["after"] = self.flow()
        self.evidence["flowed_after"] = (
            self.evidence["after"]["executions"] > self.executions_at_heal
        )
        self.recovered = True

    def sleep_sampling(self, seconds: float) -> dict[str, Any]:
        """Sleep while the fault holds; the flow and lags at its start and end."""
        start_flow, start_lags = self.flow(), self.p.lags()
        time.sleep(seconds)
        return {
            "start": start_flow,
            "end": self.flow(),
            "lags_start": start_lags,
            "lags_end": self.p.lags(),
        }


# -------------------------------------------------------------------- helpers


def partition_ends(p: Pipeline, role: str) -> dict[int, int]:
    topic = p.settings.topic_names[role]
    consumer = Consumer({"bootstrap.servers": p.cluster.bootstrap, "group.id": "chaos-probe"})
    try:
        return {
            n: consumer.get_watermark_offsets(TopicPartition(topic, n), timeout=10)[1]
            for n in range(p.settings.topics.partitions)
        }
    finally:
        consumer.close()


def wait_replicas_back(p: Pipeline, node: int, topics: list[tuple[str, int]]) -> float:
    started = time.monotonic()
    for topic, partition in topics:
        wait_in_sync(p.admin, topic, partition, node, timeout_s=120)
    return round(time.monotonic() - started, 2)


def engine_partitions(p: Pipeline) -> list[tuple[str, int]]:
    names = p.settings.topic_names
    return [
        (names[role], n)
        for role in ("commands", "accepted", "executions", "trades", "matcher_changelog")
        for n in range(p.settings.topics.partitions)
    ]


def restart_node(r: Run, node: int) -> None:
    started = time.monotonic()
    r.cluster.start(node)
    r.evidence["restart_s"] = round(time.monotonic() - started, 2)
    r.evidence["back_in_sync_s"] = wait_replicas_back(r.p, node, engine_partitions(r.p))


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def group_assignment(admin: AdminClient, group: str) -> dict[str, list[int]]:
    """Member (group.instance.id or client id) -> partitions it owns now."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        (m.group_instance_id or m.client_id): sorted(
            tp.partition for tp in m.assignment.topic_partitions
        )
        for m in description.members
    }


# -------------------------------------------------------------------- scenarios


def leader_kill(r: Run) -> None:
    """kill -9 the broker leading the busiest partition of te.commands.accepted."""
    r.wait_flowing()
    ends = partition_ends(r.p, "accepted")
    busiest = max(ends, key=lambda n: ends[n])
    topic = r.p.settings.topic_names["accepted"]
    victim = leader(r.p.admin, topic, busiest)
    r.cluster.kill(victim)
    r.injected()
    r.healed()  # a kill heals itself by failover: recovery counts from the kill
    new = wait_for_leader(r.p.admin, topic, busiest, not_on=victim)
    r.evidence.update(
        victim=victim,
        partition=busiest,
        partition_end=ends[busiest],
        node_down=not r.cluster.running(),
        new_leader=new,
        failover_s=round(time.monotonic() - (r.heal_at or 0), 2),
    )
    r.recover()
    restart_node(r, victim)


def coordinator_kill(r: Run) -> None:
    """kill -9 the transaction coordinator of the matcher's transactional id."""
    r.wait_flowing()
    txid = f"{r.p.prefix}matcher-c1"
    meta = r.p.admin.list_topics(TXN_STATE, timeout=10).topics[TXN_STATE]
    count = len(meta.partitions)
    partition = coordinator_partition(txid, count)
    victim = leader(r.p.admin, TXN_STATE, partition)
    r.cluster.kill(victim)
    r.injected()
    r.healed()
    new = wait_for_leader(r.p.admin, TXN_STATE, partition, not_on=victim)
    r.evidence.update(
        transactional_id=txid,
        transaction_state_partitions=count,
        coordinator_partition=partition,
        victim=victim,
        node_down=not r.cluster.running(),
        new_coordinator=new,
        failover_s=round(time.monotonic() - (r.heal_at or 0), 2),
    )
    r.recover()
    started = time.monotonic()
    r.cluster.start(victim)
    wait_in_sync(r.p.admin, TXN_STATE, partition, victim, timeout_s=120)
    r.evidence["back_in_sync_s"] = round(time.monotonic() - started, 2)


def rolling_restart(r: Run) -> None:
    """Each broker stopped cleanly and restarted, one after the other, under load."""
    r.wait_flowing(0.2)
    steps = []
    for node in NODES:
        before = r.flow()
        started = time.monotonic()
        r.cluster.stop(node)
        r.injected()
        down = not r.cluster.running()
        r.cluster.start(node)
        back = wait_replicas_back(r.p, node, engine_partitions(r.p))
        steps.append(
            {
                "node": node,
                "was_down": down,
                "executions_during": r.flow()["executions"] - before["executions"],
                "stop_start_s": round(time.monotonic() - started - back, 2),
                "back_in_sync_s": back,
            }
        )
        log(f"rolling restart: node {node} back ({steps[-1]})")
    r.evidence["steps"] = steps
    r.healed()


def _proxy_outage(r: Run, proxy: str, seconds: float, watch: str) -> None:
    r.wait_flowing()
    committed = r.p.committed()[watch]
    r.toxi.set_enabled(proxy, False)
    r.injected()
    r.evidence["proxy_disabled"] = not r.toxi.proxy(proxy).enabled
    r.evidence["during"] = r.sleep_sampling(seconds)
    stalled = r.p.committed()[watch]
    r.toxi.set_enabled(proxy, True)
    r.healed()
    r.evidence.update(
        outage_s=seconds,
        stalled_group=watch,
        # The stage cut off commits nothing while its server is unreachable...
        committed_during_outage=stalled - committed,
        # ...and the records it has to process piled up meanwhile.
        lag_at_heal=r.p.lags()[watch],
    )


def postgres_outage(r: Run) -> None:
    """Postgres unreachable (its proxy disabled) for the wallet and the history sink."""
    _proxy_outage(r, PG_PROXY, 10.0 if r.short else 30.0, "sink.postgres")


def rabbitmq_outage(r: Run) -> None:
    """RabbitMQ unreachable for the bridge (connections cut, unconfirmed messages)."""
    _proxy_outage(r, MQ_PROXY, 8.0 if r.short else 20.0, "sink.rabbitmq")


def wallet_kill(r: Run) -> None:
    """The wallet service killed -9 while risk and settlement are mid-batch, restarted."""
    r.wait_flowing()
    stage = r.p.stages["wallet"]
    lags = r.p.lags()
    pid = stage.pid
    code = stage.kill()
    r.injected()
    r.evidence.update(
        pid=pid,
        exit_code=code,
        pid_gone=pid_gone(pid),
        lags_at_kill={k: v for k, v in lags.items() if k in ("risk", "settlement")},
    )
    r.evidence["during"] = r.sleep_sampling(1.0 if r.short else 3.0)
    stage.start()
    assert stage.ready_url is not None
    wait_ready([stage.ready_url])
    r.healed()


def matcher_settlement_kill(r: Run) -> None:
    """kill -9 the matcher and the settlement stage at the same moment, restart both."""
    r.wait_flowing()
    stages = [r.p.stages["matcher"], r.p.stages["settlement"]]
    pids = [s.pid for s in stages]
    for s in stages:
        assert s.proc is not None
        s.expected_down = True
        s.proc.kill()
    codes = [s.proc.wait(30) for s in stages if s.proc is not None]
    r.injected(2)
    r.evidence.update(pids=pids, exit_codes=codes, pids_gone=[pid_gone(p) for p in pids])
    time.sleep(1.0)
    for s in stages:
        s.start()
    r.healed()


def kafka_latency(r: Run) -> None:
    """200 ms latency between every stage and Kafka, and connection resets now and then."""
    r.wait_flowing(0.2)
    seconds = 15.0 if r.short else 60.0
    every = 5.0 if r.short else 10.0
    proxies = [f"kafka-{n}" for n in NODES]
    latency = tx.latency("chaos-latency", 200, jitter_ms=20)
    resets = 0
    probe: list[float] = []
    with r.toxi.toxic(proxies, latency):
        r.injected()
        start = r.flow()
        started = time.monotonic()
        r.evidence["toxics_active"] = sorted(
            t.name for name in proxies for t in r.toxi.proxy(name).toxics
        )
        probe.append(_metadata_round_trip(r.cluster.proxied_bootstrap))
        while time.monotonic() - started < seconds:
            time.sleep(every / 2)
            # A reset of every connection of one node's proxy, then it is removed.
            target = r.rng.choice(proxies)
            with r.toxi.toxic([target], tx.reset_peer("chaos-reset", 0)):
                time.sleep(0.3)
            resets += 1
            r.injected()
            time.sleep(every / 2)
        end = r.flow()
        probe.append(_metadata_round_trip(r.cluster.proxied_bootstrap))
    r.healed()
    r.evidence.update(
        seconds=seconds,
        stages_proxied=sorted(r.p.proxied),
        reset_rounds=resets,
        metadata_round_trip_s=[round(v, 3) for v in probe],
        executions_during=end["executions"] - start["executions"],
        fed_during=end["fed"] - start["fed"],
    )


def _metadata_round_trip(bootstrap: str) -> float:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    started = time.monotonic()
    admin.list_topics(timeout=20)
    return time.monotonic() - started


def matcher_partition(r: Run) -> None:
    """The matcher cut off from every broker longer than its transaction timeout (10 s)
    while a warm standby in its group takes over: the old one must not commit."""
    group = f"{r.p.prefix}matcher"
    standby = r.p.add_matcher("c2", "--standby")
    assert standby.ready_url is not None
    wait_ready([standby.ready_url])
    deadline = time.monotonic() + 60
    while len(group_assignment(r.p.admin, group)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    r.wait_flowing()
    before = group_assignment(r.p.admin, group)
    seconds = 16.0 if r.short else 20.0
    proxies = [f"kafka-{n}" for n in NODES]
    silent_up = tx.timeout("chaos-cut-up", 0, stream="upstream")
    silent_down = tx.timeout("chaos-cut-down", 0, stream="downstream")
    with r.toxi.toxic(proxies, silent_up), r.toxi.toxic(proxies, silent_down):
        r.injected()
        start = r.flow()
        time.sleep(seconds * 0.6)
        during = group_assignment(r.p.admin, group)
        time.sleep(seconds * 0.4)
        end = r.flow()
        zombie_alive = r.p.stages["matcher"].alive()
    r.healed()
    # The zombie wakes up: its open transaction was aborted by the coordinator and its
    # partitions given away; what it tries now must fail, and it must rejoin.
    deadline = time.monotonic() + 45
    after = group_assignment(r.p.admin, group)
    while not after.get("c1") and time.monotonic() < deadline:
        time.sleep(1.0)
        after = group_assignment(r.p.admin, group)
    r.evidence["assignment_after"] = after
    r.evidence["zombie_log"] = {
        word: _log_mentions(r, "matcher", (word,))
        for word in ("transaction failed", "fenced", "invalid_producer_epoch", "lost")
    }
    r.evidence.update(
        partition_s=seconds,
        assignment_before=before,
        assignment_during=during,
        standby_took_over=during.get("c2", []) == list(range(r.p.settings.topics.partitions)),
        zombie_alive_during=zombie_alive,
        executions_during=end["executions"] - start["executions"],
    )


@dataclass(frozen=True)
class GatewayProbe:
    """An order placed through the REST gateway, as a person would, and its readiness."""

    base: str
    token: str

    def place(self, client_order_id: str) -> dict[str, Any]:
        """A small resting BTC/USDT buy: the HTTP status, the error code and words, the time."""
        order = {
            "symbol": "BTC/USDT",
            "side": "BUY",
            "type": "LIMIT",
            "quantity": "0.0001",
            "price": "41000.00",
            "client_order_id": client_order_id,
        }
        started = time.monotonic()
        status, body = self._call("POST", "/api/v1/orders", order)
        return {
            "status": status,
            "code": body.get("code"),
            "error": body.get("error"),
            "details": body.get("details"),
            "order_id": body.get("order_id"),
            "seconds": round(time.monotonic() - started, 2),
        }

    def place_until_accepted(self, prefix: str, timeout_s: float) -> dict[str, Any]:
        """Place (a new client order id each time) until one is accepted (201)."""
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            result = self.place(f"{prefix}-{attempts}")
            if result["status"] == 201 or time.monotonic() - started > timeout_s:
                waited = round(time.monotonic() - started, 2)
                return {**result, "attempts": attempts, "after_s": waited}
            time.sleep(1.0)

    def lookup(self, client_order_id: str, timeout_s: float) -> dict[str, Any]:
        """The order by client order id once the gateway knows it (404 until then)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = self._call("GET", f"/api/v1/orders/client/{client_order_id}")
            if status != 404 or time.monotonic() > deadline:
                return {
                    "status": status,
                    "order_status": body.get("status"),
                    "code": body.get("code"),
                }
            time.sleep(1.0)

    def ready(self) -> dict[str, Any]:
        status, body = self._call("GET", "/health/ready")
        return {"status": status, "checks": body.get("checks")}

    def _call(
        self, method: str, path: str, payload: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(  # noqa: S310 - the local gateway
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def disk_full(r: Run) -> None:
    """Brokers' disks fill up (each node's log dir is a tmpfs of its own). One full: it
    halts and the cluster rides through on two in-sync replicas. A second full: fewer
    than ``min.insync.replicas`` remain, so the engine must stop accepting orders and say
    why (the gateway answers 503 ``KAFKA_UNAVAILABLE``, ``/health/ready`` gives the
    reason), then accept again once space returns and the nodes are restarted."""
    if not r.cluster.disks_on_tmpfs():
        raise ClusterError(
            "disk-full needs every node's log dir on a tmpfs of its own: `cluster.sh up` "
            "mounts them when it may (root); `cluster.sh reset` if the cluster predates that"
        )
    gateway, base = r.p.add_gateway()
    assert gateway.ready_url is not None
    wait_ready([gateway.ready_url])
    probe = GatewayProbe(base, mint_token(r.p.settings.gateway.auth, "u1", ttl_s=3600))
    r.wait_flowing(0.2)  # early: the second disk fills while the feeder still sends
    before = probe.place("chaos-disk-before")
    ends = partition_ends(r.p, "accepted")
    busiest = max(ends, key=lambda n: ends[n])
    first = leader(r.p.admin, r.p.settings.topic_names["accepted"], busiest)
    words = ("No space left on device", "have failed")

    try:
        r.cluster.fill(first)
        r.injected()
        # Read now: a restarted node starts a new server.log.
        first_halt = _halted(r, first, r.cluster.wait_down(first), words)
        one_full = r.sleep_sampling(5.0 if r.short else 10.0)
        accepted_one_full = probe.place("chaos-disk-one-full")

        second = r.rng.choice([n for n in NODES if n != first])
        r.cluster.fill(second)
        r.injected()
        second_halt = _halted(r, second, r.cluster.wait_down(second), words)
        refused = probe.place("chaos-disk-two-full")
        ready_refusing = probe.ready()
        # No lag samples while the cluster takes no writes (offsets cannot be read
        # either): the feeder's acknowledgements show the log stopped.
        acked, fed = r.feeder.acked, r.feeder.sent
        time.sleep(5.0 if r.short else 15.0)
        two_full = {"acked_during": r.feeder.acked - acked, "fed_during": r.feeder.sent - fed}
        refused_again = probe.place("chaos-disk-two-full-again")
        ready_refusing_later = probe.ready()
    finally:
        # Space returns (also when the scenario failed half-way: the cluster is shared).
        for node in NODES:
            r.cluster.unfill(node)
        started = time.monotonic()
        r.cluster.up()  # the halted nodes, as their supervisor would restart them
        restart_s = round(time.monotonic() - started, 2)
    r.healed()
    resumed = probe.place_until_accepted("chaos-disk-after", 120.0)
    # A 503 with outcome "unknown" is not "not placed": the surviving leader may have
    # written the order and committed it when its followers came back.
    refused_later = {
        cid: probe.lookup(cid, 30.0) for cid in ("chaos-disk-two-full", "chaos-disk-two-full-again")
    }
    r.evidence.update(
        placed_before=before,
        first=first_halt,
        one_full=one_full,
        executions_one_full=one_full["end"]["executions"] - one_full["start"]["executions"],
        placed_one_full=accepted_one_full,
        second=second_halt,
        refused=refused,
        refused_again=refused_again,
        ready_refusing=ready_refusing,
        ready_refusing_later=ready_refusing_later,
        two_full=two_full,
        restart_s=restart_s,
        resumed=resumed,
        refused_later=refused_later,
        ready_after=probe.ready(),
    )


def _halted(r: Run, node: int, after_s: float, words: tuple[str, ...]) -> dict[str, Any]:
    return {"node": node, "halted_after_s": after_s, "log": r.cluster.log_lines(node, *words)[:3]}


def _log_mentions(r: Run, stage: str, words: tuple[str, ...]) -> int:
    path = r.p.state / f"{stage}.log"
    try:
        text = path.read_text(errors="replace").lower()
    except OSError:
        return 0
    return sum(text.count(w) for w in words)


SCENARIOS: dict[str, tuple[Callable[[Run], None], tuple[str, ...]]] = {
    # name -> (fault, stages bootstrapped on the proxied listener)
    "leader-kill": (leader_kill, ()),
    "coordinator-kill": (coordinator_kill, ()),
    "rolling-restart": (rolling_restart, ()),
    "postgres-outage": (postgres_outage, ()),
    "wallet-kill": (wallet_kill, ()),
    "rabbitmq-outage": (rabbitmq_outage, ()),
    "kafka-latency": (kafka_latency, KAFKA_STAGES),
    "matcher-partition": (matcher_partition, ("matcher",)),
    "matcher-settlement-kill": (matcher_settlement_kill, ()),
    "disk-full": (disk_full, ()),
}
SHORT = ("leader-kill", "wallet-kill", "kafka-latency")
