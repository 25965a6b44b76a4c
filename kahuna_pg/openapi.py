"""The OpenAPI 3.1 document of the REST API, served at GET /v1/openapi.json.

Built here rather than kept as a JSON file so that the shared schemas are written once.
tests/test_rest_openapi.py checks it against the app's routes, and every answer the REST
tests receive is validated against it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from kahuna_pg.client import Outcome

INT64 = {"type": "integer", "format": "int64"}
INT32 = {"type": "integer", "format": "int32"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _request(name: str, fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"The body of {name}. Unknown fields are ignored; absent and null optional fields take "
        "their defaults.",
        "required": required,
        "properties": fields,
    }


def _answer(success: dict[str, Any], description: str) -> dict[str, Any]:
    """Success with its objects, or another type with no object and maybe an error message."""
    failure_types = [o.value for o in Outcome if o is not Outcome.SUCCESS]
    return {
        "description": description,
        "oneOf": [
            {
                "type": "object",
                "required": ["type", *success],
                "additionalProperties": False,
                "properties": {"type": {"const": Outcome.SUCCESS.value}, **success},
            },
            {
                "type": "object",
                "required": ["type"],
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": failure_types},
                    "error": {"type": "string", "description": "why, as the SQL function said it (not for Error)"},
                },
            },
        ],
    }


def _operation(summary: str, request: str, answer: str) -> dict[str, Any]:
    problem = _ref("Problem")
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
            "responses": {
                "200": _json(_ref(answer), "Every typed outcome, Success or not: `type` tells which."),
                "400": _json(problem, "The body is not a JSON object of the right field types."),
                "413": _json(problem, "The body is over the size limit (64 KiB by default)."),
                "500": _json(_ref("ServerError"), "An unexpected failure of the server, logged there."),
            },
        }
    }


@cache
def document() -> dict[str, Any]:
    durability_in = {
        "description": "Persistent or Ephemeral in any case, or the gRPC enum number (0 and 1 Persistent, "
        "2 Ephemeral). Default Persistent.",
        "oneOf": [{"type": "string"}, INT64, {"type": "null"}],
    }
    name = {"type": "string", "description": "1 to 1024 characters after trimming surrounding white space"}
    key = {
        "type": ["string", "null"],
        "description": "Optional idempotency key, at most 1024 bytes: a repeated call answers the recorded allocation",
    }
    schemas: dict[str, Any] = {
        "OutcomeType": {"type": "string", "enum": [o.value for o in Outcome]},
        "Sequence": {
            "type": "object",
            "required": [
                "name",
                "currentValue",
                "initialValue",
                "increment",
                "maxValue",
                "revision",
                "durability",
                "createdAt",
                "updatedAt",
            ],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "currentValue": {**INT64, "description": "the highest value handed out so far"},
                "initialValue": INT64,
                "increment": INT64,
                "maxValue": _nullable(INT64),
                "revision": {**INT64, "description": "0 when created; +1 on every allocation"},
                "durability": {"type": "string", "enum": ["Persistent", "Ephemeral"]},
                "createdAt": {"type": "string", "format": "date-time"},
                "updatedAt": {"type": "string", "format": "date-time"},
            },
        },
        "Allocation": {
            "type": "object",
            "required": ["name", "start", "end", "count", "revision"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "start": {**INT64, "description": "the first value of the run"},
                "end": {**INT64, "description": "the last value of the run, inclusive"},
                "count": INT32,
                "revision": INT64,
            },
        },
        "CreateRequest": _request(
            "create",
            {
                "name": name,
                "initialValue": {**_nullable(INT64), "description": "default 0; never handed out"},
                "increment": {**_nullable(INT64), "description": "default 1; must be > 0"},
                "maxValue": {**_nullable(INT64), "description": "inclusive; null for no limit"},
                "durability": durability_in,
            },
            ["name"],
        ),
        "NameRequest": _request("get and delete", {"name": name, "durability": durability_in}, ["name"]),
        "NextRequest": _request("next", {"name": name, "idempotencyKey": key, "durability": durability_in}, ["name"]),
        "ReserveRequest": _request(
            "reserve",
            {
                "name": name,
                "count": {**INT64, "description": "1 to 2147483647 (others are answered InvalidInput)"},
                "idempotencyKey": key,
                "durability": durability_in,
            },
            ["name", "count"],
        ),
        "SequenceAnswer": _answer({"sequence": _ref("Sequence"), "revision": INT64}, "The answer of create and get."),
        "AllocationAnswer": _answer(
            {"allocation": _ref("Allocation"), "revision": {**INT64, "description": "equals allocation.revision"}},
            "The answer of next and reserve.",
        ),
        "DeleteAnswer": _answer(
            {"revision": {**INT64, "description": "the revision of the sequence as it was"}},
            "The answer of delete.",
        ),
        "Problem": {
            "type": "object",
            "description": "A malformed request (400), unknown path (404), wrong method (405), body too big (413).",
            "required": ["type", "error"],
            "additionalProperties": False,
            "properties": {"type": {"const": Outcome.INVALID_INPUT.value}, "error": {"type": "string"}},
        },
        "ServerError": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {"type": {"const": Outcome.ERROR.value}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["ok", "ready", "unavailable"]},
                "detail": {"type": "string"},
            },
        },
    }
    paths: dict[str, Any] = {
        "/v1/sequences/create": _operation("Create a sequence", "CreateRequest", "SequenceAnswer"),
        "/v1/sequences/get": _operation("Read a sequence", "NameRequest", "SequenceAnswer"),
        "/v1/sequences/next": _operation("Allocate one value", "NextRequest", "AllocationAnswer"),
        "/v1/sequences/reserve": _operation("Allocate a contiguous range", "ReserveRequest", "AllocationAnswer"),
        "/v1/sequences/delete": _operation("Delete a sequence", "NameRequest", "DeleteAnswer"),
        "/healthz": {
            "get": {
                "summary": "The process is up",
                "responses": {"200": _json(_ref("Health"), "Always, while the process serves.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "The database answers and its schema is the version this code expects",
                "responses": {
                    "200": _json(_ref("Health"), "Ready."),
                    "503": _json(_ref("Health"), "Not ready: `detail` says why."),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kahuna-pg",
            "version": "1.0",
            "description": "Kahuna's sequence API with every rule inside PostgreSQL. Every typed outcome is "
            "answered with HTTP 200 and its `type`; an unknown path is 404 and a wrong method 405, both with a "
            "Problem body.",
        },
        "servers": [{"url": "http://localhost:8082"}],
        "paths": paths,
        "components": {"schemas": schemas},
    }
