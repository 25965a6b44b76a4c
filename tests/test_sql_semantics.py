"""The rules of CONTRACT.md sections 1 to 3, called in SQL: outcomes, validation and its
boundaries, allocation, idempotency keys, delete, retention, transactions, search_path.

Every failure is checked as the psycopg exception of its SQLSTATE and by its message, and,
where it matters, by the state it did not change.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from kahuna_pg import latest_version

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT32_MAX = 2**31 - 1

NotFound = errors.UndefinedObject  # 42704
AlreadyExists = errors.DuplicateObject  # 42710
InvalidInput = errors.InvalidParameterValue  # 22023
MaxValueExceeded = errors.SequenceGeneratorLimitExceeded  # 2200H


# -- helpers ------------------------------------------------------------------------------


def create(
    db: psycopg.Connection,
    name: str | None,
    initial: int | None = 0,
    increment: int | None = 1,
    max_value: int | None = None,
    durability: str | None = "persistent",
) -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM kahuna_create(%s, %s, %s, %s, %s)", (name, initial, increment, max_value, durability)
        ).fetchone()
    assert row is not None
    return row


def get(db: psycopg.Connection, name: str | None, durability: str | None = "persistent") -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM kahuna_get(%s, %s)", (name, durability)).fetchone()
    assert row is not None
    return row


def delete(db: psycopg.Connection, name: str | None, durability: str | None = "persistent") -> dict[str, Any]:
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM kahuna_delete(%s, %s)", (name, durability)).fetchone()
    assert row is not None
    return row


def reserve(
    db: psycopg.Connection,
    name: str | None,
    count: int | None,
    key: str | None = None,
    durability: str | None = "persistent",
) -> tuple[str, int, int, int, int]:
    """kahuna_reserve's allocation as (name, start, end, count, revision)."""
    row = db.execute("SELECT * FROM kahuna_reserve(%s, %s, %s, %s)", (name, count, key, durability)).fetchone()
    assert row is not None
    return row  # type: ignore[return-value]


def next_value(db: psycopg.Connection, name: str | None, key: str | None = None, durability: str | None = None) -> int:
    if durability is None:
        row = db.execute("SELECT kahuna_next(%s, %s)", (name, key)).fetchone()
    else:
        row = db.execute("SELECT kahuna_next(%s, %s, %s)", (name, key, durability)).fetchone()
    assert row is not None
    return int(row[0])


def count_rows(db: psycopg.Connection, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM kahuna.{table}").fetchone()
    assert row is not None
    return int(row[0])


def state(db: psycopg.Connection, name: str, durability: str = "persistent") -> tuple[int, int]:
    seq = get(db, name, durability)
    return seq["current_value"], seq["revision"]


def incompressible(alphabet_start: int, alphabet_size: int, length: int, seed: int) -> str:
    """`length` characters drawn at random from a block of code points: text that does not compress."""
    rng = random.Random(seed)
    return "".join(chr(alphabet_start + rng.randrange(alphabet_size)) for _ in range(length))


EMOJI = 0x1F300  # 4 bytes each in UTF-8
CJK = 0x4E00  # 3 bytes each


# -- version and the shape of answers ------------------------------------------------------


def test_the_installed_version_is_readable_in_sql(db: psycopg.Connection) -> None:
    assert db.execute("SELECT kahuna.version()").fetchone() == (latest_version(),)


def test_create_answers_the_whole_sequence_at_revision_0(db: psycopg.Connection) -> None:
    seq = create(db, "orders", 10, 3, 100)
    assert seq == {
        "name": "orders",
        "current_value": 10,
        "initial_value": 10,
        "increment": 3,
        "max_value": 100,
        "revision": 0,
        "durability": "Persistent",
        "created_at": seq["created_at"],
        "updated_at": seq["created_at"],
    }
    assert get(db, "orders") == seq


def test_defaults_and_nulls_mean_the_defaults(db: psycopg.Connection) -> None:
    db.execute("SELECT kahuna_create('plain')")
    seq = get(db, "plain")
    assert (seq["initial_value"], seq["increment"], seq["max_value"], seq["durability"]) == (0, 1, None, "Persistent")
    seq = create(db, "nulls", None, None, None, None)
    assert (seq["initial_value"], seq["increment"], seq["max_value"], seq["durability"]) == (0, 1, None, "Persistent")
    assert db.execute("SELECT kahuna_next('plain')").fetchone() == (1,)


def test_the_first_value_is_initial_value_plus_increment_and_revision_counts_allocations(
    db: psycopg.Connection,
) -> None:
    create(db, "neg", -10, 5)
    assert state(db, "neg") == (-10, 0)
    assert next_value(db, "neg") == -5
    assert next_value(db, "neg") == 0
    assert reserve(db, "neg", 3) == ("neg", 5, 15, 3, 3)
    assert next_value(db, "neg") == 20
    assert state(db, "neg") == (20, 4)
    # Reading does not write.
    get(db, "neg")
    assert state(db, "neg") == (20, 4)
    seq = get(db, "neg")
    assert seq["updated_at"] >= seq["created_at"]


# -- outcomes: NotFound, AlreadyExists ----------------------------------------------------

MISSING_CALLS: list[tuple[str, str]] = [
    ("get", "SELECT * FROM kahuna_get(%s)"),
    ("next", "SELECT kahuna_next(%s)"),
    ("next with key", "SELECT kahuna_next(%s, 'key-1')"),
    ("reserve", "SELECT * FROM kahuna_reserve(%s, 5)"),
    ("delete", "SELECT * FROM kahuna_delete(%s)"),
]


@pytest.mark.parametrize("query", [q for _, q in MISSING_CALLS], ids=[n for n, _ in MISSING_CALLS])
def test_a_missing_sequence_is_42704(db: psycopg.Connection, query: str) -> None:
    with pytest.raises(NotFound) as raised:
        db.execute(query, ("nowhere",))
    assert raised.value.sqlstate == "42704"
    assert raised.value.diag.message_primary == "sequence 'nowhere' (Persistent) does not exist"
    assert count_rows(db, "sequences") == 0
    assert count_rows(db, "idempotency_keys") == 0


def test_a_sequence_of_the_other_durability_is_not_found(db: psycopg.Connection) -> None:
    create(db, "orders")
    with pytest.raises(NotFound, match=r"sequence 'orders' \(Ephemeral\) does not exist"):
        next_value(db, "orders", durability="ephemeral")


def test_create_of_an_existing_name_is_42710_and_changes_nothing(db: psycopg.Connection) -> None:
    first = create(db, "orders", 5)
    next_value(db, "orders")
    with pytest.raises(AlreadyExists) as raised:
        create(db, "  orders ", 100, 7)  # the same name once trimmed
    assert raised.value.sqlstate == "42710"
    assert raised.value.diag.message_primary == "sequence 'orders' (Persistent) already exists"
    seq = get(db, "orders")
    assert (seq["initial_value"], seq["increment"], seq["current_value"], seq["revision"]) == (5, 1, 6, 1)
    assert seq["created_at"] == first["created_at"]


# -- names --------------------------------------------------------------------------------

VALID_NAMES: dict[str, str] = {
    "one character": "a",
    "1024 ASCII characters": "n" * 1024,
    "1024 two-byte characters": "é" * 1024,
    "1024 three-byte characters, random": incompressible(CJK, 20000, 1024, seed=1),
    "1024 four-byte characters, random": incompressible(EMOJI, 700, 1024, seed=2),
    "inner spaces and punctuation": "my orders / 2024: 'quoted' \"double\" %s \\",
    "non-breaking space inside": "a\u00a0b",
}


@pytest.mark.parametrize("name", list(VALID_NAMES.values()), ids=list(VALID_NAMES))
def test_a_valid_name_works_in_every_function(db: psycopg.Connection, name: str) -> None:
    assert create(db, name)["name"] == name
    assert get(db, name)["name"] == name
    assert next_value(db, name) == 1
    assert reserve(db, name, 3, "key") == (name, 2, 4, 3, 2)
    assert reserve(db, name, 3, "key") == (name, 2, 4, 3, 2)
    assert delete(db, name)["current_value"] == 4
    assert count_rows(db, "sequences") == 0
    assert count_rows(db, "idempotency_keys") == 0


def test_the_longest_name_with_the_longest_key_both_multibyte(db: psycopg.Connection) -> None:
    """The largest identity an idempotency entry can have: 1024 four-byte characters of name
    and 1024 bytes of key, neither compressible."""
    name = incompressible(EMOJI, 700, 1024, seed=3)
    key = incompressible(EMOJI, 700, 256, seed=4)
    assert len(key.encode()) == 1024
    create(db, name, durability="ephemeral")
    create(db, name)
    first = reserve(db, name, 2, key)
    assert first == (name, 1, 2, 2, 1)
    assert reserve(db, name, 2, key) == first
    assert reserve(db, name, 2, key, "ephemeral") == (name, 1, 2, 2, 1)
    assert next_value(db, name) == 3
    assert count_rows(db, "idempotency_keys") == 2


def test_names_are_trimmed_of_surrounding_white_space(db: psycopg.Connection) -> None:
    seq = create(db, " \t\n\r\f\vorders \n")
    assert seq["name"] == "orders"
    assert get(db, "orders")["name"] == "orders"
    assert get(db, "\torders\t")["name"] == "orders"
    assert next_value(db, "  orders") == 1
    assert reserve(db, "orders\n", 1) == ("orders", 2, 2, 1, 2)
    # Trimming happens before the length check: 1024 characters inside white space are fine.
    assert create(db, "  " + "x" * 1024 + "\n")["name"] == "x" * 1024
    assert delete(db, " orders ")["name"] == "orders"


def test_trimming_takes_white_space_only_never_letters(db: psycopg.Connection) -> None:
    """Names and keys that begin or end with letters that name white space in escapes (v, t,
    n, r, f) keep them; a vertical tab (U+000B) around a name or key is trimmed."""
    for name in ("vendors", "v", "vtnrf", "lev", "fact", "nation", "tar"):
        assert create(db, name)["name"] == name
        assert next_value(db, name) == 1
    assert get(db, "\x0bvendors\x0b")["name"] == "vendors"
    assert next_value(db, "vendors", "v") == 2
    assert next_value(db, "vendors", "vv") == 3
    assert next_value(db, "vendors", "\x0bvv\x0b") == 3
    assert db.execute("SELECT key FROM kahuna.idempotency_keys ORDER BY key").fetchall() == [("v",), ("vv",)]


INVALID_NAMES: dict[str, tuple[str | None, str]] = {
    "NULL": (None, "name is required"),
    "empty": ("", "name must not be empty"),
    "only white space": (" \t\n\r\f\v ", "name must not be empty"),
    "1025 ASCII characters": ("n" * 1025, "name must be at most 1024 characters, got 1025"),
    "1025 two-byte characters": ("é" * 1025, "name must be at most 1024 characters, got 1025"),
    "1025 four-byte characters": (
        incompressible(EMOJI, 700, 1025, seed=5),
        "name must be at most 1024 characters, got 1025",
    ),
    "newline inside": ("a\nb", "name must not contain control characters"),
    "tab inside": ("a\tb", "name must not contain control characters"),
    "U+0001": ("a\x01b", "name must not contain control characters"),
    "U+001F": ("\x1fab", "name must not contain control characters"),
    "U+007F": ("ab\x7f", "name must not contain control characters"),
    "U+0085": ("a\x85b", "name must not contain control characters"),
    "U+009F": ("a\x9fb", "name must not contain control characters"),
}

NAME_CALLS: dict[str, str] = {
    "create": "SELECT kahuna_create(%s)",
    "get": "SELECT kahuna_get(%s)",
    "next": "SELECT kahuna_next(%s, 'k')",
    "reserve": "SELECT kahuna_reserve(%s, 2)",
    "delete": "SELECT kahuna_delete(%s)",
}


@pytest.mark.parametrize("call", list(NAME_CALLS.values()), ids=list(NAME_CALLS))
@pytest.mark.parametrize(("name", "message"), list(INVALID_NAMES.values()), ids=list(INVALID_NAMES))
def test_an_invalid_name_is_22023_in_every_function(
    db: psycopg.Connection, call: str, name: str | None, message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        db.execute(call, (name,))
    assert raised.value.sqlstate == "22023"
    assert raised.value.diag.message_primary == message
    assert count_rows(db, "sequences") == 0


def test_a_name_with_nul_is_refused_before_it_reaches_the_server(db: psycopg.Connection) -> None:
    """PostgreSQL text cannot hold NUL; psycopg refuses it client-side, and nothing is created."""
    with pytest.raises(psycopg.DataError, match="NUL"):
        db.execute("SELECT kahuna_create(%s)", ("a\x00b",))
    assert count_rows(db, "sequences") == 0
    create(db, "orders")
    with pytest.raises(psycopg.DataError, match="NUL"):
        db.execute("SELECT kahuna_next('orders', %s)", ("key\x00",))
    assert state(db, "orders") == (0, 0)
    assert count_rows(db, "idempotency_keys") == 0


# -- durability ---------------------------------------------------------------------------

DURABILITY_SPELLINGS: dict[str, str] = {
    "persistent": "Persistent",
    "Persistent": "Persistent",
    "PERSISTENT": "Persistent",
    " pErSiStEnT ": "Persistent",
    "0": "Persistent",
    "1": "Persistent",
    "ephemeral": "Ephemeral",
    "Ephemeral": "Ephemeral",
    "EPHEMERAL": "Ephemeral",
    "2": "Ephemeral",
}


@pytest.mark.parametrize(("spelling", "durability"), list(DURABILITY_SPELLINGS.items()))
def test_durability_spellings(db: psycopg.Connection, spelling: str, durability: str) -> None:
    assert create(db, "orders", durability=spelling)["durability"] == durability
    assert get(db, "orders", durability)["durability"] == durability
    assert get(db, "orders", spelling)["durability"] == durability
    assert next_value(db, "orders", durability=spelling) == 1
    assert reserve(db, "orders", 2, None, spelling) == ("orders", 2, 3, 2, 2)
    assert delete(db, "orders", spelling)["durability"] == durability


def test_null_durability_means_persistent(db: psycopg.Connection) -> None:
    assert create(db, "orders", durability=None)["durability"] == "Persistent"
    assert get(db, "orders", None)["durability"] == "Persistent"
    assert next_value(db, "orders", durability=None) == 1


@pytest.mark.parametrize("wrong", ["durable", "Persist", "", "3", "-1", "unspecified", "persistent,ephemeral"])
def test_a_wrong_durability_is_22023_in_every_function(db: psycopg.Connection, wrong: str) -> None:
    create(db, "orders")
    message = f"durability must be Persistent or Ephemeral, got '{wrong}'"
    calls = [
        ("SELECT kahuna_create('other', 0, 1, NULL, %s)", (wrong,)),
        ("SELECT kahuna_get('orders', %s)", (wrong,)),
        ("SELECT kahuna_next('orders', NULL, %s)", (wrong,)),
        ("SELECT kahuna_next('orders', 'k', %s)", (wrong,)),
        ("SELECT kahuna_reserve('orders', 3, NULL, %s)", (wrong,)),
        ("SELECT kahuna_delete('orders', %s)", (wrong,)),
    ]
    for query, params in calls:
        with pytest.raises(InvalidInput) as raised:
            db.execute(query, params)
        assert raised.value.diag.message_primary == message, query
    assert count_rows(db, "sequences") == 1
    assert state(db, "orders") == (0, 0)


def test_persistent_and_ephemeral_of_one_name_are_two_sequences(db: psycopg.Connection) -> None:
    create(db, "orders", 0)
    create(db, "orders", 1000, 10, None, "ephemeral")
    assert next_value(db, "orders") == 1
    assert next_value(db, "orders", durability="ephemeral") == 1010
    # One key, two sequences: two allocations.
    assert reserve(db, "orders", 2, "k") == ("orders", 2, 3, 2, 2)
    assert reserve(db, "orders", 2, "k", "ephemeral") == ("orders", 1020, 1030, 2, 2)
    # Where they live: a logged partition and an UNLOGGED one.
    rows = db.execute(
        "SELECT c.relname, c.relpersistence FROM kahuna.sequences s JOIN pg_class c ON c.oid = s.tableoid "
        "ORDER BY c.relname"
    ).fetchall()
    assert rows == [("sequences_ephemeral", "u"), ("sequences_persistent", "p")]
    rows = db.execute(
        "SELECT c.relname, c.relpersistence FROM kahuna.idempotency_keys k JOIN pg_class c ON c.oid = k.tableoid "
        "ORDER BY c.relname"
    ).fetchall()
    assert rows == [("idempotency_keys_ephemeral", "u"), ("idempotency_keys_persistent", "p")]
    # Deleting one leaves the other and its key.
    assert delete(db, "orders", "ephemeral")["current_value"] == 1030
    assert reserve(db, "orders", 2, "k") == ("orders", 2, 3, 2, 2)
    assert state(db, "orders") == (3, 2)
    with pytest.raises(NotFound):
        get(db, "orders", "ephemeral")


# -- increment, initial value, maxValue -----------------------------------------------------


@pytest.mark.parametrize("increment", [0, -1, INT64_MIN])
def test_increment_must_be_positive(db: psycopg.Connection, increment: int) -> None:
    with pytest.raises(InvalidInput) as raised:
        create(db, "orders", 0, increment)
    assert raised.value.diag.message_primary == f"increment must be greater than 0, got {increment}"
    assert count_rows(db, "sequences") == 0


def test_max_value_below_initial_value_is_22023(db: psycopg.Connection) -> None:
    with pytest.raises(InvalidInput) as raised:
        create(db, "orders", 10, 1, 9)
    assert raised.value.diag.message_primary == "maxValue (9) must not be less than initialValue (10)"
    with pytest.raises(InvalidInput):
        create(db, "orders", INT64_MIN + 1, 1, INT64_MIN)
    assert count_rows(db, "sequences") == 0


def test_max_value_equal_to_initial_value_is_a_sequence_with_nothing_to_hand_out(db: psycopg.Connection) -> None:
    create(db, "orders", 10, 1, 10)
    with pytest.raises(MaxValueExceeded):
        next_value(db, "orders")
    assert state(db, "orders") == (10, 0)


def test_max_value_is_inclusive_and_allocation_all_or_nothing(db: psycopg.Connection) -> None:
    create(db, "orders", 0, 1, 5)
    assert reserve(db, "orders", 3) == ("orders", 1, 3, 3, 1)
    # One past maxValue: refused whole, nothing changes.
    with pytest.raises(MaxValueExceeded) as raised:
        reserve(db, "orders", 3)
    assert raised.value.sqlstate == "2200H"
    assert raised.value.diag.message_primary == (
        "sequence 'orders' (Persistent) cannot hand out 3 more value(s): current value 3, increment 1, max value 5"
    )
    assert state(db, "orders") == (3, 1)
    # Reaching maxValue exactly is fine.
    assert reserve(db, "orders", 2) == ("orders", 4, 5, 2, 2)
    for call in (lambda: next_value(db, "orders"), lambda: reserve(db, "orders", 1, "new-key")):
        with pytest.raises(MaxValueExceeded):
            call()
    assert state(db, "orders") == (5, 2)
    assert count_rows(db, "idempotency_keys") == 0


def test_max_value_with_a_larger_increment(db: psycopg.Connection) -> None:
    create(db, "tens", 0, 10, 25)
    assert next_value(db, "tens") == 10
    assert next_value(db, "tens") == 20
    with pytest.raises(MaxValueExceeded, match="current value 20, increment 10, max value 25"):
        next_value(db, "tens")
    assert state(db, "tens") == (20, 2)


# -- int64 --------------------------------------------------------------------------------


def test_the_last_int64_value_is_handed_out_then_2200h(db: psycopg.Connection) -> None:
    create(db, "top", INT64_MAX - 2)
    assert next_value(db, "top") == INT64_MAX - 1
    assert next_value(db, "top") == INT64_MAX
    with pytest.raises(MaxValueExceeded) as raised:
        next_value(db, "top")
    assert "max value 9223372036854775807" in raised.value.diag.message_primary
    assert state(db, "top") == (INT64_MAX, 2)


def test_a_run_past_int64_is_2200h_whole(db: psycopg.Connection) -> None:
    create(db, "top", INT64_MAX - 3)
    with pytest.raises(MaxValueExceeded):
        reserve(db, "top", 4)
    assert state(db, "top") == (INT64_MAX - 3, 0)
    assert reserve(db, "top", 3) == ("top", INT64_MAX - 2, INT64_MAX, 3, 1)


def test_an_explicit_max_value_of_int64_max_is_the_same_as_none(db: psycopg.Connection) -> None:
    create(db, "top", INT64_MAX - 1, 1, INT64_MAX)
    assert next_value(db, "top") == INT64_MAX
    with pytest.raises(MaxValueExceeded):
        next_value(db, "top")


@pytest.mark.parametrize(
    ("initial", "increment", "count"),
    [
        (0, 2**62, 2),  # 2^63: one past int64
        (0, INT64_MAX, 2),
        (INT64_MAX - 1, INT64_MAX, 1),
        (0, 2**33, INT32_MAX),  # increment * count alone is about 2^64
        (INT64_MIN, INT64_MAX, 3),
        (-1, 1, INT32_MAX),  # fine: this one fits, as a control
    ],
)
def test_int64_overflow_is_2200h_never_a_wrap_or_22003(
    db: psycopg.Connection, initial: int, increment: int, count: int
) -> None:
    create(db, "big", initial, increment)
    end = initial + increment * count
    if end <= INT64_MAX:
        assert reserve(db, "big", count) == ("big", initial + increment, end, count, 1)
        return
    with pytest.raises(MaxValueExceeded) as raised:
        reserve(db, "big", count)
    assert raised.value.sqlstate == "2200H"
    assert state(db, "big") == (initial, 0)


def test_runs_that_span_most_of_int64_are_computed_without_overflow(db: psycopg.Connection) -> None:
    """The run fits in int64 although increment * count and end - start do not."""
    create(db, "wide", INT64_MIN, 2**62)
    # start = -2^62, end = 2^62: increment * count = 3 * 2^62 is past int64, the end is not.
    assert reserve(db, "wide", 3) == ("wide", -(2**62), 2**62, 3, 1)
    assert state(db, "wide") == (2**62, 1)
    create(db, "widest", INT64_MIN, INT64_MAX)
    assert next_value(db, "widest") == -1
    assert next_value(db, "widest") == INT64_MAX - 1
    with pytest.raises(MaxValueExceeded):
        next_value(db, "widest")
    create(db, "span", INT64_MIN, 1)
    assert reserve(db, "span", INT32_MAX) == ("span", INT64_MIN + 1, INT64_MIN + INT32_MAX, INT32_MAX, 1)


# -- count --------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1, -(2**31), None])
def test_count_out_of_range_is_22023(db: psycopg.Connection, count: int | None) -> None:
    create(db, "orders")
    with pytest.raises(InvalidInput) as raised:
        reserve(db, "orders", count)
    shown = "NULL" if count is None else count
    assert raised.value.diag.message_primary == f"count must be between 1 and 2147483647, got {shown}"
    with pytest.raises(InvalidInput):
        reserve(db, "orders", count, "key")
    assert state(db, "orders") == (0, 0)
    assert count_rows(db, "idempotency_keys") == 0


def test_count_2_31_minus_1_on_a_fresh_sequence_is_one_run(db: psycopg.Connection) -> None:
    create(db, "orders")
    assert reserve(db, "orders", INT32_MAX, "big") == ("orders", 1, INT32_MAX, INT32_MAX, 1)
    assert state(db, "orders") == (INT32_MAX, 1)
    assert reserve(db, "orders", INT32_MAX, "big") == ("orders", 1, INT32_MAX, INT32_MAX, 1)
    assert next_value(db, "orders") == INT32_MAX + 1


def test_count_past_int32_cannot_even_be_passed(db: psycopg.Connection) -> None:
    """count is an integer parameter: 2^31 does not reach the function (no implicit cast)."""
    create(db, "orders")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        db.execute("SELECT kahuna_reserve('orders', %s::bigint)", (2**31,))
    assert state(db, "orders") == (0, 0)


# -- idempotency keys ---------------------------------------------------------------------


def test_a_replay_answers_the_recorded_allocation_revision_included(db: psycopg.Connection) -> None:
    create(db, "orders")
    first = reserve(db, "orders", 5, "request-1")
    assert first == ("orders", 1, 5, 5, 1)
    assert next_value(db, "orders") == 6
    assert reserve(db, "orders", 2) == ("orders", 7, 8, 2, 3)
    assert reserve(db, "orders", 5, "request-1") == first
    assert reserve(db, "orders", 5, "  request-1\n") == first  # keys are trimmed
    assert state(db, "orders") == (8, 3)


def test_a_replay_works_when_the_sequence_is_exhausted(db: psycopg.Connection) -> None:
    create(db, "small", 0, 1, 3)
    first = reserve(db, "small", 3, "all-of-it")
    assert first == ("small", 1, 3, 3, 1)
    with pytest.raises(MaxValueExceeded):
        next_value(db, "small")
    assert reserve(db, "small", 3, "all-of-it") == first
    with pytest.raises(MaxValueExceeded):
        reserve(db, "small", 1, "another")
    assert state(db, "small") == (3, 1)


def test_the_same_key_with_another_count_is_22023(db: psycopg.Connection) -> None:
    create(db, "orders")
    reserve(db, "orders", 5, "k")
    with pytest.raises(InvalidInput) as raised:
        reserve(db, "orders", 6, "k")
    assert raised.value.diag.message_primary == "idempotency key 'k' was used with count 5, not 6"
    with pytest.raises(InvalidInput, match="was used with count 5, not 1"):
        next_value(db, "orders", "k")
    assert state(db, "orders") == (5, 1)
    assert reserve(db, "orders", 5, "k") == ("orders", 1, 5, 5, 1)


def test_next_and_reserve_share_keys(db: psycopg.Connection) -> None:
    create(db, "orders", 100, 10)
    assert next_value(db, "orders", "k") == 110
    assert reserve(db, "orders", 1, "k") == ("orders", 110, 110, 1, 1)
    assert reserve(db, "orders", 1, "r") == ("orders", 120, 120, 1, 2)
    assert next_value(db, "orders", "r") == 120
    with pytest.raises(InvalidInput):
        reserve(db, "orders", 2, "k")
    assert state(db, "orders") == (120, 2)


def test_keys_are_per_sequence(db: psycopg.Connection) -> None:
    create(db, "a")
    create(db, "b", 50)
    assert next_value(db, "a", "k") == 1
    assert next_value(db, "b", "k") == 51
    assert next_value(db, "a", "k") == 1
    assert next_value(db, "b", "k") == 51


@pytest.mark.parametrize("blank", [None, "", " ", " \t\n\r\f\v "])
def test_a_blank_key_means_no_key(db: psycopg.Connection, blank: str | None) -> None:
    create(db, "orders")
    assert next_value(db, "orders", blank) == 1
    assert next_value(db, "orders", blank) == 2
    assert reserve(db, "orders", 2, blank) == ("orders", 3, 4, 2, 3)
    assert reserve(db, "orders", 3, blank) == ("orders", 5, 7, 3, 4)
    assert count_rows(db, "idempotency_keys") == 0


KEYS_OF_1024_BYTES = {
    "ASCII": "k" * 1024,
    "two-byte": "é" * 512,
    "two-byte and ASCII": "é" * 511 + "ab",
    "three-byte and ASCII": "€" * 341 + "a",
    "four-byte, random": incompressible(EMOJI, 700, 256, seed=6),
    "inside white space": "  " + "é" * 512 + "\n",
}


@pytest.mark.parametrize("key", list(KEYS_OF_1024_BYTES.values()), ids=list(KEYS_OF_1024_BYTES))
def test_a_key_of_1024_bytes_is_accepted(db: psycopg.Connection, key: str) -> None:
    assert len(key.strip().encode()) == 1024
    create(db, "orders")
    assert reserve(db, "orders", 2, key) == ("orders", 1, 2, 2, 1)
    assert reserve(db, "orders", 2, key) == ("orders", 1, 2, 2, 1)
    stored = db.execute("SELECT key FROM kahuna.idempotency_keys").fetchone()
    assert stored == (key.strip(" \t\n\r\f\v"),)


KEYS_OF_1025_BYTES = {
    "ASCII": "k" * 1025,
    "two-byte and ASCII": "é" * 512 + "a",
    "three-byte and ASCII": "€" * 341 + "ab",
    "four-byte and ASCII": incompressible(EMOJI, 700, 256, seed=7) + "a",
    "1024 characters, 2048 bytes": "é" * 1024,
}


@pytest.mark.parametrize("key", list(KEYS_OF_1025_BYTES.values()), ids=list(KEYS_OF_1025_BYTES))
def test_a_key_over_1024_bytes_is_22023(db: psycopg.Connection, key: str) -> None:
    size = len(key.encode())
    assert size > 1024
    create(db, "orders")
    for call in (lambda: reserve(db, "orders", 2, key), lambda: next_value(db, "orders", key)):
        with pytest.raises(InvalidInput) as raised:
            call()
        assert raised.value.diag.message_primary == f"idempotency key must be at most 1024 bytes in UTF-8, got {size}"
    assert state(db, "orders") == (0, 0)
    assert count_rows(db, "idempotency_keys") == 0


def test_validation_comes_before_existence(db: psycopg.Connection) -> None:
    """A bad argument is InvalidInput even for a sequence that does not exist."""
    with pytest.raises(InvalidInput, match="count"):
        reserve(db, "nowhere", 0)
    with pytest.raises(InvalidInput, match="idempotency key"):
        reserve(db, "nowhere", 1, "k" * 1025)


# -- delete and re-create -----------------------------------------------------------------


def test_delete_answers_the_sequence_as_it_was_and_removes_its_keys(db: psycopg.Connection) -> None:
    create(db, "orders", 0, 1, 100)
    reserve(db, "orders", 5, "k1")
    next_value(db, "orders", "k2")
    create(db, "other")
    next_value(db, "other", "k1")
    gone = delete(db, "orders")
    assert (gone["name"], gone["current_value"], gone["revision"], gone["max_value"]) == ("orders", 6, 2, 100)
    with pytest.raises(NotFound):
        get(db, "orders")
    with pytest.raises(NotFound):
        delete(db, "orders")
    # Only the deleted sequence's keys are gone.
    assert db.execute("SELECT name, key FROM kahuna.idempotency_keys").fetchall() == [("other", "k1")]


def test_a_recreated_sequence_starts_afresh_and_replays_no_old_key(db: psycopg.Connection) -> None:
    create(db, "orders")
    assert reserve(db, "orders", 5, "k") == ("orders", 1, 5, 5, 1)
    delete(db, "orders")
    seq = create(db, "orders", 100, 10)
    assert (seq["current_value"], seq["revision"]) == (100, 0)
    # The old key allocates afresh, and with another count it is no error.
    assert reserve(db, "orders", 3, "k") == ("orders", 110, 130, 3, 1)
    assert reserve(db, "orders", 3, "k") == ("orders", 110, 130, 3, 1)
    assert next_value(db, "orders") == 140


# -- retention and purge ------------------------------------------------------------------


def age_keys(db: psycopg.Connection, keys: list[str], age: str = "2 days") -> None:
    db.execute("UPDATE kahuna.idempotency_keys SET created_at = now() - %s::interval WHERE key = ANY(%s)", (age, keys))


def test_retention_defaults_to_24_hours_and_can_be_set(db: psycopg.Connection) -> None:
    assert db.execute("SELECT kahuna.idempotency_retention()").fetchone() == (timedelta(hours=24),)
    assert db.execute("SELECT kahuna.set_idempotency_retention('90 minutes')").fetchone() == (timedelta(minutes=90),)
    assert db.execute("SELECT kahuna.idempotency_retention()").fetchone() == (timedelta(minutes=90),)
    assert db.execute("SELECT kahuna.set_idempotency_retention('3 days')").fetchone() == (timedelta(days=3),)
    assert db.execute("SELECT kahuna.idempotency_retention()").fetchone() == (timedelta(days=3),)
    assert count_rows(db, "settings") == 1


@pytest.mark.parametrize("bad", ["0", "-1 hour", "0 seconds", None])
def test_a_retention_that_is_not_positive_is_22023(db: psycopg.Connection, bad: str | None) -> None:
    db.execute("SELECT kahuna.set_idempotency_retention('2 hours')")
    with pytest.raises(InvalidInput, match="idempotency retention must be a positive interval"):
        db.execute("SELECT kahuna.set_idempotency_retention(%s::interval)", (bad,))
    assert db.execute("SELECT kahuna.idempotency_retention()").fetchone() == (timedelta(hours=2),)


def test_an_entry_older_than_the_retention_is_not_replayed(db: psycopg.Connection) -> None:
    create(db, "orders")
    assert reserve(db, "orders", 2, "old") == ("orders", 1, 2, 2, 1)
    assert reserve(db, "orders", 2, "fresh") == ("orders", 3, 4, 2, 2)
    age_keys(db, ["old"])
    # Past the default 24 hours: allocates afresh, even with another count, and the new
    # allocation is what replays from then on.
    assert reserve(db, "orders", 3, "old") == ("orders", 5, 7, 3, 3)
    assert reserve(db, "orders", 3, "old") == ("orders", 5, 7, 3, 3)
    assert reserve(db, "orders", 2, "fresh") == ("orders", 3, 4, 2, 2)
    assert count_rows(db, "idempotency_keys") == 2
    # With a longer retention, the same age is still within it.
    age_keys(db, ["old"])
    db.execute("SELECT kahuna.set_idempotency_retention('3 days')")
    assert reserve(db, "orders", 3, "old") == ("orders", 5, 7, 3, 3)
    db.execute("SELECT kahuna.set_idempotency_retention('1 day')")
    assert next_value(db, "orders", "old") == 8
    assert state(db, "orders") == (8, 4)


def test_purge_deletes_expired_entries_in_bounded_batches(db: psycopg.Connection) -> None:
    create(db, "orders")
    create(db, "orders", durability="ephemeral")
    expired = [f"old-{i}" for i in range(5)]
    for i, key in enumerate(expired):
        next_value(db, "orders", key, "ephemeral" if i % 2 else "persistent")
    for key in ("fresh-1", "fresh-2", "fresh-3"):
        next_value(db, "orders", key)
    age_keys(db, expired)
    purged = [db.execute("SELECT kahuna.purge_idempotency_keys(2)").fetchone() for _ in range(4)]
    assert purged == [(2,), (2,), (1,), (0,)]
    remaining = db.execute("SELECT key FROM kahuna.idempotency_keys ORDER BY key").fetchall()
    assert remaining == [("fresh-1",), ("fresh-2",), ("fresh-3",)]
    assert db.execute("SELECT kahuna.purge_idempotency_keys()").fetchone() == (0,)
    # The sequences themselves are untouched.
    assert state(db, "orders") == (6, 6)
    assert state(db, "orders", "ephemeral") == (2, 2)


def test_purge_follows_the_retention_setting(db: psycopg.Connection) -> None:
    create(db, "orders")
    for key in ("a", "b"):
        next_value(db, "orders", key)
    age_keys(db, ["a"], "3 hours")
    assert db.execute("SELECT kahuna.purge_idempotency_keys()").fetchone() == (0,)
    db.execute("SELECT kahuna.set_idempotency_retention('2 hours')")
    assert db.execute("SELECT kahuna.purge_idempotency_keys()").fetchone() == (1,)
    assert db.execute("SELECT key FROM kahuna.idempotency_keys").fetchall() == [("b",)]


@pytest.mark.parametrize("batch", [0, -1, None])
def test_purge_batch_must_be_positive(db: psycopg.Connection, batch: int | None) -> None:
    with pytest.raises(InvalidInput, match="batch_size must be at least 1"):
        db.execute("SELECT kahuna.purge_idempotency_keys(%s::integer)", (batch,))


# -- transactions -------------------------------------------------------------------------


def test_a_rolled_back_allocation_is_handed_out_again(
    db: psycopg.Connection, connect: Callable[[], psycopg.Connection]
) -> None:
    create(db, "orders")
    conn = connect()
    conn.autocommit = False
    with conn.transaction(force_rollback=True):
        assert next_value(conn, "orders") == 1
        assert reserve(conn, "orders", 3, "k") == ("orders", 2, 4, 3, 2)
    # Nothing of it happened: the same values, the key unknown (so another count is fine).
    assert next_value(db, "orders") == 1
    assert reserve(db, "orders", 2, "k") == ("orders", 2, 3, 2, 2)
    assert state(db, "orders") == (3, 2)
    with conn.transaction():
        assert next_value(conn, "orders") == 4
    assert state(db, "orders") == (4, 3)


def test_a_rolled_back_create_or_delete_did_not_happen(
    db: psycopg.Connection, connect: Callable[[], psycopg.Connection]
) -> None:
    create(db, "kept")
    next_value(db, "kept", "k")
    conn = connect()
    conn.autocommit = False
    with conn.transaction(force_rollback=True):
        create(conn, "ghost")
        delete(conn, "kept")
    assert count_rows(db, "sequences") == 1
    assert next_value(db, "kept", "k") == 1


def test_a_failed_call_inside_a_transaction_aborts_only_that_transaction(
    db: psycopg.Connection, connect: Callable[[], psycopg.Connection]
) -> None:
    create(db, "small", 0, 1, 1)
    conn = connect()
    conn.autocommit = False
    with pytest.raises(MaxValueExceeded), conn.transaction():
        assert next_value(conn, "small") == 1
        next_value(conn, "small")
    assert state(db, "small") == (0, 0)


# -- the caller's search_path -------------------------------------------------------------

HOSTILE_SCHEMA = r"""
CREATE SCHEMA evil;
CREATE TABLE evil.calls (what text);
-- Tables named like kahuna's, holding answers that would be wrong.
CREATE TABLE evil.sequences (LIKE kahuna.sequences INCLUDING ALL);
INSERT INTO evil.sequences (durability, name, name_hash, current_value, initial_value, increment, revision)
VALUES ('Persistent', 'orders', kahuna.name_hash('orders'), 666, 666, 666, 666);
CREATE TABLE evil.idempotency_keys (LIKE kahuna.idempotency_keys INCLUDING ALL);
CREATE TABLE evil.settings (singleton boolean, idempotency_retention interval);
-- Functions named like kahuna's helpers and like the pg_catalog functions kahuna calls,
-- each recording that it was called.
CREATE FUNCTION evil.spy(what text) RETURNS void LANGUAGE sql AS $$ INSERT INTO evil.calls VALUES (what) $$;
CREATE FUNCTION evil.trimmed(text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('trimmed'); RETURN 'hijacked'; END $$;
CREATE FUNCTION evil.checked_name(text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('checked_name'); RETURN 'hijacked'; END $$;
CREATE FUNCTION evil.name_problem(text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('name_problem'); RETURN NULL; END $$;
CREATE FUNCTION evil.idempotency_retention() RETURNS interval LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('idempotency_retention'); RETURN interval '0'; END $$;
CREATE FUNCTION evil.lock_sequence(text, text) RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('lock_sequence'); END $$;
CREATE FUNCTION evil.btrim(text, text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('btrim'); RETURN 'hijacked'; END $$;
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('lower'); RETURN 'ephemeral'; END $$;
CREATE FUNCTION evil.char_length(text) RETURNS integer LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('char_length'); RETURN 5000; END $$;
CREATE FUNCTION evil.octet_length(text) RETURNS integer LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('octet_length'); RETURN 5000; END $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('now'); RETURN '2000-01-01'; END $$;
CREATE FUNCTION evil.hashtext(text) RETURNS integer LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('hashtext'); RETURN 0; END $$;
CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('sha256'); RETURN '\x00'; END $$;
CREATE FUNCTION evil.convert_to(text, name) RETURNS bytea LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('convert_to'); RETURN '\x00'; END $$;
CREATE FUNCTION evil.pg_advisory_xact_lock(integer, integer) RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('pg_advisory_xact_lock'); END $$;
CREATE FUNCTION evil.text_eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('='); RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
CREATE FUNCTION evil.bigint_le(a bigint, b numeric) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM evil.spy('<='); RETURN true; END $$;
CREATE OPERATOR evil.<= (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = evil.bigint_le);
"""


def test_a_hostile_search_path_neither_breaks_nor_hijacks_the_functions(db: psycopg.Connection) -> None:
    db.execute(HOSTILE_SCHEMA)
    for search_path in ("evil, pg_catalog", "evil, pg_catalog, public, kahuna", "evil"):
        db.execute("DELETE FROM kahuna.sequences")
        db.execute("DELETE FROM kahuna.idempotency_keys")
        db.execute(f"SET search_path = {search_path}")
        seq = db.execute("SELECT (public.kahuna_create(' orders ', 10, 2, 20)).name").fetchone()
        assert seq == ("orders",)
        assert db.execute("SELECT public.kahuna_next('orders')").fetchone() == (12,)
        assert db.execute("SELECT public.kahuna_next('orders', 'k')").fetchone() == (14,)
        assert db.execute("SELECT public.kahuna_next('orders', 'k')").fetchone() == (14,)
        run = db.execute("SELECT * FROM public.kahuna_reserve('orders', 3, 'r')").fetchone()
        assert run == ("orders", 16, 20, 3, 3)
        with pytest.raises(MaxValueExceeded):
            db.execute("SELECT public.kahuna_next('orders')")
        with pytest.raises(InvalidInput, match="control characters"):
            db.execute("SELECT public.kahuna_create(E'a\\nb')")
        with pytest.raises(InvalidInput, match="at most 1024 bytes"):
            db.execute("SELECT public.kahuna_next('orders', pg_catalog.repeat('k', 1025))")
        assert db.execute("SELECT (public.kahuna_get('orders')).revision").fetchone() == (3,)
        with pytest.raises(NotFound):
            db.execute("SELECT public.kahuna_get('orders', 'ephemeral')")
        db.execute("SELECT kahuna.set_idempotency_retention('5 hours')")
        assert db.execute("SELECT kahuna.purge_idempotency_keys(10)").fetchone() == (0,)
        assert db.execute("SELECT (public.kahuna_delete('orders')).current_value").fetchone() == (20,)
        assert db.execute("SELECT kahuna.version()").fetchone() == (latest_version(),)
        db.execute("RESET search_path")
        assert db.execute("SELECT * FROM evil.calls").fetchall() == []
        assert db.execute("SELECT count(*) FROM evil.sequences WHERE current_value = 666").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM evil.idempotency_keys").fetchone() == (0,)
        assert count_rows(db, "sequences") == 0
