"""`kahuna-pg serve --workers N`: N processes serving each interface on the same ports.

One Python process is bound by its interpreter lock to about one core of request handling,
so the service runs N worker processes. The supervisor (this module, in the process the user
started) opens the database once (starting the embedded server and migrating), reserves the
ports, and starts the workers; each worker runs every interface with SO_REUSEPORT on those
ports, around its own pool, and the kernel spreads new connections among them. SIGINT or
SIGTERM to the supervisor stops every worker gracefully, then the database.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from contextlib import ExitStack
from dataclasses import replace
from multiprocessing.process import BaseProcess

from kahuna_pg.rest_server import reuse_port_socket
from kahuna_pg.service import ServeConfig, ServeError, configure_logging, masked, open_database, parse_listen

log = logging.getLogger("kahuna_pg.serve")


def _reserve(name: str, listen: str | None, holders: list[socket.socket]) -> str | None:
    """HOST:PORT with a port of 0 made concrete. The supervisor keeps a bound (not listening)
    SO_REUSEPORT socket on it, so the port stays ours while workers come and go; a socket that
    does not listen receives no connections."""
    if not listen:
        return None
    host, port = parse_listen(listen)
    try:
        # First a plain bind: it fails if anyone holds the port, even another service's
        # SO_REUSEPORT socket, which a SO_REUSEPORT bind would silently join.
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
            port = probe.getsockname()[1]
        holder = reuse_port_socket(host, port, listen=False)
    except OSError as exc:
        raise ServeError(f"{name} cannot listen on {listen}: {exc}") from None
    holders.append(holder)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _worker(config: ServeConfig, level: str) -> None:
    """A worker process: every interface in process, on the shared ports, until SIGTERM."""
    from kahuna_pg.service import serve_in_process

    configure_logging(level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C reaches the whole process group
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(), stop), name="parent watch", daemon=True).start()
    raise SystemExit(serve_in_process(config, stop))


def _stop_when_orphaned(parent: int, stop: threading.Event) -> None:
    """Stop gracefully if the supervisor dies without stopping us (SIGKILL, a crash): a worker
    left behind would hold the ports and the database connections of a service that is gone."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.error("the supervisor (pid %d) is gone: stopping", parent)
            stop.set()


def supervise(config: ServeConfig, stop: threading.Event) -> int:
    code = 0
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    with ExitStack() as stack:
        database = stack.enter_context(open_database(config))
        holders: list[socket.socket] = []
        stack.callback(lambda: [h.close() for h in holders])
        worker_config = replace(
            config,
            dsn=database.dsn,
            workers=1,
            reuse_port=True,
            rest_listen=_reserve("REST", config.rest_listen, holders),
            grpc_listen=_reserve("gRPC", config.grpc_listen, holders),
        )
        if not (worker_config.rest_listen or worker_config.grpc_listen):
            raise ServeError("nothing to serve: every interface is turned off")
        # spawn, not fork: the parent has threads (the pool's, psycopg's) that fork would copy badly.
        context = multiprocessing.get_context("spawn")
        workers: list[BaseProcess] = []
        stack.callback(_stop_workers, workers, config.shutdown_grace)
        for number in range(config.workers):
            worker = context.Process(target=_worker, args=(worker_config, level), name=f"kahuna-pg worker {number}")
            worker.start()
            workers.append(worker)
        where = ", ".join(
            f"{name} on {scheme}://{listen}"
            for name, scheme, listen in (
                ("REST", "http", worker_config.rest_listen),
                ("gRPC", "grpc", worker_config.grpc_listen),
            )
            if listen
        )
        log.info(
            "kahuna-pg serving %s; database %s (%s), kahuna schema %s; %d worker processes (pids %s), "
            "each with a pool of %d connections",
            where,
            masked(database.dsn),
            database.description,
            database.schema_version,
            len(workers),
            ", ".join(str(w.pid) for w in workers),
            config.pool_size,
        )
        while not stop.wait(0.5):
            if dead := [w for w in workers if not w.is_alive()]:
                log.error("%s exited with %s: shutting down", dead[0].name, dead[0].exitcode)
                code = 1
                break
    log.info("stopped")
    return code


def _stop_workers(workers: list[BaseProcess], grace: float) -> None:
    """SIGTERM to every worker (a graceful stop), then wait; kill what outlives the grace period."""
    for worker in workers:
        if worker.is_alive() and worker.pid:
            os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.join(grace + 5)
        if worker.is_alive():
            log.error("%s did not stop in time: killing it", worker.name)
            worker.kill()
            worker.join()
