"""`kahuna-pg serve`: the database, the shared client, and the network interfaces around it.

`serve(config)` composes, in this order, and undoes in the reverse order at exit:

1. the database: `--dsn` (migrated at start), or the embedded default, a private PostgreSQL
   cluster under the data directory on a Unix socket only (`open_database`);
2. one `SequenceClient` (one connection pool) shared by every interface;
3. the interfaces of `build_interfaces`, each an `Interface`: `start()` binds and serves in
   background threads, `stop(grace)` refuses new work and finishes the work in flight;
4. the idempotency-key purge, a background `Interface` like the others.

SIGINT and SIGTERM set an event; the main thread then stops every interface at once (each
with the grace period), closes the pool and stops the embedded server, and `serve` returns 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import conninfo, sql
from psycopg_pool import ConnectionPool, PoolTimeout

from kahuna_pg import schema
from kahuna_pg.client import PoolSettings, SequenceClient
from kahuna_pg.embedded import EmbeddedPostgres

log = logging.getLogger("kahuna_pg.serve")

DEFAULT_REST_LISTEN = "127.0.0.1:8082"
DEFAULT_GRPC_LISTEN = "127.0.0.1:50051"
# Calls served at once by each worker process (gRPC threads, waitress threads). A call that
# waits for its sequence's batch holds its thread, so a batch is at most this many calls:
# enough threads let 64 concurrent clients on one sequence share each transaction (with 8
# and 16, 64 clients got 4.7 and 7.2 allocations per WAL flush; with 64, 14 and 7-10).
DEFAULT_GRPC_WORKERS = 64
DEFAULT_THREADS = 64
DEFAULT_POOL_SIZE = 10
DEFAULT_SHUTDOWN_GRACE = 10.0
DEFAULT_PURGE_INTERVAL = 300.0
EMBEDDED_DBNAME = "kahuna"


class Interface(Protocol):
    """One thing `serve` runs beside the others: the REST server, the gRPC server, the purge."""

    name: str
    addresses: list[str]  # where it listens, for the start line (empty for a background task)

    def start(self) -> None:
        """Bind and serve in background threads; raise (e.g. OSError) if it cannot."""

    def stop(self, grace: float) -> None:
        """Refuse new work, finish the work in flight within `grace` seconds, release everything."""

    def alive(self) -> bool:
        """Whether it still serves; `serve` exits with 1 when one dies on its own."""


@dataclass(frozen=True)
class ServeConfig:
    dsn: str | None
    data_dir: Path
    rest_listen: str | None = DEFAULT_REST_LISTEN
    threads: int = DEFAULT_THREADS
    pool_size: int = DEFAULT_POOL_SIZE
    pool_timeout: float = PoolSettings.timeout
    statement_timeout_ms: int = PoolSettings.statement_timeout_ms
    max_body_bytes: int = 64 * 1024
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    purge_interval: float = DEFAULT_PURGE_INTERVAL  # seconds; 0 disables the purge
    grpc_listen: str | None = DEFAULT_GRPC_LISTEN
    grpc_workers: int = DEFAULT_GRPC_WORKERS
    group_allocation: bool = True
    workers: int = 1  # processes serving each interface on the same ports
    reuse_port: bool = False  # set for the worker processes, which share their ports


class ServeError(RuntimeError):
    """The service cannot start: a message for the user, no traceback."""


def default_data_dir() -> Path:
    """Root: /var/lib/kahuna-pg (the server runs as `postgres`, which cannot enter /root).
    Anyone else: $XDG_DATA_HOME/kahuna-pg, else ~/.local/share/kahuna-pg."""
    if os.geteuid() == 0:
        return Path("/var/lib/kahuna-pg")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kahuna-pg"


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT, with [brackets] around an IPv6 host; PORT 0 picks a free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def masked(dsn: str) -> str:
    """The connection string with its password hidden, for logs."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable connection string)"
    if "password" in params:
        params["password"] = "***"
    return conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


# -- the database ----------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    dsn: str
    description: str  # for the start line
    schema_version: str


def _migrate(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        applied = schema.migrate(conn)
        version = schema.installed_version(conn) or "?"
    if applied:
        log.info("schema migrated to kahuna %s: %s", version, ", ".join(applied))
    return version


@contextmanager
def open_database(config: ServeConfig) -> Iterator[Database]:
    """The database to serve, migrated to the latest schema; the embedded one is stopped at exit."""
    if config.dsn:
        yield Database(config.dsn, "given by --dsn", _migrate(config.dsn))
        return
    cluster = EmbeddedPostgres(config.data_dir)  # Unix socket in <data-dir>/run, no TCP
    adopted = cluster.running()
    if adopted:
        # Left running by a service that was killed: use it, and stop it at exit as ours.
        log.warning("embedded PostgreSQL in %s was already running: using it", config.data_dir)
    else:
        first = not cluster.initialized()
        log.info("%s embedded PostgreSQL in %s", "creating" if first else "starting", config.data_dir)
        cluster.start()
    try:
        with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DBNAME,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DBNAME)))
        dsn = cluster.conninfo(EMBEDDED_DBNAME)
        yield Database(dsn, f"embedded, data directory {config.data_dir}", _migrate(dsn))
    finally:
        log.info("stopping embedded PostgreSQL")
        cluster.stop()


# -- background purge of expired idempotency keys -----------------------------------------


class IdempotencyKeyPurge:
    """Calls kahuna.purge_idempotency_keys() every `interval` seconds until it finds none left."""

    name = "idempotency-key purge"

    def __init__(self, pool: ConnectionPool, interval: float) -> None:
        self.addresses: list[str] = []  # listens nowhere
        self.pool = pool
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="purge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, grace: float) -> None:
        self._stop.set()
        self._thread.join(grace)

    def purge(self) -> int:
        total = 0
        with self.pool.connection() as conn:
            while not self._stop.is_set():
                row = conn.execute("SELECT kahuna.purge_idempotency_keys()").fetchone()
                if not row or not row[0]:
                    break
                total += row[0]
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if purged := self.purge():
                    log.info("purged %d expired idempotency key(s)", purged)
            except (psycopg.Error, PoolTimeout) as exc:
                # The database may be away for a while; the next round tries again.
                log.warning("idempotency-key purge failed: %s", exc)


# -- composition ---------------------------------------------------------------------


def build_interfaces(config: ServeConfig, client: SequenceClient) -> list[Interface]:
    """The network interfaces to run; each gets the one shared client."""
    from kahuna_pg.rest import create_app
    from kahuna_pg.rest_server import RestServer

    interfaces: list[Interface] = []
    if config.rest_listen:
        host, port = parse_listen(config.rest_listen)
        app = create_app(client, max_body_bytes=config.max_body_bytes)
        interfaces.append(
            RestServer(
                app,
                host,
                port,
                threads=config.threads,
                max_body_bytes=config.max_body_bytes,
                reuse_port=config.reuse_port,
            )
        )
    if config.grpc_listen:
        from kahuna_pg.grpc_api import GrpcServer

        listen = config.grpc_listen
        interfaces.append(
            built("gRPC", lambda: GrpcServer(client, listen, workers=config.grpc_workers, reuse_port=config.reuse_port))
        )
    return interfaces


def built(name: str, factory: Callable[[], Interface]) -> Interface:
    """`factory()`, for a server that binds its port when built: OSError becomes a ServeError."""
    try:
        return factory()
    except OSError as exc:
        raise ServeError(f"{name} cannot listen: {exc}") from None


def _stop_all(components: list[Interface], grace: float) -> None:
    """Stop every component at once, so that the grace period is shared, not summed."""
    threads = [threading.Thread(target=c.stop, args=(grace,), name=f"stop {c.name}") for c in components]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may; a caller elsewhere sets `stop` itself

    def handler(signum: int, frame: object) -> None:
        if not stop.is_set():
            log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve(config: ServeConfig, stop: threading.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or `stop` is set); 0 after a clean stop, 1 if an interface died."""
    if not (config.rest_listen or config.grpc_listen):
        # A usage error: said before the database is opened (or an embedded one created).
        raise ServeError("nothing to serve: every interface is turned off (--no-rest and --no-grpc)")
    stop = stop or threading.Event()
    _install_signal_handlers(stop)
    if config.workers > 1:
        from kahuna_pg.workers import supervise

        return supervise(config, stop)
    return serve_in_process(config, stop)


def serve_in_process(config: ServeConfig, stop: threading.Event) -> int:
    """Every interface in this process, around one shared client."""
    code = 0
    with ExitStack() as stack:
        database = stack.enter_context(open_database(config))
        settings = PoolSettings(
            min_size=min(2, config.pool_size),
            max_size=config.pool_size,
            timeout=config.pool_timeout,
            statement_timeout_ms=config.statement_timeout_ms,
            group_allocation=config.group_allocation,
        )
        client = stack.enter_context(SequenceClient.connect(database.dsn, settings))
        components = build_interfaces(config, client)
        if not components:
            raise ServeError("nothing to serve: every interface is turned off")
        if config.purge_interval > 0:
            components.append(IdempotencyKeyPurge(client.pool, config.purge_interval))
        started: list[Interface] = []
        stack.callback(_stop_all, started, config.shutdown_grace)
        for component in components:
            try:
                component.start()
            except OSError as exc:
                raise ServeError(f"{component.name} cannot listen: {exc}") from None
            started.append(component)
        where = ", ".join(f"{c.name} on {a}" for c in started for a in c.addresses)
        # A worker process of `--workers N` is one of many: the supervisor logs the start line.
        log.log(
            logging.DEBUG if config.reuse_port else logging.INFO,
            "kahuna-pg serving %s; database %s (%s), kahuna schema %s; pool of %d connections",
            where,
            masked(database.dsn),
            database.description,
            database.schema_version,
            config.pool_size,
        )
        while not stop.wait(0.5):
            if dead := [c.name for c in started if not c.alive()]:
                log.error("%s stopped unexpectedly: shutting down", ", ".join(dead))
                code = 1
                break
    log.info("stopped")
    return code


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:
        # psycopg_pool logs every connection it lends at INFO.
        logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
