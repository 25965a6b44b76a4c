"""Test fixtures: a real PostgreSQL, started by the tests, never a mock.

initdb refuses root, and pytest-postgresql's process fixture runs pg_ctl as the current
user; so the cluster is started by kahuna_pg.embedded (as the `postgres` system user when we
are root) and handed to pytest-postgresql's `postgresql_noproc`. Each test then gets a fresh
database cloned from a template where kahuna is installed by `kahuna_pg.migrate`.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories

from kahuna_pg import migrate
from kahuna_pg.embedded import EmbeddedPostgres, server_user


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Chosen at import so that pytest-postgresql's factory can be given it; the cluster itself
# starts in the autouse fixture below, which pytest sets up before any other of the session.
CLUSTER_PORT = free_port()


@pytest.fixture(scope="session", autouse=True)
def pg_cluster() -> Iterator[EmbeddedPostgres]:
    """The session's PostgreSQL server."""
    base = Path(tempfile.mkdtemp(prefix="kahuna-pg-test-"))
    cluster = EmbeddedPostgres(base, port=CLUSTER_PORT, tcp_host="127.0.0.1")
    cluster.start()
    yield cluster
    cluster.stop()


def install_kahuna(**kwargs: Any) -> None:
    """pytest-postgresql loader: install the latest kahuna schema into the template database."""
    kwargs["autocommit"] = True
    with psycopg.connect(**kwargs) as conn:
        migrate(conn)


kahuna_proc = factories.postgresql_noproc(
    host="127.0.0.1", port=CLUSTER_PORT, user=server_user(), dbname="kahuna", load=[install_kahuna]
)
postgresql = factories.postgresql("kahuna_proc")


@pytest.fixture
def db(postgresql: psycopg.Connection) -> psycopg.Connection:
    """An autocommit connection to a fresh database with kahuna installed."""
    postgresql.autocommit = True
    return postgresql


@pytest.fixture
def dsn(db: psycopg.Connection) -> str:
    """The connection string of the test's database, for more connections or processes."""
    info = db.info
    return f"host={info.host} port={info.port} user={info.user} dbname={info.dbname}"


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[[], psycopg.Connection]]:
    """A factory of further autocommit connections to the test's database, closed at the end."""
    opened: list[psycopg.Connection] = []

    def factory() -> psycopg.Connection:
        conn = psycopg.connect(dsn, autocommit=True)
        opened.append(conn)
        return conn

    yield factory
    for conn in opened:
        conn.close()
