"""Issue 5's worker processes through the real `kahuna-pg serve --workers 2`.

Both workers answer on the shared ports, REST and gRPC calls spread over them hand out every
value of one sequence exactly once, group allocation is on by default and off with
`--no-group-allocation` (seen in pg_stat_user_functions: whether kahuna_reserve_many ran),
one SIGTERM stops every worker, a worker killed makes the supervisor stop the others and
exit 1, and a second service cannot take a port of a running one. The tests that do not stop
the service share one; the others start their own.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import sql
from rest_support import Api, ServeProcess, new_database, unique
from serve_grpc_support import (
    Grpc,
    answering_pids,
    children,
    gone,
    refused,
    served_from_pid,
    wait_for,
    wait_grpc_ready,
    worker_pids,
)

from kahuna_pg.embedded import EmbeddedPostgres
from kahuna_pg.proto import kahuna_pb2 as pb

THREADS = 8  # per interface
CALLS = 100  # per thread


def counted_database(cluster: EmbeddedPostgres, prefix: str) -> str:
    """A new migrated database whose sessions count calls of PL/pgSQL functions."""
    dsn = new_database(cluster, prefix)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        conn.execute(sql.SQL("ALTER DATABASE {} SET track_functions = 'pl'").format(sql.Identifier(row[0])))
    return dsn


def function_calls(dsn: str, function: str) -> int:
    """Calls of kahuna's `function` recorded so far by the statistics (0 if none)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = %s", (function,)
        ).fetchone()
    return int(row[0]) if row else 0


def start_workers(dsn: str, *options: str) -> ServeProcess:
    """`serve --workers 2`, once both workers answer."""
    proc = wait_grpc_ready(ServeProcess("--workers", "2", *options, dsn=dsn).wait_ready())
    try:
        pids = answering_pids(proc.grpc_target, want=2)
        assert len(pids) == 2, f"only {pids} answered:\n{proc.log()}"
    except BaseException:
        proc.close()
        raise
    return proc


@pytest.fixture(scope="module")
def dsn(pg_cluster: EmbeddedPostgres) -> str:
    return counted_database(pg_cluster, "workers")


@pytest.fixture(scope="module")
def server(dsn: str) -> Iterator[ServeProcess]:
    proc = start_workers(dsn)
    yield proc
    code = proc.signal(signal.SIGTERM)
    log = proc.log()
    proc.close()
    assert code == 0, log


def hammer(proc: ServeProcess, name: str, rest_threads: int, grpc_threads: int, calls: int) -> list[int]:
    """`calls` next per thread on `name`, over REST (a new connection per call) and over gRPC
    (a connection per thread); every value answered."""
    api = Api(proc.base)
    values: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def over_rest() -> list[int]:
        got = []
        for _ in range(calls):
            answer = api.call("next", name=name)
            assert answer["type"] == "Success", answer
            got.append(answer["allocation"]["start"])
        return got

    def over_grpc() -> list[int]:
        with Grpc(proc.grpc_target, own_connection=True) as rpc:
            got = []
            for _ in range(calls):
                answer = rpc.next(name)
                assert answer.Type == pb.SEQUENCE_SUCCESS, answer
                got.append(answer.Allocation.Start)
            return got

    def run(work: Callable[[], list[int]]) -> None:
        try:
            got = work()
        except BaseException as exc:
            with lock:
                failures.append(exc)
            return
        with lock:
            values.extend(got)

    threads = [threading.Thread(target=run, args=(over_rest,)) for _ in range(rest_threads)]
    threads += [threading.Thread(target=run, args=(over_grpc,)) for _ in range(grpc_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(t.is_alive() for t in threads), "a client thread hangs"
    assert not failures, failures[:3]
    return values


def advisory_lock_waiters(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
    return int(row[0]) if row else 0


# -- the shared service ----------------------------------------------------------------------------


def test_both_workers_answer_and_neither_is_the_supervisor(server: ServeProcess) -> None:
    pids = answering_pids(server.grpc_target, want=2)
    supervisor = server.proc.pid
    assert len(pids) == 2 and supervisor not in pids, (pids, supervisor)
    assert pids == worker_pids(supervisor) and pids <= children(supervisor)


def test_rest_and_grpc_through_workers_hand_out_every_value_once(server: ServeProcess, dsn: str) -> None:
    name = unique()
    api = Api(server.base)
    api.call("create", name=name)
    before = function_calls(dsn, "kahuna_reserve_many")
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as watcher:
        # Hold the sequence at the start, so that calls queue up in both workers behind their
        # leader: group allocation then certainly has batches to form.
        holder.execute("SELECT kahuna.lock_sequence('Persistent', %s)", (name,))
        with ThreadPoolExecutor(1) as runner:
            clients = runner.submit(hammer, server, name, THREADS, THREADS, CALLS)
            try:
                wait_for(lambda: advisory_lock_waiters(watcher) >= 1, what="a call to wait on the sequence")
                time.sleep(1.0)  # let the other calls reach their worker and queue
            finally:
                holder.rollback()
            values = clients.result(300)
    total = 2 * THREADS * CALLS
    assert len(values) == total and sorted(values) == list(range(1, total + 1))  # each once, none missing
    sequence = api.get(name)["sequence"]
    assert sequence["currentValue"] == total and sequence["revision"] == total
    # Group allocation is on by default: concurrent calls ran in kahuna_reserve_many batches.
    wait_for(lambda: function_calls(dsn, "kahuna_reserve_many") > before, what="kahuna_reserve_many to run")


def test_a_second_serve_on_a_port_in_use_exits_1(server: ServeProcess, dsn: str) -> None:
    # A plain bind probes each port first: SO_REUSEPORT would otherwise join the running
    # service's sockets and silently share its traffic.
    for taken, options in (
        ("REST", ()),
        ("gRPC", ("--grpc-listen", server.grpc_target)),  # the last --grpc-listen wins
    ):
        second = ServeProcess("--workers", "2", *options, dsn=dsn, port=server.port if taken == "REST" else None)
        try:
            assert second.proc.wait(60) == 1, second.log()
            log = second.log()
            assert f"{taken} cannot listen" in log and "Traceback" not in log, log
        finally:
            second.close()
    # The running service still serves, from both workers.
    assert len(answering_pids(server.grpc_target, want=2)) == 2
    assert Api(server.base).call("create", name=unique())["type"] == "Success"


# -- services of their own -------------------------------------------------------------------------


def test_no_group_allocation_still_hands_out_every_value_once(pg_cluster: EmbeddedPostgres) -> None:
    dsn = counted_database(pg_cluster, "nogroup")
    proc = start_workers(dsn, "--no-group-allocation")
    try:
        name = unique()
        Api(proc.base).call("create", name=name)
        values = hammer(proc, name, THREADS // 2, THREADS // 2, CALLS)
        total = THREADS * CALLS
        assert len(values) == total and sorted(values) == list(range(1, total + 1))
        assert Api(proc.base).get(name)["sequence"]["currentValue"] == total
        # Every call was a transaction of its own: kahuna.try_reserve once each, no batch.
        wait_for(lambda: function_calls(dsn, "try_reserve") == total, what="the statistics of every call")
        assert function_calls(dsn, "kahuna_reserve_many") == 0
        assert proc.signal(signal.SIGTERM) == 0, proc.log()
    finally:
        proc.close()


def test_one_sigterm_stops_every_worker_and_exits_0(pg_cluster: EmbeddedPostgres) -> None:
    proc = start_workers(new_database(pg_cluster, "sigterm"))
    try:
        workers = worker_pids(proc.proc.pid)
        assert len(workers) == 2, workers
        assert proc.signal(signal.SIGTERM) == 0, proc.log()
        assert all(gone(pid) for pid in workers), [pid for pid in workers if not gone(pid)]
        assert refused(proc.port) and refused(proc.grpc_port)
        log = proc.log()
        assert "SIGTERM received" in log and "Traceback" not in log, log
    finally:
        proc.close()


def test_a_killed_worker_makes_the_supervisor_stop_the_others_and_exit_1(pg_cluster: EmbeddedPostgres) -> None:
    proc = start_workers(new_database(pg_cluster, "sigkill"))
    try:
        with Grpc(proc.grpc_target) as rpc:
            victim = served_from_pid(rpc.get("no-such-sequence").ServedFrom)
        workers = worker_pids(proc.proc.pid)
        assert victim in workers and len(workers) == 2, (victim, workers)
        os.kill(victim, signal.SIGKILL)
        assert proc.proc.wait(60) == 1, proc.log()
        assert all(gone(pid) for pid in workers)
        assert refused(proc.port) and refused(proc.grpc_port)
        log = proc.log()
        assert "exited with -9: shutting down" in log, log
    finally:
        proc.close()


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(pg_cluster: EmbeddedPostgres) -> None:
    proc = start_workers(new_database(pg_cluster, "orphans"))
    try:
        workers = worker_pids(proc.proc.pid)
        assert len(workers) == 2, workers
        os.kill(proc.proc.pid, signal.SIGKILL)  # no chance to stop them
        proc.proc.wait(10)
        deadline = time.monotonic() + 30
        while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(gone(pid) for pid in workers), proc.log()
        assert refused(proc.port) and refused(proc.grpc_port)
        assert "the supervisor" in proc.log() and "is gone: stopping" in proc.log()
    finally:
        proc.close()
