"""Throughput of `kahuna-pg serve`, with group allocation on and off, beside its ceilings.

    .venv/bin/python benchmarks/service_bench.py            # about 12 minutes on 2 cores
    .venv/bin/python benchmarks/service_bench.py --seconds 3 --clients 1,64   # a quick look

It starts a private, durable PostgreSQL (fsync and synchronous_commit on), creates one hot
sequence and 1000 others, and starts `kahuna-pg serve` as a user would, twice: with group
allocation and without (`--no-group-allocation`), each figure measured on one right after the
other. The load comes from separate processes: wrk for REST, a multi-process client for
gRPC. For each protocol, spread (one hot sequence, 1000 sequences) and client count it
prints `next` per second, p50 and p99 latency, and allocations per WAL flush (allocations
counted from the sequences' revisions, flushes from pg_stat_wal.wal_sync), then `reserve`
of 1000 values over REST in values per second. The ceilings of the same run: the same
server answering a constant body (REST GET /healthz, gRPC Health/Check: neither touches the
database), and pgbench calling kahuna_next on the hot sequence directly at 64 clients.
Last, one client's latency with and without group allocation, in alternating rounds.
Every rate is also given as a ratio to those ceilings: the machine is shared and noisy, so
only ratios measured side by side mean much.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from kahuna_pg import migrate
from kahuna_pg.embedded import EmbeddedPostgres

HERE = Path(__file__).resolve().parent
SPREAD = {"hot": 1, "1000": 1000}


@dataclass
class Run:
    rate: float  # answers per second (Success only)
    p50_ms: float
    p99_ms: float
    failures: int
    per_flush: float | None = None  # allocations per WAL flush


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the database ---------------------------------------------------------------------------


@contextmanager
def database() -> Iterator[tuple[EmbeddedPostgres, str]]:
    base = Path(tempfile.mkdtemp(prefix="kahuna-pg-bench-"))
    cluster = EmbeddedPostgres(
        base, port=free_port(), tcp_host="127.0.0.1", settings={"max_connections": "400", "shared_buffers": "256MB"}
    )
    cluster.start()
    try:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        dsn = cluster.conninfo("bench")
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
            conn.execute("SELECT kahuna_create('hot')")
            conn.execute("SELECT kahuna_create(format('s%s', lpad(i::text, 4, '0'))) FROM generate_series(0, 999) i")
        yield cluster, dsn
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


class Counters:
    """Allocations (the sum of the sequences' revisions) and WAL flushes (pg_stat_wal.wal_sync).

    A backend reports its WAL statistics at most once a second while busy, and within
    PGSTAT_IDLE_INTERVAL (10 s) of going idle: so a reading waits that long after the last
    load, and a reading taken after one measured run serves as the start of the next.
    """

    SETTLE = 11.0

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.last: tuple[int, int] | None = None

    def read(self) -> tuple[int, int]:
        time.sleep(self.SETTLE)
        (allocations,) = self.conn.execute("SELECT sum(revision)::bigint FROM kahuna.sequences").fetchone()
        (flushes,) = self.conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
        self.last = (int(allocations), int(flushes))
        return self.last

    def invalidate(self) -> None:
        """Some other load ran: the last reading no longer starts the next measured run."""
        self.last = None


# -- the service ----------------------------------------------------------------------------


@dataclass
class Service:
    rest: str
    grpc: str
    process: subprocess.Popen[bytes]


@contextmanager
def service(dsn: str, group: bool, workers: int, extra: list[str]) -> Iterator[Service]:
    rest, grpc_port = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "kahuna_pg", "serve", "--dsn", dsn, "--rest-listen", rest, "--grpc-listen", grpc_port]
    argv += ["--workers", str(workers), *extra]
    if not group:
        argv.append("--no-group-allocation")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(f"http://{rest}/readyz", process)
        yield Service(rest, grpc_port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kahuna-pg serve exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("kahuna-pg serve did not become ready")


# -- load generators ------------------------------------------------------------------------


def wrk(target: str, op: str, sequences: int, clients: int, seconds: float, count: int = 1000) -> Run:
    threads = max(1, min(clients, 2))
    argv = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s"]
    argv += ["-s", str(HERE / "wrk" / "kahuna.lua"), f"http://{target}", "--", op, str(sequences), str(count)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"KAHUNA requests=(\d+) failures=(\d+) seconds=([\d.]+) p50_us=(\d+) p99_us=(\d+)", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests, failures, duration, p50, p99 = (float(g) for g in match.groups())
    return Run((requests - failures) / duration, p50 / 1000, p99 / 1000, int(failures))


def _grpc_client(
    target: str, op: str, sequences: int, threads: int, seconds: float, out: multiprocessing.Queue
) -> None:
    """One client process: `threads` threads calling in a loop over one channel."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from kahuna_pg.proto import kahuna_pb2 as pb
    from kahuna_pg.proto import kahuna_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=30)
    stub, health = pb_grpc.SequencerStub(channel), health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + seconds

    def loop(_: int) -> tuple[list[float], int]:
        rnd, latencies, failures = random.Random(), [], 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if op == "health":
                ok = health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
            else:
                name = "hot" if sequences == 1 else f"s{rnd.randrange(sequences):04d}"
                ok = stub.NextSequenceValue(pb.GrpcNextSequenceRequest(Name=name)).Type == pb.SEQUENCE_SUCCESS
            latencies.append(time.perf_counter() - started)
            failures += not ok
        return latencies, failures

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(loop, range(threads)))
    out.put(([x for lat, _ in results for x in lat], sum(f for _, f in results)))


def grpc_load(target: str, op: str, sequences: int, clients: int, seconds: float) -> Run:
    context = multiprocessing.get_context("spawn")
    processes = max(1, min(clients, 4))
    queue: multiprocessing.Queue = context.Queue()
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    workers = [
        context.Process(target=_grpc_client, args=(target, op, sequences, share, seconds, queue)) for share in shares
    ]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    failures = 0
    for _ in workers:
        lat, failed = queue.get(timeout=seconds + 120)
        latencies += lat
        failures += failed
    for worker in workers:
        worker.join()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return Run((len(latencies) - failures) / seconds, pick(0.50), pick(0.99), failures)


def pgbench(cluster: EmbeddedPostgres, clients: int, seconds: float) -> float:
    script = Path(tempfile.mkdtemp()) / "next.sql"
    script.write_text("SELECT kahuna_next('hot');\n")
    os.chmod(script.parent, 0o755)
    argv = [str(cluster.bindir / "pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 4))]
    argv += ["-T", str(int(seconds)), "-f", str(script), "-h", cluster.host, "-p", str(cluster.port)]
    argv += ["-U", cluster.user, "bench"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    shutil.rmtree(script.parent, ignore_errors=True)
    match = re.search(r"tps = ([\d.]+)", out)
    if not match:
        raise RuntimeError(f"unexpected pgbench output:\n{out}")
    return float(match[1])


# -- the run --------------------------------------------------------------------------------


def measured(counters: Counters, load: Callable[..., Run], *args: object) -> Run:
    allocations, flushes = counters.last or counters.read()
    run = load(*args)
    allocations2, flushes2 = counters.read()
    if flushes2 > flushes:
        run.per_flush = (allocations2 - allocations) / (flushes2 - flushes)
    return run


MODES = ("group", "single")  # group allocation on, and off (--no-group-allocation)
CONSTANT_REST = "ceiling REST constant (GET /healthz) c64"
CONSTANT_GRPC = "ceiling gRPC constant (Health/Check) c64"
PGBENCH = "ceiling pgbench kahuna_next hot c64"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8, help="length of each measurement (default 8)")
    parser.add_argument("--clients", default="1,16,64", help="client counts (default 1,16,64)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="serve --workers (default: cores)")
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=6,
        help="rounds of the one-client latency comparison, group and single in turn (default 6)",
    )
    parser.add_argument(
        "--server-args",
        default="--threads 48 --grpc-workers 48 --pool-size 8",
        help="more arguments for kahuna-pg serve, the same for every configuration",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    extra = args.server_args.split()
    if not shutil.which("wrk"):
        print("wrk is missing: scripts/setup installs it (apt-get install wrk)", file=sys.stderr)
        return 1

    runs: dict[str, Run] = {}

    def record(label: str, run: Run) -> None:
        runs[label] = run
        flush = f"{run.per_flush:7.1f}" if run.per_flush is not None else "      -"
        print(
            f"{label:<44} {run.rate:>10.0f}/s  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms"
            f"  alloc/flush {flush}  failures {run.failures}",
            flush=True,
        )

    loads: dict[str, Callable[..., Run]] = {"REST": wrk, "gRPC": grpc_load}
    with database() as (cluster, dsn):
        counters = Counters(dsn)
        print(f"kahuna-pg serve --workers {args.workers} {' '.join(extra)}; {args.seconds:g} s per figure", flush=True)
        # Both configurations run at once, the idle one costing nothing, so that each figure
        # with group allocation is measured right beside the same figure without it: on a
        # shared machine the load of other work drifts over minutes.
        with service(dsn, True, args.workers, extra) as group, service(dsn, False, args.workers, extra) as single:
            services = {"group": group, "single": single}
            for svc in services.values():
                # Warm up every worker's pool, prepared statements and code paths, so that the
                # first measured figure of a configuration is not also its start-up.
                wrk(svc.rest, "next", SPREAD["1000"], 16, 2)
                grpc_load(svc.grpc, "next", SPREAD["1000"], 16, 2)
            record(CONSTANT_REST, wrk(group.rest, "healthz", 1, 64, args.seconds))
            record(CONSTANT_GRPC, grpc_load(group.grpc, "health", 1, 64, args.seconds))
            counters.invalidate()
            for spread, sequences in SPREAD.items():
                for c in clients:
                    for proto, load in loads.items():
                        for mode in MODES:
                            svc = services[mode]
                            target = svc.rest if proto == "REST" else svc.grpc
                            record(
                                f"{proto} next {spread} c{c} {mode}",
                                measured(counters, load, target, "next", sequences, c, args.seconds),
                            )
            for c in clients:
                for mode in MODES:
                    run = wrk(services[mode].rest, "reserve", 1, c, args.seconds, 1000)
                    run.rate *= 1000  # values per second
                    record(f"REST reserve 1000 hot c{c} {mode} (values)", run)
            # One client's latency, group against single, in short alternating rounds (the
            # order swapped each round): a difference of a few percent is below the drift of
            # one long run after another.
            latency: dict[tuple[str, str], list[float]] = {}
            for proto, load in loads.items():
                for r in range(args.latency_rounds):
                    for mode in MODES if r % 2 == 0 else MODES[::-1]:
                        svc = services[mode]
                        run = load(svc.rest if proto == "REST" else svc.grpc, "next", 1, 1, min(args.seconds, 3))
                        latency.setdefault((proto, mode), []).append(run.p50_ms)
        counters.invalidate()
        pg = pgbench(cluster, 64, args.seconds)
        print(f"{PGBENCH:<44} {pg:>10.0f}/s", flush=True)

    top = max(clients)
    print("\nRatios (same run):")
    for proto, constant in (("REST", CONSTANT_REST), ("gRPC", CONSTANT_GRPC)):
        for mode in MODES:
            run = runs.get(f"{proto} next hot c{top} {mode}")
            if run:
                print(
                    f"  {proto} next hot c{top} {mode}: {run.rate / pg:5.2f}x pgbench ceiling,"
                    f" {run.rate / runs[constant].rate:5.2f}x constant-answer ceiling"
                )
    summary: dict[str, float] = {}
    for proto in loads:
        on, off = median(latency[(proto, "group")]), median(latency[(proto, "single")])
        summary[f"{proto} p50 latency c1 group / single"] = on / off
        print(
            f"  {proto} next hot at 1 client, p50 latency group / single: {on / off:5.2f}x"
            f" (medians of {args.latency_rounds} rounds: {on:.2f} ms / {off:.2f} ms)"
        )
    if args.json:
        figures = {label: vars(run) for label, run in runs.items()} | {PGBENCH: pg} | summary
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
