"""The gRPC interface: Kahuna's `Sequencer` service over the shared SequenceClient.

Each RPC is one call of `SequenceClient` and a translation of its `Result` into Kahuna's
messages; every rule (defaults, validation, durability, allocation) is decided by the SQL
functions. Outcomes travel in `Type` with gRPC status OK, as in Kahuna. Beside `Sequencer`
the server offers the standard health service (SERVING while the database answers) and
server reflection, so that generic tools (grpcurl, grpcui) can list and call it.

Standalone: `python -m kahuna_pg.grpc_api --dsn ... [--listen 127.0.0.1:50051]`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kahuna_pg import client as kc
from kahuna_pg.client import Outcome, PoolSettings, Result, SequenceClient
from kahuna_pg.proto import kahuna_pb2 as pb
from kahuna_pg.proto import kahuna_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_WORKERS = 64  # threads; as kahuna_pg.service.DEFAULT_GRPC_WORKERS, which says why
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Sequencer"].full_name  # "Sequencer": no package

# The gRPC enum of each outcome type (CONTRACT.md section 2); REST uses Outcome's string value.
GRPC_TYPE: dict[Outcome, int] = {
    Outcome.SUCCESS: pb.SEQUENCE_SUCCESS,
    Outcome.NOT_FOUND: pb.SEQUENCE_NOT_FOUND,
    Outcome.ALREADY_EXISTS: pb.SEQUENCE_ALREADY_EXISTS,
    Outcome.INVALID_INPUT: pb.SEQUENCE_INVALID_INPUT,
    Outcome.MAX_VALUE_EXCEEDED: pb.SEQUENCE_MAX_VALUE_EXCEEDED,
    Outcome.MUST_RETRY: pb.SEQUENCE_MUST_RETRY,
    Outcome.ABORTED: pb.SEQUENCE_ABORTED,
    Outcome.ERROR: pb.SEQUENCE_ERROR,
}

# The sequence's durability as SQL writes it, on the wire. Input goes the other way as
# str(enum number), which the SQL functions judge ('0'/'1' Persistent, '2' Ephemeral).
GRPC_DURABILITY: dict[str, int] = {"Persistent": pb.SEQUENCE_PERSISTENT, "Ephemeral": pb.SEQUENCE_EPHEMERAL}

NO_REVISION = -1  # GrpcSequenceResponse.Revision without a sequence, as Kahuna answers
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT32_MAX = 2**31 - 1


def epoch_ms(moment: datetime) -> int:
    """Unix epoch milliseconds, in integer arithmetic (a float would round microseconds)."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _elapsed_ms(started: float) -> int:
    return min(int((time.monotonic() - started) * 1000), _INT32_MAX)


def _optional(message: Any, field: str) -> Any:
    """The value of a proto3 `optional` field, or None when unset: the SQL default applies."""
    return getattr(message, field) if message.HasField(field) else None


def sequence_entry(seq: kc.Sequence) -> pb.GrpcSequenceEntry:
    entry = pb.GrpcSequenceEntry(
        Name=seq.name,
        CurrentValue=seq.current_value,
        InitialValue=seq.initial_value,
        Increment=seq.increment,
        Revision=seq.revision,
        Durability=GRPC_DURABILITY[seq.durability],
        # Kahuna's hybrid logical clock; here the row's timestamps, with no node or counter.
        CreatedAtPhysical=epoch_ms(seq.created_at),
        UpdatedAtPhysical=epoch_ms(seq.updated_at),
    )
    if seq.max_value is not None:
        entry.MaxValue = seq.max_value
    return entry


# Kahuna names the node that answered; here it is the host and the worker process, which tells
# an operator (and a test) which of `serve --workers N` answered.
SERVED_FROM = f"{socket.gethostname()}/{os.getpid()}"


def sequence_response(result: Result[kc.Sequence], started: float) -> pb.GrpcSequenceResponse:
    response = pb.GrpcSequenceResponse(ServedFrom=SERVED_FROM, Type=GRPC_TYPE[result.outcome], Revision=NO_REVISION)
    if result.ok and result.value is not None:
        response.Sequence.CopyFrom(sequence_entry(result.value))
        response.Revision = result.value.revision
    response.TimeElapsedMs = _elapsed_ms(started)
    return response


def allocation_response(result: Result[kc.Allocation], started: float) -> pb.GrpcSequenceAllocationResponse:
    response = pb.GrpcSequenceAllocationResponse(ServedFrom=SERVED_FROM, Type=GRPC_TYPE[result.outcome])
    if result.ok and result.value is not None:
        a = result.value
        response.Allocation.CopyFrom(
            pb.GrpcSequenceAllocation(Name=a.name, Start=a.start, End=a.end, Count=a.count, Revision=a.revision)
        )
    response.TimeElapsedMs = _elapsed_ms(started)
    return response


class SequencerServicer(pb_grpc.SequencerServicer):
    """Kahuna's Sequencer: each RPC is one call of the shared client."""

    def __init__(self, client: SequenceClient) -> None:
        self.client = client

    def CreateSequence(
        self, request: pb.GrpcCreateSequenceRequest, context: grpc.ServicerContext
    ) -> pb.GrpcSequenceResponse:
        # Increment goes through as sent: unset reads 0, which SQL answers InvalidInput (as Kahuna).
        return self._sequence(
            lambda: self.client.create(
                request.Name,
                request.InitialValue,
                request.Increment,
                _optional(request, "MaxValue"),
                str(request.Durability),
            )
        )

    def GetSequence(self, request: pb.GrpcGetSequenceRequest, context: grpc.ServicerContext) -> pb.GrpcSequenceResponse:
        return self._sequence(lambda: self.client.get(request.Name, str(request.Durability)))

    def DeleteSequence(
        self, request: pb.GrpcDeleteSequenceRequest, context: grpc.ServicerContext
    ) -> pb.GrpcSequenceResponse:
        return self._sequence(lambda: self.client.delete(request.Name, str(request.Durability)))

    def NextSequenceValue(
        self, request: pb.GrpcNextSequenceRequest, context: grpc.ServicerContext
    ) -> pb.GrpcSequenceAllocationResponse:
        return self._allocation(
            lambda: self.client.next(request.Name, _optional(request, "IdempotencyKey"), str(request.Durability))
        )

    def ReserveSequenceRange(
        self, request: pb.GrpcReserveSequenceRangeRequest, context: grpc.ServicerContext
    ) -> pb.GrpcSequenceAllocationResponse:
        return self._allocation(
            lambda: self.client.reserve(
                request.Name, request.Count, _optional(request, "IdempotencyKey"), str(request.Durability)
            )
        )

    # The client never raises for an outcome; anything it does raise is a bug of ours, which
    # must still reach the caller as a typed Error, never as a stack in a gRPC status.
    def _sequence(self, call: Callable[[], Result[kc.Sequence]]) -> pb.GrpcSequenceResponse:
        started = time.monotonic()
        return sequence_response(self._guard(call), started)

    def _allocation(self, call: Callable[[], Result[kc.Allocation]]) -> pb.GrpcSequenceAllocationResponse:
        started = time.monotonic()
        return allocation_response(self._guard(call), started)

    @staticmethod
    def _guard(call: Callable[[], Result[Any]]) -> Result[Any]:
        try:
            return call()
        except Exception:
            log.exception("gRPC call failed")
            return Result(Outcome.ERROR)


class HealthWatcher:
    """Keeps the health service's status in step with the database, polling SequenceClient.ready()."""

    def __init__(
        self, client: SequenceClient, servicer: health.HealthServicer, services: Sequence[str], interval: float = 1.0
    ) -> None:
        self.client = client
        self.servicer = servicer
        self.services = tuple(services)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kahuna-pg-grpc-health", daemon=True)
        self._serving: bool | None = None
        self._set(False)  # until the database has answered once

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # Not forever: a poll may be waiting for a connection to a database that is away.
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval)

    def _set(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in self.services:
            self.servicer.set(service, status)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                serving, why = self.client.ready()
            except Exception:  # the watcher must outlive any surprise, or health would freeze
                log.exception("health check failed")
                serving, why = False, "health check failed"
            if serving != self._serving and not self._stop.is_set():
                log.info("gRPC health: %s (%s)", "SERVING" if serving else "NOT_SERVING", why)
                self._set(serving)
                self._serving = serving
            self._stop.wait(self.interval)


class GrpcServer:
    """A grpc.server with Sequencer, health and reflection, bound to `listen` (HOST:PORT).

    `start()` serves in background threads; `stop(grace)` stops accepting calls at once, lets
    the calls in flight finish for up to `grace` seconds, and returns when the server is down.
    """

    name = "gRPC"

    def __init__(
        self,
        client: SequenceClient,
        listen: str = DEFAULT_LISTEN,
        workers: int = DEFAULT_WORKERS,
        health_interval: float = 1.0,
        reuse_port: bool = False,
    ) -> None:
        self.client = client
        self.listen = listen
        self.addresses = [f"grpc://{listen}"]
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kahuna-pg-grpc"),
            # grpc on Linux binds with SO_REUSEPORT by default, so a port already taken by another
            # server would "succeed", the two sharing the traffic: only worker processes of one
            # service (reuse_port) may share a port.
            options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
        )
        pb_grpc.add_SequencerServicer_to_server(SequencerServicer(client), self.server)

        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # "" is the server as a whole, which is what most health probes ask about.
        self.watcher = HealthWatcher(client, self.health, ("", SERVICE_NAME), interval=health_interval)

        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self.server,
        )
        try:
            self.port = self.server.add_insecure_port(listen)
        except RuntimeError as exc:  # grpc raises when it cannot bind
            raise OSError(f"gRPC cannot listen on {listen}: {exc}") from exc
        if self.port == 0:
            raise OSError(f"gRPC cannot listen on {listen}")
        self._started = self._stopped = False

    def alive(self) -> bool:
        return self._started and not self._stopped

    def start(self) -> None:
        self.server.start()
        self.watcher.start()
        self._started = True
        log.debug("gRPC listening on %s", self.listen)  # serve's start line says where

    def stop(self, grace: float | None = 10.0) -> None:
        # Health first, so that balancers stop sending while the calls in flight finish.
        self._stopped = True
        self.health.enter_graceful_shutdown()
        self.watcher.stop()
        self.server.stop(grace).wait()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self.server.wait_for_termination(timeout))


# -- standalone runner ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kahuna_pg.grpc_api", description="Serve the gRPC interface alone (no REST)."
    )
    parser.add_argument("--dsn", default=os.environ.get("KAHUNA_PG_DSN"), help="libpq DSN (env KAHUNA_PG_DSN)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help=f"gRPC worker threads (default {DEFAULT_WORKERS})"
    )
    parser.add_argument("--pool-size", type=int, help="database connections at most (default: --workers)")
    parser.add_argument("--statement-timeout-ms", type=int, default=PoolSettings.statement_timeout_ms)
    parser.add_argument("--grace", type=float, default=10.0, help="seconds for calls in flight at shutdown")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.dsn:
        print("--dsn or KAHUNA_PG_DSN is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = PoolSettings(
        max_size=max(args.pool_size or args.workers, 2), statement_timeout_ms=args.statement_timeout_ms
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with SequenceClient.connect(args.dsn, settings) as client:
        try:
            server = GrpcServer(client, listen=args.listen, workers=args.workers)
        except OSError as exc:
            print(exc, file=sys.stderr)
            return 1
        server.start()
        print(f"kahuna-pg gRPC listening on {args.listen} (port {server.port})", flush=True)
        # With a timeout: a signal delivered to one of grpc's threads would not wake an
        # untimed wait of the main thread, where Python runs the handler.
        while not stopping.wait(0.2):
            pass
        server.stop(args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
