"""Faust apps that broker tests run as real worker subprocesses.

Run as ``python tests/support/faust_apps.py worker -l info --without-web`` with
the JSON configuration in the environment variable ``FAUST_TEST_APP``::

    {"kind": "partitions", "app_id": ..., "broker": "host:port",
     "datadir": ..., "source": ..., "results": ..., "echo": ..., "partitions": 4}

``-l info`` rather than ``-l warn`` on purpose: at WARN and above the Faust
worker installs a progress-spinner log handler and sets the root logger to
DEBUG, so every ``logger.debug()`` in aiokafka and Faust builds a LogRecord.

- ``partitions``: for every event on ``source`` the agent sends the same key to
  ``echo`` with the app's own producer and reports, on ``results`` (JSON),
  ``{"key", "received_partition", "sent_partition"}``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import faust

CONFIG_ENV = "FAUST_TEST_APP"


def _common(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "broker": f"kafka://{cfg['broker']}",
        "datadir": cfg["datadir"],
        "web_enabled": False,
        "topic_partitions": int(cfg["partitions"]),
        "table_standby_replicas": 0,
        "consumer_auto_offset_reset": "earliest",
        # A SIGKILLed member stays in the group until its session times out; the
        # broker's minimum (group.min.session.timeout.ms) is 6 s.
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
    }


def partitions_app(cfg: dict[str, Any]) -> faust.App:
    app = faust.App(cfg["app_id"], **_common(cfg))
    source = app.topic(cfg["source"], key_serializer="raw", value_serializer="raw")
    echo = app.topic(cfg["echo"], key_serializer="raw", value_serializer="raw")
    results = app.topic(cfg["results"], key_serializer="raw", value_serializer="json")

    @app.agent(source)
    async def record_partitions(stream: Any) -> None:
        async for event in stream.events():
            fut = await echo.send(key=event.key, value=b"echo")
            metadata = await fut  # RecordMetadata once the broker acknowledged it
            await results.send(
                key=event.key,
                value={
                    "key": event.key.decode(),
                    "received_partition": event.message.partition,
                    "sent_partition": metadata.partition,
                },
            )

    return app


def main() -> None:
    cfg = json.loads(os.environ[CONFIG_ENV])
    factories = {"partitions": partitions_app}
    app = factories[cfg["kind"]](cfg)
    app.main()


if __name__ == "__main__":
    main()
