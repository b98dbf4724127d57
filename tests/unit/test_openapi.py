"""The OpenAPI document: complete, well-formed, and true to what the app really answers."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import rmd.api
from rmd.api.app import openapi_document
from rmd.api.problems import ProblemError
from rmd.api.validation import ADDRESS_PATTERN, parse_address
from tests.unit.api_fake_engine import InMemoryEngine, make_app, make_engine

ClientFactory = Any
DOCUMENT_PATH = Path(rmd.api.__file__).parent / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- a tiny validator


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        reference = node["$ref"]
        assert reference.startswith("#/"), f"only local references: {reference}"
        target: Any = document
        for part in reference[2:].split("/"):
            target = target[part]
        node = target
    return node


def schema_errors(
    document: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$"
) -> list[str]:
    """The ways ``value`` breaks ``schema`` (the OpenAPI 3.0 subset this document uses)."""
    schema = resolve(document, schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null where not nullable"]
    errors: list[str] = []
    for part in schema.get("allOf", []):
        errors += schema_errors(document, part, value, where)
    kind = schema.get("type")
    type_checks: dict[str, Any] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if kind is not None and not type_checks[kind](value):
        return [*errors, f"{where}: {value!r} is not of type {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: {value!r} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{where}: {value!r} > {schema['maximum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if schema.get("format") == "date-time":
            try:
                datetime.fromisoformat(value)
            except ValueError:
                errors.append(f"{where}: {value!r} is not a date-time")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(document, schema["items"], item, f"{where}[{index}]")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: missing required {name!r}")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(document, properties[name], item, f"{where}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                extra = schema["additionalProperties"]
                errors += schema_errors(document, extra, item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected {name!r}")
    return errors


def test_the_validator_catches_mistakes(document: dict[str, Any]) -> None:
    job = {"$ref": "#/components/schemas/JobView"}
    good = document["components"]["schemas"]["JobView"]["example"]

    assert schema_errors(document, job, good) == []
    assert schema_errors(document, job, {**good, "fulfilled": "no"})
    assert schema_errors(document, job, {**good, "slots_required": -1})
    assert schema_errors(document, job, {**good, "job_id": "a b"})
    assert schema_errors(document, job, {k: v for k, v in good.items() if k != "slots"})
    assert schema_errors(document, job, {**good, "slots": [{"slot_id": 1}]})
    assert schema_errors(document, job, {**good, "slots_allocated": None})


# ---------------------------------------------------------------------------- the document


def test_document_is_openapi_3_with_the_essentials(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.0.")
    assert document["info"]["title"]
    assert document["info"]["version"] == "1"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert document["security"] == [{"bearer": []}]
    for name in ("JobView", "TaskManagerView", "Status", "Problem"):
        assert name in document["components"]["schemas"]


def all_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_operation_is_complete(document: dict[str, Any]) -> None:
    operation_ids = [operation["operationId"] for _, _, operation in all_operations(document)]
    assert len(operation_ids) == len(set(operation_ids))
    for path, method, operation in all_operations(document):
        assert operation["summary"], (path, method)
        assert operation["responses"], (path, method)
        declared = {name for name in re.findall(r"{(\w+)}", path)}
        parameters = [resolve(document, p) for p in operation.get("parameters", [])]
        assert {p["name"] for p in parameters if p["in"] == "path"} == declared, (path, method)
        secured = operation.get("security", document["security"]) != []
        assert secured == path.startswith("/v1/"), (path, method)
        assert ("401" in operation["responses"]) == secured, (path, method)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    references: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                references.append(node["$ref"])
            for child in node.values():
                collect(child)
        elif isinstance(node, list):
            for child in node:
                collect(child)

    collect(document)
    assert references
    for reference in references:
        assert resolve(document, {"$ref": reference})


def test_every_example_matches_its_schema(document: dict[str, Any]) -> None:
    checked = 0
    for name, schema in document["components"]["schemas"].items():
        if "example" in schema:
            assert schema_errors(document, schema, schema["example"]) == [], name
            checked += 1
    for path, method, operation in all_operations(document):
        for status, response in operation["responses"].items():
            for media in resolve(document, response).get("content", {}).values():
                if "example" in media:
                    errors = schema_errors(document, media["schema"], media["example"])
                    assert errors == [], (path, method, status)
                    checked += 1
    assert checked >= 15


async def test_the_app_and_the_document_have_the_same_routes(document: dict[str, Any]) -> None:
    app = make_app(make_engine())
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # HEAD comes with every GET
    }
    documented = {(path, method) for path, method, _ in all_operations(document)}

    assert served == documented


async def test_the_document_is_served_as_kept_in_the_repo(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(make_engine()))

    response = await client.get("/openapi.json")

    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == DOCUMENT_PATH.read_bytes() == openapi_document()


# ---------------------------------------------------------------------------- real answers


async def test_real_answers_match_the_documented_schemas(
    aiohttp_client: ClientFactory, document: dict[str, Any]
) -> None:
    engine: InMemoryEngine = make_engine(slots_per_taskmanager=2, max_slots=4)
    client: TestClient[Any, Any] = await aiohttp_client(make_app(engine))
    checked: list[tuple[str, str, int]] = []

    async def call(method: str, url: str, template: str, body: Any = None) -> Any:
        response = await client.request(method, url, json=body)
        status = str(response.status)
        responses = document["paths"][template][method.lower()]["responses"]
        assert status in responses, f"{method} {url} answered undocumented {status}"
        content = resolve(document, responses[status]).get("content")
        if content is None:
            assert await response.read() == b""
            return None
        assert response.content_type in content, (method, url, response.content_type)
        if response.content_type == "text/plain":
            return await response.text()
        answer = await response.json()
        errors = schema_errors(document, content[response.content_type]["schema"], answer)
        assert errors == [], (method, url, errors)
        checked.append((method, template, response.status))
        return answer

    jobs, job = "/v1/jobs", "/v1/jobs/{job_id}"
    tms, tm = "/v1/taskmanagers", "/v1/taskmanagers/{taskmanager_id}"
    requirements, heartbeat = f"{job}/requirements", f"{tm}/heartbeat"
    await call("PUT", "/v1/jobs/j1/requirements", requirements, {"slots": 6})
    await call("PUT", "/v1/jobs/j1/requirements", requirements, {"slots": "6"})
    await call("PUT", "/v1/jobs/j1/requirements", requirements, {"slots": -6})
    await call("GET", "/v1/jobs/j1", job)
    await call("GET", "/v1/jobs/nope", job)
    await call("GET", "/v1/jobs/j1?wait=x", job)
    [first, second] = engine.start_requested_pods()
    await call("GET", tms, tms)
    await call("POST", tms, tms, {"taskmanager_id": first, "address": "10.0.0.1:6122", "slots": 2})
    await call("POST", tms, tms, {"taskmanager_id": "other", "address": "h:1", "slots": 2})
    await call("PUT", f"/v1/taskmanagers/{first}/heartbeat", heartbeat, {})
    await call("PUT", f"/v1/taskmanagers/{second}/heartbeat", heartbeat, {})  # not registered
    await call("GET", f"/v1/taskmanagers/{first}", tm)
    await call("GET", f"/v1/taskmanagers/{second}", tm)
    await call("GET", "/v1/jobs/j1", job)  # capped and partly allocated: reason and slots
    await call("GET", jobs, jobs)
    await call("GET", "/v1/status", "/v1/status")
    await call("DELETE", "/v1/jobs/j1", job)
    await call("GET", f"/v1/taskmanagers/{first}", tm)  # idle now: idle_since set
    await call("DELETE", f"/v1/taskmanagers/{first}", tm)
    await call("GET", tms, tms)
    await call("GET", "/healthz", "/healthz")
    await call("GET", "/readyz", "/readyz")
    engine.ready = False
    await call("GET", "/readyz", "/readyz")
    await call("GET", "/metrics", "/metrics")

    assert {status for _, _, status in checked} >= {200, 400, 403, 404, 422, 503}


ADDRESSES = [
    "10.0.0.7:6122",
    "[::1]:6122",
    "[fe80::1%eth0]:6122",
    "tm-1.flink.svc.cluster.local:6122",
    "localhost:1",
    "10.0.0.7",
    ":6122",
    "10.0.0.7:0",
    "10.0.0.7:65536",
    "10.0.0.7:61a2",
    "[zz::1]:6122",
    "bad host:6122",
    "-dash.example:6122",
    "10.0.0.7:6122\n",
    "a" * 254 + ":6122",
    "http://10.0.0.7:6122",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_address_pattern_is_documented_and_enforced(
    document: dict[str, Any], address: str
) -> None:
    """The Registration schema states the pattern parse_address applies; an address outside
    it is refused, and every address parse_address takes matches it."""
    schema = document["components"]["schemas"]["Registration"]["properties"]["address"]
    assert schema["pattern"] == ADDRESS_PATTERN
    documented = not schema_errors(document, schema, address) and re.fullmatch(
        schema["pattern"], address
    )
    try:
        parse_address({"address": address})
        refused_field = None
    except ProblemError as refused:
        refused_field = refused.field
    accepted = refused_field is None
    assert accepted or refused_field == "address"
    assert not accepted or documented, f"{address!r} taken but outside the documented pattern"
