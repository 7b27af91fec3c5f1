"""The harness's view of the pipeline's progress, sampled in a process of its own.

Every ``--interval`` seconds one JSON line on stdout: per stage its group's committed
offsets (summed) and lag (``operations.lag.LagReader``, read_committed), and the end
offsets of the pipeline's topics. A separate process because librdkafka 2.16's admin
client can abort (``rd_kafka_enq_once_del_source_return: Assertion eonce->refcnt > 0``)
when a request times out while a broker is dying: the harness restarts the sampler and
counts that, instead of dying with it (``Pipeline``). Exits when stdin closes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from trade_engine.config import Settings, load_settings
from trade_engine.operations.lag import LagReader


class Sampler:
    """The last good value of every stage and topic; a read that fails keeps the previous
    value (listed as stale) and the reader is replaced, since a client whose request
    timed out against a dead broker is the one that may abort."""

    def __init__(self, settings: Settings, config: dict[str, Any]) -> None:
        self.settings = settings
        self.config = config
        self.reader = LagReader(settings)
        self.last: dict[str, dict[str, int]] = {"committed": {}, "lag": {}, "end": {}}

    def sample(self) -> dict[str, Any]:
        stale: list[str] = []
        for stage, (group, topic) in self.config["groups"].items():
            try:
                parts = self.reader.read(group, topic)
            except Exception:
                stale.append(stage)
                continue
            self.last["committed"][stage] = sum(max(p.committed, 0) for p in parts)
            self.last["lag"][stage] = sum(p.lag for p in parts)
        for role, topic in self.config["topics"].items():
            try:
                self.last["end"][role] = self.reader.end_offsets(topic)
            except Exception:
                stale.append(role)
        if stale:
            self.reader = LagReader(self.settings)
        complete = all(s in self.last["lag"] for s in self.config["groups"]) and all(
            r in self.last["end"] for r in self.config["topics"]
        )
        return {"at": time.time(), "stale": stale, "complete": complete, **self.last}


def main() -> int:
    config = json.loads(sys.argv[1])
    settings = load_settings(
        kafka={"bootstrap_servers": config["bootstrap"]},
        topics={"prefix": config["prefix"], "partitions": config["partitions"]},
    )
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    sampler = Sampler(settings, config)
    while not stop.is_set():
        started = time.monotonic()
        print(json.dumps(sampler.sample()), flush=True)
        stop.wait(max(config["interval"] - (time.monotonic() - started), 0.05))
    return 0


if __name__ == "__main__":
    sys.exit(main())
