"""Allocation under concurrency: threads, each with its own connection, on one sequence.

No timing is asserted: only which values were handed out, how often, and in what runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import errors

Connect = Callable[[], psycopg.Connection]


def run_threads(count: int, work: Callable[[int, psycopg.Connection], Any], connect: Connect) -> list[Any]:
    """Runs work(i, conn) in `count` threads, each with a connection opened beforehand."""
    conns = [connect() for _ in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(work, i, conns[i]) for i in range(count)]
        return [f.result(timeout=300) for f in futures]


def sequence_state(db: psycopg.Connection, name: str) -> tuple[int, int]:
    row = db.execute("SELECT current_value, revision FROM kahuna_get(%s)", (name,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_16_connections_500_next_each_hand_out_1_to_8000_once(db: psycopg.Connection, connect: Connect) -> None:
    db.execute("SELECT kahuna_create('hot')")
    threads, calls = 16, 500
    start = threading.Barrier(threads)

    def work(_: int, conn: psycopg.Connection) -> list[int]:
        start.wait(timeout=60)
        got = []
        for _ in range(calls):
            row = conn.execute("SELECT kahuna_next('hot')").fetchone()
            assert row is not None
            got.append(int(row[0]))
        return got

    results = run_threads(threads, work, connect)
    values = [v for got in results for v in got]
    assert len(values) == threads * calls
    assert sorted(values) == list(range(1, threads * calls + 1))
    # Each connection's own values are strictly increasing.
    for got in results:
        assert got == sorted(got) and len(set(got)) == len(got)
    assert sequence_state(db, "hot") == (8000, 8000)


@pytest.mark.parametrize(("initial", "increment"), [(0, 1), (-1000, 7)])
def test_mixed_reserve_sizes_never_overlap_and_leave_no_gap(
    db: psycopg.Connection, connect: Connect, initial: int, increment: int
) -> None:
    db.execute("SELECT kahuna_create('runs', %s, %s)", (initial, increment))
    threads, calls = 8, 60
    sizes = [1, 2, 3, 5, 8, 13, 100, 1]
    start = threading.Barrier(threads)

    def work(i: int, conn: psycopg.Connection) -> list[tuple[int, int, int, int]]:
        start.wait(timeout=60)
        got = []
        for n in range(calls):
            count = sizes[(i + n) % len(sizes)]
            if count == 1 and n % 2:
                row = conn.execute("SELECT kahuna_next('runs')").fetchone()
                assert row is not None
                got.append((int(row[0]), int(row[0]), 1, -1))
                continue
            row = conn.execute("SELECT start, \"end\", count, revision FROM kahuna_reserve('runs', %s)", (count,))
            fetched = row.fetchone()
            assert fetched is not None
            assert fetched[2] == count
            got.append(tuple(int(x) for x in fetched))  # type: ignore[arg-type]
        return got

    runs = [run for got in run_threads(threads, work, connect) for run in got]
    handed: list[int] = []
    for first, last, count, _ in runs:
        # Each run is contiguous: count values, increment apart, from first to last.
        assert last == first + increment * (count - 1)
        handed.extend(range(first, last + 1, increment))
    current, revision = sequence_state(db, "runs")
    # No value twice, and together exactly every value up to currentValue: no gap.
    assert len(handed) == len(set(handed))
    assert sorted(handed) == list(range(initial + increment, current + 1, increment))
    assert revision == threads * calls
    revisions = sorted(r for *_, r in runs if r != -1)
    assert len(revisions) == len(set(revisions))


def test_16_connections_with_one_new_key_get_one_allocation(db: psycopg.Connection, connect: Connect) -> None:
    """Each round, 16 connections send one new key at the same moment: half as kahuna_next,
    half as kahuna_reserve(…, 1), which share keys. They all answer the one allocation made."""
    db.execute("SELECT kahuna_create('keyed', 100, 10)")
    threads, rounds = 16, 12
    barrier = threading.Barrier(threads)

    def work(i: int, conn: psycopg.Connection) -> list[tuple[int, int]]:
        answers = []
        for r in range(rounds):
            barrier.wait(timeout=60)
            if i % 2:
                row = conn.execute("SELECT kahuna_next('keyed', %s)", (f"request-{r}",)).fetchone()
                assert row is not None
                answers.append((int(row[0]), -1))
            else:
                row = conn.execute(
                    "SELECT start, revision FROM kahuna_reserve('keyed', 1, %s)", (f"request-{r}",)
                ).fetchone()
                assert row is not None
                answers.append((int(row[0]), int(row[1])))
        return answers

    results = run_threads(threads, work, connect)
    for r in range(rounds):
        values = {answers[r][0] for answers in results}
        assert values == {100 + 10 * (r + 1)}, f"round {r}: {values}"
        revisions = {answers[r][1] for answers in results} - {-1}
        assert revisions == {r + 1}, f"round {r}: {revisions}"
    assert sequence_state(db, "keyed") == (100 + 10 * rounds, rounds)
    assert db.execute("SELECT count(*) FROM kahuna.idempotency_keys").fetchone() == (rounds,)


def test_16_connections_with_one_new_key_and_a_run(db: psycopg.Connection, connect: Connect) -> None:
    """The same with kahuna_reserve(…, 5): one run, identical in every answer, revision 1."""
    db.execute("SELECT kahuna_create('keyed')")
    threads = 16
    barrier = threading.Barrier(threads)

    def work(_: int, conn: psycopg.Connection) -> tuple[Any, ...]:
        barrier.wait(timeout=60)
        row = conn.execute("SELECT * FROM kahuna_reserve('keyed', 5, 'the-key')").fetchone()
        assert row is not None
        return tuple(row)

    answers = run_threads(threads, work, connect)
    assert set(answers) == {("keyed", 1, 5, 5, 1)}
    assert sequence_state(db, "keyed") == (5, 1)


def test_16_connections_creating_one_name_one_succeeds(db: psycopg.Connection, connect: Connect) -> None:
    threads = 16
    barrier = threading.Barrier(threads)

    def work(i: int, conn: psycopg.Connection) -> str:
        barrier.wait(timeout=60)
        try:
            conn.execute("SELECT kahuna_create('contested', %s)", (i * 100,))
        except errors.DuplicateObject as exc:
            assert exc.diag.message_primary == "sequence 'contested' (Persistent) already exists"
            return "AlreadyExists"
        return "Success"

    outcomes = run_threads(threads, work, connect)
    assert sorted(outcomes) == ["AlreadyExists"] * (threads - 1) + ["Success"]
    assert db.execute("SELECT count(*) FROM kahuna.sequences").fetchone() == (1,)


def test_a_waiting_caller_gets_the_value_a_rolled_back_transaction_gave_back(
    db: psycopg.Connection, connect: Connect
) -> None:
    """Gap-free under contention: B waits behind A's uncommitted allocation; A rolls back; B
    gets the very value A had."""
    db.execute("SELECT kahuna_create('gapless')")
    a, b = connect(), connect()
    a.autocommit = False
    b_pid = b.info.backend_pid
    assert a.execute("SELECT kahuna_next('gapless')").fetchone() == (1,)
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(lambda: b.execute("SELECT kahuna_next('gapless')").fetchone())
        deadline = time.monotonic() + 60
        while True:
            row = db.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s AND state = 'active'", (b_pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                break
            assert not waiting.done(), f"B did not wait for A: {waiting.result()}"
            assert time.monotonic() < deadline, "B never queued behind A"
            time.sleep(0.01)
        a.rollback()
        assert waiting.result(timeout=60) == (1,)
    assert sequence_state(db, "gapless") == (1, 1)
    # And the other way round: A commits, B gets the next value.
    assert a.execute("SELECT kahuna_next('gapless')").fetchone() == (2,)
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(lambda: b.execute("SELECT kahuna_next('gapless')").fetchone())
        a.commit()
        assert waiting.result(timeout=60) == (3,)
