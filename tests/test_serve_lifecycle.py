"""`kahuna-pg serve` as a process: start-up, its start line, signals, and the database going away."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import psycopg
from conftest import free_port
from dbtools import private_cluster
from rest_support import KAHUNA_PG, Api, ServeProcess, new_database, unique

from kahuna_pg.embedded import EmbeddedPostgres


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def test_start_line_masks_the_password_and_sigint_exits_0(pg_cluster: EmbeddedPostgres) -> None:
    dsn = new_database(pg_cluster, "lifecycle") + " password=sekrit-pw-123"  # trust auth ignores it
    proc = ServeProcess("--threads", "3", "--pool-size", "4", dsn=dsn).wait_ready()
    try:
        assert Api(proc.base).call("create", name=unique())["type"] == "Success"
    finally:
        code = proc.signal(signal.SIGINT)
        log = proc.log()
        proc.close()
    assert code == 0, log
    start_lines = [line for line in log.splitlines() if "serving" in line]
    assert len(start_lines) == 1, log
    line = start_lines[0]
    assert f"REST on http://127.0.0.1:{proc.port}" in line
    assert "dbname=lifecycle_" in line and "password=***" in line and "pool of 4" in line
    assert "sekrit-pw-123" not in log
    assert "SIGINT received" in log


def test_sigterm_refuses_new_connections_and_finishes_the_call_in_flight(pg_cluster: EmbeddedPostgres) -> None:
    dsn = new_database(pg_cluster, "lifecycle")
    proc = ServeProcess(dsn=dsn).wait_ready()
    api = Api(proc.base)
    name = unique()
    api.call("create", name=name)
    answers: list[Any] = []
    try:
        with psycopg.connect(dsn) as locker, psycopg.connect(dsn, autocommit=True) as watcher:
            # Hold the sequence's allocation lock: the next call waits inside the database.
            locker.execute("SELECT kahuna.lock_sequence('Persistent', %s)", (name,))
            caller = threading.Thread(target=lambda: answers.append(api.call("next", name=name)))
            caller.start()
            wait_for(
                lambda: (
                    watcher.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    ).fetchone()
                    == (1,)
                ),
                what="the call to wait on the lock",
            )
            # An idle keep-alive connection, as a client's connection pool holds them.
            idle = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=30)
            idle.request("GET", "/healthz")
            assert idle.getresponse().read() == b'{"status": "ok"}'
            proc.proc.send_signal(signal.SIGTERM)

            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", proc.port), timeout=1).close()
                    return False
                except ConnectionRefusedError:
                    return True

            wait_for(refused, what="new connections to be refused")
            assert idle.sock is not None and idle.sock.recv(1) == b"", "idle connections are closed"
            idle.close()
            assert proc.proc.poll() is None, "must not exit while a call is in flight"
            locker.rollback()  # let the call in flight go on
            caller.join(30)
        assert answers and answers[0]["type"] == "Success" and answers[0]["allocation"]["start"] == 1, answers
        assert proc.proc.wait(30) == 0, proc.log()
    finally:
        proc.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT (kahuna_get(%s)).current_value", (name,)).fetchone() == (1,)


def test_port_taken_exits_1_with_a_message(pg_cluster: EmbeddedPostgres) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = ServeProcess(dsn=new_database(pg_cluster, "lifecycle"), port=port)
        assert proc.proc.wait(60) == 1, proc.log()
    assert "REST cannot listen" in proc.log() and "Traceback" not in proc.log()
    proc.close()


def test_unreachable_database_at_start_exits_1_with_a_message() -> None:
    proc = ServeProcess(dsn=f"host=127.0.0.1 port={free_port()} user=nobody dbname=none connect_timeout=2")
    assert proc.proc.wait(60) == 1, proc.log()
    assert "kahuna-pg serve:" in proc.log() and "Traceback" not in proc.log()
    proc.close()


def test_help_lists_every_option_and_its_environment_variable() -> None:
    out = subprocess.run([KAHUNA_PG, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    options = re.findall(r"--[a-z-]+", flat)
    for option in set(options) - {"--help"}:
        env = "KAHUNA_PG_" + option.removeprefix("--").replace("-", "_").upper()
        assert env in flat, (option, env)
    assert "127.0.0.1:8082" in flat and "~/.local/share/kahuna-pg" in flat


def test_database_going_away_is_must_retry_then_served_again() -> None:
    # A cluster of this test's own, so that stopping it disturbs no other test.
    proc = None
    with private_cluster() as cluster:
        try:
            dsn = new_database(cluster, "away")
            proc = ServeProcess(dsn=dsn).wait_ready()
            api = Api(proc.base)  # its HTTP timeout (30 s) is the bound: an answer, never a hang
            name = unique()
            api.call("create", name=name)
            assert api.call("next", name=name)["allocation"]["start"] == 1

            cluster.stop()
            answer = api.call("next", name=name, idempotencyKey="while-away")
            assert answer["type"] == "MustRetry" and "allocation" not in answer, answer
            assert api.call("get", name=name)["type"] == "MustRetry"
            not_ready = api.request("GET", "/readyz")
            assert not_ready.status == 503 and not_ready.body["status"] == "unavailable"
            assert api.request("GET", "/healthz").status == 200  # the process itself is fine

            cluster.start()
            # The same running service, no restart: retrying the same request (same key) is safe.
            again = wait_for(
                lambda: (a := api.call("next", name=name, idempotencyKey="while-away"))["type"] == "Success" and a,
                what="the service to serve again",
            )
            assert again["allocation"]["start"] == 2  # MustRetry consumed nothing
            assert api.request("GET", "/readyz").status == 200
            assert proc.signal(signal.SIGTERM) == 0, proc.log()
        finally:
            if proc is not None:
                proc.close()
