"""The REST/WebSocket gateway: order entry, queries and market data for people.

``app`` builds the aiohttp application; ``auth`` verifies JWTs; ``websocket`` serves
the public market-data channels and the private order-update channel. The shared
application keys and the authenticated principal live in ``context`` so the REST
and WebSocket halves depend on one small module rather than on each other.
"""
