"""A private PostgreSQL cluster that kahuna-pg starts and stops itself.

Used by `kahuna-pg serve` when no DSN is given, by the tests and by the benchmarks.
`initdb` refuses to run as root, so when we are root every server command runs as
the unprivileged `postgres` system user through `runuser`, and the data directory
is handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

SERVER_USER = "postgres"  # the system user that runs the server when we are root


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started or stopped."""


def find_bindir() -> Path:
    """Where the PostgreSQL server binaries are: $KAHUNA_PG_BINDIR, pg_config, Debian's layout or PATH."""
    candidates: list[Path] = []
    if env := os.environ.get("KAHUNA_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _major(p.parent.name), reverse=True)
    candidates.extend(debian)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found (initdb, pg_ctl): install them (scripts/setup does) "
        "or set KAHUNA_PG_BINDIR"
    )


def server_user() -> str:
    """The user that runs the server and owns the cluster: `postgres` when we are root, else us."""
    return SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def _major(version: str) -> int:
    return int(version) if version.isdigit() else -1


class EmbeddedPostgres:
    """One PostgreSQL cluster under `base_dir`: the cluster in `pgdata/`, its socket in `run/`.

    It listens on the Unix socket only, unless `tcp_host` is given (the tests use
    127.0.0.1 so that other tools can reach it too).
    """

    def __init__(
        self,
        base_dir: Path | str,
        *,
        port: int = 5432,
        tcp_host: str | None = None,
        bindir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.port = port
        self.tcp_host = tcp_host
        self.bindir = bindir or find_bindir()
        self.settings = settings or {}
        self.user = server_user()

    # -- paths and connection -------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return self.base_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "run"

    @property
    def logfile(self) -> Path:
        return self.base_dir / "postgresql.log"

    @property
    def host(self) -> str:
        return self.tcp_host or str(self.socket_dir)

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq connection string for `dbname` as the cluster's superuser."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    # -- life cycle -----------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster once (initdb); a second call does nothing."""
        if self.initialized():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._hand_over(self.base_dir)
        self._hand_over(self.socket_dir)
        self._run(
            ["initdb", "-D", str(self.pgdata), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-instructions"],
        )

    def start(self) -> None:
        """initdb if needed, then start the server and wait until it accepts connections."""
        self.init()
        self.socket_dir.mkdir(exist_ok=True)
        self._hand_over(self.socket_dir)
        options = {
            "listen_addresses": self.tcp_host or "",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "300",
            **self.settings,
        }
        opts = " ".join(f"-c {k}='{v}'" for k, v in options.items())
        self._run(["pg_ctl", "start", "-D", str(self.pgdata), "-w", "-t", "60", "-l", str(self.logfile), "-o", opts])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (clean), or `immediate`, which is a crash as far as data goes."""
        if self.running():
            self._run(["pg_ctl", "stop", "-D", str(self.pgdata), "-w", "-t", "60", "-m", mode])

    def crash(self) -> None:
        """Stop without a checkpoint: the next start replays WAL and empties UNLOGGED tables."""
        self.stop("immediate")

    def running(self) -> bool:
        if not self.initialized():
            return False
        result = self._run(["pg_ctl", "status", "-D", str(self.pgdata)], check=False)
        return result.returncode == 0

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------
    def _run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # cwd=/ because the server user may not be allowed into our working directory
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")
        if check and result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise EmbeddedPostgresError(
                f"{' '.join(argv[:2])} failed ({result.returncode}): {result.stderr.strip()}\n{log}"
            )
        return result

    def _hand_over(self, path: Path) -> None:
        """Give `path` to the server user, and check that user can reach it."""
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(self.user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(path, 0o700)
        probe = subprocess.run(["runuser", "-u", self.user, "--", "test", "-w", str(path)], check=False)
        if probe.returncode != 0:
            raise EmbeddedPostgresError(
                f"the server user {self.user!r} cannot reach {path}: choose a data directory outside "
                "a private home (for example under /var/lib or /tmp)"
            )
