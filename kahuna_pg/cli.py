"""The `kahuna-pg` command line: `serve` (the service) and `migrate` (the schema alone)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from kahuna_pg import schema

DSN_ENV = "KAHUNA_PG_DSN"


def _add_dsn(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--dsn",
        default=os.environ.get(DSN_ENV),
        required=required and not os.environ.get(DSN_ENV),
        help=f"libpq connection string or URI of the database (env {DSN_ENV})",
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        before = schema.installed_version(conn)
        applied = schema.migrate(conn, schema=args.schema)
        after = schema.installed_version(conn)
    if applied:
        print(f"kahuna {before or '(not installed)'} -> {after}: applied {', '.join(applied)}")
    else:
        print(f"kahuna {after} is installed, the latest: nothing to do")
    return 0


def _env(name: str, default: Any, convert: Callable[[str], Any] = str) -> Any:
    """The default of an option: its environment variable when set, else `default`."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return convert(value)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise SystemExit(f"kahuna-pg: {name}={value!r}: {exc}") from None


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _boolean(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("expected 1/0, true/false, yes/no or on/off")


def _listen(value: str) -> str:
    from kahuna_pg.service import parse_listen

    try:
        parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _add_serve(commands: Any) -> None:
    from kahuna_pg import service

    serve = commands.add_parser(
        "serve",
        help="run the service: REST on 127.0.0.1:8082, on an embedded PostgreSQL unless --dsn is given",
        description="Runs kahuna-pg until SIGINT or SIGTERM, then stops accepting, finishes the requests in "
        "flight, closes the pool and stops the embedded PostgreSQL. Every option can also be set by the "
        "environment variable named in its help; the option wins.",
    )
    serve.add_argument(
        "--dsn",
        default=os.environ.get(DSN_ENV) or None,
        help=f"libpq connection string or URI of the database, migrated to the latest schema at start "
        f"(env {DSN_ENV}); without it, an embedded PostgreSQL under --data-dir",
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=_env("KAHUNA_PG_DATA_DIR", service.default_data_dir(), Path),
        help="directory of the embedded PostgreSQL used when no --dsn is given: created on first use, reused "
        "after; it listens on a Unix socket in it, on no TCP port (env KAHUNA_PG_DATA_DIR; default "
        "/var/lib/kahuna-pg as root, else $XDG_DATA_HOME/kahuna-pg or ~/.local/share/kahuna-pg)",
    )

    def option(flag: str, convert: Callable[[str], Any], default: Any, help: str, **kw: Any) -> None:
        """An option whose default is its environment variable (KAHUNA_PG_ and the flag's name) when set."""
        env = "KAHUNA_PG_" + flag.removeprefix("--").replace("-", "_").upper()
        shown = f"{default:g}" if isinstance(default, float) else default
        serve.add_argument(
            flag, type=convert, default=_env(env, default, convert), help=f"{help} (env {env}; default {shown})", **kw
        )

    option(
        "--rest-listen",
        _listen,
        service.DEFAULT_REST_LISTEN,
        "address of the REST API; port 0 picks a free one",
        metavar="HOST:PORT",
    )
    option("--threads", _positive_int, service.DEFAULT_THREADS, "waitress worker threads: REST requests served at once")
    option(
        "--pool-size",
        _positive_int,
        service.DEFAULT_POOL_SIZE,
        "most database connections, shared by every interface",
    )
    option(
        "--pool-timeout",
        float,
        service.ServeConfig.pool_timeout,
        "seconds to wait for a database connection before answering MustRetry",
    )
    option(
        "--statement-timeout-ms",
        _positive_int,
        service.ServeConfig.statement_timeout_ms,
        "PostgreSQL statement_timeout of every call; a call cut off by it is answered Aborted",
    )
    option(
        "--max-body-bytes",
        _positive_int,
        service.ServeConfig.max_body_bytes,
        "largest REST request body in bytes; a larger one is answered 413",
    )
    option(
        "--shutdown-grace",
        float,
        service.DEFAULT_SHUTDOWN_GRACE,
        "seconds given to requests in flight to finish after SIGINT/SIGTERM",
    )
    option(
        "--purge-interval",
        float,
        service.DEFAULT_PURGE_INTERVAL,
        "seconds between purges of expired idempotency keys; 0 turns the purge off",
    )
    option(
        "--grpc-listen",
        _listen,
        service.DEFAULT_GRPC_LISTEN,
        "address of the gRPC API; port 0 picks a free one",
        metavar="HOST:PORT",
    )
    option("--grpc-workers", _positive_int, service.DEFAULT_GRPC_WORKERS, "gRPC worker threads: calls served at once")
    serve.add_argument(
        "--no-rest",
        action="store_true",
        default=_env("KAHUNA_PG_NO_REST", False, _boolean),
        help="do not serve the REST API (env KAHUNA_PG_NO_REST=1)",
    )
    serve.add_argument(
        "--no-grpc",
        action="store_true",
        default=_env("KAHUNA_PG_NO_GRPC", False, _boolean),
        help="do not serve the gRPC API (env KAHUNA_PG_NO_GRPC=1)",
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=_env("KAHUNA_PG_WORKERS", os.cpu_count() or 1, _positive_int),
        help="processes serving each interface on the same ports (SO_REUSEPORT); each has its own pool "
        "(env KAHUNA_PG_WORKERS; default: the number of cores)",
    )
    serve.add_argument(
        "--no-group-allocation",
        dest="group_allocation",
        action="store_false",
        default=not _env("KAHUNA_PG_NO_GROUP_ALLOCATION", False, _boolean),
        help="run every allocation in a transaction of its own instead of combining the concurrent "
        "allocations of one sequence into one transaction (env KAHUNA_PG_NO_GROUP_ALLOCATION=1)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=_env("KAHUNA_PG_LOG_LEVEL", "info", str.lower),
        help="log level; logs go to standard error (env KAHUNA_PG_LOG_LEVEL; default info)",
    )
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from kahuna_pg import service

    service.configure_logging(args.log_level)
    config = service.ServeConfig(
        dsn=args.dsn,
        data_dir=args.data_dir,
        rest_listen=None if args.no_rest else args.rest_listen,
        grpc_listen=None if args.no_grpc else args.grpc_listen,
        grpc_workers=args.grpc_workers,
        workers=args.workers,
        group_allocation=args.group_allocation,
        threads=args.threads,
        pool_size=args.pool_size,
        pool_timeout=args.pool_timeout,
        statement_timeout_ms=args.statement_timeout_ms,
        max_body_bytes=args.max_body_bytes,
        shutdown_grace=args.shutdown_grace,
        purge_interval=args.purge_interval,
    )
    return service.serve(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kahuna-pg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)

    migrate = commands.add_parser(
        "migrate",
        help="install or upgrade the kahuna schema to the latest version",
        description="Installs or upgrades the kahuna schema; each script is applied once, under a lock.",
    )
    _add_dsn(migrate, required=True)
    migrate.add_argument("--schema", default="public", help="schema of the kahuna_* functions (default public)")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (psycopg.Error, RuntimeError, OSError) as exc:  # a message for the user, not a traceback
        print(f"kahuna-pg {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
