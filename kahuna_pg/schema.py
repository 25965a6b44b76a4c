"""Install and upgrade the kahuna SQL schema, the way PostgreSQL upgrades an extension.

`sql/` holds `kahuna.control` (whose `default_version` is the latest version), one full
install script per released version (`kahuna--1.0.sql`, `kahuna--1.1.sql`: a fresh install
runs the latest one alone) and ordered upgrade scripts (`kahuna--1.0--1.1.sql`) that take an
installed database forward; a test keeps both paths at the same catalog. The same files
install as a real extension (`make -C sql install`, then `CREATE EXTENSION kahuna`);
`migrate` applies them to a plain database: each script once, in one transaction, under an
advisory lock so that two processes starting together cannot both apply it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

EXTENSION = "kahuna"
# pg_advisory_xact_lock key held while migrating ("kahuna" in ASCII).
MIGRATION_LOCK = 0x6B6168756E61

_SCRIPT = re.compile(rf"^{EXTENSION}--(?P<a>[0-9.]+)(?:--(?P<b>[0-9.]+))?\.sql$")


def sql_dir() -> Path:
    """The directory of the SQL scripts: inside the installed wheel, or `sql/` of a checkout."""
    packaged = resources.files("kahuna_pg") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "sql"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class Scripts:
    """The scripts in the SQL directory, by version."""

    full: dict[str, Path]  # version -> full install script
    upgrades: dict[str, tuple[str, Path]]  # from version -> (to version, script)
    latest: str

    @classmethod
    def load(cls, directory: Path | None = None) -> Scripts:
        directory = directory or sql_dir()
        full: dict[str, Path] = {}
        upgrades: dict[str, tuple[str, Path]] = {}
        for path in directory.glob(f"{EXTENSION}--*.sql"):
            match = _SCRIPT.match(path.name)
            if not match:
                continue
            if match["b"]:
                upgrades[match["a"]] = (match["b"], path)
            else:
                full[match["a"]] = path
        control = (directory / f"{EXTENSION}.control").read_text()
        latest = re.search(r"default_version\s*=\s*'([^']+)'", control)
        if not latest:
            raise RuntimeError(f"{EXTENSION}.control has no default_version")
        return cls(full=full, upgrades=upgrades, latest=latest[1])

    def path_from(self, version: str, target: str | None = None) -> list[Path]:
        """The upgrade scripts that take `version` to `target` (default: the latest), in order."""
        target = target or self.latest
        steps: list[Path] = []
        while version != target:
            if version not in self.upgrades:
                raise RuntimeError(f"no upgrade script from kahuna {version} towards {target}")
            version, path = self.upgrades[version]
            steps.append(path)
        return steps

    @property
    def first(self) -> str:
        return min(self.full, key=_version_key)


def latest_version() -> str:
    return Scripts.load().latest


def installed_version(conn: psycopg.Connection) -> str | None:
    """The installed schema version (`kahuna.version()`), or None when kahuna is not installed."""
    row = conn.execute("SELECT pg_catalog.to_regprocedure('kahuna.version()') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute("SELECT kahuna.version()").fetchone()
    return version[0] if version else None


def render(path: Path, schema: str = "public") -> str:
    """A script's text as `migrate` runs it: @extschema@ is the schema of the kahuna_* functions."""
    return path.read_text().replace("@extschema@", sql.Identifier(schema).as_string(None))


def migrate(conn: psycopg.Connection, *, schema: str = "public", target: str | None = None) -> list[str]:
    """Install or upgrade kahuna to `target` (default: the latest); return the scripts applied.

    Runs in one transaction under an advisory lock: a concurrent `migrate` waits, then finds
    nothing left to do. A database where kahuna is a real extension is upgraded with
    `ALTER EXTENSION`, whose scripts are the same files.
    """
    scripts = Scripts.load()
    target = target or scripts.latest
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        extension = conn.execute(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = %s", (EXTENSION,)
        ).fetchone()
        current = installed_version(conn)
        if extension is not None:
            if current != target:
                conn.execute(
                    sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(sql.Identifier(EXTENSION), sql.Literal(target))
                )
                applied.append(f"ALTER EXTENSION {EXTENSION} UPDATE TO '{target}'")
            return applied
        if current is None:
            # The full script of the target when there is one, else the first and its upgrades.
            base = target if target in scripts.full else scripts.first
            steps = [scripts.full[base], *scripts.path_from(base, target)]
        else:
            if _version_key(current) > _version_key(target):
                raise RuntimeError(f"kahuna {current} is installed, newer than {target}: refusing to downgrade")
            steps = scripts.path_from(current, target)
        for path in steps:
            conn.execute(render(path, schema).encode())
            applied.append(path.name)
    return applied
