"""The container image's ``HEALTHCHECK``: ``python -m trade_engine.healthcheck``.

One image runs every worker, and each serves ``/health/live`` on its own port, given
on its command line as docker-compose.yml does (``matcher run --metrics-port 9464``,
``lag --serve 9466``, ``gateway run --port 8080``, ``wallet serve --port 8081``). The
port probed is the first of:

1. ``TE_HEALTH_PORT``, when set;
2. the port option of the worker's command line (``--metrics-port``, ``--serve``,
   ``--port``): the container's main process (PID 1) or, under an init such as
   ``docker run --init``, the first ``trade-engine`` process;
3. the command's default: the gateway ``TE_GATEWAY__PORT`` or 8080, the wallet the
   port of ``TE_WALLET__URL`` or 8081, market data ``TE_MARKET_DATA__METRICS_PORT``
   or 9471, any other worker ``TE_METRICS_PORT`` or 9464.

Exit status 0 when ``http://127.0.0.1:<port>/health/live`` answers 200 within three
seconds, else 1 with the reason on stderr. Standard library only, and nothing of the
engine is imported: it runs every 30 s in every container.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

PORT_OPTIONS = ("--metrics-port", "--serve", "--port")
TIMEOUT_S = 3.0


def _is_worker(argv: Sequence[str]) -> bool:
    return any(Path(arg).name == "trade-engine" or arg == "trade_engine.cli" for arg in argv)


def worker_argv(proc: Path = Path("/proc")) -> list[str]:
    """The command line of the container's worker: PID 1's, or the first trade-engine
    process's; [] when there is none (then only the defaults apply)."""
    others = sorted((p.name for p in proc.iterdir() if p.name.isdigit()), key=int)
    pids = ["1", *(pid for pid in others if pid != "1")]
    for pid in pids:
        try:
            raw = (proc / pid / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        if _is_worker(argv) and pid != str(os.getpid()):
            return argv
    return []


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def health_port(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """The port of the worker's /health/live (see the module's docstring)."""
    if env.get("TE_HEALTH_PORT"):
        return int(env["TE_HEALTH_PORT"])
    for name in PORT_OPTIONS:
        value = _option(argv, name)
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value)
    words = [arg for arg in argv if not arg.startswith("-")]
    if "gateway" in words:
        return int(env.get("TE_GATEWAY__PORT") or 8080)
    if "wallet" in words:
        return urlparse(env.get("TE_WALLET__URL") or "http://127.0.0.1:8081").port or 8081
    if "market-data" in words:
        return int(env.get("TE_MARKET_DATA__METRICS_PORT") or 9471)
    return int(env.get("TE_METRICS_PORT") or 9464)


def check(port: int, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when /health/live answers 200, else why not."""
    url = f"http://127.0.0.1:{port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"


def main() -> int:
    port = health_port(worker_argv(), os.environ)
    problem = check(port)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
