"""The Prometheus series the gateway and the wallet service export, as PromQL names them
(``_total``, ``_bucket``...): what dashboards and alert rules may read."""

from __future__ import annotations

from prometheus_client import REGISTRY

# Importing a module registers its metrics.
from trade_engine.connectors.gateway import feeds as _feeds  # noqa: F401
from trade_engine.connectors.gateway import hub as _hub  # noqa: F401
from trade_engine.connectors.gateway import metrics as _gateway  # noqa: F401
from trade_engine.connectors.gateway import protocol as _protocol  # noqa: F401
from trade_engine.wallet import metrics as _wallet  # noqa: F401

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "gauge": ("",),
}


def service_metric_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith(("te_gateway_", "te_wallet_http_")):
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names
