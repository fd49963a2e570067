"""The intake takes the contract exactly: loose JSON types, exponent money, non-currencies, fake
zones and a body naming another loan are 422; a follow-up on a loan this lender never reported
is 404, whether its case is open yet or not. Nothing refused is recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared import topics
from shared.auth import Role
from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import LoanOverdue, envelope
from tests.helpers import loan_body
from tests.service.records import consumer_record, tracking_of

from services.escalation.application import Cases
from services.escalation.domain import Intake, ReportedLoan
from services.escalation.handlers import HANDLERS
from services.escalation.relay import integration_event

Headers = Callable[..., dict[str, str]]
AT = "2026-10-14T03:00:00Z"
BORROWER = loan_body()["borrower"]

FOLLOW_UPS: dict[str, dict[str, Any]] = {
    "payments": {"amount": "100.00", "currency": "CNY", "paid_at": AT,
                 "remaining_overdue": "0.00"},
    "cease-contact": {"channels": ["sms"], "requested_at": AT},
    "disputes": {"dispute_id": "D-1", "reason": "the amount is wrong", "opened_at": AT},
    "disputes/resolve": {"dispute_id": "D-1", "resolution": "confirmed", "resolved_at": AT},
}


def reports(cases: Cases) -> int:
    events = [cases.mapper.to_domain_event(n)
              for n in cases.recorder.select_notifications(1, 10_000)]
    return sum(isinstance(event, Intake.Reported) for event in events)


@pytest.fixture
def lender(token: Headers) -> dict[str, str]:
    return token(Role.LENDER, "lender-1")


def consume(cases: Cases, clock: ManualClock, data: LoanOverdue, offset: int = 0) -> None:
    """The escalation consumer takes a LoanOverdue off loans.events and opens its case."""
    event = envelope(data, source="/lender-1/core", time=clock.now(), event_id=f"ev-{offset}",
                     causation_id=None, correlation_id=None)
    record = consumer_record(event, topics.LOANS, offset=offset)
    assert HandlerSink(cases, HANDLERS, clock).process(tracking_of(record), record, event,
                                                       event.payload())


OVERDUE_REFUSED = {
    "dpd-true": {"days_past_due": True},
    "dpd-string": {"days_past_due": "30"},
    "dpd-float": {"days_past_due": 30.0},
    "money-exponent": {"amount_overdue": "1E+6"},
    "money-number": {"amount_overdue": 1200.5},
    "currency-XXX": {"currency": "XXX"},
    "currency-ABC": {"currency": "ABC"},
    "currency-lowercase": {"currency": "cny"},
    "zone-posixrules": {"borrower": {**BORROWER, "timezone": "posixrules"}},
    "zone-Factory": {"borrower": {**BORROWER, "timezone": "Factory"}},
    "zone-localtime": {"borrower": {**BORROWER, "timezone": "localtime"}},
    "date-with-time": {"due_date": "2026-10-01T00:00:00"},
    "overlong-name": {"borrower": {**BORROWER, "name": "x" * 201}},
    "blank-repayment-channel": {"repayment_channel": " "},
    "ideographic-space-channel": {"repayment_channel": "\u3000"},
    "blank-verification-channel": {"verification_channel": "\n"},
    "blank-name": {"borrower": {**BORROWER, "name": "  "}},
    "loan-id-dot": {"loan_id": "."},
    "loan-id-dots": {"loan_id": ".."},
}


@pytest.mark.parametrize("change", list(OVERDUE_REFUSED.values()), ids=list(OVERDUE_REFUSED))
def test_a_loose_overdue_report_is_422(change: dict[str, Any], escalation: TestClient,
                                       cases: Cases, lender: dict[str, str]) -> None:
    response = escalation.post("/v1/loans/overdue", json={**loan_body("L-1"), **change},
                               headers=lender)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert reports(cases) == 0


PAYMENT_REFUSED = {
    "amount-exponent": {"amount": "1E+6"},
    "amount-number": {"amount": 100},
    "remaining-exponent": {"remaining_overdue": "0E-2"},
    "currency-XXX": {"currency": "XXX"},
    "currency-ABC": {"currency": "ABC"},
    "currency-lowercase": {"currency": "cny"},
    "time-as-number": {"paid_at": 1700000000},
    "time-as-digits": {"paid_at": "1700000000"},
}


@pytest.mark.parametrize("change", list(PAYMENT_REFUSED.values()), ids=list(PAYMENT_REFUSED))
def test_a_loose_payment_is_422(change: dict[str, Any], escalation: TestClient, cases: Cases,
                                lender: dict[str, str]) -> None:
    assert escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                           headers=lender).status_code == 202
    body = {**FOLLOW_UPS["payments"], **change}
    response = escalation.post("/v1/loans/L-1/payments", json=body, headers=lender)
    assert response.status_code == 422, response.text
    assert reports(cases) == 1


@pytest.mark.parametrize("route", list(FOLLOW_UPS))
def test_a_body_may_repeat_the_paths_loan_id(route: str, escalation: TestClient,
                                             cases: Cases, lender: dict[str, str]) -> None:
    escalation.post("/v1/loans/overdue", json=loan_body("L-1"), headers=lender)
    response = escalation.post(f"/v1/loans/L-1/{route}",
                               json={"loan_id": "L-1", **FOLLOW_UPS[route]}, headers=lender)
    assert response.status_code == 202, response.text
    assert reports(cases) == 2


@pytest.mark.parametrize("route", list(FOLLOW_UPS))
def test_a_body_naming_another_loan_is_422(route: str, escalation: TestClient, cases: Cases,
                                           lender: dict[str, str]) -> None:
    for loan_id in ("L-1", "L-2"):
        escalation.post("/v1/loans/overdue", json=loan_body(loan_id), headers=lender)
    response = escalation.post(f"/v1/loans/L-1/{route}",
                               json={"loan_id": "L-2", **FOLLOW_UPS[route]}, headers=lender)
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["details"]
    assert (problem["loc"], problem["type"]) == (["body", "loan_id"], "loan_id_mismatch")
    assert reports(cases) == 2


@pytest.mark.parametrize("route", list(FOLLOW_UPS))
def test_a_follow_up_on_an_unreported_loan_is_404(route: str, escalation: TestClient,
                                                  cases: Cases,
                                                  lender: dict[str, str]) -> None:
    response = escalation.post(f"/v1/loans/L-404/{route}", json=FOLLOW_UPS[route],
                               headers=lender)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    assert reports(cases) == 0


@pytest.mark.parametrize("route", list(FOLLOW_UPS))
def test_a_loan_reported_over_http_is_known_before_its_case_opens(
        route: str, escalation: TestClient, cases: Cases, lender: dict[str, str]) -> None:
    escalation.post("/v1/loans/overdue", json=loan_body("L-1"), headers=lender)
    assert cases.case("L-1") is None  # the intake is not back from Kafka yet
    response = escalation.post(f"/v1/loans/L-1/{route}", json=FOLLOW_UPS[route],
                               headers=lender)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("route", list(FOLLOW_UPS))
def test_a_loan_reported_straight_on_kafka_is_known_once_its_case_opens(
        route: str, escalation: TestClient, cases: Cases, clock: ManualClock,
        lender: dict[str, str]) -> None:
    consume(cases, clock, LoanOverdue.model_validate(loan_body("L-1")))
    response = escalation.post(f"/v1/loans/L-1/{route}", json=FOLLOW_UPS[route],
                               headers=lender)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("route", list(FOLLOW_UPS))
def test_another_lenders_loan_is_404_before_and_after_its_case_opens(
        route: str, escalation: TestClient, cases: Cases, clock: ManualClock,
        token: Headers) -> None:
    escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                    headers=token(Role.LENDER, "lender-1"))
    other = token(Role.LENDER, "lender-2")
    before = escalation.post(f"/v1/loans/L-1/{route}", json=FOLLOW_UPS[route], headers=other)
    [notification] = [n for n in cases.recorder.select_notifications(1, 100)
                      if isinstance(cases.mapper.to_domain_event(n), Intake.Reported)]
    publication = integration_event(cases.mapper.to_domain_event(notification))
    assert publication is not None and isinstance(publication.data, LoanOverdue)
    consume(cases, clock, publication.data)
    after = escalation.post(f"/v1/loans/L-1/{route}", json=FOLLOW_UPS[route], headers=other)
    assert (before.status_code, after.status_code) == (404, 404)
    assert reports(cases) == 1


def test_an_overdue_report_on_a_loan_another_lender_reported_is_a_conflict_at_once(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                    headers=token(Role.LENDER, "lender-1"))
    response = escalation.post("/v1/loans/overdue", json=loan_body("L-1", lender_id="lender-2"),
                               headers=token(Role.LENDER, "lender-2"))
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "loan_of_another_lender"
    assert reports(cases) == 1


def test_money_comes_back_with_two_places(escalation: TestClient, cases: Cases,
                                          clock: ManualClock, lender: dict[str, str]) -> None:
    consume(cases, clock, LoanOverdue.model_validate(loan_body("L-1", amount="1000000")))
    case = escalation.get("/v1/cases/L-1", headers=lender).json()
    assert case["amount_overdue"] == "1000000.00"


@pytest.mark.parametrize(("rival", "status"), [("lender-1", 202), ("lender-2", 409)])
def test_a_first_report_racing_another_is_decided_again(
        rival: str, status: int, escalation: TestClient, cases: Cases,
        lender: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another request records the same new loan between our check and our save: the save
    conflicts, and the report is decided again against what the other one recorded."""
    save = cases.save
    raced: list[bool] = []

    def save_after_a_rival(*aggregates: Any, **kwargs: Any) -> Any:
        if not raced:
            raced.append(True)
            save(ReportedLoan(loan_id="L-1", lender_id=rival))
        return save(*aggregates, **kwargs)

    monkeypatch.setattr(cases, "save", save_after_a_rival)
    response = escalation.post("/v1/loans/overdue", json=loan_body("L-1"), headers=lender)
    assert response.status_code == status, response.text
    assert reports(cases) == (1 if status == 202 else 0)
    assert cases.lender_of("L-1") == rival


@pytest.mark.parametrize(("field", "value"), [
    ("timezone", "wang.fang@example.org"), ("timezone", "+8613800000000")])
def test_a_refusal_never_repeats_what_it_refuses(field: str, value: str,
                                                 escalation: TestClient,
                                                 lender: dict[str, str]) -> None:
    body = loan_body("L-1")
    body["borrower"] = {**body["borrower"], field: value}
    for changed in (body, {**loan_body("L-1"), "currency": value}):
        response = escalation.post("/v1/loans/overdue", json=changed, headers=lender)
        assert response.status_code == 422
        assert value not in response.text and "13800000000" not in response.text


def test_an_empty_idempotency_key_is_refused_not_ignored(escalation: TestClient, cases: Cases,
                                                         lender: dict[str, str]) -> None:
    response = escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                               headers={**lender, "Idempotency-Key": ""})
    assert response.status_code == 422
    assert reports(cases) == 0


def test_idempotency_keys_are_each_lenders_own(escalation: TestClient, token: Headers) -> None:
    """Lender "acme/eu" with key "k1" and lender "acme" with key "eu/k1" are two keys."""
    first = escalation.post("/v1/loans/overdue", json=loan_body("L-1", lender_id="acme/eu"),
                            headers={**token(Role.LENDER, "acme/eu"), "Idempotency-Key": "k1"})
    other = escalation.post("/v1/loans/overdue", json=loan_body("L-2", lender_id="acme"),
                            headers={**token(Role.LENDER, "acme"), "Idempotency-Key": "eu/k1"})
    assert (first.status_code, other.status_code) == (202, 202)
    assert first.json()["event_id"] != other.json()["event_id"]
