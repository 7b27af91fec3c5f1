"""Edges of the engine: REST/WebSocket gateway, producer SDK and CLI, wallet client."""
