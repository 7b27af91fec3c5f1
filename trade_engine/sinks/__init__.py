"""Sinks: Postgres history (and the read model the gateway queries), the RabbitMQ bridge.

Every effect is idempotent on a deterministic id; wallet settlement is a stage
(``agents/settlement/``), not a sink.
"""
