"""PL/pgSQL lint: every plpgsql function of kahuna passes plpgsql_check, and none depends on the
caller's search_path.

plpgsql_check (Debian package postgresql-15-plpgsql-check, installed by scripts/setup) must
be present: CREATE EXTENSION failing is a test failure, never a skip.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

# The functions of kahuna: schema kahuna, and the kahuna_* functions of public.
KAHUNA_FUNCTIONS = """
    SELECT p.oid::regprocedure::text AS function, l.lanname AS language, p.proconfig AS config
      FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      JOIN pg_catalog.pg_language l ON l.oid = p.prolang
     WHERE n.nspname = 'kahuna' OR (n.nspname = 'public' AND p.proname LIKE 'kahuna\\_%%')
     ORDER BY 1
"""

PINNED = "search_path=pg_catalog, pg_temp"


def kahuna_functions(db: psycopg.Connection) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(KAHUNA_FUNCTIONS).fetchall()


def plpgsql_functions(db: psycopg.Connection) -> list[str]:
    functions = [f["function"] for f in kahuna_functions(db) if f["language"] == "plpgsql"]
    # The list is found, not written down; make sure it found the functions that matter.
    assert {"kahuna.try_reserve(text,bigint,text,text)", "kahuna_create(text,bigint,bigint,bigint,text)"} <= set(
        functions
    )
    return functions


def test_every_plpgsql_function_passes_plpgsql_check(db: psycopg.Connection) -> None:
    db.execute("CREATE EXTENSION plpgsql_check")
    problems: list[str] = []
    for function in plpgsql_functions(db):
        with db.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                """
                SELECT * FROM plpgsql_check_function_tb(
                    %s::regprocedure,
                    fatal_errors => false,
                    other_warnings => true,
                    extra_warnings => true,
                    performance_warnings => true,
                    security_warnings => true,
                    compatibility_warnings => true)
                """,
                (function,),
            ).fetchall()
        # Nothing is filtered out: errors, warnings, and the extra, performance, security and
        # compatibility warnings all count.
        for r in rows:
            where = f"line {r['lineno']}" if r["lineno"] is not None else "declaration"
            detail = f" ({r['detail']})" if r["detail"] else ""
            problems.append(f"{function} {where}: {r['level']} {r['sqlstate']} {r['message']}{detail}")
    assert problems == []


def test_every_plpgsql_function_depends_only_on_schema_qualified_kahuna_objects(db: psycopg.Connection) -> None:
    """What plpgsql_check sees each function use, beside pg_catalog: kahuna's own objects only."""
    db.execute("CREATE EXTENSION plpgsql_check")
    foreign: list[str] = []
    for function in plpgsql_functions(db):
        rows = db.execute(
            "SELECT type, schema, name FROM plpgsql_show_dependency_tb(%s::regprocedure)", (function,)
        ).fetchall()
        foreign.extend(f"{function} uses {kind} {schema}.{name}" for kind, schema, name in rows if schema != "kahuna")
    assert foreign == []


def test_every_function_that_reads_tables_pins_its_search_path(db: psycopg.Connection) -> None:
    """Every function pins `search_path = pg_catalog, pg_temp`, except SQL one-liners that are
    meant to be inlined (a SET clause prevents inlining) and name everything with its schema;
    the hostile search_path test of test_sql_semantics.py calls them all."""
    unpinned = []
    for f in kahuna_functions(db):
        if PINNED in (f["config"] or []):
            continue
        if f["language"] != "sql":
            unpinned.append(f["function"])
            continue
        body = db.execute("SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure", (f["function"],)).fetchone()
        assert body is not None
        # An unpinned SQL function may not touch a table: no FROM, no INSERT/UPDATE/DELETE.
        text = body[0].upper()
        if any(word in text for word in (" FROM ", "INSERT ", "UPDATE ", "DELETE ")):
            unpinned.append(f["function"])
    assert unpinned == []
