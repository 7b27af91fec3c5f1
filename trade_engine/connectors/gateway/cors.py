"""Cross-origin requests from browsers (CORS), off unless ``gateway.cors.allowed_origins``
lists origins (``GatewayCorsSettings``).

When on, the gateway's outermost middleware:

- answers a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
  itself, before routing, authentication or rate limits: 204 with
  ``Access-Control-Allow-Origin/-Methods/-Headers`` and ``-Max-Age`` when the origin,
  the method and every requested header are allowed; otherwise 403
  ``CORS_NOT_ALLOWED`` with no ``Access-Control-*`` header, so the browser refuses;
- adds ``Access-Control-Allow-Origin`` and ``-Expose-Headers`` to every other
  response to an allowed origin, errors included (a browser script can then read a
  401's or a 429's body and ``Retry-After``), never to another origin's.

Responses that depend on the origin carry ``Vary: Origin`` so caches keep them apart.
A WebSocket handshake is not CORS: its 101 is left alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from trade_engine.config import GatewayCorsSettings
from trade_engine.connectors.gateway import metrics
from trade_engine.connectors.gateway.common import respond

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CorsPolicy:
    """The settings, prepared for per-request lookups."""

    def __init__(self, settings: GatewayCorsSettings) -> None:
        self.any_origin = "*" in settings.allowed_origins
        self.origins = frozenset(o for o in settings.allowed_origins if o != "*")
        self.methods = frozenset(settings.allowed_methods)
        self.headers = frozenset(h.lower() for h in settings.allowed_headers)
        self.allow_methods = ", ".join(settings.allowed_methods)
        self.allow_headers = ", ".join(settings.allowed_headers)
        self.expose_headers = ", ".join(settings.expose_headers)
        self.max_age = str(settings.max_age_s)

    def allow_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, None if refused."""
        if origin is None:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    def preflight(self, request: web.Request) -> web.Response:
        origin = self.allow_origin(request.headers.get(hdrs.ORIGIN))
        method = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD, "").upper()
        asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "")
        headers = {h.strip().lower() for h in asked.split(",") if h.strip()}
        refused = None
        if origin is None:
            refused = "origin"
        elif method not in self.methods:
            refused = "method"
        elif not headers <= self.headers:
            refused = "headers"
        if origin is None or refused is not None:
            return respond(
                {
                    "error": f"cross-origin request not allowed ({refused})",
                    "code": "CORS_NOT_ALLOWED",
                    "details": {"refused": refused},
                },
                403,
                self._vary(),
            )
        response = web.Response(status=204)
        response.headers.update(
            {
                hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: self.allow_methods,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: self.allow_headers,
                hdrs.ACCESS_CONTROL_MAX_AGE: self.max_age,
                **self._vary(),
            }
        )
        return response

    def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the CORS headers of an actual (non-preflight) response."""
        if response.prepared:  # a WebSocket's 101: sent already, and not CORS
            return
        if not self.any_origin:
            response.headers.add(hdrs.VARY, hdrs.ORIGIN)
        origin = self.allow_origin(request.headers.get(hdrs.ORIGIN))
        if origin is None:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        if self.expose_headers:
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = self.expose_headers

    def _vary(self) -> dict[str, str]:
        return {} if self.any_origin else {hdrs.VARY: hdrs.ORIGIN}


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def cors_middleware(settings: GatewayCorsSettings) -> Middleware:
    """The middleware for ``settings`` (put it first: outside the error middleware, so
    error responses get the headers too)."""
    policy = CorsPolicy(settings)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_preflight(request):
            answer = policy.preflight(request)
            # Routing found no OPTIONS route: one label for every preflight.
            metrics.HTTP_REQUESTS.labels(request.method, "preflight", str(answer.status)).inc()
            return answer
        response = await handler(request)
        policy.decorate(request, response)
        return response

    return cors
