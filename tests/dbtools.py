"""Helpers of the SQL tests: extra databases and private clusters, and the PostgreSQL tools.

Databases are created in the session's cluster (the `pg_cluster` fixture) when a test needs
one that is empty or installed another way than by the `db` fixture's template; private
clusters are for tests that crash the server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from kahuna_pg.embedded import EmbeddedPostgres, find_bindir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def new_database(cluster: EmbeddedPostgres, prefix: str = "kahuna_t") -> Iterator[str]:
    """An empty database (from template0) in `cluster`, dropped afterwards; yields its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def private_cluster(**settings: str) -> Iterator[EmbeddedPostgres]:
    """A cluster of the test's own on 127.0.0.1, which it may crash; removed afterwards.

    The directory comes from tempfile.mkdtemp (under /tmp), which the `postgres` system user
    can reach when we are root, unlike pytest's tmp_path.
    """
    base = Path(tempfile.mkdtemp(prefix="kahuna-pg-private-"))
    cluster = EmbeddedPostgres(base, port=free_port(), tcp_host="127.0.0.1", settings=settings)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        finally:
            shutil.rmtree(base, ignore_errors=True)


def pg_tool(name: str) -> Path:
    """A client program of the server's own version (pg_dump, pg_restore, pg_config)."""
    path = find_bindir() / name
    assert path.exists(), f"{name} is missing from {path.parent}: install the PostgreSQL client (scripts/setup)"
    return path


def run_tool(cluster: EmbeddedPostgres, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Runs a client program against `cluster` over TCP as its superuser; fails the test if it fails."""
    cmd = [str(pg_tool(argv[0])), "-h", cluster.host, "-p", str(cluster.port), "-U", cluster.user, *argv[1:]]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}"
    return result
