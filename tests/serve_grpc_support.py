"""Helpers of the tests of `kahuna-pg serve` with both interfaces and worker processes.

A gRPC client of a `ServeProcess` (Sequencer, health and reflection stubs over one channel),
readiness by gRPC alone (for `--no-rest`), ServedFrom, and the service's processes as
/proc shows them (psutil is not installed).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from rest_support import ServeProcess

from kahuna_pg.proto import kahuna_pb2 as pb
from kahuna_pg.proto import kahuna_pb2_grpc as pb_grpc

GRPC_TIMEOUT = 30.0  # seconds: a call that takes longer counts as hanging
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        if value := condition():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


class Grpc:
    """Stubs of one channel to `target`. With `own_connection`, the channel opens a TCP
    connection of its own instead of sharing grpc's process-wide one to the same target, so
    that the kernel picks a worker process for it afresh (SO_REUSEPORT spreads connections)."""

    def __init__(self, target: str, own_connection: bool = False) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
        self.channel = grpc.insecure_channel(target, options=options)
        self.sequencer = pb_grpc.SequencerStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.reflection = reflection_pb2_grpc.ServerReflectionStub(self.channel)

    def __enter__(self) -> Grpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def create(self, name: str, **fields: Any) -> pb.GrpcSequenceResponse:
        fields.setdefault("Increment", 1)  # gRPC callers always send it: unset is InvalidInput
        return self.sequencer.CreateSequence(pb.GrpcCreateSequenceRequest(Name=name, **fields), timeout=GRPC_TIMEOUT)

    def get(self, name: str, **fields: Any) -> pb.GrpcSequenceResponse:
        return self.sequencer.GetSequence(pb.GrpcGetSequenceRequest(Name=name, **fields), timeout=GRPC_TIMEOUT)

    def next(self, name: str, **fields: Any) -> pb.GrpcSequenceAllocationResponse:
        request = pb.GrpcNextSequenceRequest(Name=name, **fields)
        return self.sequencer.NextSequenceValue(request, timeout=GRPC_TIMEOUT)

    def reserve(self, name: str, count: int, **fields: Any) -> pb.GrpcSequenceAllocationResponse:
        request = pb.GrpcReserveSequenceRangeRequest(Name=name, Count=count, **fields)
        return self.sequencer.ReserveSequenceRange(request, timeout=GRPC_TIMEOUT)

    def health_status(self, service: str = "") -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(self.health.Check(request, timeout=GRPC_TIMEOUT).status)

    def services(self) -> set[str]:
        """The services that server reflection lists."""
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = self.reflection.ServerReflectionInfo(iter([request]), timeout=GRPC_TIMEOUT)
        return {service.name for service in answer.list_services_response.service}


def wait_grpc_ready(proc: ServeProcess, timeout: float = 60.0) -> ServeProcess:
    """Wait until the gRPC health service answers SERVING (the way to wait with `--no-rest`)."""
    deadline = time.monotonic() + timeout
    with Grpc(proc.grpc_target) as client:
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise AssertionError(f"kahuna-pg serve exited with {proc.proc.returncode}:\n{proc.log()}")
            try:
                if client.health_status() == SERVING:
                    return proc
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.1)
    raise AssertionError(f"gRPC of kahuna-pg serve did not come up in {timeout}s:\n{proc.log()}")


def refused(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:`port` is refused (nothing listens there)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def served_from_pid(served_from: str) -> int:
    """The pid of ServedFrom ("<hostname>/<pid>"), which must name this host."""
    host, _, pid = served_from.rpartition("/")
    assert host == socket.gethostname() and pid.isdigit(), served_from
    return int(pid)


def answering_pids(target: str, want: int, calls: int = 40, timeout: float = 60.0) -> set[int]:
    """The pids of the processes that answer gRPC calls on `target`, each call on a new
    connection: at least `calls` calls, and more until `want` pids have answered or `timeout`
    has passed (a worker may still be starting)."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    made = 0
    while made < calls or (len(pids) < want and time.monotonic() < deadline):
        with Grpc(target, own_connection=True) as client:
            pids.add(served_from_pid(client.get("no-such-sequence").ServedFrom))
        made += 1
    return pids


# -- processes under /proc ---------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": the comm may hold spaces
    return fields[0], int(fields[1])


def gone(pid: int) -> bool:
    """Whether the process has ended (absent, or a zombie that nobody has reaped yet)."""
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def children(pid: int) -> set[int]:
    """The live child processes of `pid`."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid and stat[0] not in "ZX":
            found.add(int(entry.name))
    return found


def worker_pids(supervisor: int) -> set[int]:
    """The worker processes of a `serve --workers N` supervisor: its multiprocessing spawn
    children (its other child is multiprocessing's resource tracker)."""
    workers = set()
    for pid in children(supervisor):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"spawn_main" in cmdline:
            workers.add(pid)
    return workers
