"""Group allocation: concurrent calls on one sequence run as one transaction, and the result
is exactly what the same calls would have answered one after another."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from kahuna_pg import migrate
from kahuna_pg.client import Outcome, PoolSettings, Result, SequenceClient

MIXED_CALLS: list[tuple[int, str | None]] = [
    (1, "a"),  # fresh key
    (2, None),  # no key
    (1, "a"),  # replay: same allocation as the first call
    (3, "a"),  # the same key with another count: InvalidInput, alone
    (4, "b"),
    (100, None),  # past maxValue: MaxValueExceeded, alone, nothing changes
    (1, "  "),  # blank key means no key
    (2, "b"),  # key b with another count
    (2, "c"),  # reaches maxValue exactly
    (1, "c"),  # wrong count for c
    (2, "c"),  # replay of c, at an exhausted sequence
    (1, None),  # exhausted
    (0, None),  # bad count
]


@pytest.fixture
def client(dsn: str) -> Iterator[SequenceClient]:
    with SequenceClient.connect(dsn, PoolSettings(max_size=20, timeout=10)) as client:
        yield client


def rows(conn: psycopg.Connection, query: str, *params: object) -> list[tuple]:
    return conn.execute(query, params or None).fetchall()


def test_reserve_many_equals_sequential_calls(db: psycopg.Connection) -> None:
    for name in ("one_by_one", "batched"):
        db.execute("SELECT kahuna_create(%s, 0, 1, 10)", (name,))
    sequential = [
        rows(
            db,
            'SELECT (r.allocation).start, (r.allocation)."end", (r.allocation).revision, r.sqlstate '
            "FROM kahuna.try_reserve('one_by_one', %s, %s, 'persistent') r",
            count,
            key,
        )[0]
        for count, key in MIXED_CALLS
    ]
    batched = rows(
        db,
        'SELECT (r.allocation).start, (r.allocation)."end", (r.allocation).revision, r.sqlstate '
        "FROM kahuna_reserve_many('batched', %s, %s) WITH ORDINALITY r ORDER BY r.ordinality",
        [c for c, _ in MIXED_CALLS],
        [k for _, k in MIXED_CALLS],
    )
    assert batched == sequential
    states = [state for *_, state in batched]
    assert states == [None, None, None, "22023", None, "2200H", None, "22023", None, "22023", None, "2200H", "22023"]
    assert batched[2] == batched[0]  # the replay answers the first allocation, revision included
    assert batched[10] == batched[8]  # a replay answers even at an exhausted sequence
    state = rows(db, "SELECT current_value, revision FROM kahuna_get('one_by_one')")
    assert state == rows(db, "SELECT current_value, revision FROM kahuna_get('batched')") == [(10, 5)]


def test_reserve_many_rejects_mismatched_arrays(db: psycopg.Connection) -> None:
    db.execute("SELECT kahuna_create('s')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="one entry per count"):
        db.execute("SELECT * FROM kahuna_reserve_many('s', '{1,2}', '{k}')")
    assert rows(db, "SELECT current_value FROM kahuna_get('s')") == [(0,)]


class SequenceLock:
    """Holds the advisory lock of one sequence from another connection, so that calls on
    it queue in the client and are then released together."""

    def __init__(self, connect: Callable[[], psycopg.Connection], name: str) -> None:
        self.conn = connect()
        self.conn.autocommit = False
        self.conn.execute("SELECT kahuna.lock_sequence('Persistent', %s)", (name,))

    def release(self) -> None:
        self.conn.rollback()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def waiting_backends(db: psycopg.Connection, function: str) -> list[int]:
    return [
        pid
        for (pid,) in rows(
            db,
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            f"%{function}%",
        )
    ]


def test_concurrent_calls_become_one_transaction_with_sequential_answers(
    client: SequenceClient, db: psycopg.Connection, connect: Callable[[], psycopg.Connection]
) -> None:
    db.execute("SELECT kahuna_create('hot', 0, 1, 30)")
    lock = SequenceLock(connect, "hot")
    with ThreadPoolExecutor(max_workers=16) as pool:
        first = pool.submit(client.reserve, "hot", 1, "lone")
        wait_for(lambda: bool(waiting_backends(db, "try_reserve")), "the lone call to wait on the lock")
        # While the first call holds the leader's place, these queue up behind it.
        calls = [(1, f"k{i}") for i in range(10)] + [(5, "k0"), (100, "too-many"), (0, "bad-count")]
        futures = [pool.submit(client.reserve, "hot", count, key) for count, key in calls]
        # The lone call is running; all the others queue behind it.
        wait_for(lambda: client.allocations_waiting("hot") == len(calls), "every call to queue")
        lock.release()
        lone: Result = first.result()
        answers = [f.result() for f in futures]

    assert lone.outcome is Outcome.SUCCESS and lone.value.start == 1
    by_call = dict(zip(calls, answers, strict=True))
    good = [by_call[(1, f"k{i}")] for i in range(10)]
    assert all(r.outcome is Outcome.SUCCESS for r in good)
    assert sorted(r.value.start for r in good) == list(range(2, 12))  # contiguous, each once
    assert by_call[(5, "k0")].outcome is Outcome.INVALID_INPUT  # k0 replayed with another count
    assert by_call[(100, "too-many")].outcome is Outcome.MAX_VALUE_EXCEEDED
    assert by_call[(0, "bad-count")].outcome is Outcome.INVALID_INPUT
    assert rows(db, "SELECT current_value, revision FROM kahuna_get('hot')") == [(11, 11)]
    # The queued calls were written by one transaction: their key entries share one xmin.
    transactions = rows(db, "SELECT count(DISTINCT xmin::text) FROM kahuna.idempotency_keys WHERE key LIKE 'k%'")
    assert transactions == [(1,)]


def test_many_threads_through_the_coalescer_hand_out_every_value_once(
    client: SequenceClient, db: psycopg.Connection
) -> None:
    db.execute("SELECT kahuna_create('busy')")
    threads, per_thread = 64, 50
    barrier = threading.Barrier(threads)

    def worker(i: int) -> list[int]:
        barrier.wait()
        values = []
        for j in range(per_thread):
            result = client.reserve("busy", 1 + (i + j) % 3, f"t{i}-{j}" if j % 2 else None)
            assert result.outcome is Outcome.SUCCESS, result
            values.extend(range(result.value.start, result.value.end + 1))
        return values

    with ThreadPoolExecutor(max_workers=threads) as pool:
        values = [v for chunk in pool.map(worker, range(threads)) for v in chunk]
    (current,) = rows(db, "SELECT current_value FROM kahuna_get('busy')")[0]
    assert sorted(values) == list(range(1, current + 1))  # every value once, none missing


def test_database_failure_mid_batch_answers_must_retry_and_allocates_nothing(
    client: SequenceClient, db: psycopg.Connection, connect: Callable[[], psycopg.Connection]
) -> None:
    db.execute("SELECT kahuna_create('fragile')")
    lock = SequenceLock(connect, "fragile")
    with ThreadPoolExecutor(max_workers=8) as pool:
        lone = pool.submit(client.reserve, "fragile", 1, "lone")
        wait_for(lambda: bool(waiting_backends(db, "try_reserve")), "the lone call to wait on the lock")
        batch = [pool.submit(client.reserve, "fragile", 1, f"b{i}") for i in range(6)]
        wait_for(lambda: client.allocations_waiting("fragile") == 6, "every call to queue")
        # The lone call dies first; then the batch queued behind it is cut off mid-transaction.
        for pid in waiting_backends(db, "try_reserve"):
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert lone.result().outcome is Outcome.MUST_RETRY
        wait_for(lambda: bool(waiting_backends(db, "kahuna_reserve_many")), "the batch to wait on the lock")
        for pid in waiting_backends(db, "kahuna_reserve_many"):
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        answers = [f.result() for f in batch]
    lock.release()
    assert all(r.outcome is Outcome.MUST_RETRY for r in answers), answers
    assert rows(db, "SELECT current_value, revision FROM kahuna_get('fragile')") == [(0, 0)]
    assert rows(db, "SELECT count(*) FROM kahuna.idempotency_keys") == [(0,)]
    # The same client serves again, and a retry with the same key allocates once.
    again = client.reserve("fragile", 1, "b0")
    assert again.outcome is Outcome.SUCCESS and again.value.start == 1


def test_upgrade_from_previous_version_keeps_sequences_and_keys(pg_cluster, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE upgrade_from_1_0")
    old = dsn.replace(dsn.split("dbname=")[1], "upgrade_from_1_0")
    with psycopg.connect(old, autocommit=True) as conn:
        assert migrate(conn, target="1.0") == ["kahuna--1.0.sql"]
        conn.execute("SELECT kahuna_create('orders', 10, 5)")
        conn.execute("SELECT kahuna_create('orders', 0, 1, 99, 'ephemeral')")
        first = rows(conn, "SELECT * FROM kahuna_reserve('orders', 3, 'batch-1')")
        rows(conn, "SELECT kahuna_next('orders', 'e', 'ephemeral')")
        before = rows(conn, "SELECT * FROM kahuna.sequences ORDER BY 1, 2")
        keys = rows(conn, "SELECT * FROM kahuna.idempotency_keys ORDER BY 1, 2, 3")

        assert migrate(conn) == ["kahuna--1.0--1.1.sql"]
        assert rows(conn, "SELECT kahuna.version()") == [("1.1",)]
        assert rows(conn, "SELECT * FROM kahuna.sequences ORDER BY 1, 2") == before
        assert rows(conn, "SELECT * FROM kahuna.idempotency_keys ORDER BY 1, 2, 3") == keys
        assert rows(conn, "SELECT * FROM kahuna_reserve('orders', 3, 'batch-1')") == first
        replay = rows(conn, "SELECT (r.allocation).start FROM kahuna_reserve_many('orders', '{3}', '{batch-1}') r")
        assert replay == [(first[0][1],)]
