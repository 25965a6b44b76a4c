"""The OpenAPI document (GET /v1/openapi.json) is true to the app.

Routes: the document's paths and methods are exactly the app's. Answer shapes: every reply
the REST tests receive is validated against the document by rest_support.Api; here, the
validator is shown to be strict enough to catch a wrong shape.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from falcon import inspect
from rest_support import DOC, Api, ServeProcess, new_database, unique, validate

from kahuna_pg.client import SequenceClient
from kahuna_pg.embedded import EmbeddedPostgres
from kahuna_pg.openapi import document
from kahuna_pg.rest import create_app


@pytest.fixture(scope="module")
def server(pg_cluster: EmbeddedPostgres) -> Iterator[ServeProcess]:
    proc = ServeProcess(dsn=new_database(pg_cluster, "openapi")).wait_ready()
    yield proc
    proc.close()


def test_served_document_is_the_document(server: ServeProcess) -> None:
    reply = Api(server.base).request("GET", "/v1/openapi.json")
    assert reply.status == 200
    assert reply.body == document()
    assert reply.body["openapi"].startswith("3.")


def test_document_paths_are_the_app_routes(dsn: str) -> None:
    with SequenceClient.connect(dsn) as client:
        app = create_app(client)
        routes = {
            (route.path, method.method)
            for route in inspect.inspect_routes(app)
            for method in route.methods
            if not method.internal  # falcon's own OPTIONS and 405 responders
        }
    documented = {(path, method.upper()) for path, item in DOC["paths"].items() for method in item}
    assert routes == documented


def test_every_reference_resolves() -> None:
    def refs(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    schemas = DOC["components"]["schemas"]
    for ref in refs(DOC):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_every_post_operation_documents_its_statuses() -> None:
    for path, item in DOC["paths"].items():
        if "post" in item:
            assert set(item["post"]["responses"]) == {"200", "400", "413", "500"}, path


def test_live_answers_match_and_the_validator_is_strict(server: ServeProcess) -> None:
    api = Api(server.base)  # validates every reply against the document
    name = unique()
    api.call("create", name=name)
    api.call("next", name=name)
    api.call("get", name=unique())
    answer_schema = DOC["paths"]["/v1/sequences/next"]["post"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    good = {
        "type": "Success",
        "allocation": {"name": "o", "start": 1, "end": 1, "count": 1, "revision": 1},
        "revision": 1,
    }
    validate(good, answer_schema)
    wrong_shapes = [
        {"type": "Success"},  # no allocation
        {**good, "extra": 1},
        {**good, "type": "Ok"},
        {"type": "NotFound", "allocation": good["allocation"]},  # objects only on Success
        {**good, "allocation": {**good["allocation"], "start": "1"}},
        {**good, "allocation": {**good["allocation"], "count": 2**31}},
        {**good, "revision": 2**63},
    ]
    for shape in wrong_shapes:
        with pytest.raises(AssertionError):
            validate(shape, answer_schema)
