"""The SQL benchmark of kahuna-pg: the installed kahuna_* functions against the hardware's floors.

    .venv/bin/python benchmarks/sql_bench.py                  # the full run, about 8 minutes
    .venv/bin/python benchmarks/sql_bench.py -T 3 --clients 1,16 --cases next_no_key,plain_update

Starts a private PostgreSQL cluster (kahuna_pg.embedded) in a temporary directory with durable
settings (fsync, synchronous_commit and full_page_writes on), installs kahuna with
`kahuna_pg.migrate`, creates the sequences, then runs pgbench (-n -M prepared, one custom
script of benchmarks/pgbench/ per case) for every case at every client count, on one hot
sequence and on many (each call picks one at random). It prints transactions per second and
the ratio to the plain `UPDATE ... RETURNING` of one row of a logged table measured at the
same client count and spread, which is the reference: the cases of one group run one after
the other, so that the ratio is a side-by-side measurement on a shared, noisy machine, where
absolute figures are not. The cluster is removed at the end, also on Ctrl-C.

A CHECKPOINT precedes every run, and no other checkpoint is due during one. `--rounds N`
repeats every group N times, interleaved, and reports medians: use it when the machine is busy.

`--variant NAME=FILE.sql[+FILE.sql...]` measures a change of the SQL without touching sql/:
the kahuna cases also run in a database of their own where the files are applied after the
install, in order, next to the real functions of the same group. benchmarks/variants/ holds
the experiments of issue 2: no_search_path.sql (every SET search_path removed: unsafe, a
measurement only), generic_plans.sql, row_lock.sql and no_lock.sql (the advisory lock
replaced by SELECT ... FOR UPDATE, always or only with a key) and inline_validation.sql (the
validation helpers inlined too; the earlier recommended changes are in sql/ now). The
row_lock and no_lock files patch the installed kahuna.try_reserve and stop with "this variant
is out of date" once the line they replace has changed. For example:

    .venv/bin/python benchmarks/sql_bench.py -T 5 --rounds 3 --sequences 1 --clients 1,64 \
        --cases next_no_key,next_fresh_key,plain_update \
        --variant row_lock=benchmarks/variants/row_lock.sql \
        --variant inline=benchmarks/variants/inline_validation.sql
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import psycopg

from kahuna_pg import migrate
from kahuna_pg.embedded import EmbeddedPostgres, find_bindir

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "pgbench"
DATABASE = "bench"
REFERENCE = "plain_update"


@dataclass(frozen=True)
class Case:
    key: str  # also the name of its pgbench script
    label: str
    kahuna: bool  # measures kahuna functions (so it also runs in each variant database)


CASES: tuple[Case, ...] = (
    Case("next_no_key", "kahuna_next, no key", kahuna=True),
    Case("next_fresh_key", "kahuna_next, fresh key", kahuna=True),
    Case("next_replayed_key", "kahuna_next, replayed key", kahuna=True),
    Case("reserve_100", "kahuna_reserve(..., 100)", kahuna=True),
    Case("next_ephemeral", "kahuna_next, Ephemeral", kahuna=True),
    Case("native_nextval", "floor: native nextval", kahuna=False),
    Case(REFERENCE, "floor: plain UPDATE", kahuna=False),
)

# The targets of issue 2: (case, sequences, clients or None for every count, minimum ratio).
TARGETS: tuple[tuple[str, int, int | None, float], ...] = (
    ("next_no_key", 1, 1, 0.9),
    ("next_no_key", 1, 64, 1.0),
    ("next_fresh_key", 1, None, 0.7),
)

# Durable, as in production: every commit is flushed. Checkpoints happen only when the
# benchmark asks (before each case), so that none lands in the middle of one.
SERVER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "checkpoint_timeout": "1h",
    "max_wal_size": "8GB",
}


@dataclass
class Result:
    case: str
    database: str  # DATABASE, or the variant's name
    sequences: int
    clients: int
    tps: list[float] = field(default_factory=list)  # one per round
    latency_ms: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median_tps(self) -> float | None:
        return statistics.median(self.tps) if self.tps else None


@dataclass(frozen=True)
class Variant:
    name: str
    paths: tuple[Path, ...]  # applied in order, after the install

    @property
    def database(self) -> str:
        return "variant_" + re.sub(r"[^a-z0-9_]", "_", self.name.lower())


# -- set-up -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_database(cluster: EmbeddedPostgres, name: str, sequences: int, variant: Variant | None) -> None:
    """A database with kahuna installed (and the variant applied), and the benchmark's data."""
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(cluster.conninfo(name), autocommit=True) as conn:
        migrate(conn)
        if variant is not None:
            for path in variant.paths:
                conn.execute(path.read_text().encode())
        with conn.transaction():
            conn.execute("CREATE SCHEMA bench")
            conn.execute("CREATE TABLE bench.counters (id integer PRIMARY KEY, v bigint NOT NULL)")
            conn.execute("INSERT INTO bench.counters SELECT g, 0 FROM generate_series(1, %s) g", (sequences,))
            for i in range(1, sequences + 1):
                conn.execute(f"CREATE SEQUENCE bench.s{i}")
            for durability in ("persistent", "ephemeral"):
                conn.execute(
                    "SELECT count(kahuna_create('seq-' || g, durability => %s)) FROM generate_series(1, %s) g",
                    (durability, sequences),
                )
            # The key that next_replayed_key replays, allocated once on every sequence.
            conn.execute(
                "SELECT count(kahuna_next('seq-' || g, 'replayed')) FROM generate_series(1, %s) g", (sequences,)
            )
        conn.execute("VACUUM ANALYZE")


def server_version(cluster: EmbeddedPostgres) -> str:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def checkpoint(cluster: EmbeddedPostgres) -> None:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


# -- pgbench ------------------------------------------------------------------------------

_TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)


def run_pgbench(
    cluster: EmbeddedPostgres, database: str, case: Case, sequences: int, clients: int, args: argparse.Namespace
) -> tuple[float, float | None]:
    """One pgbench run; returns (tps, average latency in ms) or raises RuntimeError."""
    argv = [
        str(cluster.bindir / "pgbench"),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(min(clients, args.jobs)),
        "-T",
        str(args.duration),
        "-D",
        f"nseq={sequences}",
        "-f",
        str(SCRIPTS / f"{case.key}.sql"),
        "-h",
        cluster.host,
        "-p",
        str(cluster.port),
        "-U",
        cluster.user,
        database,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=args.duration + 300)
    tps = _TPS.search(out.stdout)
    if out.returncode != 0 or not tps:
        detail = (out.stderr.strip() or out.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"pgbench exited {out.returncode}: {' | '.join(detail)}")
    latency = _LATENCY.search(out.stdout)
    return float(tps[1]), float(latency[1]) if latency else None


# -- report -------------------------------------------------------------------------------


def ratio_to_reference(results: dict[tuple[str, str, int, int], Result], r: Result) -> float | None:
    ref = results.get((REFERENCE, DATABASE, r.sequences, r.clients))
    if ref is None or ref.median_tps is None or r.median_tps is None:
        return None
    return r.median_tps / ref.median_tps


def row_label(case: Case, variant: str | None) -> str:
    return case.label if variant is None else f"  {variant}: {case.label}"


def print_table(
    results: dict[tuple[str, str, int, int], Result],
    cases: Sequence[Case],
    databases: dict[str, str | None],
    spreads: Sequence[int],
    clients: Sequence[int],
) -> None:
    width = max(len(row_label(c, v)) for c in cases for v in databases.values())
    for sequences in spreads:
        title = "1 hot sequence" if sequences == 1 else f"{sequences} sequences (each call picks one at random)"
        print(f"\n{title}: transactions per second, and the ratio to the plain UPDATE")
        header = " ".join(f"{f'{n} client' + ('s' if n > 1 else ''):>19}" for n in clients)
        print(f"{'case':<{width}} {header}")
        for case in cases:
            for database, variant in databases.items() if case.kahuna else [(DATABASE, None)]:
                cells = []
                for n in clients:
                    r = results.get((case.key, database, sequences, n))
                    if r is None:
                        cells.append(f"{'':>19}")
                    elif r.error or r.median_tps is None:
                        cells.append(f"{'failed':>19}")
                    else:
                        ratio = ratio_to_reference(results, r)
                        text = f"{r.median_tps:9.0f} {f'{ratio:.2f}x' if ratio is not None else '':>7}"
                        cells.append(f"{text:>19}")
                print(f"{row_label(case, variant):<{width}} {' '.join(cells)}")


def print_targets(results: dict[tuple[str, str, int, int], Result], clients: Sequence[int]) -> None:
    lines = []
    for key, sequences, n_clients, minimum in TARGETS:
        for n in [n_clients] if n_clients is not None else clients:
            r = results.get((key, DATABASE, sequences, n))
            ratio = ratio_to_reference(results, r) if r else None
            if ratio is None:
                continue
            verdict = "met" if ratio >= minimum else "NOT met"
            lines.append(f"  {key} on 1 hot sequence, {n} client(s): {ratio:.2f}x, target >= {minimum}x: {verdict}")
    if lines:
        print("\nTargets of issue 2 (ratios of this run, on this machine):")
        print("\n".join(lines))


# -- main ---------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark kahuna's SQL functions against native nextval and a plain UPDATE (pgbench).",
    )
    parser.add_argument("-T", "--duration", type=int, default=10, help="seconds per pgbench run (default 10)")
    parser.add_argument("--clients", type=int_list, default=[1, 16, 64], help="client counts (default 1,16,64)")
    parser.add_argument(
        "--sequences", type=int_list, default=[1, 1000], help="spreads: how many sequences (default 1,1000)"
    )
    parser.add_argument("-j", "--jobs", type=int, default=4, help="most pgbench threads (-j min(clients, JOBS))")
    parser.add_argument("--rounds", type=int, default=1, help="run every group ROUNDS times; report the median")
    parser.add_argument(
        "--cases",
        default=",".join(c.key for c in CASES),
        help=f"comma-separated cases (default all): {', '.join(c.key for c in CASES)}",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FILE[+FILE...]",
        help="also run the kahuna cases in a database where the FILEs (SQL) are applied after the install",
    )
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument("--base-dir", type=Path, help="where the temporary cluster goes (default: a new /tmp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's directory at the end")
    args = parser.parse_args(argv)
    known = {c.key: c for c in CASES}
    unknown = [k for k in args.cases.split(",") if k not in known]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    wanted = set(args.cases.split(","))
    args.case_list = [c for c in CASES if c.key in wanted]
    variants = []
    for spec in args.variant:
        name, sep, files = spec.partition("=")
        paths = tuple(Path(f) for f in files.split("+"))
        if not sep or not name or not all(p.is_file() for p in paths):
            parser.error(f"--variant wants NAME=FILE[+FILE...] with existing files, got {spec!r}")
        variants.append(Variant(name, paths))
    args.variants = variants
    if min(args.clients, default=0) < 1 or min(args.sequences, default=0) < 1 or args.duration < 1:
        parser.error("clients, sequences and duration must be positive")
    return args


@contextmanager
def private_cluster(args: argparse.Namespace) -> Iterator[EmbeddedPostgres]:
    """A started cluster in a temporary directory, stopped and removed at the end, even on Ctrl-C."""
    base = Path(tempfile.mkdtemp(prefix="kahuna-sql-bench-", dir=args.base_dir or "/tmp"))
    settings = {**SERVER_SETTINGS, "max_connections": str(max(100, max(args.clients) + 20))}
    cluster = EmbeddedPostgres(base, port=free_port(), bindir=find_bindir(), settings=settings)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop("fast" if args.keep else "immediate")
        except Exception as exc:
            print(f"could not stop the cluster in {base}: {exc}", file=sys.stderr)
        if args.keep:
            print(f"cluster kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and kill both end in the clean-up, even when started with SIGINT ignored (nohup, &).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    cases: list[Case] = args.case_list
    # database -> the variant it holds (None: the installed functions as they are)
    databases: dict[str, str | None] = {DATABASE: None, **{v.database: v.name for v in args.variants}}
    results: dict[tuple[str, str, int, int], Result] = {}
    runs = (
        sum(len(databases) if c.kahuna else 1 for c in cases for _ in args.sequences for _ in args.clients)
        * args.rounds
    )
    print(
        f"kahuna-pg SQL benchmark: {len(cases)} cases x {len(args.sequences)} spreads x {len(args.clients)} "
        f"client counts x {len(databases)} database(s) = {runs} runs of {args.duration} s "
        f"(about {runs * (args.duration + 2) / 60:.0f} minutes)",
        flush=True,
    )
    started = time.monotonic()
    interrupted = False
    try:
        with private_cluster(args) as cluster:
            version = server_version(cluster)
            most = max(args.sequences)
            create_database(cluster, DATABASE, most, None)
            for variant in args.variants:
                create_database(cluster, variant.database, most, variant)
            print(
                f"PostgreSQL {version}, nproc {os.cpu_count()}, pgbench -n -M prepared -j min(clients, {args.jobs}), "
                f"settings: {', '.join(f'{k}={v}' for k, v in SERVER_SETTINGS.items())}",
                flush=True,
            )
            for round_ in range(args.rounds):
                for sequences in args.sequences:
                    for clients in args.clients:
                        for case in cases:
                            for database, variant in databases.items() if case.kahuna else [(DATABASE, None)]:
                                key = (case.key, database, sequences, clients)
                                r = results.setdefault(key, Result(case.key, database, sequences, clients))
                                checkpoint(cluster)
                                try:
                                    tps, latency = run_pgbench(cluster, database, case, sequences, clients, args)
                                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                                    r.error = str(exc)
                                    print(f"  {case.key} {database} x{sequences} c{clients}: {exc}", flush=True)
                                    continue
                                r.tps.append(tps)
                                if latency is not None:
                                    r.latency_ms.append(latency)
                                print(
                                    f"  round {round_ + 1}, {sequences} seq, {clients:>2} clients, "
                                    f"{row_label(case, variant).strip()}: {tps:.0f} tps",
                                    flush=True,
                                )
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: the cluster is removed; partial results follow", file=sys.stderr)
        # the run cut short has neither a figure nor an error: leave its cell empty
        results = {k: r for k, r in results.items() if r.tps or r.error}
    print_table(results, cases, databases, args.sequences, args.clients)
    print_targets(results, args.clients)
    print(f"\n({(time.monotonic() - started) / 60:.1f} minutes)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results.values()], indent=2) + "\n")
    return 130 if interrupted else 1 if any(r.error for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
