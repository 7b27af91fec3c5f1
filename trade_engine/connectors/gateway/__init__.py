"""The REST/WebSocket gateway: order entry, queries and market data for people.

``app`` builds the aiohttp application; ``auth`` verifies JWTs. The WebSocket
half serves the public market-data channels and the private order-update
channel: ``protocol`` (the WebSocket's messages, and the wiring), ``hub``
(subscriptions and fan-out), ``feeds`` (the Kafka followers that feed the hub
and that REST waits on) and ``snapshots`` (market data over REST). The shared
application keys and the authenticated principal live in ``context`` so the REST
and WebSocket halves depend on one small module rather than on each other.
"""
