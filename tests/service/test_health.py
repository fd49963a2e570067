"""Every service answers health, readiness and metrics without auth, and documents its routes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

SERVICES = ["escalation", "reminder", "visit", "audit"]

# (method, path) each service serves today under /v1
ROUTES: dict[str, set[tuple[str, str]]] = {
    "escalation": {
        ("post", "/v1/loans/overdue"),
        ("post", "/v1/loans/overdue:batch"),
        ("post", "/v1/loans/{loan_id}/payments"),
        ("post", "/v1/loans/{loan_id}/cease-contact"),
        ("post", "/v1/loans/{loan_id}/disputes"),
        ("post", "/v1/loans/{loan_id}/disputes/resolve"),
        ("get", "/v1/cases/{loan_id}"),
        ("get", "/v1/cases"),
        ("post", "/v1/loans/{loan_id}/promises"),
        ("post", "/v1/loans/{loan_id}/repayment-plans"),
        ("post", "/v1/loans/{loan_id}/hardship"),
        ("post", "/v1/loans/{loan_id}/hardship/end"),
        ("get", "/v1/strategies/{lender_id}"),
        ("put", "/v1/strategies/{lender_id}"),
        ("get", "/v1/strategies/{lender_id}/performance"),
    },
    "reminder": {("get", "/v1/loans/{loan_id}/reminders"), ("get", "/v1/call-tasks"),
                 ("post", "/v1/dial-permits"), ("post", "/v1/contact-attempts"),
                 ("post", "/v1/receipts/{channel}"),
                 ("post", "/v1/receipts/{channel}:batch")},
    "visit": {("post", "/v1/agencies"), ("post", "/v1/collectors"),
              ("post", "/v1/collectors/{collector_id}/revoke"),
              ("get", "/v1/collectors/{collector_id}"), ("get", "/v1/verify/{code}"),
              ("get", "/v1/visits"), ("get", "/v1/visits/{visit_id}"),
              ("post", "/v1/visits/{visit_id}/verify"), ("post", "/v1/visits/{visit_id}/schedule"),
              ("post", "/v1/visits/{visit_id}/decline"), ("post", "/v1/visits/{visit_id}/consent"),
              ("post", "/v1/visits/{visit_id}/check-in"),
              ("put", "/v1/visits/{visit_id}/recording"),
              ("post", "/v1/visits/{visit_id}/record"), ("post", "/v1/visits/{visit_id}/cancel"),
              ("post", "/v1/complaints"), ("post", "/v1/complaints/{complaint_id}/resolve"),
              ("get", "/v1/complaints/{complaint_id}")},
    "audit": {("get", "/v1/loans/{loan_id}/timeline"), ("get", "/v1/checkpoint"),
              ("get", "/v1/keys"),
              ("get", "/v1/proofs/inclusion"), ("get", "/v1/proofs/consistency"),
              ("get", "/v1/loans/{loan_id}/evidence"), ("get", "/v1/loans/{loan_id}/compliance"),
              ("get", "/v1/violations")},
}


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def client(service: str, build: Callable[[str], FastAPI]) -> Iterator[TestClient]:
    with TestClient(build(service)) as running:
        yield running


def test_healthz_is_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_checks_only_the_store_without_a_broker(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"store": True}}


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "dunwell_http_requests_total" in response.text


def test_openapi_lists_the_service_routes(service: str, client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == f"dunwell {service}"
    served = {(method, path) for path, item in document["paths"].items() for method in item}
    assert served == ROUTES[service]


def test_operations_routes_stay_out_of_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)
    assert all(path.startswith("/v1/") for path in paths)


@pytest.mark.parametrize("path", ["/v1/nowhere", "/healthz/extra"])
def test_an_unknown_path_is_a_json_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
