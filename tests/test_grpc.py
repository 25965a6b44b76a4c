"""The gRPC interface over a real channel to a real server process, on a real PostgreSQL.

The server runs as `python -m kahuna_pg.grpc_api` in a subprocess. Most tests share one
server on one database of their own (each test uses its own sequence names); the tests that
lock, break or stop the database start a server on a database or a cluster of their own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from conftest import free_port
from dbtools import private_cluster
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kahuna_pg import migrate
from kahuna_pg.client import Outcome
from kahuna_pg.embedded import EmbeddedPostgres
from kahuna_pg.grpc_api import GRPC_TYPE
from kahuna_pg.proto import kahuna_pb2 as pb
from kahuna_pg.proto import kahuna_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
INT64_MAX = 2**63 - 1
T = TypeVar("T")

SUCCESS = pb.SEQUENCE_SUCCESS
NOT_FOUND = pb.SEQUENCE_NOT_FOUND
ALREADY_EXISTS = pb.SEQUENCE_ALREADY_EXISTS
INVALID_INPUT = pb.SEQUENCE_INVALID_INPUT
MAX_VALUE_EXCEEDED = pb.SEQUENCE_MAX_VALUE_EXCEEDED
MUST_RETRY = pb.SEQUENCE_MUST_RETRY
ABORTED = pb.SEQUENCE_ABORTED
ERROR = pb.SEQUENCE_ERROR
EPHEMERAL = pb.SEQUENCE_EPHEMERAL
PERSISTENT = pb.SEQUENCE_PERSISTENT


# -- a server process ---------------------------------------------------------------------------
class ServerProcess:
    """`python -m kahuna_pg.grpc_api` on a free port of 127.0.0.1, and a channel to it."""

    def __init__(self, dsn: str, *options: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log = tempfile.NamedTemporaryFile(prefix="kahuna-pg-grpc-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kahuna_pg.grpc_api", "--dsn", dsn, "--listen", self.address, *options],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.channel = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=60)
        except grpc.FutureTimeoutError:
            self.close()
            pytest.fail(f"the gRPC server did not start:\n{self.output()}")
        self.stub = pb_grpc.SequencerStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def health_status(self, service: str = "") -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30).status

    def wait_for_health(self, status: int, service: str = "", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.health_status(service)) != status:
            assert time.monotonic() < deadline, f"health stayed {now}, expected {status}:\n{self.output()}"
            time.sleep(0.1)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager would send, and the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def module_dsn(pg_cluster: EmbeddedPostgres) -> Iterator[str]:
    """A database of this module's own, with kahuna installed, for the shared server."""
    name = f"grpc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(pg_cluster.conninfo(name), autocommit=True) as conn:
        migrate(conn)
    yield pg_cluster.conninfo(name)
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def server(module_dsn: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(module_dsn)
    yield proc
    assert proc.terminate() == 0, proc.output()
    proc.close()


@pytest.fixture
def stub(server: ServerProcess) -> pb_grpc.SequencerStub:
    return server.stub


@pytest.fixture
def name() -> str:
    """A sequence name no other test uses."""
    return f"seq-{uuid.uuid4().hex[:12]}"


def create(stub: pb_grpc.SequencerStub, name: str, **fields: Any) -> pb.GrpcSequenceResponse:
    fields.setdefault("Increment", 1)  # gRPC callers always send it: unset is InvalidInput
    return stub.CreateSequence(pb.GrpcCreateSequenceRequest(Name=name, **fields), timeout=30)


def next_value(stub: pb_grpc.SequencerStub, name: str, **fields: Any) -> pb.GrpcSequenceAllocationResponse:
    return stub.NextSequenceValue(pb.GrpcNextSequenceRequest(Name=name, **fields), timeout=30)


def reserve(stub: pb_grpc.SequencerStub, name: str, count: int, **fields: Any) -> pb.GrpcSequenceAllocationResponse:
    return stub.ReserveSequenceRange(pb.GrpcReserveSequenceRangeRequest(Name=name, Count=count, **fields), timeout=30)


def get(stub: pb_grpc.SequencerStub, name: str, **fields: Any) -> pb.GrpcSequenceResponse:
    return stub.GetSequence(pb.GrpcGetSequenceRequest(Name=name, **fields), timeout=30)


def delete(stub: pb_grpc.SequencerStub, name: str, **fields: Any) -> pb.GrpcSequenceResponse:
    return stub.DeleteSequence(pb.GrpcDeleteSequenceRequest(Name=name, **fields), timeout=30)


def allocation(start: int, end: int, count: int, revision: int, name: str) -> pb.GrpcSequenceAllocation:
    return pb.GrpcSequenceAllocation(Name=name, Start=start, End=end, Count=count, Revision=revision)


def assert_failed_sequence(response: pb.GrpcSequenceResponse, type_: int) -> None:
    assert response.Type == type_, pb.GrpcSequenceResponseType.Name(response.Type)
    assert not response.HasField("Sequence")
    assert response.Revision == -1  # Kahuna's "no sequence"
    assert response.TimeElapsedMs >= 0


def assert_failed_allocation(response: pb.GrpcSequenceAllocationResponse, type_: int) -> None:
    assert response.Type == type_, pb.GrpcSequenceResponseType.Name(response.Type)
    assert not response.HasField("Allocation")
    assert response.TimeElapsedMs >= 0


def every_rpc(stub: pb_grpc.SequencerStub, name: str, **fields: Any) -> dict[str, Any]:
    """Each of the five RPCs on `name` with `fields` (Durability, say), and its answer."""
    return {
        "CreateSequence": create(stub, name, **fields),
        "GetSequence": get(stub, name, **fields),
        "NextSequenceValue": next_value(stub, name, **fields),
        "ReserveSequenceRange": reserve(stub, name, 3, **fields),
        "DeleteSequence": delete(stub, name, **fields),
    }


def assert_every_rpc_failed(answers: dict[str, Any], type_: int) -> None:
    for rpc, response in answers.items():
        if isinstance(response, pb.GrpcSequenceResponse):
            assert_failed_sequence(response, type_)
        else:
            assert_failed_allocation(response, type_)
        assert response.Type == type_, rpc


# -- the wire format ----------------------------------------------------------------------------
def test_enum_values_are_kahunas() -> None:
    assert pb.GrpcSequenceResponseType.items() == [
        ("SEQUENCE_SUCCESS", 0),
        ("SEQUENCE_NOT_FOUND", 1),
        ("SEQUENCE_ALREADY_EXISTS", 2),
        ("SEQUENCE_INVALID_INPUT", 3),
        ("SEQUENCE_MAX_VALUE_EXCEEDED", 4),
        ("SEQUENCE_MUST_RETRY", 5),
        ("SEQUENCE_ABORTED", 6),
        ("SEQUENCE_ERROR", 99),
    ]
    assert pb.GrpcSequenceDurability.items() == [
        ("SEQUENCE_DURABILITY_UNSPECIFIED", 0),
        ("SEQUENCE_PERSISTENT", 1),
        ("SEQUENCE_EPHEMERAL", 2),
    ]
    # One gRPC type per outcome of the shared client, each the enum of its name.
    assert set(GRPC_TYPE) == set(Outcome)
    for outcome, number in GRPC_TYPE.items():
        assert pb.GrpcSequenceResponseType.Name(number).replace("_", "") == f"SEQUENCE{outcome.value.upper()}"


def test_the_rpcs_are_kahunas_names() -> None:
    service = pb.DESCRIPTOR.services_by_name["Sequencer"]
    assert service.full_name == "Sequencer"
    assert {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods} == {
        "CreateSequence": ("GrpcCreateSequenceRequest", "GrpcSequenceResponse"),
        "GetSequence": ("GrpcGetSequenceRequest", "GrpcSequenceResponse"),
        "NextSequenceValue": ("GrpcNextSequenceRequest", "GrpcSequenceAllocationResponse"),
        "ReserveSequenceRange": ("GrpcReserveSequenceRangeRequest", "GrpcSequenceAllocationResponse"),
        "DeleteSequence": ("GrpcDeleteSequenceRequest", "GrpcSequenceResponse"),
    }


# -- the happy path -----------------------------------------------------------------------------
def test_create_next_reserve_get_delete(stub: pb_grpc.SequencerStub, name: str) -> None:
    before_ms = int(time.time() * 1000)
    created = create(stub, name, InitialValue=0, Increment=1)
    assert created.Type == SUCCESS
    entry = created.Sequence
    assert (entry.Name, entry.CurrentValue, entry.InitialValue, entry.Increment, entry.Revision) == (name, 0, 0, 1, 0)
    assert entry.Durability == PERSISTENT
    assert not entry.HasField("MaxValue")
    assert created.Revision == 0
    # ServedFrom names the host and the process that answered.
    host, pid = created.ServedFrom.rsplit("/", 1)
    assert host == socket.gethostname() and int(pid) > 0
    # Epoch milliseconds, close to now (the clocks are those of one machine).
    assert abs(entry.CreatedAtPhysical - before_ms) < 60_000
    assert entry.UpdatedAtPhysical >= entry.CreatedAtPhysical
    assert (entry.CreatedAtNode, entry.CreatedAtCounter, entry.UpdatedAtNode, entry.UpdatedAtCounter) == (0, 0, 0, 0)

    first = next_value(stub, name)
    assert first.Type == SUCCESS
    assert first.Allocation == allocation(1, 1, 1, 1, name)  # the contract's reference answer
    assert first.TimeElapsedMs >= 0

    ranged = reserve(stub, name, 5)
    assert ranged.Type == SUCCESS
    assert ranged.Allocation == allocation(2, 6, 5, 2, name)

    got = get(stub, name)
    assert got.Type == SUCCESS
    assert (got.Sequence.CurrentValue, got.Sequence.Revision, got.Revision) == (6, 2, 2)
    assert got.Sequence.CreatedAtPhysical == entry.CreatedAtPhysical
    assert got.Sequence.UpdatedAtPhysical >= entry.UpdatedAtPhysical

    deleted = delete(stub, name)
    assert deleted.Type == SUCCESS
    assert (deleted.Sequence.Name, deleted.Sequence.CurrentValue, deleted.Revision) == (name, 6, 2)  # as it was
    assert_failed_sequence(get(stub, name), NOT_FOUND)


def test_increment_initial_value_and_max_value(stub: pb_grpc.SequencerStub, name: str) -> None:
    created = create(stub, name, InitialValue=-10, Increment=5, MaxValue=10)
    assert created.Type == SUCCESS
    assert created.Sequence.HasField("MaxValue")
    assert (created.Sequence.InitialValue, created.Sequence.Increment, created.Sequence.MaxValue) == (-10, 5, 10)
    assert reserve(stub, name, 3).Allocation == allocation(-5, 5, 3, 1, name)
    # maxValue is inclusive; a run that would pass it allocates nothing.
    assert_failed_allocation(reserve(stub, name, 2), MAX_VALUE_EXCEEDED)
    assert next_value(stub, name).Allocation == allocation(10, 10, 1, 2, name)
    assert_failed_allocation(next_value(stub, name), MAX_VALUE_EXCEEDED)
    assert_failed_allocation(reserve(stub, name, 1), MAX_VALUE_EXCEEDED)
    assert get(stub, name).Sequence.CurrentValue == 10


def test_max_value_zero_is_a_value_not_unset(stub: pb_grpc.SequencerStub, name: str) -> None:
    created = create(stub, name, InitialValue=-1, MaxValue=0)
    assert created.Sequence.HasField("MaxValue") and created.Sequence.MaxValue == 0
    assert next_value(stub, name).Allocation.Start == 0
    assert_failed_allocation(next_value(stub, name), MAX_VALUE_EXCEEDED)


def test_int64_overflow_is_max_value_exceeded(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name, InitialValue=INT64_MAX - 3).Type == SUCCESS
    assert_failed_allocation(reserve(stub, name, 4), MAX_VALUE_EXCEEDED)
    assert reserve(stub, name, 3).Allocation == allocation(INT64_MAX - 2, INT64_MAX, 3, 1, name)
    assert_failed_allocation(next_value(stub, name), MAX_VALUE_EXCEEDED)


# -- create -------------------------------------------------------------------------------------
def test_create_twice_is_already_exists(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name).Type == SUCCESS
    assert_failed_sequence(create(stub, name, InitialValue=100), ALREADY_EXISTS)
    assert_failed_sequence(create(stub, f"  {name} "), ALREADY_EXISTS)  # the name is trimmed
    assert get(stub, name).Sequence.InitialValue == 0


def test_unset_increment_is_invalid_input(stub: pb_grpc.SequencerStub, name: str) -> None:
    # proto3 cannot tell an unset Increment from 0: both are InvalidInput, as in Kahuna.
    response = stub.CreateSequence(pb.GrpcCreateSequenceRequest(Name=name), timeout=30)
    assert_failed_sequence(response, INVALID_INPUT)
    assert_failed_sequence(get(stub, name), NOT_FOUND)


def test_initial_value_zero_and_unset_are_legit(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name, InitialValue=0, Increment=1).Sequence.InitialValue == 0
    other = create(stub, f"{name}-b", Increment=2)
    assert (other.Type, other.Sequence.InitialValue, other.Sequence.CurrentValue) == (SUCCESS, 0, 0)


@pytest.mark.parametrize(
    "fields",
    [
        {"Increment": 0},
        {"Increment": -1},
        {"InitialValue": 10, "MaxValue": 9},
        {"Durability": 3},
    ],
    ids=["increment-0", "increment-negative", "max-below-initial", "durability-3"],
)
def test_create_invalid_input(stub: pb_grpc.SequencerStub, name: str, fields: dict[str, int]) -> None:
    assert_failed_sequence(create(stub, name, **fields), INVALID_INPUT)


@pytest.mark.parametrize("bad", ["", "   ", "a\x01b", "x" * 1025], ids=["empty", "blank", "control", "too-long"])
def test_bad_names_are_invalid_input_on_every_rpc(stub: pb_grpc.SequencerStub, bad: str) -> None:
    assert_every_rpc_failed(every_rpc(stub, bad), INVALID_INPUT)


def test_longest_name_is_fine(stub: pb_grpc.SequencerStub) -> None:
    longest = uuid.uuid4().hex + "n" * (1024 - 32)
    assert create(stub, longest).Sequence.Name == longest
    assert next_value(stub, longest).Allocation.Name == longest


# -- durability ---------------------------------------------------------------------------------
def test_unspecified_durability_is_persistent(stub: pb_grpc.SequencerStub, name: str) -> None:
    created = create(stub, name)  # Durability unset: SEQUENCE_DURABILITY_UNSPECIFIED
    assert created.Sequence.Durability == PERSISTENT
    assert_failed_sequence(create(stub, name, Durability=PERSISTENT), ALREADY_EXISTS)
    assert get(stub, name, Durability=PERSISTENT).Sequence.Durability == PERSISTENT
    assert next_value(stub, name, Durability=PERSISTENT).Allocation.Start == 1
    assert next_value(stub, name).Allocation.Start == 2
    assert_failed_sequence(get(stub, name, Durability=EPHEMERAL), NOT_FOUND)


def test_ephemeral_sequences_are_apart_from_persistent_ones(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name, InitialValue=100).Sequence.Durability == PERSISTENT
    eph = create(stub, name, InitialValue=5, Increment=10, Durability=EPHEMERAL)
    assert eph.Type == SUCCESS
    assert (eph.Sequence.Durability, eph.Sequence.InitialValue) == (EPHEMERAL, 5)
    assert_failed_sequence(create(stub, name, Durability=EPHEMERAL), ALREADY_EXISTS)

    assert next_value(stub, name, Durability=EPHEMERAL).Allocation == allocation(15, 15, 1, 1, name)
    assert reserve(stub, name, 2, Durability=EPHEMERAL).Allocation == allocation(25, 35, 2, 2, name)
    assert next_value(stub, name).Allocation == allocation(101, 101, 1, 1, name)
    assert get(stub, name, Durability=EPHEMERAL).Sequence.CurrentValue == 35
    assert get(stub, name).Sequence.CurrentValue == 101

    assert delete(stub, name, Durability=EPHEMERAL).Sequence.Durability == EPHEMERAL
    assert_failed_sequence(get(stub, name, Durability=EPHEMERAL), NOT_FOUND)
    assert get(stub, name).Type == SUCCESS


@pytest.mark.parametrize("number", [3, 7, 100, -1])
def test_unknown_durability_number_is_invalid_input(stub: pb_grpc.SequencerStub, name: str, number: int) -> None:
    # An open proto3 enum: the unknown number arrives as it was sent, and SQL refuses it.
    assert create(stub, name).Type == SUCCESS
    assert_every_rpc_failed(every_rpc(stub, name, Durability=number), INVALID_INPUT)
    assert get(stub, name).Sequence.Revision == 0  # nothing allocated, nothing deleted


# -- get, next, reserve, delete failures ---------------------------------------------------------
def test_missing_sequence_is_not_found(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert_failed_sequence(get(stub, name), NOT_FOUND)
    assert_failed_allocation(next_value(stub, name), NOT_FOUND)
    assert_failed_allocation(next_value(stub, name, IdempotencyKey="k"), NOT_FOUND)
    assert_failed_allocation(reserve(stub, name, 10), NOT_FOUND)
    assert_failed_sequence(delete(stub, name), NOT_FOUND)


@pytest.mark.parametrize("count", [0, -1, -(2**31)])
def test_reserve_count_out_of_range_is_invalid_input(stub: pb_grpc.SequencerStub, name: str, count: int) -> None:
    assert create(stub, name).Type == SUCCESS
    assert_failed_allocation(reserve(stub, name, count), INVALID_INPUT)
    assert_failed_allocation(reserve(stub, name, count, IdempotencyKey="k"), INVALID_INPUT)


def test_reserve_of_the_largest_count(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name).Type == SUCCESS
    assert reserve(stub, name, 2**31 - 1).Allocation == allocation(1, 2**31 - 1, 2**31 - 1, 1, name)


def test_idempotency_key_too_long_is_invalid_input(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name).Type == SUCCESS
    assert_failed_allocation(next_value(stub, name, IdempotencyKey="k" * 1025), INVALID_INPUT)
    assert_failed_allocation(reserve(stub, name, 2, IdempotencyKey="é" * 513), INVALID_INPUT)  # 1026 bytes
    assert next_value(stub, name, IdempotencyKey="é" * 512).Type == SUCCESS  # 1024 bytes


# -- idempotency --------------------------------------------------------------------------------
def test_next_replays_with_the_same_key(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name).Type == SUCCESS
    first = next_value(stub, name, IdempotencyKey="request-1")
    assert first.Allocation == allocation(1, 1, 1, 1, name)
    assert next_value(stub, name).Allocation.Start == 2
    replay = next_value(stub, name, IdempotencyKey="request-1")
    assert replay.Type == SUCCESS
    assert replay.Allocation == first.Allocation  # identical, revision included
    assert next_value(stub, name, IdempotencyKey=" request-1 ").Allocation == first.Allocation  # trimmed
    assert get(stub, name).Sequence.CurrentValue == 2


def test_reserve_replays_and_refuses_another_count(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name).Type == SUCCESS
    first = reserve(stub, name, 10, IdempotencyKey="batch-456")
    assert first.Allocation == allocation(1, 10, 10, 1, name)
    assert reserve(stub, name, 10, IdempotencyKey="batch-456").Allocation == first.Allocation
    assert_failed_allocation(reserve(stub, name, 11, IdempotencyKey="batch-456"), INVALID_INPUT)
    assert_failed_allocation(next_value(stub, name, IdempotencyKey="batch-456"), INVALID_INPUT)  # count 1
    assert get(stub, name).Sequence.CurrentValue == 10


def test_next_and_reserve_share_keys(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name).Type == SUCCESS
    single = reserve(stub, name, 1, IdempotencyKey="shared")
    assert next_value(stub, name, IdempotencyKey="shared").Allocation == single.Allocation
    assert get(stub, name).Sequence.Revision == 1


def test_replay_after_exhaustion(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name, MaxValue=2).Type == SUCCESS
    first = reserve(stub, name, 2, IdempotencyKey="all")
    assert first.Allocation == allocation(1, 2, 2, 1, name)
    assert_failed_allocation(next_value(stub, name), MAX_VALUE_EXCEEDED)
    assert reserve(stub, name, 2, IdempotencyKey="all").Allocation == first.Allocation


@pytest.mark.parametrize("key", ["", "   "], ids=["empty", "blank"])
def test_empty_key_means_no_key(stub: pb_grpc.SequencerStub, name: str, key: str) -> None:
    assert create(stub, name).Type == SUCCESS
    assert next_value(stub, name, IdempotencyKey=key).Allocation.Start == 1
    assert next_value(stub, name, IdempotencyKey=key).Allocation.Start == 2


def test_keys_are_per_sequence(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name).Type == SUCCESS
    assert create(stub, name, Durability=EPHEMERAL, InitialValue=50).Type == SUCCESS
    assert next_value(stub, name, IdempotencyKey="k").Allocation.Start == 1
    assert next_value(stub, name, IdempotencyKey="k", Durability=EPHEMERAL).Allocation.Start == 51


def test_recreated_sequence_starts_afresh_and_forgets_keys(stub: pb_grpc.SequencerStub, name: str) -> None:
    assert create(stub, name).Type == SUCCESS
    assert reserve(stub, name, 3, IdempotencyKey="k").Allocation.End == 3
    assert delete(stub, name).Type == SUCCESS
    assert_failed_sequence(delete(stub, name), NOT_FOUND)
    recreated = create(stub, name, InitialValue=1000)
    assert (recreated.Sequence.CurrentValue, recreated.Revision) == (1000, 0)
    assert reserve(stub, name, 3, IdempotencyKey="k").Allocation == allocation(1001, 1003, 3, 1, name)


# -- concurrency --------------------------------------------------------------------------------
def test_concurrent_next_hands_out_every_value_once(server: ServerProcess, name: str) -> None:
    assert create(server.stub, name).Type == SUCCESS
    threads, calls = 8, 200

    def worker() -> list[int]:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.SequencerStub(channel)
            values = []
            for _ in range(calls):
                response = next_value(stub, name)
                assert response.Type == SUCCESS, pb.GrpcSequenceResponseType.Name(response.Type)
                values.append(response.Allocation.Start)
            return values

    with ThreadPoolExecutor(threads) as pool:
        runs = [f.result() for f in [pool.submit(worker) for _ in range(threads)]]
    values = [v for run in runs for v in run]
    assert len(values) == len(set(values)) == threads * calls
    assert sorted(values) == list(range(1, threads * calls + 1))
    assert all(run == sorted(run) for run in runs)  # strictly increasing as each caller sees them
    assert get(server.stub, name).Sequence.CurrentValue == threads * calls


# -- health and reflection ----------------------------------------------------------------------
def test_reflection_lists_the_services(server: ServerProcess) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="Sequencer"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=30))
    names = {service.name for service in listed.list_services_response.service}
    assert {"Sequencer", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = described.file_descriptor_response.file_descriptor_proto
    assert any(b"NextSequenceValue" in blob for blob in files)


def test_health_is_serving(server: ServerProcess) -> None:
    server.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
    assert server.health_status("Sequencer") == health_pb2.HealthCheckResponse.SERVING


def test_health_follows_the_database_and_calls_answer_must_retry() -> None:
    # A cluster of this test's own, since it is stopped midway.
    with private_cluster() as cluster:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            migrate(conn)
        proc = ServerProcess(cluster.conninfo())
        try:
            proc.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
            assert create(proc.stub, "orders").Type == SUCCESS
            assert next_value(proc.stub, "orders").Allocation.Start == 1

            cluster.stop()
            proc.wait_for_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            assert proc.health_status("Sequencer") == health_pb2.HealthCheckResponse.NOT_SERVING
            # Each call waits for a connection in vain: run them side by side.
            with ThreadPoolExecutor(5) as pool:
                futures = {
                    "CreateSequence": pool.submit(create, proc.stub, "other"),
                    "GetSequence": pool.submit(get, proc.stub, "orders"),
                    "NextSequenceValue": pool.submit(next_value, proc.stub, "orders", IdempotencyKey="down"),
                    "ReserveSequenceRange": pool.submit(reserve, proc.stub, "orders", 5),
                    "DeleteSequence": pool.submit(delete, proc.stub, "orders"),
                }
                answers = {rpc: future.result() for rpc, future in futures.items()}
            assert_every_rpc_failed(answers, MUST_RETRY)

            cluster.start()
            proc.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
            # Retrying with the same key is safe: nothing was allocated while it was down.
            assert next_value(proc.stub, "orders", IdempotencyKey="down").Allocation.Start == 2
            assert get(proc.stub, "orders").Sequence.CurrentValue == 2
            assert_failed_sequence(get(proc.stub, "other"), NOT_FOUND)
            assert proc.terminate() == 0, proc.output()
        finally:
            proc.close()


# -- aborted, error, graceful stop --------------------------------------------------------------
def wait_for_lock_waiters(conn: psycopg.Connection, count: int, timeout: float = 60) -> None:
    """Until `count` other sessions wait for a lock: the calls are in flight, inside the database."""
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    while (row := conn.execute(query).fetchone()) is not None and row[0] < count:
        assert time.monotonic() < deadline, f"{row[0]} sessions wait for a lock, expected {count}"
        time.sleep(0.05)


def test_aborted_and_error(dsn: str, connect: Callable[[], psycopg.Connection]) -> None:
    holder, observer = connect(), connect()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT kahuna_create('orders')")
    proc = ServerProcess(dsn, "--statement-timeout-ms", "400")
    try:
        # A lock held past the statement timeout: every call is cut off, Aborted.
        with holder.transaction():
            holder.execute("LOCK TABLE kahuna.sequences IN ACCESS EXCLUSIVE MODE")
            answers = every_rpc(proc.stub, "orders")
        assert_every_rpc_failed(answers, ABORTED)
        # Measured on the server: at least the statement timeout.
        assert all(response.TimeElapsedMs >= 300 for response in answers.values())
        assert next_value(proc.stub, "orders").Allocation.Start == 1  # nothing was consumed

        # A database without the kahuna schema is a misconfiguration: Error, with no detail.
        observer.execute("DROP SCHEMA kahuna CASCADE")
        assert_every_rpc_failed(every_rpc(proc.stub, "orders"), ERROR)
        assert proc.terminate() == 0, proc.output()
    finally:
        proc.close()


def test_sigterm_lets_calls_in_flight_finish(dsn: str, connect: Callable[[], psycopg.Connection]) -> None:
    holder, observer = connect(), connect()
    holder.execute("SELECT kahuna_create('orders')")
    proc = ServerProcess(dsn, "--grace", "60")
    try:
        in_flight: list[pb.GrpcSequenceAllocationResponse | grpc.RpcError] = []

        def call() -> None:
            try:
                in_flight.append(reserve(proc.stub, "orders", 3))
            except grpc.RpcError as exc:
                in_flight.append(exc)

        with holder.transaction():
            holder.execute("LOCK TABLE kahuna.sequences IN ACCESS EXCLUSIVE MODE")
            caller = threading.Thread(target=call)
            caller.start()
            wait_for_lock_waiters(observer, 1)
            proc.process.send_signal(signal.SIGTERM)
            # New calls are refused once the server stops accepting them (health, which
            # does not wait on the locked table, shows it).
            deadline = time.monotonic() + 60
            while True:
                try:
                    proc.health_status()
                except grpc.RpcError as exc:
                    # Cancelled if it reached the stopping server, unavailable once it is gone.
                    assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
                    break
                assert time.monotonic() < deadline, "the server still accepts calls after SIGTERM"
                time.sleep(0.05)
            assert proc.process.poll() is None  # still finishing the call in flight
        caller.join(60)
        assert len(in_flight) == 1
        answer = in_flight[0]
        assert isinstance(answer, pb.GrpcSequenceAllocationResponse), answer
        assert answer.Allocation == allocation(1, 3, 3, 1, "orders")
        assert proc.process.wait(60) == 0, proc.output()
    finally:
        proc.close()
