"""The SQL regression test of the extension (sql/test), run by pg_regress as PostgreSQL tests
its own extensions: psql runs sql/test/sql/kahuna.sql in a new database of the session's
cluster, and what it prints must equal sql/test/expected/kahuna.out line for line.

It is the SQL interface as any client sees it: CREATE EXTENSION, then the calls of the
README's psql session, every outcome as SQLSTATE and message, batches, delete, search_path
and retention. After a deliberate change of behaviour, review results/kahuna.out in the
failure's output directory and copy it over expected/kahuna.out.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from dbtools import pg_tool

from kahuna_pg.embedded import EmbeddedPostgres, find_bindir

SQL_TEST = Path(__file__).resolve().parent.parent / "sql" / "test"


def pg_regress() -> Path:
    pgxs = subprocess.run([str(pg_tool("pg_config")), "--pgxs"], capture_output=True, text=True, check=True).stdout
    # --pgxs names .../pgxs/src/makefiles/pgxs.mk; pg_regress is .../pgxs/src/test/regress/pg_regress.
    path = Path(pgxs.strip()).parent.parent / "test" / "regress" / "pg_regress"
    assert path.exists(), f"pg_regress is missing ({path}): install the PostgreSQL client (scripts/setup)"
    return path


def test_sql_regression(pg_cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    argv = [str(pg_regress()), f"--bindir={find_bindir()}", f"--inputdir={SQL_TEST}", f"--outputdir={tmp_path}"]
    argv += [f"--host={pg_cluster.host}", f"--port={pg_cluster.port}", f"--user={pg_cluster.user}"]
    argv += ["--dbname=kahuna_regress", "kahuna"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    diffs = tmp_path / "regression.diffs"
    assert result.returncode == 0, (
        f"{result.stdout}\n{result.stderr}\n{diffs.read_text() if diffs.exists() else ''}"
        f"\n(what psql printed: {tmp_path / 'results' / 'kahuna.out'})"
    )
    assert "All 1 tests passed" in result.stdout, result.stdout
