"""A small typed client of Toxiproxy's HTTP API (the fault injector of the chaos tests).

A proxy is a TCP listen address forwarding to an upstream; toxics on it add latency,
cap bandwidth, stall or reset connections. ``ops/toxiproxy/toxiproxy.sh up`` starts the
server; this module only talks to it and never starts or stops anything.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_URL = "http://127.0.0.1:18474"
"""Where ``ops/toxiproxy/toxiproxy.sh`` serves the API (``TE_TOXIPROXY_URL`` overrides)."""

Stream = Literal["upstream", "downstream"]
"""upstream: client to server bytes; downstream: server to client bytes."""


class ToxiproxyError(Exception):
    """The Toxiproxy API refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Toxic:
    """One fault on a proxy's stream; ``toxicity`` is the share of connections it hits."""

    name: str
    type: str
    attributes: dict[str, int] = field(default_factory=dict)
    stream: Stream = "downstream"
    toxicity: float = 1.0

    def body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": self.attributes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Toxic:
        return cls(
            name=data["name"],
            type=data["type"],
            attributes=dict(data.get("attributes") or {}),
            stream=data.get("stream", "downstream"),
            toxicity=float(data.get("toxicity", 1.0)),
        )


def latency(
    name: str, ms: int, jitter_ms: int = 0, stream: Stream = "downstream", toxicity: float = 1.0
) -> Toxic:
    """Delay every chunk of data by ``ms`` (± ``jitter_ms``)."""
    return Toxic(name, "latency", {"latency": ms, "jitter": jitter_ms}, stream, toxicity)


def bandwidth(name: str, rate_kb_s: int, stream: Stream = "downstream") -> Toxic:
    """Cap the stream at ``rate_kb_s`` kilobytes per second."""
    return Toxic(name, "bandwidth", {"rate": rate_kb_s}, stream)


def timeout(name: str, ms: int = 0, stream: Stream = "upstream", toxicity: float = 1.0) -> Toxic:
    """Swallow all data; close the connection after ``ms`` (0: hold it open until removed).

    With ``ms=0`` on both streams this is a network partition that TCP does not see.
    """
    return Toxic(name, "timeout", {"timeout": ms}, stream, toxicity)


def reset_peer(
    name: str, after_ms: int = 0, stream: Stream = "upstream", toxicity: float = 1.0
) -> Toxic:
    """Reset connections (TCP RST) after ``after_ms``; with ``toxicity`` < 1, that share of them."""
    return Toxic(name, "reset_peer", {"timeout": after_ms}, stream, toxicity)


@dataclass(frozen=True, slots=True)
class Proxy:
    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Proxy:
        return cls(
            name=data["name"],
            listen=data["listen"],
            upstream=data["upstream"],
            enabled=bool(data["enabled"]),
            toxics=tuple(Toxic.from_json(t) for t in data.get("toxics") or ()),
        )


class ToxiproxyClient:
    """Blocking calls to one Toxiproxy server; every method is one HTTP request."""

    def __init__(self, url: str | None = None, timeout_s: float = 5.0) -> None:
        self.url = (url or os.environ.get("TE_TOXIPROXY_URL") or DEFAULT_URL).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ToxiproxyError(f"not an http(s) URL: {self.url!r}")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise ToxiproxyError(f"{method} {path}: {exc.code} {detail}", exc.code) from exc
        except OSError as exc:
            raise ToxiproxyError(f"{method} {path}: toxiproxy at {self.url}: {exc}") from exc
        return json.loads(raw) if raw.strip() else None

    def version(self) -> str:
        data = self._call("GET", "/version")
        return str(data["version"]) if isinstance(data, dict) else str(data)

    def proxies(self) -> dict[str, Proxy]:
        data = self._call("GET", "/proxies")
        return {name: Proxy.from_json(p) for name, p in data.items()}

    def proxy(self, name: str) -> Proxy:
        return Proxy.from_json(self._call("GET", f"/proxies/{name}"))

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> Proxy:
        """Create ``name``, or bring an existing one to this listen/upstream with no toxics."""
        existing = self.proxies().get(name)
        if existing is not None:
            if existing.listen == listen and existing.upstream == upstream:
                for toxic in existing.toxics:
                    self.remove_toxic(name, toxic.name)
                return self.set_enabled(name, enabled)
            self.delete_proxy(name)
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return Proxy.from_json(self._call("POST", "/proxies", body))

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def set_enabled(self, name: str, enabled: bool) -> Proxy:
        """A disabled proxy closes its connections and refuses new ones (a hard partition)."""
        return Proxy.from_json(self._call("POST", f"/proxies/{name}", {"enabled": enabled}))

    def add_toxic(self, proxy: str, toxic: Toxic) -> Toxic:
        return Toxic.from_json(self._call("POST", f"/proxies/{proxy}/toxics", toxic.body()))

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")

    @contextmanager
    def toxic(self, proxies: list[str], toxic: Toxic) -> Iterator[None]:
        """``toxic`` on each of ``proxies`` for the ``with`` block, removed on the way out."""
        added: list[str] = []
        try:
            for proxy in proxies:
                self.add_toxic(proxy, toxic)
                added.append(proxy)
            yield
        finally:
            for proxy in added:
                self.remove_toxic(proxy, toxic.name)
