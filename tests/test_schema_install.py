"""The install paths of the kahuna schema give one and the same schema, and keep the data.

- the first version's full script plus every upgrade script, the full script of every later
  version (plus its upgrades), and `migrate`, compared on the catalog (tests/catalog.py);
- `migrate` run twice, and by two processes at once;
- `CREATE EXTENSION kahuna` (plain, and at an older version then `ALTER EXTENSION UPDATE`);
- pg_dump / pg_restore of a database of either install path.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from catalog import Snapshot, catalog_snapshot, snapshot_differences
from dbtools import new_database, pg_tool, run_tool
from psycopg import sql
from psycopg.rows import dict_row

from kahuna_pg import migrate
from kahuna_pg.embedded import EmbeddedPostgres
from kahuna_pg.schema import EXTENSION, MIGRATION_LOCK, Scripts, _version_key, render, sql_dir

REPO = Path(__file__).resolve().parent.parent


def assert_same_catalog(actual: Snapshot, expected: Snapshot, what: str) -> None:
    differences = snapshot_differences(actual, expected)
    assert not differences, f"{what} differs from a migrate install:\n" + "\n".join(differences)


def versions_with_full_script(scripts: Scripts) -> list[str]:
    return sorted(scripts.full, key=_version_key)


def installed(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT kahuna.version()").fetchone()
    assert row is not None
    return str(row[0])


# -- the script paths ---------------------------------------------------------------------


def test_every_script_path_gives_the_catalog_of_migrate(pg_cluster: EmbeddedPostgres, db: psycopg.Connection) -> None:
    """Each full script, followed by the upgrade scripts from its version, ends at the schema that
    `migrate` installs (the `db` fixture). From the first version, that is the whole upgrade
    path; from the latest version's own full script (once there is one), it is a fresh install.
    """
    scripts = Scripts.load()
    reference = catalog_snapshot(db)
    assert reference["version"]["version"] == scripts.latest
    starts = versions_with_full_script(scripts)
    assert starts[0] == scripts.first
    for start in starts:
        steps = scripts.path_from(start)
        with new_database(pg_cluster) as name, psycopg.connect(pg_cluster.conninfo(name)) as conn:
            # Each script in its own transaction, as migrate and ALTER EXTENSION run them, and
            # each must leave the version it upgrades to readable in SQL.
            with conn.transaction():
                conn.execute(render(scripts.full[start]).encode())
            assert installed(conn) == start
            for path in steps:
                with conn.transaction():
                    conn.execute(render(path).encode())
                assert installed(conn) == Path(path).stem.split("--")[-1], path.name
            assert installed(conn) == scripts.latest
            assert_same_catalog(
                catalog_snapshot(conn),
                reference,
                f"kahuna--{start}.sql + {[p.name for p in steps]}",
            )


def test_migrate_from_each_older_version_upgrades_to_the_same_catalog(
    pg_cluster: EmbeddedPostgres, db: psycopg.Connection
) -> None:
    """`migrate(target=v)` then `migrate()`: the upgrade scripts applied by migrate itself."""
    scripts = Scripts.load()
    reference = catalog_snapshot(db)
    for start in versions_with_full_script(scripts):
        with new_database(pg_cluster) as name, psycopg.connect(pg_cluster.conninfo(name), autocommit=True) as conn:
            assert migrate(conn, target=start) == [scripts.full[start].name]
            assert installed(conn) == start
            assert migrate(conn) == [p.name for p in scripts.path_from(start)]
            assert installed(conn) == scripts.latest
            assert_same_catalog(catalog_snapshot(conn), reference, f"migrate from {start}")


def test_migrate_is_idempotent(db: psycopg.Connection) -> None:
    """A second migrate applies nothing and leaves schema and data as they were."""
    db.execute("SELECT kahuna_create('orders', 10)")
    db.execute("SELECT kahuna_next('orders', 'k1')")
    before = catalog_snapshot(db)
    state = db.execute("SELECT * FROM kahuna.sequences").fetchall()
    assert migrate(db) == []
    assert migrate(db) == []
    assert catalog_snapshot(db) == before
    assert db.execute("SELECT * FROM kahuna.sequences").fetchall() == state
    assert db.execute("SELECT kahuna_next('orders', 'k1')").fetchone() == (11,)


def test_migrate_of_an_empty_database_applies_each_script_once(pg_cluster: EmbeddedPostgres) -> None:
    scripts = Scripts.load()
    base = scripts.latest if scripts.latest in scripts.full else scripts.first
    expected = [scripts.full[base].name, *(p.name for p in scripts.path_from(base))]
    with new_database(pg_cluster) as name, psycopg.connect(pg_cluster.conninfo(name), autocommit=True) as conn:
        assert migrate(conn) == expected
        assert migrate(conn) == []
        assert installed(conn) == scripts.latest


def _waiting_for_migration_lock(conn: psycopg.Connection, dbname: str) -> int:
    row = conn.execute(
        """
        SELECT count(*) FROM pg_catalog.pg_locks l
          JOIN pg_catalog.pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %s
           AND l.classid = %s AND l.objid = %s AND l.objsubid = 1
        """,
        (dbname, MIGRATION_LOCK >> 32, MIGRATION_LOCK & 0xFFFFFFFF),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_two_migrate_processes_at_once_apply_the_scripts_once(pg_cluster: EmbeddedPostgres) -> None:
    """Two `kahuna-pg migrate` processes on an empty database, made to start together: the test
    holds the migration lock until both are queued on it, then lets them go. Both exit 0, one
    applies the scripts, the other finds nothing to do."""
    scripts = Scripts.load()
    commands = [
        [str(REPO / ".venv" / "bin" / "kahuna-pg"), "migrate"],  # the console script
        [sys.executable, "-m", "kahuna_pg", "migrate"],  # and the module
    ]
    if not Path(commands[0][0]).exists():
        commands[0] = [sys.executable, "-m", "kahuna_pg", "migrate"]
    with new_database(pg_cluster) as name, psycopg.connect(pg_cluster.conninfo("postgres"), autocommit=True) as holder:
        dsn = pg_cluster.conninfo(name)
        with psycopg.connect(dsn) as lock_conn:
            lock_conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            procs = [
                subprocess.Popen(
                    [*cmd, "--dsn", dsn], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                for cmd in commands
            ]
            try:
                deadline = time.monotonic() + 60
                while _waiting_for_migration_lock(holder, name) < 2:
                    for proc in procs:
                        assert proc.poll() is None, f"migrate ended before queueing on the lock: {proc.communicate()}"
                    assert time.monotonic() < deadline, "the two migrate processes never queued on the lock"
                    time.sleep(0.02)
            finally:
                lock_conn.rollback()  # releases the lock: both go
            outputs = [proc.communicate(timeout=120) for proc in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, f"exit {proc.returncode}: {out}{err}"
        applied = [out for out, _ in outputs if "applied" in out]
        idle = [out for out, _ in outputs if "nothing to do" in out]
        assert len(applied) == 1 and len(idle) == 1, outputs
        assert scripts.first in applied[0] or scripts.latest in applied[0]
        with psycopg.connect(dsn) as conn:
            assert installed(conn) == scripts.latest


# -- CREATE EXTENSION ---------------------------------------------------------------------


def test_the_extension_files_in_the_server_are_the_repository_s(db: psycopg.Connection) -> None:
    """CREATE EXTENSION uses the copies `make -C sql install` (scripts/setup) put in the server:
    they must exist and be the scripts of this checkout, or the extension tests test old SQL."""
    row = db.execute(
        "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = %s", (EXTENSION,)
    ).fetchone()
    assert row is not None, (
        "the kahuna extension is not installed in the server: run scripts/setup "
        "(make -C sql install PG_CONFIG=.../pg_config)"
    )
    assert row[0] == Scripts.load().latest
    sharedir = subprocess.run(
        [str(pg_tool("pg_config")), "--sharedir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    installed_dir = Path(sharedir) / "extension"
    for source in [*sql_dir().glob(f"{EXTENSION}--*.sql"), sql_dir() / f"{EXTENSION}.control"]:
        copy = installed_dir / source.name
        assert copy.exists(), f"{copy} is missing: run scripts/setup"
        assert copy.read_bytes() == source.read_bytes(), f"{copy} is stale: run scripts/setup"


def test_create_extension_gives_the_catalog_of_migrate(pg_cluster: EmbeddedPostgres, db: psycopg.Connection) -> None:
    scripts = Scripts.load()
    reference = catalog_snapshot(db)
    with new_database(pg_cluster) as name, psycopg.connect(pg_cluster.conninfo(name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION kahuna")
        row = conn.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'kahuna'").fetchone()
        assert row == (scripts.latest,)
        assert_same_catalog(catalog_snapshot(conn), reference, "CREATE EXTENSION kahuna")
        # Every data table is marked for pg_dump, so that a backup keeps the sequences.
        marked = conn.execute(
            "SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) "
            "FROM pg_catalog.pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'kahuna'"
        ).fetchone()
        assert marked is not None
        assert set(marked[0]) >= {
            "kahuna.sequences_persistent",
            "kahuna.sequences_ephemeral",
            "kahuna.idempotency_keys_persistent",
            "kahuna.idempotency_keys_ephemeral",
            "kahuna.settings",
        }
        # migrate recognises the extension and leaves it alone.
        assert migrate(conn) == []
        assert conn.execute("SELECT (kahuna_create('orders')).revision, kahuna_next('orders')").fetchone() == (0, 1)


def test_create_extension_at_each_version_then_update(pg_cluster: EmbeddedPostgres, db: psycopg.Connection) -> None:
    """CREATE EXTENSION kahuna VERSION v, then migrate (ALTER EXTENSION UPDATE): the same catalog."""
    scripts = Scripts.load()
    reference = catalog_snapshot(db)
    for start in versions_with_full_script(scripts):
        with new_database(pg_cluster) as name, psycopg.connect(pg_cluster.conninfo(name), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE EXTENSION kahuna VERSION {}").format(sql.Literal(start)))
            assert installed(conn) == start
            expected = [] if start == scripts.latest else [f"ALTER EXTENSION kahuna UPDATE TO '{scripts.latest}'"]
            assert migrate(conn) == expected
            assert installed(conn) == scripts.latest
            assert_same_catalog(
                catalog_snapshot(conn), reference, f"CREATE EXTENSION kahuna VERSION '{start}' + update"
            )


# -- pg_dump / pg_restore -----------------------------------------------------------------

LONG_NAME = "séquence-" + "日本" * 300  # multi-byte, 609 characters


def populate(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Sequences of both durabilities, in every state, with keys; returns the keyed answers."""
    conn.execute("SELECT kahuna.set_idempotency_retention('36 hours')")
    conn.execute("SELECT kahuna_create('orders', 100, 2)")
    conn.execute("SELECT kahuna_create('orders', -5, 1, NULL, 'ephemeral')")
    conn.execute("SELECT kahuna_create('full', 0, 1, 3)")
    conn.execute("SELECT kahuna_create('untouched', 7, 3, 1000, 'Ephemeral')")
    conn.execute("SELECT kahuna_create(%s)", (LONG_NAME,))
    calls = [
        ("orders", 1, "o-1", "persistent"),
        ("orders", 5, "o-2", "persistent"),
        ("orders", 1, None, "persistent"),
        ("orders", 3, "e-1", "ephemeral"),
        ("orders", 1, "e-2", "ephemeral"),
        ("full", 3, "f-1", "persistent"),
        (LONG_NAME, 2, "clé-" + "é" * 500, "persistent"),
    ]
    answers = []
    with conn.cursor(row_factory=dict_row) as cur:
        for name, count, key, durability in calls:
            row = cur.execute("SELECT * FROM kahuna_reserve(%s, %s, %s, %s)", (name, count, key, durability)).fetchone()
            assert row is not None
            if key is not None:
                answers.append({"key": key, "durability": durability, **row})
    # Entries of both ages: one is past a 24-hour retention but within the 36 hours set above.
    conn.execute("UPDATE kahuna.idempotency_keys SET created_at = now() - interval '30 hours' WHERE key = 'o-1'")
    return answers


def state(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything kahuna stores: the sequences, the idempotency entries and the setting."""
    return {
        "sequences": conn.execute("SELECT * FROM kahuna.sequences ORDER BY durability, name").fetchall(),
        "keys": conn.execute("SELECT * FROM kahuna.idempotency_keys ORDER BY durability, name, key").fetchall(),
        "settings": conn.execute("SELECT * FROM kahuna.settings").fetchall(),
        "retention": conn.execute("SELECT kahuna.idempotency_retention()").fetchone(),
    }


def install_extension(conn: psycopg.Connection) -> None:
    conn.execute("CREATE EXTENSION kahuna")


def install_migrate(conn: psycopg.Connection) -> None:
    assert migrate(conn)


@pytest.mark.parametrize("install", [install_extension, install_migrate], ids=["extension", "migrate"])
def test_dump_and_restore_keep_every_sequence_key_and_setting(
    pg_cluster: EmbeddedPostgres, tmp_path: Path, install: Callable[[psycopg.Connection], None]
) -> None:
    dump = tmp_path / "kahuna.dump"
    with new_database(pg_cluster) as source, psycopg.connect(pg_cluster.conninfo(source), autocommit=True) as conn:
        install(conn)
        answers = populate(conn)
        before = state(conn)
        schema_before = catalog_snapshot(conn)
        assert len(before["sequences"]) == 5 and len(before["keys"]) == 6
        run_tool(pg_cluster, ["pg_dump", "-Fc", "-f", str(dump), "-d", source])

    with new_database(pg_cluster) as target, psycopg.connect(pg_cluster.conninfo(target), autocommit=True) as conn:
        run_tool(pg_cluster, ["pg_restore", "--exit-on-error", "-d", target, str(dump)])
        assert state(conn) == before
        assert_same_catalog(catalog_snapshot(conn), schema_before, f"the restore of a {install.__name__} database")
        # Every key still answers its allocation, identical, and allocates nothing.
        with conn.cursor(row_factory=dict_row) as cur:
            for answer in answers:
                replay = cur.execute(
                    "SELECT * FROM kahuna_reserve(%s, %s, %s, %s)",
                    (answer["name"], answer["count"], answer["key"], answer["durability"]),
                ).fetchone()
                assert replay == {k: v for k, v in answer.items() if k not in ("key", "durability")}
        assert state(conn) == before
        # And the sequences go on where they were.
        assert conn.execute("SELECT kahuna_next('orders')").fetchone() == (116,)
        assert conn.execute("SELECT kahuna_next('orders', NULL, 'ephemeral')").fetchone() == (0,)
        with pytest.raises(psycopg.errors.SequenceGeneratorLimitExceeded):
            conn.execute("SELECT kahuna_next('full')")
        if install is install_extension:
            row = conn.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'kahuna'").fetchone()
            assert row == (Scripts.load().latest,)


# -- the comparison itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "section"),
    [
        ("CREATE OR REPLACE FUNCTION kahuna.version() RETURNS text LANGUAGE sql AS $$ SELECT '0.0' $$", "functions"),
        ("ALTER FUNCTION kahuna.lock_sequence(kahuna.durability, text) SET search_path = public", "functions"),
        ("ALTER FUNCTION kahuna_get(text, text) VOLATILE", "functions"),
        ("CREATE FUNCTION public.kahuna_extra() RETURNS int LANGUAGE sql AS 'SELECT 1'", "functions"),
        ("COMMENT ON FUNCTION kahuna_next(text, text, text) IS 'changed'", "functions"),
        ("ALTER TYPE kahuna.durability ADD VALUE 'Other'", "types"),
        ("ALTER TYPE kahuna.allocation ADD ATTRIBUTE extra integer", "types"),
        ("ALTER TABLE kahuna.settings SET UNLOGGED", "relations"),
        ("ALTER TABLE kahuna.sequences_persistent SET (fillfactor = 90)", "relations"),
        ("ALTER TABLE kahuna.sequences DETACH PARTITION kahuna.sequences_ephemeral", "relations"),
        ("COMMENT ON TABLE kahuna.settings IS 'changed'", "relations"),
        ("ALTER TABLE kahuna.sequences ALTER COLUMN revision SET DEFAULT 1", "columns"),
        ("ALTER TABLE kahuna.idempotency_keys ALTER COLUMN revision DROP NOT NULL", "columns"),
        ("ALTER TABLE kahuna.settings ADD COLUMN extra integer", "columns"),
        ("ALTER TABLE kahuna.sequences ADD CONSTRAINT extra CHECK (revision >= 0)", "constraints"),
        ("CREATE INDEX extra ON kahuna.sequences (updated_at)", "indexes"),
        ("COMMENT ON SCHEMA kahuna IS 'changed'", "schema"),
    ],
)
def test_catalog_snapshot_sees_a_change(db: psycopg.Connection, change: str, section: str) -> None:
    """The comparison is only worth something if it notices what an upgrade script could get wrong."""
    before = catalog_snapshot(db)
    db.autocommit = False
    with db.transaction(force_rollback=True):
        db.execute(change)
        after = catalog_snapshot(db)
    db.autocommit = True
    assert before != after
    changed = {line.split(":")[0] for line in snapshot_differences(before, after)}
    assert section in changed, changed
    assert catalog_snapshot(db) == before
