"""The `kahuna-pg` command line: `migrate` (and, as they arrive, `serve` and `bench`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kahuna-pg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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
    except (psycopg.Error, RuntimeError) as exc:
        print(f"kahuna-pg {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
