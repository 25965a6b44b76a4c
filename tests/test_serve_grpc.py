"""Issue 4 through the real `kahuna-pg serve`: REST and gRPC side by side on one database.

The same sequence driven from both interfaces is one stream of values and one set of
idempotency keys; the gRPC health service follows the database (a private cluster, stopped
and started under the running service); reflection lists `Sequencer`; `--no-rest` and
`--no-grpc` run one interface alone. Most tests share one `serve --workers 1` (REST and gRPC
in one process around one client; tests/test_serve_workers.py runs worker processes).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dbtools import private_cluster
from rest_support import Api, ServeProcess, new_database, unique
from serve_grpc_support import NOT_SERVING, SERVING, Grpc, refused, wait_for, wait_grpc_ready

from kahuna_pg.embedded import EmbeddedPostgres
from kahuna_pg.proto import kahuna_pb2 as pb

GRPC_DURABILITY = {"Persistent": pb.SEQUENCE_PERSISTENT, "Ephemeral": pb.SEQUENCE_EPHEMERAL}


@pytest.fixture(scope="module")
def server(pg_cluster: EmbeddedPostgres) -> Iterator[ServeProcess]:
    proc = ServeProcess("--workers", "1", dsn=new_database(pg_cluster, "serve_grpc")).wait_ready()
    wait_grpc_ready(proc)
    yield proc
    code = proc.signal(signal.SIGTERM)
    log = proc.log()
    proc.close()
    assert code == 0, log


@pytest.fixture(scope="module")
def rest(server: ServeProcess) -> Api:
    return Api(server.base)


@pytest.fixture(scope="module")
def rpc(server: ServeProcess) -> Iterator[Grpc]:
    with Grpc(server.grpc_target) as client:
        yield client


def grpc_run(answer: pb.GrpcSequenceAllocationResponse) -> tuple[int, int, int, int]:
    assert answer.Type == pb.SEQUENCE_SUCCESS, pb.GrpcSequenceResponseType.Name(answer.Type)
    a = answer.Allocation
    return a.Start, a.End, a.Count, a.Revision


def rest_run(answer: dict[str, Any]) -> tuple[int, int, int, int]:
    assert answer["type"] == "Success", answer
    a = answer["allocation"]
    assert answer["revision"] == a["revision"]
    return a["start"], a["end"], a["count"], a["revision"]


# -- one sequence, two interfaces ------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["Persistent", "Ephemeral"])
def test_rest_and_grpc_in_turn_are_one_stream(rest: Api, rpc: Grpc, durability: str) -> None:
    name = unique()
    enum = GRPC_DURABILITY[durability]
    assert rest.call("create", name=name, initialValue=100, increment=5, durability=durability)["type"] == "Success"
    runs = []
    for i in range(6):
        count = 1 + i % 3  # next, and reserves of 2 and 3 values
        if i % 2 == 0:
            answer = (
                rest.call("next", name=name, durability=durability)
                if count == 1
                else rest.call("reserve", name=name, count=count, durability=durability)
            )
            runs.append(rest_run(answer))
        else:
            answer = rpc.next(name, Durability=enum) if count == 1 else rpc.reserve(name, count, Durability=enum)
            runs.append(grpc_run(answer))
    # One stream: each run starts one increment after the previous one ended, revisions 1, 2, ...
    expected_start = 105
    for revision, (start, end, count, rev) in enumerate(runs, start=1):
        assert (start, end, rev) == (expected_start, start + 5 * (count - 1), revision), runs
        expected_start = end + 5
    values = [v for start, end, _, _ in runs for v in range(start, end + 1, 5)]
    assert values == list(range(105, runs[-1][1] + 1, 5))  # no duplicate, no gap

    # Both interfaces read the same state.
    seen_by_rest = rest.get(name, durability)["sequence"]
    seen_by_grpc = rpc.get(name, Durability=enum).Sequence
    assert seen_by_rest["currentValue"] == seen_by_grpc.CurrentValue == runs[-1][1]
    assert seen_by_rest["revision"] == seen_by_grpc.Revision == len(runs)
    assert seen_by_rest["durability"] == durability and seen_by_grpc.Durability == enum
    # The other durability is another sequence, which does not exist.
    other = "Ephemeral" if durability == "Persistent" else "Persistent"
    assert rest.get(name, other)["type"] == "NotFound"
    assert rpc.get(name, Durability=GRPC_DURABILITY[other]).Type == pb.SEQUENCE_NOT_FOUND


def test_a_key_first_used_over_rest_replays_over_grpc(rest: Api, rpc: Grpc) -> None:
    name = unique()
    rest.call("create", name=name)
    first_next = rest_run(rest.call("next", name=name, idempotencyKey="order-1"))
    first_reserve = rest_run(rest.call("reserve", name=name, count=5, idempotencyKey="batch-1"))
    assert first_next == (1, 1, 1, 1) and first_reserve == (2, 6, 5, 2)

    assert grpc_run(rpc.next(name, IdempotencyKey="order-1")) == first_next
    assert grpc_run(rpc.reserve(name, 5, IdempotencyKey="batch-1")) == first_reserve
    # next is reserve of 1: they share keys across the interfaces too, trimmed the same way.
    assert grpc_run(rpc.reserve(name, 1, IdempotencyKey="  order-1 ")) == first_next
    # The same key with another count is InvalidInput, and allocates nothing.
    refused_count = rpc.reserve(name, 4, IdempotencyKey="batch-1")
    assert refused_count.Type == pb.SEQUENCE_INVALID_INPUT and not refused_count.HasField("Allocation")
    assert rpc.next(name, IdempotencyKey="batch-1").Type == pb.SEQUENCE_INVALID_INPUT
    # Nothing above allocated: the next value follows the REST calls'.
    assert grpc_run(rpc.next(name)) == (7, 7, 1, 3)
    assert rest.get(name)["sequence"]["currentValue"] == 7


def test_a_key_first_used_over_grpc_replays_over_rest(rest: Api, rpc: Grpc) -> None:
    name = unique()
    assert rpc.create(name, InitialValue=-10, Increment=2).Type == pb.SEQUENCE_SUCCESS
    first_next = grpc_run(rpc.next(name, IdempotencyKey="order-1"))
    first_reserve = grpc_run(rpc.reserve(name, 3, IdempotencyKey="batch-1"))
    assert first_next == (-8, -8, 1, 1) and first_reserve == (-6, -2, 3, 2)

    assert rest_run(rest.call("next", name=name, idempotencyKey="order-1")) == first_next
    assert rest_run(rest.call("reserve", name=name, count=3, idempotencyKey="batch-1")) == first_reserve
    assert rest_run(rest.call("reserve", name=name, count=1, idempotencyKey="order-1")) == first_next
    assert rest.call("reserve", name=name, count=2, idempotencyKey="batch-1")["type"] == "InvalidInput"
    assert rest_run(rest.call("next", name=name)) == (0, 0, 1, 3)
    assert rpc.get(name).Sequence.CurrentValue == 0


# -- health and reflection -------------------------------------------------------------------------


def test_reflection_lists_sequencer_through_serve(rpc: Grpc) -> None:
    assert {"Sequencer", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= rpc.services()


def test_health_is_serving_for_the_server_and_sequencer(rpc: Grpc) -> None:
    assert rpc.health_status("") == SERVING
    assert rpc.health_status("Sequencer") == SERVING


def test_health_follows_the_database_without_a_restart_of_the_service() -> None:
    # A cluster of this test's own, since it is stopped midway.
    proc = None
    with private_cluster() as cluster:
        try:
            dsn = new_database(cluster, "health")  # migrated
            proc = ServeProcess("--workers", "1", "--pool-timeout", "2", dsn=dsn).wait_ready()
            wait_grpc_ready(proc)
            with Grpc(proc.grpc_target) as rpc:
                assert rpc.health_status("") == rpc.health_status("Sequencer") == SERVING
                name = unique()
                assert rpc.create(name).Type == pb.SEQUENCE_SUCCESS
                assert grpc_run(rpc.next(name)) == (1, 1, 1, 1)

                cluster.stop()
                wait_for(lambda: rpc.health_status("") == NOT_SERVING, what="health NOT_SERVING")
                assert rpc.health_status("Sequencer") == NOT_SERVING
                away = rpc.next(name, IdempotencyKey="while-away")  # answered within the pool timeout
                assert away.Type == pb.SEQUENCE_MUST_RETRY and not away.HasField("Allocation"), away
                assert rpc.get(name).Type == pb.SEQUENCE_MUST_RETRY

                cluster.start()
                wait_for(lambda: rpc.health_status("") == SERVING, what="health SERVING again")
                assert rpc.health_status("Sequencer") == SERVING
                # The same process serves again; a call may still meet a connection of before the
                # restart (MustRetry), and retrying with the same key is safe.
                again = wait_for(
                    lambda: (a := rpc.next(name, IdempotencyKey="while-away")).Type == pb.SEQUENCE_SUCCESS and a,
                    what="NextSequenceValue to succeed again",
                )
                assert grpc_run(again) == (2, 2, 1, 2)  # MustRetry consumed nothing
            assert proc.signal(signal.SIGTERM) == 0, proc.log()
        finally:
            if proc is not None:
                proc.close()


# -- one interface alone ---------------------------------------------------------------------------


def start_line(proc: ServeProcess) -> str:
    lines = [line for line in proc.log().splitlines() if "kahuna-pg serving" in line]
    assert len(lines) == 1, proc.log()
    return lines[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_no_grpc_serves_rest_alone(pg_cluster: EmbeddedPostgres, workers: str) -> None:
    proc = ServeProcess("--no-grpc", "--workers", workers, dsn=new_database(pg_cluster, "nogrpc")).wait_ready()
    try:
        api = Api(proc.base)
        name = unique()
        assert api.call("create", name=name)["type"] == "Success"
        assert rest_run(api.call("next", name=name)) == (1, 1, 1, 1)
        assert refused(proc.grpc_port)
        with Grpc(proc.grpc_target) as rpc, pytest.raises(grpc.RpcError) as failure:
            rpc.next(name)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        line = start_line(proc)
        assert f"REST on http://127.0.0.1:{proc.port}" in line and "gRPC" not in line
        assert proc.signal(signal.SIGTERM) == 0, proc.log()
    finally:
        proc.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_no_rest_serves_grpc_alone(pg_cluster: EmbeddedPostgres, workers: str) -> None:
    proc = wait_grpc_ready(ServeProcess("--no-rest", "--workers", workers, dsn=new_database(pg_cluster, "norest")))
    try:
        with Grpc(proc.grpc_target) as rpc:
            name = unique()
            assert rpc.create(name).Type == pb.SEQUENCE_SUCCESS
            assert grpc_run(rpc.next(name)) == (1, 1, 1, 1)
        assert refused(proc.port)
        line = start_line(proc)
        assert f"gRPC on grpc://{proc.grpc_target}" in line and "REST" not in line
        assert proc.signal(signal.SIGTERM) == 0, proc.log()
    finally:
        proc.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_both_interfaces_off_exits_1_with_a_message(tmp_path: Path, workers: str) -> None:
    # No --dsn: the usage error must be reported before an embedded PostgreSQL is created.
    data_dir = tmp_path / "data"
    proc = ServeProcess("--no-rest", "--no-grpc", "--workers", workers, "--data-dir", str(data_dir))
    try:
        assert proc.proc.wait(60) == 1, proc.log()
        log = proc.log()
        assert "kahuna-pg serve: nothing to serve" in log and "--no-rest" in log and "--no-grpc" in log, log
        assert "Traceback" not in log
        assert not data_dir.exists(), "no embedded PostgreSQL for a service that cannot run"
    finally:
        proc.close()
