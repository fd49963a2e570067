"""Escalation's intake API: a report is recorded once (so published once); bad input records
nothing and gets a JSON 4xx; only the lender itself may report."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from shared import topics
from shared.auth import Role, issue_token, now_utc
from shared.clock import ManualClock
from shared.consumer import HandlerSink, Rejected
from shared.events import LoanOverdue, envelope, event_id_for
from tests.helpers import loan_body
from tests.service.records import consumer_record, tracking_of

from services.escalation.application import Cases
from services.escalation.domain import Intake
from services.escalation.handlers import HANDLERS
from services.escalation.relay import integration_event

Headers = Callable[..., dict[str, str]]
AT = "2026-10-14T03:00:00Z"
TWO_MB = 2 * 1024 * 1024

# route -> (a valid body, the same report with one figure changed)
ROUTES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "/v1/loans/overdue": (loan_body("L-1"), loan_body("L-1", amount="999.00")),
    "/v1/loans/L-1/payments": (
        {"amount": "100.00", "currency": "CNY", "paid_at": AT, "remaining_overdue": "0.00"},
        {"amount": "100.00", "currency": "CNY", "paid_at": AT, "remaining_overdue": "50.00"}),
    "/v1/loans/L-1/cease-contact": (
        {"channels": ["sms", "call"], "requested_at": AT},
        {"channels": ["sms"], "requested_at": AT}),
    "/v1/loans/L-1/disputes": (
        {"dispute_id": "D-1", "reason": "the amount is wrong", "opened_at": AT},
        {"dispute_id": "D-2", "reason": "the amount is wrong", "opened_at": AT}),
    "/v1/loans/L-1/disputes/resolve": (
        {"dispute_id": "D-1", "resolution": "amount confirmed", "resolved_at": AT},
        {"dispute_id": "D-1", "resolution": "amount corrected", "resolved_at": AT}),
}
POSTS = list(ROUTES)


def intakes(cases: Cases) -> list[Intake.Reported]:
    """Every report the intake recorded, oldest first (the store holds other events too)."""
    events = [cases.mapper.to_domain_event(n)
              for n in cases.recorder.select_notifications(1, 10_000)]
    return [event for event in events if isinstance(event, Intake.Reported)]


def recorded(cases: Cases) -> int:
    return len(intakes(cases))


def assert_json_error(response: Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if "error" in body:
        assert {"code", "message"} <= set(body["error"])
    else:
        assert "detail" in body


@pytest.fixture
def lender(token: Headers) -> dict[str, str]:
    return token(Role.LENDER, "lender-1")


def known_loan(route: str, escalation: TestClient, headers: dict[str, str]) -> int:
    """A follow-up needs a loan its lender has reported: report L-1 first. Returns how many
    reports that recorded, for the caller to count from."""
    if route == "/v1/loans/overdue":
        return 0
    response = escalation.post("/v1/loans/overdue", json=loan_body("L-1"), headers=headers)
    assert response.status_code == 202, response.text
    return 1


# --- a report is recorded once ---

@pytest.mark.parametrize("route", POSTS)
def test_a_report_is_accepted_and_recorded(route: str, escalation: TestClient, cases: Cases,
                                           lender: dict[str, str]) -> None:
    before = known_loan(route, escalation, lender)
    response = escalation.post(route, json=ROUTES[route][0], headers=lender)
    assert response.status_code == 202, response.text
    assert response.json()["event_id"]
    [*_, intake] = intakes(cases)
    assert recorded(cases) == before + 1
    assert intake.payload["loan_id"] == "L-1"


def test_reports_without_a_key_are_each_recorded(escalation: TestClient, cases: Cases,
                                                 lender: dict[str, str]) -> None:
    first = escalation.post("/v1/loans/overdue", json=loan_body("L-1"), headers=lender)
    second = escalation.post("/v1/loans/overdue", json=loan_body("L-1"), headers=lender)
    assert first.json()["event_id"] != second.json()["event_id"]
    assert recorded(cases) == 2


@pytest.mark.parametrize("route", POSTS)
def test_the_same_idempotency_key_twice_is_one_report(route: str, escalation: TestClient,
                                                      cases: Cases,
                                                      lender: dict[str, str]) -> None:
    before = known_loan(route, escalation, lender)
    headers = {**lender, "Idempotency-Key": "k-1"}
    first = escalation.post(route, json=ROUTES[route][0], headers=headers)
    again = escalation.post(route, json=ROUTES[route][0], headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["event_id"] == first.json()["event_id"]
    assert recorded(cases) == before + 1


@pytest.mark.parametrize("route", POSTS)
def test_the_same_key_for_a_different_report_is_a_conflict(route: str, escalation: TestClient,
                                                           cases: Cases,
                                                           lender: dict[str, str]) -> None:
    before = known_loan(route, escalation, lender)
    headers = {**lender, "Idempotency-Key": "k-1"}
    assert escalation.post(route, json=ROUTES[route][0], headers=headers).status_code == 202
    response = escalation.post(route, json=ROUTES[route][1], headers=headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert recorded(cases) == before + 1


def test_a_key_is_the_lenders_own(escalation: TestClient, cases: Cases, token: Headers) -> None:
    mine = escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                           headers={**token(Role.LENDER, "lender-1"), "Idempotency-Key": "k"})
    theirs = escalation.post("/v1/loans/overdue", json=loan_body("L-2", lender_id="lender-2"),
                             headers={**token(Role.LENDER, "lender-2"), "Idempotency-Key": "k"})
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["event_id"] != theirs.json()["event_id"]
    assert recorded(cases) == 2


def test_the_accepted_id_is_the_id_the_relay_publishes(escalation: TestClient, cases: Cases,
                                                       lender: dict[str, str]) -> None:
    response = escalation.post("/v1/loans/overdue", json=loan_body("L-1"), headers=lender)
    notification = cases.recorder.select_notifications(1, 1)[0]
    assert response.json()["event_id"] == event_id_for(notification.originator_id,
                                                       notification.originator_version)


# --- bad input records nothing ---

def with_extra_field(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "collector_note": "visit the neighbours"}


def with_padding(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "padding": "x" * TWO_MB}


WRONG_TYPES: dict[str, dict[str, Any]] = {
    "/v1/loans/overdue": {"days_past_due": "many", "borrower": "Wang Fang"},
    "/v1/loans/L-1/payments": {"amount": ["100"], "paid_at": "yesterday"},
    "/v1/loans/L-1/cease-contact": {"channels": "sms", "requested_at": 17},
    "/v1/loans/L-1/disputes": {"dispute_id": 7, "reason": {"text": "x"}},
    "/v1/loans/L-1/disputes/resolve": {"resolution": None, "resolved_at": True},
}
NEGATIVE_AMOUNTS = [
    ("/v1/loans/overdue", {"amount_overdue": "-1.00"}),
    ("/v1/loans/overdue", {"days_past_due": -3}),
    ("/v1/loans/L-1/payments", {"amount": "-100.00"}),
    ("/v1/loans/L-1/payments", {"remaining_overdue": "-0.01"}),
]
OUT_OF_CONTRACT = [
    ("/v1/loans/overdue", {"borrower": {**loan_body()["borrower"], "timezone": "Mars/Olympus"}}),
    ("/v1/loans/overdue", {"borrower": {**loan_body()["borrower"], "timezone": "CST"}}),
    ("/v1/loans/overdue", {"currency": "YUAN"}),
    ("/v1/loans/overdue", {"loan_id": "L 1; drop table"}),
    ("/v1/loans/L-1/payments", {"amount": "0.00"}),
    ("/v1/loans/L-1/payments", {"amount": "1.001"}),
    ("/v1/loans/L-1/payments", {"paid_at": "2026-10-14T03:00:00"}),
    ("/v1/loans/L-1/payments", {"currency": "C1"}),
    ("/v1/loans/L-1/cease-contact", {"channels": []}),
    ("/v1/loans/L-1/cease-contact", {"channels": ["carrier pigeon"]}),
    ("/v1/loans/L-1/disputes", {"dispute_id": ""}),
    ("/v1/loans/L-1/disputes", {"reason": "x" * 2001}),
    ("/v1/loans/L-1/disputes/resolve", {"dispute_id": "D" * 65}),
]


def assert_nothing_recorded(response: Response, cases: Cases) -> None:
    assert_json_error(response)
    assert recorded(cases) == 0


@pytest.mark.parametrize("route", POSTS)
@pytest.mark.parametrize("content", [b"{\"amount\": ", b"[{}]"], ids=["truncated", "array"])
def test_malformed_json_is_refused(route: str, content: bytes, escalation: TestClient,
                                   cases: Cases, lender: dict[str, str]) -> None:
    response = escalation.post(route, content=content,
                               headers={**lender, "content-type": "application/json"})
    assert_nothing_recorded(response, cases)


@pytest.mark.parametrize("content", [b"not json", b"", b"[]", b"\"a string\"", b"null",
                                     b"\xff\xfe", b"{\"loan_id\": \"L-1\",}"],
                         ids=["text", "empty", "empty-array", "string", "null", "not-utf8",
                              "trailing-comma"])
def test_a_body_that_is_not_a_json_object_is_refused(content: bytes, escalation: TestClient,
                                                     cases: Cases,
                                                     lender: dict[str, str]) -> None:
    response = escalation.post("/v1/loans/overdue", content=content,
                               headers={**lender, "content-type": "application/json"})
    assert_nothing_recorded(response, cases)


@pytest.mark.parametrize("route", POSTS)
def test_wrong_types_are_refused(route: str, escalation: TestClient, cases: Cases,
                                 lender: dict[str, str]) -> None:
    body = {**ROUTES[route][0], **WRONG_TYPES[route]}
    response = escalation.post(route, json=body, headers=lender)
    assert response.status_code == 422
    assert_nothing_recorded(response, cases)


@pytest.mark.parametrize("route", POSTS)
def test_an_unknown_field_is_refused(route: str, escalation: TestClient, cases: Cases,
                                     lender: dict[str, str]) -> None:
    response = escalation.post(route, json=with_extra_field(ROUTES[route][0]), headers=lender)
    assert response.status_code == 422
    assert_nothing_recorded(response, cases)


@pytest.mark.parametrize("route", POSTS)
@pytest.mark.parametrize("missing", [0, -1], ids=["first-field", "last-field"])
def test_a_missing_field_is_refused(route: str, missing: int, escalation: TestClient,
                                    cases: Cases, lender: dict[str, str]) -> None:
    body = dict(ROUTES[route][0])
    del body[list(body)[missing]]
    response = escalation.post(route, json=body, headers=lender)
    assert response.status_code == 422
    assert_nothing_recorded(response, cases)


@pytest.mark.parametrize(("route", "change"), NEGATIVE_AMOUNTS)
def test_negative_figures_are_refused(route: str, change: dict[str, Any], escalation: TestClient,
                                      cases: Cases, lender: dict[str, str]) -> None:
    response = escalation.post(route, json={**ROUTES[route][0], **change}, headers=lender)
    assert response.status_code == 422
    assert_nothing_recorded(response, cases)


@pytest.mark.parametrize(("route", "change"), OUT_OF_CONTRACT)
def test_values_outside_the_contract_are_refused(route: str, change: dict[str, Any],
                                                 escalation: TestClient, cases: Cases,
                                                 lender: dict[str, str]) -> None:
    response = escalation.post(route, json={**ROUTES[route][0], **change}, headers=lender)
    assert response.status_code == 422
    assert_nothing_recorded(response, cases)


def test_an_unknown_time_zone_is_named_in_the_error(escalation: TestClient, cases: Cases,
                                                    lender: dict[str, str]) -> None:
    body = loan_body("L-1", timezone_name="Mars/Olympus")
    response = escalation.post("/v1/loans/overdue", json=body, headers=lender)
    assert response.status_code == 422
    assert "Mars/Olympus" in json.dumps(response.json())
    assert recorded(cases) == 0


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize("route", POSTS)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_one_mebibyte_is_refused_as_too_large(route: str, framing: str,
                                                          escalation: TestClient, cases: Cases,
                                                          lender: dict[str, str]) -> None:
    data = json.dumps(with_padding(ROUTES[route][0])).encode()
    content: bytes | Iterator[bytes] = data if framing == "content-length" else chunks(data)
    response = escalation.post(route, content=content,
                               headers={**lender, "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert recorded(cases) == 0


@pytest.mark.parametrize("route", ["/v1/loans/L%201/payments",
                                   "/v1/loans/" + "L" * 65 + "/payments",
                                   "/v1/loans/L%3B1/disputes"])
def test_a_malformed_loan_id_in_the_path_is_refused(route: str, escalation: TestClient,
                                                    cases: Cases,
                                                    lender: dict[str, str]) -> None:
    body = ROUTES["/v1/loans/L-1/" + route.rsplit("/", 1)[1]][0]
    response = escalation.post(route, json=body, headers=lender)
    assert response.status_code == 422
    assert_nothing_recorded(response, cases)


def test_an_overlong_idempotency_key_is_refused(escalation: TestClient, cases: Cases,
                                                lender: dict[str, str]) -> None:
    response = escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                               headers={**lender, "Idempotency-Key": "k" * 129})
    assert_nothing_recorded(response, cases)


# --- who may report ---

def test_a_lender_reports_only_its_own_loans(escalation: TestClient, cases: Cases,
                                             lender: dict[str, str]) -> None:
    response = escalation.post("/v1/loans/overdue", json=loan_body("L-1", lender_id="lender-2"),
                               headers=lender)
    assert response.status_code == 403
    assert_nothing_recorded(response, cases)


@pytest.mark.parametrize("route", POSTS[1:])
def test_a_lender_cannot_report_on_another_lenders_case(route: str, escalation: TestClient,
                                                       cases: Cases, clock: ManualClock,
                                                       token: Headers) -> None:
    escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                    headers=token(Role.LENDER, "lender-1"))
    consume_intake(cases, clock)
    before = recorded(cases)
    response = escalation.post(route, json=ROUTES[route][0],
                               headers=token(Role.LENDER, "lender-2"))
    assert response.status_code in (403, 404), response.text
    assert_json_error(response)
    assert recorded(cases) == before


UNAUTHENTICATED = [(route, None) for route in POSTS] + [
    ("/v1/loans/overdue", authorization)
    for authorization in ("Bearer", "Bearer not-a-jwt", "Basic bGVuZGVy", "forged")]


@pytest.mark.parametrize(("route", "authorization"), UNAUTHENTICATED)
def test_without_a_valid_token_is_401(route: str, authorization: str | None,
                                      escalation: TestClient, cases: Cases) -> None:
    headers = {}
    if authorization == "forged":
        forged = issue_token("another-secret-of-sufficient-length-123456", Role.LENDER,
                             "lender-1", now_utc())
        headers["Authorization"] = f"Bearer {forged}"
    elif authorization is not None:
        headers["Authorization"] = authorization
    response = escalation.post(route, json=ROUTES[route][0], headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert recorded(cases) == 0


NOT_LENDERS = [(route, Role.AUDITOR) for route in POSTS] + [
    ("/v1/loans/overdue", role) for role in (Role.OPS, Role.COLLECTOR, Role.PROVIDER)]


@pytest.mark.parametrize(("route", "role"), NOT_LENDERS)
def test_only_a_lender_may_report(route: str, role: Role, escalation: TestClient, cases: Cases,
                                  token: Headers) -> None:
    response = escalation.post(route, json=ROUTES[route][0], headers=token(role, "lender-1"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert recorded(cases) == 0


# --- case look-ups ---

@pytest.mark.parametrize("role", [Role.LENDER, Role.OPS, Role.AUDITOR])
def test_an_unknown_case_is_404(role: Role, escalation: TestClient, token: Headers) -> None:
    response = escalation.get("/v1/cases/L-404", headers=token(role, "lender-1"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_case_is_visible_to_its_lender_and_no_other(escalation: TestClient, cases: Cases,
                                                      clock: ManualClock,
                                                      token: Headers) -> None:
    escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                    headers=token(Role.LENDER, "lender-1"))
    consume_intake(cases, clock)

    mine = escalation.get("/v1/cases/L-1", headers=token(Role.LENDER, "lender-1"))
    assert mine.status_code == 200
    assert (mine.json()["status"], mine.json()["lender_id"]) == ("open", "lender-1")
    theirs = escalation.get("/v1/cases/L-1", headers=token(Role.LENDER, "lender-2"))
    assert theirs.status_code == 404
    assert escalation.get("/v1/cases/L-1", headers=token(Role.AUDITOR, "a-1")).status_code == 200
    assert escalation.get("/v1/cases/L-1").status_code == 401


def consume_intake(cases: Cases, clock: ManualClock) -> None:
    """The relay publishes the recorded intake and escalation's consumer reads it back."""
    notification = cases.recorder.select_notifications(1, 1)[0]
    publication = integration_event(cases.mapper.to_domain_event(notification))
    assert publication is not None
    event = envelope(publication.data, source="/dunwell/escalation", time=clock.now(),
                     event_id=event_id_for(notification.originator_id,
                                           notification.originator_version),
                     causation_id=None, correlation_id=None)
    record = consumer_record(event, topics.LOANS, offset=0)
    assert HandlerSink(cases, HANDLERS, clock).process(tracking_of(record), record, event,
                                                       event.payload()) is True


def test_an_overdue_report_on_another_lenders_loan_is_a_conflict(
        escalation: TestClient, cases: Cases, clock: ManualClock, token: Headers) -> None:
    escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                    headers=token(Role.LENDER, "lender-1"))
    consume_intake(cases, clock)
    before = recorded(cases)
    response = escalation.post("/v1/loans/overdue", json=loan_body("L-1", lender_id="lender-2"),
                               headers=token(Role.LENDER, "lender-2"))
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "loan_of_another_lender"
    assert recorded(cases) == before


def test_another_lenders_overdue_straight_from_kafka_is_rejected(
        escalation: TestClient, cases: Cases, clock: ManualClock, token: Headers) -> None:
    escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                    headers=token(Role.LENDER, "lender-1"))
    consume_intake(cases, clock)
    before = recorded(cases)
    foreign = envelope(LoanOverdue.model_validate(loan_body("L-1", lender_id="lender-2")),
                       source="/lender-2/core", time=clock.now(), event_id="ev-foreign",
                       causation_id=None, correlation_id=None)
    record = consumer_record(foreign, topics.LOANS, offset=1)
    with pytest.raises(Rejected, match="another lender"):
        HandlerSink(cases, HANDLERS, clock).process(tracking_of(record), record, foreign,
                                                    foreign.payload())
    assert recorded(cases) == before
    case = cases.case("L-1")
    assert case is not None and case.lender_id == "lender-1"
