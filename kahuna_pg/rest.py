"""The REST API of CONTRACT.md section 4: a Falcon WSGI app over `SequenceClient`.

Python checks only the shape of a request: a JSON object whose fields have the right JSON
types. Every rule (names, counts, keys, values, durability) is the SQL functions' to judge;
their outcome comes back through `SequenceClient` and is answered with status 200 and its
`type`. Malformed requests are answered 400/404/405/413 with `{"type": "InvalidInput",
"error": ...}`; a failure of this layer itself is logged and answered 500 `{"type": "Error"}`
(500 rather than 200 so that proxies and monitoring see a server fault). All of it is
rendered in one place: `_serialize_http_error` and `_unexpected_error`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import falcon

from kahuna_pg import openapi
from kahuna_pg.client import Allocation, Result, Sequence, SequenceClient

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class MalformedRequest(Exception):
    """The request is not a JSON object of the right shape: answered 400 InvalidInput."""


# -- request shape -------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # json accepts NaN and Infinity, which are not JSON.
    raise ValueError(f"{name} is not valid JSON")


def json_object(req: falcon.Request) -> Fields:
    """The request body as a JSON object, read by `BodyLimit` (so it is within the limit)."""
    raw: bytes = req.context.body
    if not raw.strip():
        raise MalformedRequest("the body must be a JSON object, got an empty body")
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise MalformedRequest(f"the body is not valid JSON: {str(exc) or type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise MalformedRequest(f"the body must be a JSON object, got {_json_type(doc)}")
    return Fields(doc)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Fields:
    """Typed access to the fields of a request object; absent and null both read as None.

    Unknown fields are ignored, so that a client sending more than this API knows still works.
    """

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def _value(self, field: str, required: bool) -> Any:
        value = self.doc.get(field)
        if value is None and required:
            raise MalformedRequest(f"{field} is required")
        return value

    def string(self, field: str, *, required: bool = False) -> str | None:
        value = self._value(field, required)
        if value is not None and not isinstance(value, str):
            raise MalformedRequest(f"{field} must be a string, got {_json_type(value)}")
        return value

    def integer(self, field: str, *, required: bool = False) -> int | None:
        value = self._value(field, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedRequest(f"{field} must be an integer, got {_json_type(value)}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise MalformedRequest(f"{field} must be an integer within int64, got {value}")
        return value

    def durability(self) -> str | None:
        """A string as sent, or a gRPC enum number as its decimal string: SQL decides which are valid."""
        value = self.doc.get("durability")
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(self.integer("durability"))  # 400 outside int64
        raise MalformedRequest(f"durability must be a string or an integer, got {_json_type(value)}")


# -- answers -------------------------------------------------------------------------


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sequence_json(seq: Sequence) -> dict[str, Any]:
    return {
        "name": seq.name,
        "currentValue": seq.current_value,
        "initialValue": seq.initial_value,
        "increment": seq.increment,
        "maxValue": seq.max_value,
        "revision": seq.revision,
        "durability": seq.durability,
        "createdAt": _timestamp(seq.created_at),
        "updatedAt": _timestamp(seq.updated_at),
    }


def allocation_json(alloc: Allocation) -> dict[str, Any]:
    return {
        "name": alloc.name,
        "start": alloc.start,
        "end": alloc.end,
        "count": alloc.count,
        "revision": alloc.revision,
    }


def _failure(result: Result[Any]) -> dict[str, Any]:
    """A typed outcome other than Success: its type, and SQL's message when there is one."""
    body: dict[str, Any] = {"type": result.outcome.value}
    if result.message:
        body["error"] = result.message
    return body


def sequence_answer(result: Result[Sequence]) -> dict[str, Any]:
    if not result.ok or result.value is None:
        return _failure(result)
    return {"type": result.outcome.value, "sequence": sequence_json(result.value), "revision": result.value.revision}


def allocation_answer(result: Result[Allocation]) -> dict[str, Any]:
    if not result.ok or result.value is None:
        return _failure(result)
    alloc = result.value
    return {"type": result.outcome.value, "allocation": allocation_json(alloc), "revision": alloc.revision}


def delete_answer(result: Result[Sequence]) -> dict[str, Any]:
    if not result.ok or result.value is None:
        return _failure(result)
    return {"type": result.outcome.value, "revision": result.value.revision}


# -- resources -----------------------------------------------------------------------


class SequenceResource:
    """POST /v1/sequences/{create,get,delete}: answers carry the sequence."""

    def __init__(self, client: SequenceClient) -> None:
        self.client = client

    def on_post_create(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_object(req)
        resp.media = sequence_answer(
            self.client.create(
                body.string("name", required=True),
                body.integer("initialValue"),
                body.integer("increment"),
                body.integer("maxValue"),
                body.durability(),
            )
        )

    def on_post_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_object(req)
        resp.media = sequence_answer(self.client.get(body.string("name", required=True), body.durability()))

    def on_post_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_object(req)
        resp.media = delete_answer(self.client.delete(body.string("name", required=True), body.durability()))


class AllocationResource:
    """POST /v1/sequences/{next,reserve}: answers carry the allocation."""

    def __init__(self, client: SequenceClient) -> None:
        self.client = client

    def on_post_next(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_object(req)
        resp.media = allocation_answer(
            self.client.next(body.string("name", required=True), body.string("idempotencyKey"), body.durability())
        )

    def on_post_reserve(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_object(req)
        name = body.string("name", required=True)
        count = body.integer("count", required=True)
        assert count is not None  # required
        resp.media = allocation_answer(
            self.client.reserve(name, count, body.string("idempotencyKey"), body.durability())
        )


class HealthResource:
    """GET /healthz (the process answers) and GET /readyz (the database answers, schema as expected)."""

    def __init__(self, client: SequenceClient) -> None:
        self.client = client

    def on_get_healthz(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}

    def on_get_readyz(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready, detail = self.client.ready()
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ready" if ready else "unavailable", "detail": detail}


class OpenApiResource:
    """GET /v1/openapi.json: the document of this API, serialized once."""

    def __init__(self) -> None:
        self.text = json.dumps(openapi.document(), indent=2)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.text = self.text


# -- cross-cutting -------------------------------------------------------------------


class BodyLimit:
    """Reads the body of every request, refusing one over `max_bytes` with 413.

    Waitress has buffered the body already (up to its own, larger, limit); reading it here
    bounds what the app accepts whatever server runs it, with or without Content-Length.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.content_length is not None and req.content_length > self.max_bytes:
            raise self._too_large()
        body = req.bounded_stream.read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            raise self._too_large()
        req.context.body = body

    def _too_large(self) -> falcon.HTTPContentTooLarge:
        # Built only when needed: an HTTPError is costly to build, and this runs for every request.
        return falcon.HTTPContentTooLarge(description=f"the body must be at most {self.max_bytes} bytes")


def _problem(status: int, message: str) -> dict[str, str]:
    return {"type": "InvalidInput" if status < 500 else "Error", "error": message}


def _serialize_http_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Every HTTP error falcon raises (404, 405, 413, ...) as a JSON body."""
    status = exc.status_code
    if status == 404:
        message = f"no such endpoint: {req.method} {req.path}"
    elif status == 405:
        allowed = resp.get_header("Allow") or (exc.headers or {}).get("Allow", "")
        message = f"method {req.method} is not allowed on {req.path}" + (f" (allowed: {allowed})" if allowed else "")
    else:
        message = exc.description or exc.title or str(exc.status)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(_problem(status, message) if status < 500 else {"type": "Error"})


def _malformed(req: falcon.Request, resp: falcon.Response, exc: MalformedRequest, params: dict[str, Any]) -> None:
    resp.status = falcon.HTTP_400
    resp.media = _problem(400, str(exc))


def _unexpected_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    # The detail goes to the log, never to the client.
    log.error("unexpected failure on %s %s", req.method, req.path, exc_info=exc)
    resp.status = falcon.HTTP_500
    resp.media = {"type": "Error"}


def create_app(client: SequenceClient, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> falcon.App:
    """The WSGI app of the REST API, calling only `client`."""
    app = falcon.App(middleware=[BodyLimit(max_body_bytes)])
    # Paths are exact: /v1/sequences/next/ is not /v1/sequences/next.
    app.req_options.strip_url_path_trailing_slash = False
    sequences, allocations, health = SequenceResource(client), AllocationResource(client), HealthResource(client)
    for op in ("create", "get", "delete"):
        app.add_route(f"/v1/sequences/{op}", sequences, suffix=op)
    for op in ("next", "reserve"):
        app.add_route(f"/v1/sequences/{op}", allocations, suffix=op)
    app.add_route("/healthz", health, suffix="healthz")
    app.add_route("/readyz", health, suffix="readyz")
    app.add_route("/v1/openapi.json", OpenApiResource())
    # Most specific handler wins: HTTPError keeps falcon's own handler (rendered by the
    # serializer below), MalformedRequest is 400, anything else is a bug.
    app.add_error_handler(Exception, _unexpected_error)
    app.add_error_handler(MalformedRequest, _malformed)
    app.set_error_serializer(_serialize_http_error)
    return app
