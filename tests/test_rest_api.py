"""The REST API of CONTRACT.md section 4, over HTTP to a real `kahuna-pg serve` process.

One server on one database for the module; each test uses sequence names of its own, except
the reference session, which uses the reference page's `orders` and cleans up after itself.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from datetime import datetime

import pytest
from rest_support import Api, ServeProcess, new_database, unique

from kahuna_pg.embedded import EmbeddedPostgres

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


@pytest.fixture(scope="module")
def server(pg_cluster: EmbeddedPostgres) -> Iterator[ServeProcess]:
    proc = ServeProcess(dsn=new_database(pg_cluster)).wait_ready()
    yield proc
    proc.close()


@pytest.fixture
def api(server: ServeProcess) -> Api:
    return Api(server.base)


def test_reference_answer_of_the_first_next_after_create(api: Api) -> None:
    api.call("delete", name="orders")  # Success or NotFound: start from nothing
    assert api.call("create", name="orders")["type"] == "Success"
    answer = api.call("next", name="orders")
    assert answer == {
        "type": "Success",
        "allocation": {"name": "orders", "start": 1, "end": 1, "count": 1, "revision": 1},
        "revision": 1,
    }
    assert api.call("delete", name="orders") == {"type": "Success", "revision": 1}


# The reference page's requests, byte for byte (with http:// until TLS comes).
REFERENCE_SESSION = [
    (
        "/v1/sequences/create",
        b'{\n"name": "orders",\n"initialValue": 0,\n"increment": 1,\n"maxValue": null,\n"durability": "Persistent"\n}',
    ),
    ("/v1/sequences/get", b'{\n"name": "orders",\n"durability": "Persistent"\n}'),
    (
        "/v1/sequences/next",
        b'{\n"name": "orders",\n"idempotencyKey": "request-123",\n"durability": "Persistent"\n}',
    ),
    (
        "/v1/sequences/reserve",
        b'{\n"name": "orders",\n"count": 100,\n"idempotencyKey": "batch-456",\n"durability": "Persistent"\n}',
    ),
    ("/v1/sequences/delete", b'{\n"name": "orders",\n"durability": "Persistent"\n}'),
]


def test_reference_page_session_as_written(api: Api) -> None:
    api.call("delete", name="orders")
    replies = [api.post(path, raw=body) for path, body in REFERENCE_SESSION]
    assert all(r.status == 200 and r.body["type"] == "Success" for r in replies), replies
    create, get, next_, reserve, delete = (r.body for r in replies)
    assert create["sequence"]["name"] == "orders" and create["sequence"]["currentValue"] == 0
    assert get["sequence"] == create["sequence"]
    assert next_ == {
        "type": "Success",
        "allocation": {"name": "orders", "start": 1, "end": 1, "count": 1, "revision": 1},
        "revision": 1,
    }
    assert reserve == {
        "type": "Success",
        "allocation": {"name": "orders", "start": 2, "end": 101, "count": 100, "revision": 2},
        "revision": 2,
    }
    assert delete == {"type": "Success", "revision": 2}


# -- create and get ----------------------------------------------------------------------------


def test_create_with_defaults(api: Api) -> None:
    name = unique()
    answer = api.call("create", name=name)
    seq = answer["sequence"]
    assert answer["type"] == "Success" and answer["revision"] == 0
    assert {k: v for k, v in seq.items() if k not in ("createdAt", "updatedAt")} == {
        "name": name,
        "currentValue": 0,
        "initialValue": 0,
        "increment": 1,
        "maxValue": None,
        "revision": 0,
        "durability": "Persistent",
    }
    created = datetime.fromisoformat(seq["createdAt"])
    assert created.tzinfo is not None and seq["updatedAt"] == seq["createdAt"]
    assert api.get(name) == answer


def test_create_with_every_field_and_get_after_allocations(api: Api) -> None:
    name = unique()
    answer = api.call("create", name=name, initialValue=-10, increment=5, maxValue=100, durability="Persistent")
    assert answer["sequence"]["currentValue"] == -10 and answer["sequence"]["maxValue"] == 100
    assert api.call("next", name=name)["allocation"]["start"] == -5
    assert api.call("reserve", name=name, count=3)["allocation"] == {
        "name": name,
        "start": 0,
        "end": 10,
        "count": 3,
        "revision": 2,
    }
    got = api.get(name)
    assert got["type"] == "Success" and got["revision"] == 2
    assert got["sequence"]["currentValue"] == 10 and got["sequence"]["increment"] == 5
    assert datetime.fromisoformat(got["sequence"]["updatedAt"]) >= datetime.fromisoformat(got["sequence"]["createdAt"])


def test_create_trims_the_name(api: Api) -> None:
    name = unique()
    assert api.call("create", name=f"  {name}\t")["sequence"]["name"] == name
    assert api.get(name)["type"] == "Success"


def test_create_twice_is_already_exists(api: Api) -> None:
    name = unique()
    api.call("create", name=name)
    answer = api.call("create", name=name, initialValue=50)
    assert answer["type"] == "AlreadyExists" and "already exists" in answer["error"]
    assert "sequence" not in answer
    assert api.get(name)["sequence"]["initialValue"] == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 1025},
        {"name": "tab\tinside"},
        {"name": "nul\u0000inside"},
        {"name": "ok", "increment": 0},
        {"name": "ok", "increment": -1},
        {"name": "ok", "initialValue": 10, "maxValue": 9},
        {"name": "ok", "durability": "durable"},
        {"name": "ok", "durability": 3},
        {"name": "ok", "durability": -1},
    ],
    ids=[
        "empty-name",
        "blank-name",
        "name-1025",
        "control-char",
        "nul-char",
        "increment-0",
        "increment-negative",
        "max-below-initial",
        "durability-word",
        "durability-3",
        "durability-negative",
    ],
)
def test_create_invalid_input_judged_by_sql(api: Api, fields: dict[str, object]) -> None:
    if fields["name"] == "ok":
        fields = {**fields, "name": unique()}
    answer = api.call("create", **fields)
    assert answer["type"] == "InvalidInput" and answer["error"], answer
    assert "sequence" not in answer
    if fields["name"] not in ("", "   ") and isinstance(fields["name"], str) and len(fields["name"]) < 1025:
        assert api.get(fields["name"])["type"] in ("NotFound", "InvalidInput")


def test_name_of_1024_characters_is_fine(api: Api) -> None:
    name = unique() + "n" * (1024 - 16)
    assert len(name) == 1024
    assert api.call("create", name=name)["type"] == "Success"
    assert api.call("next", name=name)["allocation"]["start"] == 1


def test_get_missing_is_not_found(api: Api) -> None:
    answer = api.get(unique())
    assert answer["type"] == "NotFound" and "does not exist" in answer["error"]
    assert api.get("", durability="Persistent")["type"] == "InvalidInput"
    assert api.get(unique(), durability="nope")["type"] == "InvalidInput"


# -- next and reserve ----------------------------------------------------------------------------


def test_next_hands_out_consecutive_values(api: Api) -> None:
    name = unique()
    api.call("create", name=name, initialValue=10, increment=5)
    answers = [api.call("next", name=name) for _ in range(3)]
    assert [a["allocation"]["start"] for a in answers] == [15, 20, 25]
    assert all(a["allocation"]["end"] == a["allocation"]["start"] and a["allocation"]["count"] == 1 for a in answers)
    assert [a["revision"] for a in answers] == [1, 2, 3]
    assert all(a["revision"] == a["allocation"]["revision"] for a in answers)


def test_next_and_reserve_on_a_missing_sequence(api: Api) -> None:
    name = unique()
    for answer in (api.call("next", name=name), api.call("reserve", name=name, count=5)):
        assert answer["type"] == "NotFound" and "allocation" not in answer and "revision" not in answer


def test_max_value_is_inclusive_then_exceeded(api: Api) -> None:
    name = unique()
    api.call("create", name=name, maxValue=3)
    assert api.call("reserve", name=name, count=2)["allocation"]["end"] == 2
    assert api.call("reserve", name=name, count=2)["type"] == "MaxValueExceeded"  # all or nothing
    assert api.call("next", name=name)["allocation"]["start"] == 3
    answer = api.call("next", name=name)
    assert answer["type"] == "MaxValueExceeded" and "allocation" not in answer
    assert api.get(name)["sequence"]["currentValue"] == 3 and api.get(name)["revision"] == 2


def test_int64_overflow_is_max_value_exceeded(api: Api) -> None:
    name = unique()
    api.call("create", name=name, initialValue=INT64_MAX - 10)
    assert api.call("reserve", name=name, count=11)["type"] == "MaxValueExceeded"
    answer = api.call("reserve", name=name, count=10)
    assert answer["allocation"]["end"] == INT64_MAX
    assert api.call("next", name=name)["type"] == "MaxValueExceeded"


@pytest.mark.parametrize("count", [0, -1, INT32_MAX + 1, INT64_MAX], ids=["zero", "negative", "int32+1", "int64max"])
def test_reserve_count_out_of_range_is_invalid_input(api: Api, count: int) -> None:
    name = unique()
    api.call("create", name=name)
    answer = api.call("reserve", name=name, count=count)
    assert answer["type"] == "InvalidInput" and "count" in answer["error"]
    assert api.get(name)["revision"] == 0


def test_reserve_the_largest_count(api: Api) -> None:
    name = unique()
    api.call("create", name=name)
    assert api.call("reserve", name=name, count=INT32_MAX)["allocation"]["end"] == INT32_MAX


# -- durability ----------------------------------------------------------------------------------


def test_ephemeral_and_persistent_of_one_name_are_two_sequences(api: Api) -> None:
    name = unique()
    eph = api.call("create", name=name, durability="Ephemeral", initialValue=100)
    assert eph["sequence"]["durability"] == "Ephemeral"
    assert api.get(name)["type"] == "NotFound"  # the Persistent one does not exist yet
    api.call("create", name=name)
    assert api.call("next", name=name, durability="ephemeral")["allocation"]["start"] == 101
    assert api.call("next", name=name, durability="EPHEMERAL")["allocation"]["start"] == 102
    assert api.call("next", name=name)["allocation"]["start"] == 1
    assert api.call("reserve", name=name, count=2, durability=2)["allocation"]["start"] == 103
    assert api.get(name, durability=2)["sequence"]["durability"] == "Ephemeral"
    assert api.get(name, durability=2)["sequence"]["currentValue"] == 104
    assert api.call("delete", name=name, durability="Ephemeral") == {"type": "Success", "revision": 3}
    assert api.get(name, durability="Ephemeral")["type"] == "NotFound"
    assert api.get(name)["sequence"]["currentValue"] == 1


@pytest.mark.parametrize("durability", [0, 1, "persistent", "Persistent", " PERSISTENT ", None])
def test_persistent_spellings(api: Api, durability: object) -> None:
    name = unique()
    assert api.call("create", name=name, durability=durability)["sequence"]["durability"] == "Persistent"
    assert api.get(name, durability="Persistent")["type"] == "Success"


# -- idempotency keys ----------------------------------------------------------------------------


def test_next_replays_its_key(api: Api) -> None:
    name = unique()
    api.call("create", name=name)
    first = api.call("next", name=name, idempotencyKey="request-1")
    api.call("next", name=name)
    again = api.call("next", name=name, idempotencyKey="request-1")
    assert again == first
    assert api.call("next", name=name, idempotencyKey="  request-1 ") == first  # trimmed
    assert api.get(name)["revision"] == 2


def test_reserve_replays_its_key_even_when_exhausted(api: Api) -> None:
    name = unique()
    api.call("create", name=name, maxValue=10)
    first = api.call("reserve", name=name, count=10, idempotencyKey="batch-1")
    assert first["allocation"]["start"] == 1 and first["allocation"]["end"] == 10
    assert api.call("next", name=name)["type"] == "MaxValueExceeded"
    assert api.call("reserve", name=name, count=10, idempotencyKey="batch-1") == first


def test_replay_with_another_count_is_invalid_input(api: Api) -> None:
    name = unique()
    api.call("create", name=name)
    api.call("reserve", name=name, count=5, idempotencyKey="batch-2")
    answer = api.call("reserve", name=name, count=6, idempotencyKey="batch-2")
    assert answer["type"] == "InvalidInput" and "count" in answer["error"]
    # next is reserve(name, 1, key): it shares the key, with count 1.
    assert api.call("next", name=name, idempotencyKey="batch-2")["type"] == "InvalidInput"
    assert api.get(name)["sequence"]["currentValue"] == 5


def test_next_and_reserve_of_one_share_keys(api: Api) -> None:
    name = unique()
    api.call("create", name=name)
    first = api.call("next", name=name, idempotencyKey="shared")
    assert api.call("reserve", name=name, count=1, idempotencyKey="shared") == first


@pytest.mark.parametrize("key", ["", "   ", None])
def test_blank_key_means_no_key(api: Api, key: str | None) -> None:
    name = unique()
    api.call("create", name=name)
    starts = [api.call("next", name=name, idempotencyKey=key)["allocation"]["start"] for _ in range(2)]
    assert starts == [1, 2]


def test_key_over_1024_bytes_is_invalid_input(api: Api) -> None:
    name = unique()
    api.call("create", name=name)
    assert api.call("next", name=name, idempotencyKey="é" * 513)["type"] == "InvalidInput"  # 1026 bytes
    assert api.call("next", name=name, idempotencyKey="k" * 1024)["type"] == "Success"


def test_keys_are_per_sequence_and_deleted_with_it(api: Api) -> None:
    one, two = unique(), unique()
    api.call("create", name=one)
    api.call("create", name=two, initialValue=1000)
    assert api.call("next", name=one, idempotencyKey="k")["allocation"]["start"] == 1
    assert api.call("next", name=two, idempotencyKey="k")["allocation"]["start"] == 1001
    assert api.call("delete", name=one) == {"type": "Success", "revision": 1}
    api.call("create", name=one, initialValue=50)
    again = api.call("next", name=one, idempotencyKey="k")
    assert again["allocation"]["start"] == 51 and again["revision"] == 1  # no replay of the old one


# -- delete --------------------------------------------------------------------------------------


def test_delete(api: Api) -> None:
    name = unique()
    api.call("create", name=name)
    api.call("reserve", name=name, count=7)
    assert api.call("delete", name=name) == {"type": "Success", "revision": 1}
    answer = api.call("delete", name=name)
    assert answer["type"] == "NotFound" and "revision" not in answer
    assert api.call("delete", name="")["type"] == "InvalidInput"
    assert api.call("next", name=name)["type"] == "NotFound"
    recreated = api.call("create", name=name)
    assert recreated["sequence"]["currentValue"] == 0 and recreated["revision"] == 0


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_next_over_http_hands_out_each_value_once(server: ServeProcess, api: Api) -> None:
    name = unique()
    api.call("create", name=name)
    threads, calls = 8, 200
    values: list[list[int]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []
    body = json.dumps({"name": name}).encode()

    def worker(i: int) -> None:
        # One keep-alive connection per client thread, as a real client would hold.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for _ in range(calls):
                conn.request("POST", "/v1/sequences/next", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                answer = json.loads(resp.read())
                assert resp.status == 200 and answer["type"] == "Success", answer
                values[i].append(answer["allocation"]["start"])
        except BaseException as exc:
            failures.append(exc)
        finally:
            conn.close()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not failures, failures
    handed = [v for vs in values for v in vs]
    assert len(handed) == len(set(handed)) == threads * calls
    assert sorted(handed) == list(range(1, threads * calls + 1))
    for vs in values:
        assert vs == sorted(vs)  # strictly increasing as each client sees them
    assert api.get(name)["sequence"]["currentValue"] == threads * calls
