"""Helpers of the REST and serve tests: `kahuna-pg serve` as a subprocess, and HTTP to it.

Every answer `Api` receives is checked to be JSON and to match the OpenAPI document
(kahuna_pg.openapi) for its path, method and status, so that the document stays true to
what the server really answers.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from conftest import free_port
from psycopg import sql

from kahuna_pg import migrate
from kahuna_pg.embedded import EmbeddedPostgres
from kahuna_pg.openapi import document

KAHUNA_PG = str(Path(sys.executable).with_name("kahuna-pg"))
HTTP_TIMEOUT = 30.0  # seconds: a call that takes longer counts as hanging


def unique(prefix: str = "seq") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_database(cluster: EmbeddedPostgres, prefix: str = "rest") -> str:
    """A new database on `cluster` with kahuna installed; its connection string."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = cluster.conninfo(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    return dsn


# -- the server process ----------------------------------------------------------------------


class ServeProcess:
    """`kahuna-pg serve ...` as a user runs it, its output in a log file."""

    def __init__(self, *args: str, dsn: str | None = None, port: int | None = None, env: dict[str, str] | None = None):
        self.port = port or free_port()
        self.grpc_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        argv = [KAHUNA_PG, "serve", "--rest-listen", f"127.0.0.1:{self.port}", "--grpc-listen", self.grpc_target, *args]
        if dsn is not None:
            argv += ["--dsn", dsn]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KAHUNA_PG_")}
        environment.update(env or {})
        self.logfile = Path(tempfile.mkstemp(prefix="kahuna-pg-serve-", suffix=".log")[1])
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=environment)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> ServeProcess:
        """Wait until /healthz answers (the server is up and listening)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kahuna-pg serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"kahuna-pg serve did not come up in {timeout}s:\n{self.log()}")

    def signal(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `signum` and wait for the exit; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"kahuna-pg serve did not exit {timeout}s after {signum}:\n{self.log()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        self.logfile.unlink(missing_ok=True)


# -- HTTP ------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """A small HTTP client of the REST API; every reply is checked against the OpenAPI document."""

    def __init__(self, base: str) -> None:
        self.host, port = base.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        try:
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            if chunked:
                conn.request(method, path, body=iter([data or b""]), headers=hdrs, encode_chunked=True)
            else:
                conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read()
            reply_headers = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        assert reply_headers.get("content-type", "").startswith("application/json"), (resp.status, text)
        reply = Reply(resp.status, json.loads(text), reply_headers)
        check_reply(method, path, reply)
        return reply

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """POST /v1/sequences/<op> with `fields` as the body; the answer, which must be 200."""
        reply = self.post(f"/v1/sequences/{op}", fields)
        assert reply.status == 200, reply
        return reply.body

    def get(self, name: str, durability: Any = None) -> dict[str, Any]:
        return self.call("get", name=name, durability=durability)


# -- the OpenAPI document as the judge of every reply --------------------------------------------

DOC = document()


def check_reply(method: str, path: str, reply: Reply) -> None:
    operation = DOC["paths"].get(path, {}).get(method.lower())
    if operation is None:
        # Not an operation of the API: must be an unknown path or a wrong method, with a Problem.
        assert reply.status in (404, 405), reply
        validate(reply.body, DOC["components"]["schemas"]["Problem"])
        return
    response = operation["responses"].get(str(reply.status))
    assert response is not None, f"{method} {path} answered {reply.status}, not in the OpenAPI document"
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        validate(reply.body, schema)


_FORMAT_RANGE = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}


def _is_type(value: Any, kind: str) -> bool:
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Check `value` against the subset of JSON Schema (2020-12) that the document uses."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        validate(value, DOC["components"]["schemas"][name], where)
        return
    if "oneOf" in schema:
        matches = 0
        problems = []
        for option in schema["oneOf"]:
            try:
                validate(value, option, where)
                matches += 1
            except AssertionError as exc:
                problems.append(str(exc))
        assert matches == 1, f"{where}: {value!r} matches {matches} of oneOf: {problems}"
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(_is_type(value, k) for k in kinds), f"{where}: {value!r} is not {kinds}"
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} is not {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} is not one of {schema['enum']}"
    fmt = schema.get("format")
    if fmt in _FORMAT_RANGE and _is_type(value, "integer"):
        low, high = _FORMAT_RANGE[fmt]
        assert low <= value <= high, f"{where}: {value} is outside {fmt}"
    if fmt == "date-time" and isinstance(value, str):
        datetime.fromisoformat(value)  # raises if it is not ISO 8601
    if isinstance(value, dict):
        for field in schema.get("required", []):
            assert field in value, f"{where}: {field!r} is missing from {value!r}"
        properties = schema.get("properties", {})
        for field, item in value.items():
            if field in properties:
                validate(item, properties[field], f"{where}.{field}")
            else:
                assert schema.get("additionalProperties", True) is not False, f"{where}: unexpected field {field!r}"
