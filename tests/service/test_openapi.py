"""Each service's OpenAPI document says how to authenticate, which roles each operation takes,
every status it can answer with the body it carries, and bounds every string it accepts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.auth import Role

Headers = Callable[..., dict[str, str]]
SERVICES = ["escalation", "reminder", "visit", "audit"]
ERROR = "#/components/schemas/ErrorBody"
INVALID = "#/components/schemas/InvalidBody"


@pytest.fixture(params=SERVICES)
def document(request: pytest.FixtureRequest, build: Callable[[str], FastAPI]) -> dict[str, Any]:
    return build(request.param).openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = document["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def schemas_within(document: dict[str, Any], node: Any, seen: set[str]) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref not in seen:
                seen.add(ref)
                yield from schemas_within(document, resolve(document, node), seen)
            return
        yield node
        for value in node.values():
            yield from schemas_within(document, value, seen)
    elif isinstance(node, list):
        for value in node:
            yield from schemas_within(document, value, seen)


# The routes a borrower calls with no token: the check of a collector's letter (rate-limited).
PUBLIC = {("get", "/v1/verify/{code}")}


def test_every_route_takes_a_bearer_jwt_and_names_its_roles(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        assert path.startswith("/v1/")
        if (method, path) in PUBLIC:
            assert operation["security"] == [], (method, path)  # documented as open
            continue
        [requirement] = operation["security"]
        assert set(requirement) == {"bearer"}, (method, path)
        assert requirement["bearer"] and {Role(role) for role in requirement["bearer"]}
    if document["paths"]:
        assert document["components"]["securitySchemes"]["bearer"] == {
            **document["components"]["securitySchemes"]["bearer"],
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def test_every_error_status_is_documented_with_its_body(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
        required = ({"401", "403"} if (method, path) not in PUBLIC else set()) | (
            {"422"} if takes_input else set())
        if "requestBody" in operation:
            required |= {"400", "413"}
        assert required <= set(responses), (method, path, sorted(responses))
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"] == (INVALID if status == "422" else ERROR), (path, status)
            else:
                assert status.startswith("2")
                assert response["content"]["application/json"]["schema"], (path, status)
        if (method, path) not in PUBLIC:
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})


def test_every_string_a_request_carries_is_bounded(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        inputs = [parameter["schema"] for parameter in operation.get("parameters", [])]
        json_body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if json_body is not None:  # an upload's bytes are bounded by the service's limit
            inputs.append(json_body["schema"])
        for node in schemas_within(document, inputs, set()):
            if node.get("type") == "string":
                assert {"maxLength", "enum", "const"} & set(node), (method, path, node)
            if node.get("type") == "array":
                assert "maxItems" in node, (method, path, node)


@pytest.mark.parametrize("service", SERVICES)
def test_the_roles_documented_are_the_roles_enforced(service: str,
                                                     build: Callable[[str], FastAPI],
                                                     token: Headers) -> None:
    app = build(service)
    with TestClient(app) as client:
        for method, path, operation in operations(app.openapi()):
            if (method, path) in PUBLIC:
                continue
            allowed = set(operation["security"][0]["bearer"])
            url = path.replace("{loan_id}", "L-1")
            for role in Role:
                response = client.request(method, url, json={} if method == "post" else None,
                                          headers=token(role, "someone"))
                assert (response.status_code == 403) is (role.value not in allowed), \
                    (method, path, role, response.status_code)
