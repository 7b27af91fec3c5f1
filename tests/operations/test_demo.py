"""The demo's worker supervision: restart with backoff, give up on fast failures."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from trade_engine.operations.demo import Decision, RestartPolicy, Supervisor, Worker


def _exits(policy: RestartPolicy, runs: list[float]) -> list[Decision]:
    """Feed ``policy`` one exit per run length (seconds), back to back."""
    now, out = 0.0, []
    for ran in runs:
        decision = policy.on_exit(now, now + ran)
        out.append(decision)
        now += ran + decision.delay_s
    return out


def test_backoff_doubles_and_is_capped() -> None:
    policy = RestartPolicy(max_fast_failures=100)
    delays = [d.delay_s for d in _exits(policy, [0.5] * 8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.restarts == 8


def test_gives_up_after_five_fast_failures_in_a_row() -> None:
    decisions = _exits(RestartPolicy(), [1.0, 2.0, 0.1, 9.9, 3.0])
    assert [d.restart for d in decisions] == [True, True, True, True, False]
    assert [d.delay_s for d in decisions[:4]] == [1, 2, 4, 8]
    assert "5 failures in a row" in decisions[-1].reason


def test_a_slow_failure_breaks_the_fast_failure_streak() -> None:
    policy = RestartPolicy()
    decisions = _exits(policy, [1, 1, 1, 1, 20, 1, 1, 1, 1])
    assert all(d.restart for d in decisions)
    # The 20 s run was not fast, but not healthy either: the backoff keeps growing.
    assert [d.delay_s for d in decisions] == [1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert not policy.on_exit(0, 1).restart  # the fifth fast one in a row since


def test_a_healthy_run_resets_the_backoff() -> None:
    policy = RestartPolicy()
    assert [d.delay_s for d in _exits(policy, [1, 1, 1])] == [1, 2, 4]
    assert policy.on_exit(0, 600).delay_s == 1  # ran ten minutes: start over
    assert policy.on_exit(0, 1).delay_s == 2


class FakeProc:
    """What the supervisor needs of a Popen: poll, send_signal, wait, kill."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, signum: int) -> None:
        self.log.append(f"term {self.name}")
        self.code = -signum

    def wait(self, timeout: float | None = None) -> int:
        self.log.append(f"wait {self.name}")
        return self.code or 0

    def kill(self) -> None:
        self.log.append(f"kill {self.name}")


def test_supervisor_restarts_after_the_delay_and_reports_restarts() -> None:
    clock = [100.0]
    events: list[str] = []
    lines: list[str] = []
    procs: list[FakeProc] = []

    def start() -> Any:
        procs.append(FakeProc("risk", events))
        return procs[-1]

    supervisor = Supervisor(
        {"risk": Worker(start, log="risk.log").launch(clock[0])},
        clock=lambda: clock[0],
        out=lines.append,
    )
    assert supervisor.poll() is None
    assert supervisor.restarts() == {}
    procs[-1].code = 2
    clock[0] += 3
    assert supervisor.poll() is None
    assert lines[-1] == (
        "supervisor: risk exited with code 2 after 3.0s; restarting in 1s; see risk.log"
    )
    clock[0] += 0.5
    supervisor.poll()
    assert len(procs) == 1  # not yet: the delay is 1 s
    clock[0] += 0.5
    supervisor.poll()
    assert len(procs) == 2
    assert lines[-1] == "supervisor: risk restarted (restart 1)"
    assert supervisor.restarts() == {"risk": 1}


def test_supervisor_stops_the_last_ones_after_the_others() -> None:
    events: list[str] = []

    def worker(name: str) -> Worker:
        return Worker(lambda: FakeProc(name, events)).launch(0)  # type: ignore[arg-type,return-value]

    workers = {name: worker(name) for name in ("wallet", "risk", "matcher")}
    workers["matcher"].proc = None  # waiting for its restart: nothing to stop
    Supervisor(workers).stop(last=["wallet"])
    assert events == ["term risk", "wait risk", "term wallet", "wait wallet"]


def test_a_real_crashing_process_is_restarted_then_given_up_on() -> None:
    starts: list[subprocess.Popen[bytes]] = []
    lines: list[str] = []

    def start() -> subprocess.Popen[bytes]:
        starts.append(subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"]))
        return starts[-1]

    policy = RestartPolicy(base_delay_s=0.05, max_fast_failures=3)
    supervisor = Supervisor(
        {"crasher": Worker(start, policy=policy).launch(time.monotonic())}, out=lines.append
    )
    deadline = time.monotonic() + 60
    while (given_up := supervisor.poll()) is None:
        assert time.monotonic() < deadline, lines
        time.sleep(0.02)
    assert len(starts) == 3
    assert all(proc.returncode == 3 for proc in starts)
    assert supervisor.restarts() == {"crasher": 2}
    assert lines[0].startswith("supervisor: crasher exited with code 3 after ")
    assert lines[0].endswith("; restarting in 0.05s")
    assert lines[1] == "supervisor: crasher restarted (restart 1)"
    assert given_up == lines[-1]
    assert "3 failures in a row, each within 10s of its start; giving up" in given_up
