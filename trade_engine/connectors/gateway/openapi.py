"""The OpenAPI 3.1 document, built from the route table and the pydantic models.

``python -m trade_engine.connectors.gateway.openapi [FILE]`` writes it (default
``docs/openapi.json``); a test fails when the committed file is not current. The
running gateway serves the same document at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from trade_engine.connectors.gateway.models import ErrorResponse

if TYPE_CHECKING:
    from trade_engine.connectors.gateway.routes import RouteSpec

DEFAULT_FILE = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
_REF = "#/components/schemas/{model}"
_OK_TEXT = {
    101: "Switching Protocols: the WebSocket is open",
    200: "OK",
    201: "Created: durable in Kafka",
    202: "Accepted",
}
_ERROR_TEXT = {
    400: "Invalid input (nothing was sent to the engine)",
    401: "Missing or unacceptable bearer token",
    403: "The token lacks the required scope",
    404: "Not found (another user's order is a 404 too)",
    409: "Conflicts with the order's state or an earlier request",
    422: "Valid, but refused by an account limit",
    429: "Rate limited: see Retry-After",
    501: "Not available on this gateway",
    503: "A dependency (Kafka, PostgreSQL, wallet, market data) is unavailable; retry later",
}
_RATE_HEADERS = {
    name: {"description": text, "schema": {"type": "integer"}}
    for name, text in (
        ("X-RateLimit-Limit", "Burst size of the tightest bucket"),
        ("X-RateLimit-Remaining", "Requests left in that bucket now"),
        ("X-RateLimit-Reset", "Seconds until that bucket is full again"),
    )
}


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=_REF)
        for name, definition in schema.pop("$defs", {}).items():
            self.schemas[name] = definition
        self.schemas[model.__name__] = schema
        return {"$ref": _REF.format(model=model.__name__)}

    def parameters(self, model: type[BaseModel]) -> list[dict[str, Any]]:
        schema = model.model_json_schema(ref_template=_REF)
        for name, definition in schema.pop("$defs", {}).items():
            self.schemas[name] = definition
        required = set(schema.get("required", []))
        out = []
        for name, prop in schema["properties"].items():
            description = prop.pop("description", None)
            prop.pop("title", None)
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": prop,
            }
            if description:
                param["description"] = description
            out.append(param)
        return out


def build_openapi(routes: Sequence[RouteSpec]) -> dict[str, Any]:
    components = _Components()
    error_ref = components.ref(ErrorResponse)
    paths: dict[str, dict[str, Any]] = {}
    for spec in routes:
        operation: dict[str, Any] = {
            "operationId": spec.operation_id,
            "summary": spec.summary,
            "tags": [spec.tag],
        }
        if spec.description:
            operation["description"] = spec.description
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": pattern},
            }
            for name, pattern in spec.path_params.items()
        ]
        if spec.query is not None:
            params += components.parameters(spec.query)
        if params:
            operation["parameters"] = params
        if spec.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": components.ref(spec.body)}},
            }
        operation["security"] = [{"bearerAuth": []}] if spec.auth else []
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {"description": _OK_TEXT[spec.status]}
        if spec.response is not None:
            ok["content"] = {"application/json": {"schema": components.ref(spec.response)}}
        elif spec.extra.get("content_type"):
            ok["content"] = {spec.extra["content_type"]: {"schema": {"type": "string"}}}
        if spec.rate_limited and spec.status != 101:  # a 101's headers are sent by then
            ok["headers"] = _RATE_HEADERS
        responses[str(spec.status)] = ok
        for status in sorted(spec.errors):
            error: dict[str, Any] = {
                "description": _ERROR_TEXT[status],
                "content": {"application/json": {"schema": error_ref}},
            }
            if status == 429:
                error["headers"] = {
                    "Retry-After": {
                        "description": "Seconds to wait",
                        "schema": {"type": "integer"},
                    },
                    **_RATE_HEADERS,
                }
            responses[str(status)] = error
        operation["responses"] = responses
        paths.setdefault(spec.path, {})[spec.method.lower()] = operation
    paths["/api/v1/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["operations"],
            "security": [],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Trade engine gateway",
            "version": "1.0.0",
            "description": "Order entry, account queries and market data of the trade engine. "
            "Errors are "
            '`{"error", "code", "details"}` with stable codes (docs/api.md).',
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def render(routes: Sequence[RouteSpec]) -> str:
    return json.dumps(build_openapi(routes), indent=2, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from trade_engine.connectors.gateway.routes import ROUTES  # noqa: PLC0415

    args = list(sys.argv[1:] if argv is None else argv)
    target = Path(args[0]) if args else DEFAULT_FILE
    target.write_text(render(ROUTES), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
