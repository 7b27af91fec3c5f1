"""Sinks: Postgres history, wallet settlement, the RabbitMQ bridge. Every effect is idempotent."""
