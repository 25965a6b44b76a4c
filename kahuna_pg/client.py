"""The one client of the SQL functions, shared by the REST and gRPC layers.

It holds a psycopg_pool connection pool, makes one SQL call per operation, and turns
the outcome into a `Result`: `Outcome.SUCCESS` with the value, or the outcome type that
the SQLSTATE (or a lost connection, or a pool timeout) maps to in `OUTCOME_BY_SQLSTATE`,
the only such table in the code. Nothing here decides a rule of the contract: defaults,
validation and allocation are all in the SQL functions, and values pass through unchanged
(None for an absent field, which the SQL functions read as their default).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool, PoolTimeout

from kahuna_pg import schema
from kahuna_pg.batching import Coalescer

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a database call can raise that is an outcome rather than a bug of ours.
DATABASE_ERRORS = (psycopg.Error, PoolTimeout)


class Outcome(StrEnum):
    """The outcome types of CONTRACT.md section 2; the value is the name REST answers."""

    SUCCESS = "Success"
    NOT_FOUND = "NotFound"
    ALREADY_EXISTS = "AlreadyExists"
    INVALID_INPUT = "InvalidInput"
    MAX_VALUE_EXCEEDED = "MaxValueExceeded"
    MUST_RETRY = "MustRetry"
    ABORTED = "Aborted"
    ERROR = "Error"


# The SQLSTATEs of CONTRACT.md section 2. Anything else is Error.
OUTCOME_BY_SQLSTATE: dict[str, Outcome] = {
    "42704": Outcome.NOT_FOUND,  # undefined_object
    "42710": Outcome.ALREADY_EXISTS,  # duplicate_object
    "22023": Outcome.INVALID_INPUT,  # invalid_parameter_value
    "2200H": Outcome.MAX_VALUE_EXCEEDED,  # sequence_generator_limit_exceeded
    "40001": Outcome.MUST_RETRY,  # serialization_failure
    "40P01": Outcome.MUST_RETRY,  # deadlock_detected
    "55P03": Outcome.MUST_RETRY,  # lock_not_available
    "57P01": Outcome.MUST_RETRY,  # admin_shutdown
    "57P02": Outcome.MUST_RETRY,  # crash_shutdown
    "57P03": Outcome.MUST_RETRY,  # cannot_connect_now
    "57014": Outcome.ABORTED,  # query_canceled: statement or lock timeout
}


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome type of an exception raised while calling the database."""
    if isinstance(exc, PoolTimeout):
        return Outcome.MUST_RETRY  # no connection could be had in time: the database is away
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state in OUTCOME_BY_SQLSTATE:
            return OUTCOME_BY_SQLSTATE[state]
        if state is None and isinstance(exc, psycopg.OperationalError):
            return Outcome.MUST_RETRY  # the connection was lost or refused
        if state is not None and state.startswith("08"):
            return Outcome.MUST_RETRY  # connection_exception class
        if state is None and isinstance(exc, psycopg.DataError):
            # Refused by psycopg before it reached the server: text with a NUL byte, which
            # PostgreSQL cannot store, so no name or key can contain it.
            return Outcome.INVALID_INPUT
    return Outcome.ERROR


@dataclass(frozen=True, slots=True)
class Sequence:
    name: str
    current_value: int
    initial_value: int
    increment: int
    max_value: int | None
    revision: int
    durability: str  # "Persistent" or "Ephemeral"
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Allocation:
    name: str
    start: int
    end: int
    count: int
    revision: int


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """What an operation answers: the outcome, the value on Success, and a message otherwise."""

    outcome: Outcome
    value: T | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


# The SQL of each operation. The user-facing functions for create, get and delete; for
# allocation kahuna.try_reserve, which takes the count as bigint so that a count outside
# int32 is judged by SQL (InvalidInput) instead of failing to bind.
_SEQUENCE_COLUMNS = (
    "name, current_value, initial_value, increment, max_value, revision, durability, created_at, updated_at"
)
SQL_CREATE = f"SELECT {_SEQUENCE_COLUMNS} FROM kahuna_create(%s, %s, %s, %s, %s)"
SQL_GET = f"SELECT {_SEQUENCE_COLUMNS} FROM kahuna_get(%s, %s)"
SQL_DELETE = f"SELECT {_SEQUENCE_COLUMNS} FROM kahuna_delete(%s, %s)"
SQL_RESERVE_MANY = (
    'SELECT (r.allocation).name, (r.allocation).start, (r.allocation)."end", (r.allocation).count,'
    " (r.allocation).revision, r.sqlstate, r.message"
    " FROM kahuna_reserve_many(%s, %s::bigint[], %s::text[], %s) WITH ORDINALITY r ORDER BY r.ordinality"
)
SQL_RESERVE = (
    'SELECT (r.allocation).name, (r.allocation).start, (r.allocation)."end", (r.allocation).count,'
    " (r.allocation).revision, r.sqlstate, r.message"
    " FROM kahuna.try_reserve(%s, %s::bigint, %s, %s) r"
)


@dataclass(frozen=True)
class PoolSettings:
    min_size: int = 2
    max_size: int = 10
    timeout: float = 5.0  # seconds to wait for a connection before answering MustRetry
    connect_timeout: int = 3  # seconds, per connection attempt
    statement_timeout_ms: int = 10_000  # past it the call is Aborted (57014)
    group_allocation: bool = True  # combine concurrent allocations on one sequence


class SequenceClient:
    """Calls the kahuna SQL functions through a connection pool; never raises for an outcome."""

    def __init__(self, pool: ConnectionPool, group_allocation: bool = True) -> None:
        self.pool = pool
        self._pool_check = threading.Lock()  # held while a sweep of stale connections runs
        # Concurrent allocations on one (name, durability) are run together in one
        # transaction by kahuna_reserve_many: one commit, one WAL flush, for the lot.
        self._allocations: Coalescer[tuple[Any, str | None], tuple[int, str | None], Result[Allocation]] | None = (
            Coalescer(self._reserve_batch) if group_allocation else None
        )

    @classmethod
    @contextmanager
    def connect(cls, dsn: str, settings: PoolSettings | None = None) -> Iterator[SequenceClient]:
        """Open a pool on `dsn` for the duration of the block (it does not wait for the database)."""
        settings = settings or PoolSettings()

        def configure(conn: psycopg.Connection) -> None:
            conn.execute(f"SET statement_timeout = {int(settings.statement_timeout_ms)}")

        pool = ConnectionPool(
            dsn,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.timeout,
            kwargs={"autocommit": True, "connect_timeout": settings.connect_timeout},
            configure=configure,
            # No check on every checkout: after a failed check psycopg_pool sleeps (1 s, then
            # more) before the next candidate, so after a database restart callers would wait
            # seconds for each stale connection. A call that meets one answers MustRetry at
            # once, and `_connection_lost` has the pool replace the other stale ones meanwhile.
            # reconnect_timeout=0: a failed connection attempt is not retried in the background
            # with a growing backoff; the next request that needs a connection tries afresh,
            # so the service is back as soon as the database is.
            reconnect_timeout=0,
            open=False,
            name="kahuna-pg",
        )
        pool.open(wait=False)
        try:
            yield cls(pool, group_allocation=settings.group_allocation)
        finally:
            pool.close()

    # -- the five operations ----------------------------------------------------------
    def create(
        self,
        name: Any,
        initial_value: int | None = None,
        increment: int | None = None,
        max_value: int | None = None,
        durability: str | None = None,
    ) -> Result[Sequence]:
        return self._sequence(SQL_CREATE, (name, initial_value, increment, max_value, durability))

    def get(self, name: Any, durability: str | None = None) -> Result[Sequence]:
        return self._sequence(SQL_GET, (name, durability))

    def delete(self, name: Any, durability: str | None = None) -> Result[Sequence]:
        return self._sequence(SQL_DELETE, (name, durability))

    def next(self, name: Any, idempotency_key: str | None = None, durability: str | None = None) -> Result[Allocation]:
        return self.reserve(name, 1, idempotency_key, durability)

    def reserve(
        self, name: Any, count: int, idempotency_key: str | None = None, durability: str | None = None
    ) -> Result[Allocation]:
        if self._allocations is None:
            return self._reserve_batch((name, durability), [(count, idempotency_key)])[0]
        return self._allocations.submit((name, durability), (count, idempotency_key))

    def allocations_waiting(self, name: Any, durability: str | None = None) -> int:
        """How many allocations on this sequence are queued in this process (with group allocation)."""
        return self._allocations.waiting((name, durability)) if self._allocations else 0

    def _reserve_batch(
        self, sequence: tuple[Any, str | None], calls: list[tuple[int, str | None]]
    ) -> list[Result[Allocation]]:
        """Run allocations on one sequence in one transaction; one Result per call, in order."""
        name, durability = sequence
        try:
            with self.pool.connection() as conn:
                if len(calls) == 1:  # the plain function: a lone call pays nothing for batching
                    (count, key) = calls[0]
                    rows = conn.execute(SQL_RESERVE, (name, count, key, durability)).fetchall()
                else:
                    counts = [count for count, _ in calls]
                    keys = [key for _, key in calls]
                    rows = conn.execute(SQL_RESERVE_MANY, (name, counts, keys, durability)).fetchall()
        except DATABASE_ERRORS as exc:
            return [self._failure(exc)] * len(calls)  # the transaction failed: so did every call in it
        return [_allocation_result(row) for row in rows]

    # -- health -----------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """Whether the database answers and its schema is the version this code expects."""
        try:
            with self.pool.connection() as conn:
                version = schema.installed_version(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            return False, f"database unreachable: {type(exc).__name__}"
        expected = schema.latest_version()
        if version != expected:
            return False, f"schema version {version}, expected {expected}"
        return True, f"schema version {version}"

    # -- plumbing ---------------------------------------------------------------------
    def _sequence(self, query: str, params: tuple[Any, ...]) -> Result[Sequence]:
        try:
            with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Sequence)) as cur:
                return Result(Outcome.SUCCESS, cur.execute(query, params).fetchone())
        except DATABASE_ERRORS as exc:
            return self._failure(exc)

    def _failure(self, exc: Exception) -> Result[Any]:
        """The Result of a call that raised: its outcome type, and the database's message."""
        outcome = outcome_of(exc)
        if outcome is Outcome.MUST_RETRY and isinstance(exc, psycopg.OperationalError):
            self._connection_lost()
        if outcome is Outcome.ERROR:
            log.error("database call failed: %r", exc, exc_info=exc)
            return Result(outcome)  # the detail stays in the server's log
        message = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
        return Result(outcome, message=message.strip())

    def _connection_lost(self) -> None:
        """A connection died (the database restarted, or ended it): sweep the pool's idle
        connections in the background, replacing the stale ones before callers meet them."""
        if not self._pool_check.acquire(blocking=False):
            return  # a sweep is running already

        def sweep() -> None:
            try:
                self.pool.check()
            except Exception:  # the pool may be closing; nothing to do then
                log.debug("pool check failed", exc_info=True)
            finally:
                self._pool_check.release()

        threading.Thread(target=sweep, name="kahuna-pg pool check", daemon=True).start()


def _allocation_result(row: tuple[Any, ...]) -> Result[Allocation]:
    """A row of (name, start, end, count, revision, sqlstate, message) as a Result."""
    *fields, sqlstate, message = row
    if sqlstate is not None:
        return Result(OUTCOME_BY_SQLSTATE.get(sqlstate, Outcome.ERROR), message=message)
    return Result(Outcome.SUCCESS, Allocation(*fields))
