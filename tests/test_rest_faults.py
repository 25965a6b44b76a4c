"""The outcomes REST answers when something is wrong on the server's side.

Error (an SQLSTATE outside the contract's table), Aborted (a statement timeout) and /readyz
at 503 (schema version mismatch), each provoked for real in a database of this module, then
put back. And an exception in the REST layer itself: logged, answered 500 {"type": "Error"}.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import falcon
import psycopg
import pytest
from falcon import testing
from rest_support import Api, ServeProcess, new_database, unique

from kahuna_pg.client import SequenceClient
from kahuna_pg.embedded import EmbeddedPostgres
from kahuna_pg.rest import create_app

STATEMENT_TIMEOUT_MS = 500


@pytest.fixture(scope="module")
def db_dsn(pg_cluster: EmbeddedPostgres) -> str:
    return new_database(pg_cluster, "faults")


@pytest.fixture(scope="module")
def server(db_dsn: str) -> Iterator[ServeProcess]:
    proc = ServeProcess("--statement-timeout-ms", str(STATEMENT_TIMEOUT_MS), dsn=db_dsn).wait_ready()
    yield proc
    proc.close()


@pytest.fixture
def api(server: ServeProcess) -> Api:
    return Api(server.base)


def test_unexpected_sqlstate_is_error_without_detail(api: Api, server: ServeProcess, db_dsn: str) -> None:
    name = unique()
    api.call("create", name=name)
    # A schema broken behind the service's back: the function it calls is gone (42883).
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("ALTER FUNCTION kahuna.try_reserve(text, bigint, text, text) RENAME TO try_reserve_gone")
        try:
            answer = api.call("next", name=name)
        finally:
            conn.execute("ALTER FUNCTION kahuna.try_reserve_gone(text, bigint, text, text) RENAME TO try_reserve")
    assert answer == {"type": "Error"}  # the detail is for the log, not the client
    assert "try_reserve" in server.log()
    assert api.call("next", name=name)["allocation"]["start"] == 1


def test_statement_timeout_is_aborted(api: Api, db_dsn: str) -> None:
    name = unique()
    api.call("create", name=name)
    with psycopg.connect(db_dsn) as conn:
        # Hold the sequence's allocation lock in an open transaction: the call waits past its timeout.
        conn.execute("SELECT kahuna.lock_sequence('Persistent', %s)", (name,))
        answer = api.call("next", name=name, idempotencyKey="cut-off")
        reserve = api.call("reserve", name=name, count=3)
        conn.rollback()
    assert answer["type"] == "Aborted" and "allocation" not in answer
    assert reserve["type"] == "Aborted"
    # Nothing was consumed; the same key now allocates (no outcome was recorded for it).
    again = api.call("next", name=name, idempotencyKey="cut-off")
    assert again["allocation"]["start"] == 1 and again["revision"] == 1


def test_readyz_is_503_when_the_schema_version_differs(api: Api, db_dsn: str) -> None:
    assert api.request("GET", "/readyz").status == 200
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        source = conn.execute("SELECT pg_get_functiondef('kahuna.version()'::regprocedure)").fetchone()
        assert source is not None
        conn.execute("CREATE OR REPLACE FUNCTION kahuna.version() RETURNS text LANGUAGE sql AS $$ SELECT '0.0' $$")
        try:
            reply = api.request("GET", "/readyz")
        finally:
            conn.execute(source[0])
    assert reply.status == 503 and reply.body["status"] == "unavailable" and "0.0" in reply.body["detail"]
    ready = api.request("GET", "/readyz")
    assert ready.status == 200 and ready.body["status"] == "ready"
    assert api.request("GET", "/healthz").body == {"status": "ok"}


class Broken:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("secret detail of a bug")


def test_an_exception_in_the_rest_layer_is_500_error_and_logged(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    # The real app with one more route that fails as a bug would: no server process can be
    # made to hit a bug on purpose, so this one runs in process.
    with SequenceClient.connect(dsn) as client:
        app = create_app(client)
        app.add_route("/broken", Broken())
        with caplog.at_level(logging.ERROR, logger="kahuna_pg.rest"):
            result = testing.TestClient(app).simulate_post("/broken", json={"name": "x"})
    assert result.status_code == 500
    assert result.json == {"type": "Error"}
    assert "secret" not in result.text
    assert any(r.exc_info and "secret detail of a bug" in str(r.exc_info[1]) for r in caplog.records)
