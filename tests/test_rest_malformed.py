"""Malformed requests: each answered with its HTTP status and a JSON body, and nothing changed.

Python checks only the JSON shape and types (CONTRACT.md section 4): a body that is not a
JSON object or has a field of the wrong JSON type is 400 InvalidInput; an unknown path 404,
a wrong method 405, a body over the limit 413. After each, the sequence is as it was.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from rest_support import Api, ServeProcess, new_database, unique

from kahuna_pg.embedded import EmbeddedPostgres

LIMIT = 64 * 1024
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


@pytest.fixture(scope="module")
def server(pg_cluster: EmbeddedPostgres) -> Iterator[ServeProcess]:
    proc = ServeProcess(dsn=new_database(pg_cluster, "malformed")).wait_ready()
    yield proc
    proc.close()


@pytest.fixture
def api(server: ServeProcess) -> Api:
    return Api(server.base)


@pytest.fixture
def seq(api: Api) -> Iterator[str]:
    """A sequence with a value handed out and a key recorded; unchanged at the end of the test."""
    name = unique()
    api.call("create", name=name, maxValue=1000)
    api.call("next", name=name, idempotencyKey="k1")
    before = api.get(name)
    yield name
    assert api.get(name) == before
    # The key still replays as it was: nothing was allocated or recorded meanwhile.
    replay = api.call("next", name=name, idempotencyKey="k1")
    assert replay["allocation"]["start"] == 1 and replay["revision"] == 1


def body_with(seq: str, **fields: Any) -> bytes:
    return json.dumps({"name": seq, **fields}).encode()


# (endpoint, body built from the sequence's name, a word the error must contain)
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("next", lambda s: b"", "empty"),
    ("next", lambda s: b"   \n", "empty"),
    ("next", lambda s: f'{{"name": "{s}"'.encode(), "not valid JSON"),
    ("next", lambda s: f'{{"name": "{s}",}}'.encode(), "not valid JSON"),
    ("next", lambda s: f"{{'name': '{s}'}}".encode(), "not valid JSON"),
    ("next", lambda s: b"\xff\xfe\xfa", "not valid JSON"),
    ("next", lambda s: b"[]", "array"),
    ("next", lambda s: json.dumps([{"name": s}]).encode(), "array"),
    ("next", lambda s: json.dumps(s).encode(), "string"),
    ("next", lambda s: b"42", "integer"),
    ("next", lambda s: b"null", "null"),
    ("next", lambda s: b"true", "boolean"),
    ("next", lambda s: b"{}", "name is required"),
    ("next", lambda s: b'{"name": null}', "name is required"),
    ("next", lambda s: b'{"name": 7}', "name must be a string"),
    ("next", lambda s: b'{"name": true}', "name must be a string"),
    ("next", lambda s: json.dumps({"name": [s]}).encode(), "name must be a string"),
    ("next", lambda s: json.dumps({"name": {"value": s}}).encode(), "name must be a string"),
    ("next", lambda s: body_with(s, idempotencyKey=5), "idempotencyKey must be a string"),
    ("next", lambda s: body_with(s, idempotencyKey=False), "idempotencyKey must be a string"),
    ("next", lambda s: body_with(s, idempotencyKey=["k"]), "idempotencyKey must be a string"),
    ("next", lambda s: body_with(s, durability=True), "durability"),
    ("next", lambda s: body_with(s, durability=1.0), "durability"),
    ("next", lambda s: body_with(s, durability=["Persistent"]), "durability"),
    ("next", lambda s: body_with(s, durability={}), "durability"),
    ("next", lambda s: body_with(s, durability=INT64_MAX + 1), "durability"),
    ("reserve", lambda s: body_with(s), "count is required"),
    ("reserve", lambda s: body_with(s, count=None), "count is required"),
    ("reserve", lambda s: body_with(s, count="5"), "count must be an integer"),
    ("reserve", lambda s: body_with(s, count=5.0), "count must be an integer"),
    ("reserve", lambda s: body_with(s, count=1.5), "count must be an integer"),
    ("reserve", lambda s: body_with(s, count=True), "count must be an integer"),
    ("reserve", lambda s: body_with(s, count=[5]), "count must be an integer"),
    ("reserve", lambda s: body_with(s, count=INT64_MAX + 1), "int64"),
    ("reserve", lambda s: body_with(s, count=INT64_MIN - 1), "int64"),
    ("reserve", lambda s: body_with(s, count=10**30), "int64"),
    ("reserve", lambda s: f'{{"name": "{s}", "count": 1e2}}'.encode(), "count must be an integer"),
    ("reserve", lambda s: f'{{"name": "{s}", "count": NaN}}'.encode(), "not valid JSON"),
    ("reserve", lambda s: f'{{"name": "{s}", "count": Infinity}}'.encode(), "not valid JSON"),
    ("reserve", lambda s: f'{{"name": "{s}", "count": 1{"0" * 5000}}}'.encode(), "not valid JSON"),
    ("reserve", lambda s: b'{"name": "x", "deep": ' + b"[" * 30000 + b"]" * 30000 + b"}", "not valid JSON"),
    ("get", lambda s: b'{"name": 1}', "name must be a string"),
    ("get", lambda s: body_with(s, durability=False), "durability"),
    ("delete", lambda s: b'{"name": null}', "name is required"),
    ("delete", lambda s: body_with(s, durability=2.5), "durability"),
    ("delete", lambda s: b"[1, 2]", "array"),
    ("create", lambda s: body_with(s, initialValue="0"), "initialValue must be an integer"),
    ("create", lambda s: body_with(s, initialValue=0.5), "initialValue must be an integer"),
    ("create", lambda s: body_with(s, increment=True), "increment must be an integer"),
    ("create", lambda s: body_with(s, increment=INT64_MAX + 1), "int64"),
    ("create", lambda s: body_with(s, maxValue="100"), "maxValue must be an integer"),
    ("create", lambda s: body_with(s, maxValue=1e3), "maxValue must be an integer"),
    ("create", lambda s: body_with(s, maxValue=INT64_MIN - 1), "int64"),
    ("create", lambda s: body_with(s, durability=0.0), "durability"),
]


@pytest.mark.parametrize(("op", "make", "word"), BAD_BODIES, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD_BODIES)])
def test_malformed_body_is_400_invalid_input(api: Api, seq: str, op: str, make: Any, word: str) -> None:
    reply = api.post(f"/v1/sequences/{op}", raw=make(seq))
    assert reply.status == 400, reply
    assert reply.body["type"] == "InvalidInput" and word in reply.body["error"], reply.body
    assert set(reply.body) == {"type", "error"}


def test_malformed_create_creates_nothing(api: Api) -> None:
    name = unique()
    reply = api.post("/v1/sequences/create", {"name": name, "increment": "2"})
    assert reply.status == 400
    assert api.get(name)["type"] == "NotFound"


def test_unknown_fields_are_ignored(api: Api, seq: str) -> None:
    # Shape only: a field this API does not know is not an error (a newer client may send it).
    reply = api.post("/v1/sequences/get", {"name": seq, "servedFrom": "elsewhere", "extra": [1]})
    assert reply.status == 200 and reply.body["type"] == "Success"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/sequences/nxt"),
        ("POST", "/v1/sequences"),
        ("POST", "/v1/sequences/next/"),
        ("POST", "/v1/sequences/next/extra"),
        ("POST", "/V1/SEQUENCES/NEXT"),
        ("POST", "/"),
        ("GET", "/v2/sequences/next"),
        ("GET", "/favicon.ico"),
    ],
)
def test_unknown_path_is_404_with_json(api: Api, seq: str, method: str, path: str) -> None:
    reply = api.request(method, path, {"name": seq})
    assert reply.status == 404, reply
    assert reply.body["type"] == "InvalidInput" and path in reply.body["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/sequences/next"),
        ("PUT", "/v1/sequences/next"),
        ("DELETE", "/v1/sequences/delete"),
        ("PATCH", "/v1/sequences/create"),
        ("GET", "/v1/sequences/reserve"),
        ("GET", "/v1/sequences/get"),
        ("POST", "/healthz"),
        ("POST", "/readyz"),
        ("POST", "/v1/openapi.json"),
    ],
)
def test_wrong_method_is_405_with_json(api: Api, seq: str, method: str, path: str) -> None:
    reply = api.request(method, path, {"name": seq})
    assert reply.status == 405, reply
    assert reply.body["type"] == "InvalidInput" and method in reply.body["error"]
    assert "allow" in reply.headers


def test_body_over_the_limit_is_413(api: Api, seq: str) -> None:
    body = body_with(seq, padding="x" * LIMIT)
    assert len(body) > LIMIT
    reply = api.post("/v1/sequences/next", raw=body)
    assert reply.status == 413, reply
    assert reply.body["type"] == "InvalidInput" and str(LIMIT) in reply.body["error"]


def test_chunked_body_over_the_limit_is_413(api: Api, seq: str) -> None:
    reply = api.post("/v1/sequences/next", raw=body_with(seq, padding="x" * LIMIT), chunked=True)
    assert reply.status == 413, reply
    assert reply.body["type"] == "InvalidInput"


def test_body_at_the_limit_is_read(api: Api) -> None:
    # Exactly 64 KiB: read and answered by SQL (a name that long is InvalidInput), not 413.
    prefix, suffix = b'{"name": "', b'"}'
    body = prefix + b"n" * (LIMIT - len(prefix) - len(suffix)) + suffix
    assert len(body) == LIMIT
    reply = api.post("/v1/sequences/next", raw=body)
    assert reply.status == 200 and reply.body["type"] == "InvalidInput"


def test_chunked_body_within_the_limit_is_served(api: Api, seq: str) -> None:
    reply = api.post("/v1/sequences/get", raw=body_with(seq), chunked=True)
    assert reply.status == 200 and reply.body["type"] == "Success"


def _raw_http(server: ServeProcess, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are (no HTTP library to tidy them up); the status and JSON body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def test_huge_declared_body_is_refused_before_it_is_sent(server: ServeProcess, seq: str) -> None:
    # Over waitress's own buffer limit: refused on the headers alone, still as JSON.
    status, body = _raw_http(
        server,
        b"POST /v1/sequences/next HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1073741824\r\n\r\n",
    )
    assert status == 413 and body["type"] == "InvalidInput"


def test_malformed_http_is_400_with_json(server: ServeProcess, seq: str) -> None:
    status, body = _raw_http(server, b"POST /v1/sequences/next HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n{}")
    assert status == 400 and body["type"] == "InvalidInput"
