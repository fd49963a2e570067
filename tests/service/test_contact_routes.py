"""The collectors' and providers' routes over the reminder service in process: call tasks, the
pre-dial gate (409 naming the rule), call outcomes, receipts; bad input is a clear 4xx and
records nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import CadencePaused, CadenceResumed, EventData, envelope
from shared.roles import Role
from tests.service.records import consumer_record, tracking_of
from tests.service.test_agenda import NOON_SHANGHAI, open_cases

from services.reminder.application import Reminders
from services.reminder.domain import ContactPlan
from services.reminder.handlers import HANDLERS

PHONE = "+8613800000000"


@pytest.fixture
def reminder_app(build: Callable[[str], FastAPI], clock: ManualClock) -> Iterator[
        tuple[TestClient, Reminders]]:
    app = build("reminder")
    with TestClient(app) as client:
        yield client, app.state.service


def on_call_day(reminders: Reminders, clock: ManualClock) -> str:
    """L-0 opened at noon in Shanghai, six days on: its call task is issued; returns its id."""
    open_cases(reminders, 1, NOON_SHANGHAI)
    for day in (0, 2, 4, 6):
        clock.set(NOON_SHANGHAI + timedelta(days=day))
        settle(reminders, clock.now())
    (task_id,) = reminders.repository.get(ContactPlan.create_id("L-0")).task_ids
    return str(task_id)


def settle(reminders: Reminders, now: datetime) -> None:
    """Fire what is due until nothing is, as the agenda would, every provider accepting."""
    accepting = {"sms": _Accepting(), "email": _Accepting(), "push": _Accepting()}
    wall = datetime.now(UTC)
    while claimed := reminders.extras.claim_due(now, 100, "t", wall + timedelta(minutes=1),
                                                wall):
        for aggregate_id, kind in claimed:
            reminders.fire(aggregate_id, kind, accepting, now, timedelta(minutes=1))
        reminders.extras.release([i for i, _ in claimed], "t")


def events_of(reminders: Reminders) -> int:
    return reminders.recorder.max_notification_id() or 0


def test_a_collector_lists_the_open_tasks_and_dials_through_the_gate(
        reminder_app: tuple[TestClient, Reminders], clock: ManualClock,
        token: Callable[..., dict[str, str]]) -> None:
    client, reminders = reminder_app
    task_id = on_call_day(reminders, clock)
    collector = token(Role.COLLECTOR, "C-7")
    tasks = client.get("/v1/call-tasks?due=now&collector_id=C-7", headers=collector).json()
    assert [t["task_id"] for t in tasks["tasks"]] == [task_id]
    assert tasks["tasks"][0]["phone_kind"] == "borrower"

    for _ in range(3):
        permit = client.post("/v1/dial-permits", headers=collector,
                             json={"loan_id": "L-0", "task_id": task_id, "phone": PHONE})
        assert permit.status_code == 201, permit.text
        attempt = client.post("/v1/contact-attempts", headers=collector, json={
            "loan_id": "L-0", "permit_id": permit.json()["permit_id"], "channel": "call",
            "phone": PHONE, "outcome": "answered", "attempted_at": clock.now().isoformat()})
        assert attempt.status_code == 202 and attempt.json()["permit_recognised"] is True
    fourth = client.post("/v1/dial-permits", headers=collector,
                         json={"loan_id": "L-0", "task_id": task_id, "phone": PHONE})
    assert fourth.status_code == 409
    error = fourth.json()["error"]
    assert error["code"] == "rule_refused" and error["details"]["rule"] == "C2"
    assert datetime.fromisoformat(error["details"]["deferred_until"]) > clock.now()


def test_a_permit_for_someone_elses_number_is_c13_and_records_nothing(
        reminder_app: tuple[TestClient, Reminders], clock: ManualClock,
        token: Callable[..., dict[str, str]]) -> None:
    client, reminders = reminder_app
    task_id = on_call_day(reminders, clock)
    before = events_of(reminders)
    refused = client.post("/v1/dial-permits", headers=token(Role.COLLECTOR, "C-7"),
                          json={"loan_id": "L-0", "task_id": task_id, "phone": "+8613700000000"})
    assert refused.status_code == 409 and refused.json()["error"]["details"]["rule"] == "C13"
    assert "8613700000000" not in refused.text
    assert events_of(reminders) == before


BAD_PERMITS: list[tuple[dict[str, Any], int]] = [
    ({"loan_id": "L-0", "task_id": "not-a-uuid", "phone": PHONE}, 422),
    ({"loan_id": "L-0", "phone": PHONE}, 422),
    ({"loan_id": "L-0", "task_id": "00000000-0000-4000-8000-000000000000", "phone": "call me"},
     422),
    ({"loan_id": "L-0", "task_id": "00000000-0000-4000-8000-000000000000", "phone": PHONE},
     404),
    ({"loan_id": "L-404", "task_id": "00000000-0000-4000-8000-000000000000", "phone": PHONE},
     404),
    ({"loan_id": "L-0", "task_id": "00000000-0000-4000-8000-000000000000", "phone": PHONE,
      "extra": 1}, 422),
]


@pytest.mark.parametrize(("body", "status"), BAD_PERMITS)
def test_bad_permit_requests_are_4xx_and_record_nothing(
        reminder_app: tuple[TestClient, Reminders], clock: ManualClock,
        token: Callable[..., dict[str, str]], body: dict[str, Any], status: int) -> None:
    client, reminders = reminder_app
    on_call_day(reminders, clock)
    before = events_of(reminders)
    answer = client.post("/v1/dial-permits", headers=token(Role.COLLECTOR, "C-7"), json=body)
    assert answer.status_code == status, answer.text
    assert events_of(reminders) == before


def test_only_collectors_dial_and_only_providers_send_receipts(
        reminder_app: tuple[TestClient, Reminders], token: Callable[..., dict[str, str]]
        ) -> None:
    client, _ = reminder_app
    body = {"loan_id": "L-0", "task_id": "00000000-0000-4000-8000-000000000000",
            "phone": PHONE}
    assert client.post("/v1/dial-permits", json=body).status_code == 401
    assert client.post("/v1/dial-permits", json=body,
                       headers=token(Role.LENDER)).status_code == 403
    receipt = {"message_id": "00000000-0000-4000-8000-000000000000", "status": "delivered",
               "at": "2026-10-14T03:00:00Z"}
    assert client.post("/v1/receipts/sms", json=receipt,
                       headers=token(Role.COLLECTOR, "C-7")).status_code == 403


def test_a_call_outcome_from_the_future_or_for_an_unknown_loan_is_refused(
        reminder_app: tuple[TestClient, Reminders], clock: ManualClock,
        token: Callable[..., dict[str, str]]) -> None:
    client, reminders = reminder_app
    on_call_day(reminders, clock)
    before = events_of(reminders)
    collector = token(Role.COLLECTOR, "C-7")
    attempt = {"loan_id": "L-0", "channel": "call", "phone": PHONE, "outcome": "no_answer",
               "attempted_at": (clock.now() + timedelta(hours=1)).isoformat()}
    future = client.post("/v1/contact-attempts", headers=collector, json=attempt)
    assert future.status_code == 409 and future.json()["error"]["code"] == "attempt_in_future"
    unknown = client.post("/v1/contact-attempts", headers=collector,
                          json={**attempt, "loan_id": "L-404",
                                "attempted_at": clock.now().isoformat()})
    assert unknown.status_code == 404
    sms = client.post("/v1/contact-attempts", headers=collector,
                      json={**attempt, "channel": "sms", "attempted_at": clock.now().isoformat()})
    assert sms.status_code == 422
    assert events_of(reminders) == before


def test_a_dial_without_a_permit_is_recorded_and_said_so(
        reminder_app: tuple[TestClient, Reminders], clock: ManualClock,
        token: Callable[..., dict[str, str]]) -> None:
    client, reminders = reminder_app
    on_call_day(reminders, clock)
    headers = {**token(Role.COLLECTOR, "C-7"), "Idempotency-Key": "dial-1"}
    body = {"loan_id": "L-0", "channel": "call", "phone": PHONE, "outcome": "no_answer",
            "attempted_at": clock.now().isoformat()}
    first = client.post("/v1/contact-attempts", headers=headers, json=body)
    again = client.post("/v1/contact-attempts", headers=headers, json=body)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() and first.json()["permit_recognised"] is False
    assert len(reminders.plan_of("L-0").attempt_ids) == 1  # type: ignore[union-attr]


def test_a_receipt_marks_the_message_delivered(
        reminder_app: tuple[TestClient, Reminders], clock: ManualClock,
        token: Callable[..., dict[str, str]]) -> None:
    client, reminders = reminder_app
    open_cases(reminders, 1, NOON_SHANGHAI)
    (reminder,) = reminders.reminders_of("L-0") or []
    provider = token(Role.PROVIDER, "sink")
    receipt = {"message_id": str(reminder.id), "status": "delivered",
               "at": datetime(2026, 10, 14, 4, 1, tzinfo=UTC).isoformat()}
    early = client.post("/v1/receipts/sms", headers=provider, json=receipt)
    assert early.status_code == 404  # not sent yet
    reminders.send_due(reminder.id, {"sms": _Accepting()}, NOON_SHANGHAI, timedelta(minutes=1))
    assert client.post("/v1/receipts/sms", headers=provider, json=receipt).status_code == 202
    assert client.post("/v1/receipts/email", headers=provider, json=receipt).status_code == 404
    assert client.post("/v1/receipts/fax", headers=provider, json=receipt).status_code == 422
    view = client.get("/v1/loans/L-0/reminders", headers=token(Role.OPS, "ops")).json()
    assert view["sent"][0]["delivery"] == "delivered"


def deliver(reminders: Reminders, clock: ManualClock, data: EventData, event_id: str,
            offset: int) -> None:
    """One event of cases.events through the service's own sink, at the clock's time."""
    event = envelope(data, event_id=event_id, source="/dunwell/escalation", time=clock.now(),
                     causation_id=None, correlation_id=None)
    record = consumer_record(event, "cases.events", offset)
    HandlerSink(reminders, HANDLERS, clock).process(tracking_of(record), record, event,
                                                    event.payload())


def test_a_hardship_pause_hides_the_task_and_its_permit_is_409_contact_paused(
        reminder_app: tuple[TestClient, Reminders], clock: ManualClock,
        token: Callable[..., dict[str, str]]) -> None:
    client, reminders = reminder_app
    task_id = on_call_day(reminders, clock)
    collector = token(Role.COLLECTOR, "C-7")
    body = {"loan_id": "L-0", "task_id": task_id, "phone": PHONE}
    deliver(reminders, clock, CadencePaused.model_validate({
        "loan_id": "L-0", "pause_id": "hardship:H-1", "reason": "hardship",
        "at": clock.now().isoformat()}), "ev-paused", 100)
    assert client.get("/v1/call-tasks?due=now", headers=collector).json() == {"tasks": []}
    before = events_of(reminders)
    refused = client.post("/v1/dial-permits", headers=collector, json=body)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "contact_paused" and "rule" not in error["details"]
    assert error["details"]["pause_id"] == "hardship:H-1"
    assert error["details"]["reason"] == "hardship" and "paused" in error["message"]
    assert events_of(reminders) == before  # a refused permit records nothing
    view = client.get("/v1/loans/L-0/reminders", headers=token(Role.OPS, "ops")).json()
    assert view["call_tasks"][0]["paused_by"] == "hardship:H-1"

    clock.advance(timedelta(hours=1))
    deliver(reminders, clock, CadenceResumed.model_validate({
        "loan_id": "L-0", "pause_id": "hardship:H-1", "reason": "hardship",
        "at": clock.now().isoformat()}), "ev-resumed", 101)
    tasks = client.get("/v1/call-tasks?due=now", headers=collector).json()["tasks"]
    assert [t["task_id"] for t in tasks] == [task_id]  # its day's window is still open
    assert client.post("/v1/dial-permits", headers=collector, json=body).status_code == 201


class _Accepting:
    def send(self, message: Any) -> str:
        return "provider-1"
