"""What a crash keeps: Persistent sequences and keys, every value that was answered; and what
it loses: Ephemeral sequences (UNLOGGED tables) and their keys.

A private cluster (not the session's) is crashed with `pg_ctl stop -m immediate`, which stops
every process without a checkpoint: the next start replays the WAL and empties UNLOGGED tables.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
import pytest
from dbtools import private_cluster

from kahuna_pg import migrate
from kahuna_pg.embedded import EmbeddedPostgres


@dataclass
class Crashable:
    cluster: EmbeddedPostgres
    dsn: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def crash_and_restart(self) -> None:
        self.cluster.crash()
        assert not self.cluster.running()
        self.cluster.start()


@pytest.fixture(scope="module")
def crashable() -> Iterator[Crashable]:
    with private_cluster() as cluster:
        with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE kahuna")
        dsn = cluster.conninfo("kahuna")
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert migrate(conn)
        yield Crashable(cluster, dsn)


@pytest.fixture
def fresh(crashable: Crashable) -> Crashable:
    """The private cluster, with no sequence left by another test."""
    if not crashable.cluster.running():
        crashable.cluster.start()
    with crashable.connect() as conn:
        conn.execute("TRUNCATE kahuna.sequences, kahuna.idempotency_keys, kahuna.settings")
    return crashable


@dataclass
class Answer:
    start: int
    end: int
    count: int
    revision: int
    key: str | None = None


@dataclass
class Worker:
    answers: list[Answer] = field(default_factory=list)
    ended_by: BaseException | None = None


def allocate_until_the_server_goes(crashable: Crashable, index: int, worker: Worker, go: threading.Event) -> None:
    """Allocates from 'p' (runs of 1 to 4, every third with a key) until the connection is lost."""
    conn = crashable.connect()
    try:
        go.wait(timeout=60)
        n = 0
        while True:
            key = f"w{index}-{n}" if n % 3 == 0 else None
            count = 1 + n % 4
            if count == 1:
                row = conn.execute("SELECT kahuna_next('p', %s)", (key,)).fetchone()
                assert row is not None
                # kahuna_next answers the value only: its revision is unknown here (-1).
                worker.answers.append(Answer(int(row[0]), int(row[0]), 1, -1, key))
            else:
                row = conn.execute(
                    "SELECT start, \"end\", count, revision FROM kahuna_reserve('p', %s, %s)", (count, key)
                ).fetchone()
                assert row is not None
                worker.answers.append(Answer(int(row[0]), int(row[1]), int(row[2]), int(row[3]), key))
            n += 1
    except psycopg.OperationalError as exc:  # the crash: the connection is terminated or lost
        worker.ended_by = exc
    finally:
        conn.close()


def test_persistent_allocations_survive_a_crash_under_load(fresh: Crashable) -> None:
    with fresh.connect() as conn:
        conn.execute("SELECT kahuna_create('p', 1000, 3)")
    threads = 6
    workers = [Worker() for _ in range(threads)]
    go = threading.Event()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(allocate_until_the_server_goes, fresh, i, workers[i], go) for i in range(threads)]
        go.set()
        # Crash in the middle of the load, once a good number of allocations were answered.
        deadline = time.monotonic() + 120
        while sum(len(w.answers) for w in workers) < 600:
            assert not any(f.done() for f in futures), [f.exception() for f in futures if f.done()]
            assert time.monotonic() < deadline, "the workers never got going"
            time.sleep(0.005)
        fresh.crash_and_restart()
        for f in futures:
            f.result(timeout=120)
    for w in workers:
        assert isinstance(w.ended_by, psycopg.OperationalError), "a worker did not see the crash"

    answers = [a for w in workers for a in w.answers]
    answered_values = [v for a in answers for v in range(a.start, a.end + 1, 3)]
    assert len(answered_values) == len(set(answered_values)), "a value was handed out twice before the crash"

    with fresh.connect() as conn:
        row = conn.execute("SELECT current_value, revision FROM kahuna_get('p')").fetchone()
        assert row is not None
        current, revision = row
        # Every answered value was committed and flushed: none is above currentValue.
        assert max(answered_values) <= current
        assert len(answers) <= revision
        # Every answered key still answers its allocation, identical, revision included.
        for a in answers:
            if a.key is None:
                continue
            if a.count == 1:
                assert conn.execute("SELECT kahuna_next('p', %s)", (a.key,)).fetchone() == (a.start,)
            else:
                replay = conn.execute(
                    "SELECT start, \"end\", count, revision FROM kahuna_reserve('p', %s, %s)", (a.count, a.key)
                ).fetchone()
                assert replay == (a.start, a.end, a.count, a.revision)
        assert conn.execute("SELECT current_value, revision FROM kahuna_get('p')").fetchone() == (current, revision)

    # After the restart, from several connections: nothing handed out before is handed out again.
    def after(_: int) -> list[int]:
        with fresh.connect() as conn:
            got = []
            for _ in range(50):
                value = conn.execute("SELECT kahuna_next('p')").fetchone()
                assert value is not None
                got.append(int(value[0]))
            return got

    with ThreadPoolExecutor(max_workers=4) as pool:
        later = [v for got in pool.map(after, range(4)) for v in got]
    assert len(later) == len(set(later)) == 200
    assert min(later) > current
    assert not set(later) & set(answered_values)
    assert sorted(later) == list(range(current + 3, current + 3 * 200 + 1, 3))


def test_a_crash_empties_ephemeral_sequences_and_keeps_persistent_ones(fresh: Crashable) -> None:
    with fresh.connect() as conn:
        conn.execute("SELECT kahuna.set_idempotency_retention('2 days')")
        conn.execute("SELECT kahuna_create('both', 10)")
        conn.execute("SELECT kahuna_create('both', 500, 5, NULL, 'ephemeral')")
        conn.execute("SELECT kahuna_create('only-ephemeral', 0, 1, NULL, 'ephemeral')")
        persistent_run = conn.execute("SELECT * FROM kahuna_reserve('both', 3, 'k')").fetchone()
        assert persistent_run == ("both", 11, 13, 3, 1)
        assert conn.execute("SELECT * FROM kahuna_reserve('both', 3, 'k', 'ephemeral')").fetchone() == (
            "both",
            505,
            515,
            3,
            1,
        )
        assert conn.execute("SELECT kahuna_next('only-ephemeral', 'e', 'ephemeral')").fetchone() == (1,)
        before = conn.execute("SELECT * FROM kahuna.sequences ORDER BY durability, name").fetchall()

    # A clean restart keeps Ephemeral sequences: only a crash empties them.
    fresh.cluster.stop()
    fresh.cluster.start()
    with fresh.connect() as conn:
        assert conn.execute("SELECT * FROM kahuna.sequences ORDER BY durability, name").fetchall() == before

    fresh.crash_and_restart()
    with fresh.connect() as conn:
        for name in ("both", "only-ephemeral"):
            with pytest.raises(psycopg.errors.UndefinedObject):
                conn.execute("SELECT kahuna_get(%s, 'ephemeral')", (name,))
            with pytest.raises(psycopg.errors.UndefinedObject):
                conn.execute("SELECT kahuna_next(%s, 'e', 'ephemeral')", (name,))
        assert conn.execute("SELECT count(*) FROM kahuna.sequences_ephemeral").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM kahuna.idempotency_keys_ephemeral").fetchone() == (0,)
        # The Persistent sequence, its key and the setting are all there.
        assert conn.execute("SELECT * FROM kahuna.sequences").fetchall() == [r for r in before if r[0] == "Persistent"]
        assert conn.execute("SELECT * FROM kahuna_reserve('both', 3, 'k')").fetchone() == persistent_run
        assert conn.execute("SELECT kahuna.idempotency_retention()::text").fetchone() == ("2 days",)
        # An Ephemeral sequence of the same name can be created again, and starts afresh.
        conn.execute("SELECT kahuna_create('both', 500, 5, NULL, 'ephemeral')")
        assert conn.execute("SELECT * FROM kahuna_reserve('both', 3, 'k', 'ephemeral')").fetchone() == (
            "both",
            505,
            515,
            3,
            1,
        )
        assert conn.execute("SELECT kahuna_next('both')").fetchone() == (14,)
