"""Ordered SQL migrations for the Postgres history tables."""
