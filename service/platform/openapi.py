"""OpenAPI helpers: error responses declared from the error hierarchy, and the YAML export."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import yaml
from fastapi import FastAPI

from service.platform.errors import InternalError, ServiceError, ServiceUnavailable

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "code"],
            "properties": {
                "message": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": "string"},
            },
            "additionalProperties": True,
        }
    },
}


def error_responses(*errors: type[ServiceError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the codes it may carry, in Qingbo's envelope."""
    by_status: dict[int, list[str]] = defaultdict(list)
    everything: tuple[type[ServiceError], ...] = (*errors, InternalError, ServiceUnavailable)
    for err in everything:
        if err.code not in by_status[err.status]:
            by_status[err.status].append(err.code)
    return {
        status: {
            "description": "Error: " + ", ".join(f"`{c}`" for c in codes),
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"},
                    "example": {"error": {"message": "...", "code": codes[0]}},
                }
            },
        }
        for status, codes in sorted(by_status.items())
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = app.openapi()
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    # Validation errors are answered as 400 invalid_request, never FastAPI's 422.
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
    return schema


def openapi_yaml(app: FastAPI) -> str:
    return yaml.safe_dump(build_openapi(app), sort_keys=False, allow_unicode=True, width=100)
