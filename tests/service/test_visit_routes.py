"""The visit service as its composition root builds it: the registry, each step of a visit
over HTTP with its rules (C3, C4, C7–C12), the notice from the reminder's reports, the
recording, complaints (C14) and the borrower's check of a letter; cases.events and
reminders.events fed through the consumer's sink, and what the relay would publish read back."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import (
    Borrower,
    CaseClosed,
    CaseOpened,
    Channel,
    ComplaintOverdue,
    ContactHeld,
    EventData,
    Reason,
    ReminderDelivered,
    ReminderSent,
    VisitBlocked,
    VisitCancelled,
    VisitCheckedIn,
    VisitRecorded,
    VisitRecordingStored,
    VisitRequested,
    VisitScheduled,
    VisitWriteUpOverdue,
    envelope,
)
from shared.roles import Role
from tests.service.records import consumer_record, tracking_of

from services.visit.application import Visits
from services.visit.handlers import HANDLERS

Headers = Callable[..., dict[str, str]]
SHANGHAI = timedelta(hours=8)
# The service tier's clock starts at 2026-10-14 03:00 UTC, 11:00 in Shanghai.
START = datetime(2026, 10, 16, 2, 0, tzinfo=UTC)  # 10:00 local, two days on
END = datetime(2026, 10, 16, 4, 0, tzinfo=UTC)    # 12:00 local
AUDIO = {"Content-Type": "audio/mpeg"}


class Feed:
    """Events onto the visit service's sink, as the consumer hands them over."""

    def __init__(self, visits: Visits, clock: ManualClock) -> None:
        self.sink = HandlerSink(visits, HANDLERS, clock)
        self.clock = clock
        self.offset = 0

    def __call__(self, data: EventData, event_id: str | None = None) -> str:
        event_id = event_id or f"ev-{uuid4()}"
        event = envelope(data, event_id=event_id, source="/dunwell/test",
                         time=self.clock.now(), causation_id=None, correlation_id=None)
        record = consumer_record(event, data.topic, self.offset)
        self.offset += 1
        self.sink.process(tracking_of(record), record, event, event.payload())
        return event_id


def published(visits: Visits) -> list[Any]:
    outbox = visits_app_outbox(visits)
    return [data for data in (outbox(visits.mapper.to_domain_event(n))
                              for n in visits.recorder.select_notifications(1, 10_000))
            if data is not None]


def visits_app_outbox(visits: Visits) -> Callable[[Any], Any]:
    from services.visit.relay import publisher

    mapping = publisher(lambda i, v: visits.repository.get(i, version=v))

    def data(event: Any) -> Any:
        publication = mapping(event)
        return publication.data if publication is not None else None
    return data


@pytest.fixture
def app(build: Callable[[str], FastAPI]) -> FastAPI:
    return build("visit")


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    with TestClient(app) as client:
        yield client  # type: ignore[misc]


@pytest.fixture
def visits(app: FastAPI) -> Visits:
    service: Visits = app.state.service
    return service


@pytest.fixture
def feed(visits: Visits, clock: ManualClock) -> Feed:
    return Feed(visits, clock)


def letter(lender: str = "lender-1", until: str = "2027-12-31") -> dict[str, Any]:
    return {"letter_id": "LTR-1", "lender_id": lender, "scope": "field visits",
            "valid_from": "2026-01-01", "valid_until": until}


def register(client: TestClient, token: Headers, collector_id: str, **changes: Any) -> str:
    body = {"collector_id": collector_id, "name": f"Collector {collector_id}",
            "agency_id": "AG-1", "id_number": "110101199001011234", "contact": "+861390000",
            "certification": {"number": f"CERT-{collector_id}", "valid_until": "2027-06-30"},
            "authorisation_letter": letter(), **changes}
    answer = client.post("/v1/collectors", json=body, headers=token(Role.OPS, "ops-1"))
    assert answer.status_code == 201, answer.text
    code: str = answer.json()["verification_code"]
    return code


@pytest.fixture
def registry(client: TestClient, token: Headers) -> dict[str, str]:
    answer = client.post("/v1/agencies", headers=token(Role.OPS, "ops-1"), json={
        "agency_id": "AG-1", "name": "North Field Services", "licence_number": "LIC-9",
        "authorised_lenders": ["lender-1"], "reviewed_at": "2026-03-01",
        "next_review_due": "2027-03-01"})
    assert answer.status_code == 201, answer.text
    return {c: register(client, token, c) for c in ("C-1", "C-2")}


def open_case(feed: Feed, clock: ManualClock, loan_id: str = "L-1") -> None:
    feed(CaseOpened(
        loan_id=loan_id, lender_id="lender-1",
        borrower=Borrower(borrower_id="B-1", name="Wang Fang", phone="+8613800000000",
                          timezone="Asia/Shanghai", residence_address="1 Hill Road, Pudong"),
        amount_overdue=Decimal("5000.00"), currency="CNY", due_date=date(2026, 7, 14),
        days_past_due=92, repayment_channel="transfer to account 6222-0000-1111",
        stage="field_visit", opened_at=clock.now()))


def requested(feed: Feed, visits: Visits, clock: ManualClock, loan_id: str = "L-1") -> str:
    feed(VisitRequested(loan_id=loan_id, policy_version="cn-2026.1/default@1",
                        stage="field_visit", requested_at=clock.now(),
                        reasons=[Reason(code="dpd", value="92", threshold="91")]))
    (visit,) = visits.visits_of_loan(loan_id)
    return visit.visit_id


FACTS = {"name": "Wang Fang", "phone": "+86 138 0000 0000", "amount_overdue": "5000.00",
         "days_past_due": 92}


def verified(client: TestClient, token: Headers, visit_id: str) -> None:
    answer = client.post(f"/v1/visits/{visit_id}/verify", json=FACTS,
                         headers=token(Role.OPS, "ops-1"))
    assert answer.status_code == 202, answer.text


def schedule(client: TestClient, token: Headers, visit_id: str, **changes: Any) -> Any:
    body = {"scheduled_start": START.isoformat(), "scheduled_end": END.isoformat(),
            "address_kind": "residence", "collector_ids": ["C-1", "C-2"], **changes}
    return client.post(f"/v1/visits/{visit_id}/schedule", json=body,
                       headers=token(Role.OPS, "ops-1"))


def noticed(feed: Feed, visit_id: str, at: datetime) -> None:
    reminder_id = uuid4()
    feed(ReminderSent(loan_id="L-1", reminder_id=reminder_id, channel=Channel.SMS,
                      template_id="visit.notice", template_version=1, sent_at=at,
                      borrower_local_time="x", visit_id=UUID(visit_id)))
    feed(ReminderDelivered(loan_id="L-1", reminder_id=reminder_id, channel=Channel.SMS,
                           delivered_at=at, visit_id=UUID(visit_id)))


def check_in(client: TestClient, token: Headers, visit_id: str, at: datetime,
             collectors: tuple[str, ...] = ("C-1", "C-2"), **shown: bool) -> Any:
    credentials = {"id_card": True, "badge": True, "authorisation_letter": True, **shown}
    return client.post(f"/v1/visits/{visit_id}/check-in",
                       headers=token(Role.COLLECTOR, collectors[0]),
                       json={"collector_ids": list(collectors),
                             "credentials_presented": credentials,
                             "checked_in_at": at.isoformat()})


def refused(answer: Any, rule: str) -> dict[str, Any]:
    assert answer.status_code == 409, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == "rule_refused" and error["details"]["rule"] == rule, error
    return error


def test_a_visit_from_request_to_write_up(client: TestClient, token: Headers, feed: Feed,
                                          visits: Visits, clock: ManualClock,
                                          registry: dict[str, str]) -> None:
    open_case(feed, clock)
    visit_id = requested(feed, visits, clock)
    view = client.get(f"/v1/visits/{visit_id}", headers=token(Role.OPS, "ops-1")).json()
    assert view["status"] == "requested"
    assert view["dossier"]["address_kinds"] == ["residence"]
    assert view["dossier"]["days_past_due"] == 92

    refused(schedule(client, token, visit_id), "C7")
    wrong = client.post(f"/v1/visits/{visit_id}/verify", headers=token(Role.OPS, "ops-1"),
                        json={**FACTS, "name": "Wang Fan", "days_past_due": 91})
    assert refused(wrong, "C7")["details"]["fields"] == ["name", "days_past_due"]
    verified(client, token, visit_id)

    refused(schedule(client, token, visit_id, collector_ids=["C-1"]), "C10")
    night = schedule(client, token, visit_id,
                     scheduled_start=(START + timedelta(hours=11)).isoformat(),
                     scheduled_end=(START + timedelta(hours=13)).isoformat())  # 21:00–23:00
    refused(night, "C11")
    refused(schedule(client, token, visit_id, address_kind="workplace"), "C11")
    assert schedule(client, token, visit_id).status_code == 202
    assert schedule(client, token, visit_id).json()["changed"] is False  # a retry
    (scheduled,) = [e for e in published(visits) if isinstance(e, VisitScheduled)]
    assert scheduled.collector_ids == ["C-1", "C-2"]
    assert {c.verification_code for c in scheduled.collectors} == set(registry.values())

    delivered_at = START - timedelta(hours=20)
    noticed(feed, visit_id, delivered_at)
    clock.set(START + timedelta(minutes=5))
    refused(check_in(client, token, visit_id, clock.now()), "C8")  # only 20 h of notice
    (blocked,) = [e for e in published(visits) if isinstance(e, VisitBlocked)]
    assert blocked.rule == "C8"
    assert not [e for e in published(visits) if isinstance(e, VisitCheckedIn)]


def _ready(client: TestClient, token: Headers, feed: Feed, visits: Visits,
           clock: ManualClock) -> str:
    """A verified visit scheduled 10:00–12:00 two days on, its notice delivered at once."""
    open_case(feed, clock)
    visit_id = requested(feed, visits, clock)
    verified(client, token, visit_id)
    assert schedule(client, token, visit_id).status_code == 202
    noticed(feed, visit_id, clock.now())
    return visit_id


def test_check_in_record_and_the_promise_is_in_the_write_up(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, clock: ManualClock,
        registry: dict[str, str]) -> None:
    visit_id = _ready(client, token, feed, visits, clock)
    assert client.get(f"/v1/visits/{visit_id}",
                      headers=token(Role.OPS, "ops-1")).json()["status"] == "notified"
    clock.set(START - timedelta(minutes=1))
    refused(check_in(client, token, visit_id, clock.now()), "C8")  # before the window
    clock.set(START + timedelta(minutes=10))
    refused(check_in(client, token, visit_id, clock.now(), badge=False), "C10")
    refused(check_in(client, token, visit_id, clock.now(), collectors=("C-1",)), "C10")
    assert check_in(client, token, visit_id, clock.now()).status_code == 202

    body = {"outcome": "promise", "borrower_attitude": "cooperative",
            "difficulties": "lost a job in August", "recording_seconds": 1800,
            "ended_at": (clock.now() + timedelta(minutes=30)).isoformat(),
            "promise_to_pay": {"amount": "500.00", "currency": "CNY",
                               "due_date": "2026-10-20"}}
    collector = token(Role.COLLECTOR, "C-1")
    clock.set(START + timedelta(minutes=45))
    missing = client.post(f"/v1/visits/{visit_id}/record", headers=collector,
                          json={**body, "recording_sha256": "0" * 64})
    refused(missing, "C12")
    audio = b"\x00\x01recording" * 1000
    uploaded = client.put(f"/v1/visits/{visit_id}/recording", content=audio,
                          headers={**collector, **AUDIO})
    assert uploaded.status_code == 201, uploaded.text
    sha = hashlib.sha256(audio).hexdigest()
    assert uploaded.json() == {"recording_sha256": sha, "bytes": len(audio)}
    refused(client.post(f"/v1/visits/{visit_id}/record", headers=collector,
                        json={**body, "recording_sha256": "1" * 64}), "C12")
    done = client.post(f"/v1/visits/{visit_id}/record", headers=collector,
                       json={**body, "recording_sha256": sha})
    assert done.status_code == 202, done.text
    events = published(visits)
    (stored,) = [e for e in events if isinstance(e, VisitRecordingStored)]
    (record,) = [e for e in events if isinstance(e, VisitRecorded)]
    assert stored.recording_sha256 == record.recording_sha256 == sha
    promise = record.promise_to_pay
    assert promise is not None and promise.amount == Decimal("500.00")
    assert promise.due_date == date(2026, 10, 20)
    assert client.get(f"/v1/visits/{visit_id}",
                      headers=token(Role.OPS, "ops-1")).json()["status"] == "recorded"


def test_a_decline_stops_the_check_in_and_a_new_schedule(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, clock: ManualClock,
        registry: dict[str, str]) -> None:
    visit_id = _ready(client, token, feed, visits, clock)
    declined = client.post(f"/v1/visits/{visit_id}/decline", headers=token(Role.LENDER),
                           json={"declined_at": clock.now().isoformat(), "via": "sms_reply"})
    assert declined.status_code == 202, declined.text
    clock.set(START + timedelta(minutes=10))
    refused(check_in(client, token, visit_id, clock.now()), "C9")
    consent = client.post(f"/v1/visits/{visit_id}/consent", headers=token(Role.LENDER),
                          json={"consented_at": clock.now().isoformat(), "via": "hotline"})
    assert consent.status_code == 202, consent.text
    assert client.get(f"/v1/visits/{visit_id}",
                      headers=token(Role.OPS, "ops-1")).json()["status"] == "requested"


def test_closing_the_case_calls_the_visit_off_at_once(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, clock: ManualClock,
        registry: dict[str, str]) -> None:
    visit_id = _ready(client, token, feed, visits, clock)
    feed(CaseClosed(loan_id="L-1", reason="paid in full", closed_at=clock.now()))
    (cancelled,) = [e for e in published(visits) if isinstance(e, VisitCancelled)]
    assert cancelled.rule == "C4" and str(cancelled.visit_id) == visit_id
    clock.set(START + timedelta(minutes=10))
    answer = check_in(client, token, visit_id, clock.now())
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "visit_cancelled"


def test_a_dispute_calls_the_visit_off_and_refuses_a_schedule(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, clock: ManualClock,
        registry: dict[str, str]) -> None:
    open_case(feed, clock)
    visit_id = requested(feed, visits, clock)
    verified(client, token, visit_id)
    feed(ContactHeld(loan_id="L-1", rule="C3", reason="dispute", at=clock.now(),
                     hold_id="dispute:D-1"))
    (cancelled,) = [e for e in published(visits) if isinstance(e, VisitCancelled)]
    assert cancelled.rule == "C3"


def test_a_letter_that_lapses_or_is_another_lenders_is_c10(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, clock: ManualClock,
        registry: dict[str, str]) -> None:
    open_case(feed, clock)
    visit_id = requested(feed, visits, clock)
    verified(client, token, visit_id)
    register(client, token, "C-3", authorisation_letter=letter(until="2026-10-14"))
    register(client, token, "C-4", authorisation_letter=letter(lender="lender-2"))
    lapsed = refused(schedule(client, token, visit_id, collector_ids=["C-1", "C-3"]), "C10")
    assert "C-3: authorisation letter LTR-1 valid" in lapsed["details"]["reason"]
    other = refused(schedule(client, token, visit_id, collector_ids=["C-1", "C-4"]), "C10")
    assert "another lender" in other["details"]["reason"]
    revoked = client.post("/v1/collectors/C-2/revoke", json={"reason": "left the agency"},
                          headers=token(Role.OPS, "ops-1"))
    assert revoked.status_code == 202
    refused(schedule(client, token, visit_id), "C10")


def test_the_borrowers_check_of_a_code(client: TestClient, token: Headers, feed: Feed,
                                       visits: Visits, clock: ManualClock,
                                       registry: dict[str, str]) -> None:
    visit_id = _ready(client, token, feed, visits, clock)
    clock.set(START + timedelta(minutes=30))
    answer = client.get(f"/v1/verify/{registry['C-1']}")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["valid"] is True and found["collector_name"] == "Collector C-1"
    assert found["agency"] == "North Field Services" and found["lender_id"] == "lender-1"
    assert found["visit_window"] is not None
    assert not {"amount_overdue", "loan_id", "days_past_due"} & set(found)
    assert "5000" not in answer.text and visit_id not in answer.text
    assert client.get("/v1/verify/NOSUCHCODE").status_code == 404
    statuses = [client.get(f"/v1/verify/{registry['C-2']}").status_code for _ in range(100)]
    assert statuses.count(429) >= 80 and statuses[0] == 200


def test_a_collector_sees_only_their_own_visits(client: TestClient, token: Headers,
                                                feed: Feed, visits: Visits,
                                                clock: ManualClock,
                                                registry: dict[str, str]) -> None:
    visit_id = _ready(client, token, feed, visits, clock)
    register(client, token, "C-9")
    mine = client.get("/v1/visits", headers=token(Role.COLLECTOR, "C-1")).json()["visits"]
    assert [v["visit_id"] for v in mine] == [visit_id]
    assert client.get("/v1/visits", headers=token(Role.COLLECTOR, "C-9")).json() == {
        "visits": []}
    assert client.get(f"/v1/visits/{visit_id}",
                      headers=token(Role.COLLECTOR, "C-9")).status_code == 404
    other = client.get("/v1/visits?loan_id=L-1", headers=token(Role.LENDER, "lender-2"))
    assert other.json() == {"visits": []}
    assert len(client.get("/v1/visits?loan_id=L-1",
                          headers=token(Role.LENDER)).json()["visits"]) == 1


def test_a_complaint_is_shown_with_the_collectors_later_schedules(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, clock: ManualClock,
        registry: dict[str, str]) -> None:
    open_case(feed, clock)
    filed = client.post("/v1/complaints", headers=token(Role.LENDER), json={
        "loan_id": "L-1", "about": "collector", "collector_id": "C-1",
        "details": "raised voice on the phone", "filed_at": clock.now().isoformat()})
    assert filed.status_code == 201, filed.text
    complaint_id = filed.json()["complaint_id"]
    assert filed.json()["answer_by"].startswith("2026-10-29")  # cn: 15 days
    visit_id = requested(feed, visits, clock)
    verified(client, token, visit_id)
    assert schedule(client, token, visit_id).status_code == 202
    view = client.get(f"/v1/visits/{visit_id}", headers=token(Role.OPS, "ops-1")).json()
    assert view["open_complaints"] == [complaint_id]
    resolved = client.post(f"/v1/complaints/{complaint_id}/resolve",
                           headers=token(Role.OPS, "ops-1"),
                           json={"outcome": "apologised; coached", "resolved_at":
                                 clock.now().isoformat()})
    assert resolved.status_code == 202
    other = client.post("/v1/complaints", headers=token(Role.LENDER, "lender-2"), json={
        "loan_id": "L-1", "about": "visit", "filed_at": clock.now().isoformat()})
    assert other.status_code == 409 and other.json()["error"]["details"]["field"] == "loan_id"


def test_a_recording_must_be_audio_or_video(client: TestClient, token: Headers, feed: Feed,
                                            visits: Visits, clock: ManualClock,
                                            registry: dict[str, str]) -> None:
    visit_id = _ready(client, token, feed, visits, clock)
    collector = token(Role.COLLECTOR, "C-1")
    early = client.put(f"/v1/visits/{visit_id}/recording", content=b"abc",
                       headers={**collector, **AUDIO})
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_checked_in"
    clock.set(START + timedelta(minutes=10))
    assert check_in(client, token, visit_id, clock.now()).status_code == 202
    text = client.put(f"/v1/visits/{visit_id}/recording", content=b"abc",
                      headers={**collector, "Content-Type": "text/plain"})
    assert text.status_code == 415
    big = b"x" * (3 * 1024 * 1024)  # past the 1 MiB limit of every other body
    answer = client.put(f"/v1/visits/{visit_id}/recording", content=big,
                        headers={**collector, "Content-Type": "video/mp4"})
    assert answer.status_code == 201 and answer.json()["bytes"] == len(big)


def test_a_notice_report_of_another_loan_does_not_notify_this_visit(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, clock: ManualClock,
        registry: dict[str, str]) -> None:
    open_case(feed, clock)
    open_case(feed, clock, loan_id="L-2")
    visit_id = requested(feed, visits, clock)
    verified(client, token, visit_id)
    assert schedule(client, token, visit_id).status_code == 202
    reminder_id = uuid4()
    feed(ReminderSent(loan_id="L-2", reminder_id=reminder_id, channel=Channel.SMS,
                      template_id="visit.notice", template_version=1, sent_at=clock.now(),
                      borrower_local_time="x", visit_id=UUID(visit_id)))
    feed(ReminderDelivered(loan_id="L-2", reminder_id=reminder_id, channel=Channel.SMS,
                           delivered_at=clock.now(), visit_id=UUID(visit_id)))
    view = client.get(f"/v1/visits/{visit_id}", headers=token(Role.OPS, "ops-1")).json()
    assert view["status"] == "scheduled" and view["notice"] is None


async def _run_agenda(visits: Visits, clock: ManualClock) -> None:
    from shared.agenda import Agenda

    stop = asyncio.Event()
    agenda = Agenda(app=visits, fire=visits.fire, clock=clock, owner="replica-a",
                    idle_seconds=0.05)
    loop = asyncio.create_task(agenda.run(stop))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if not visits.extras.due_ids(clock.now(), 1):
            break
    stop.set()
    await loop


def test_a_complaint_unanswered_past_its_days_is_said_overdue_once(
        client: TestClient, token: Headers, feed: Feed, visits: Visits,
        clock: ManualClock) -> None:
    open_case(feed, clock)
    filed_at = clock.now()

    def file() -> str:
        answer = client.post("/v1/complaints", headers=token(Role.LENDER), json={
            "loan_id": "L-1", "about": "call", "filed_at": filed_at.isoformat()})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["complaint_id"])

    late, answered = file(), file()
    resolved = client.post(f"/v1/complaints/{answered}/resolve", headers=token(Role.OPS, "ops-1"),
                           json={"outcome": "refunded the fee",
                                 "resolved_at": clock.now().isoformat()})
    assert resolved.status_code == 202
    clock.set(filed_at + timedelta(days=14))
    asyncio.run(_run_agenda(visits, clock))
    assert [d for d in published(visits) if isinstance(d, ComplaintOverdue)] == []
    clock.set(filed_at + timedelta(days=15, minutes=1))
    asyncio.run(_run_agenda(visits, clock))
    asyncio.run(_run_agenda(visits, clock))  # fired once: nothing more is due
    [overdue] = [d for d in published(visits) if isinstance(d, ComplaintOverdue)]
    assert (str(overdue.complaint_id), overdue.loan_id) == (late, "L-1")
    assert overdue.answer_by == filed_at + timedelta(days=15)
    assert overdue.overdue_at == filed_at + timedelta(days=15, minutes=1)
    assert visits.extras.due_ids(clock.now() + timedelta(days=365), 10) == []
    # A late answer is still taken (and the audit's C14 judges it late).
    assert client.post(f"/v1/complaints/{late}/resolve", headers=token(Role.OPS, "ops-1"),
                       json={"outcome": "apologised",
                             "resolved_at": clock.now().isoformat()}).status_code == 202


def test_a_visit_not_written_up_in_24_hours_is_said_overdue_once(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, clock: ManualClock,
        registry: dict[str, str]) -> None:
    visit_id = _ready(client, token, feed, visits, clock)
    clock.set(START + timedelta(minutes=10))
    assert check_in(client, token, visit_id, clock.now()).status_code == 202
    clock.set(START + timedelta(hours=23, minutes=59))
    asyncio.run(_run_agenda(visits, clock))
    assert [d for d in published(visits) if isinstance(d, VisitWriteUpOverdue)] == []
    clock.set(START + timedelta(hours=24, minutes=11))
    asyncio.run(_run_agenda(visits, clock))
    asyncio.run(_run_agenda(visits, clock))  # once: nothing more is due
    [late] = [d for d in published(visits) if isinstance(d, VisitWriteUpOverdue)]
    assert (str(late.visit_id), late.loan_id) == (visit_id, "L-1")
    assert late.checked_in_at == START + timedelta(minutes=10)
    assert late.overdue_at == START + timedelta(hours=24, minutes=11)
    assert visits.extras.due_ids(clock.now() + timedelta(days=365), 10) == []
    # The write-up may still follow, late (and the audit's C12 has seen the day pass).
    collector = token(Role.COLLECTOR, "C-1")
    audio = b"late audio" * 100
    stored = client.put(f"/v1/visits/{visit_id}/recording", content=audio,
                        headers={**collector, **AUDIO})
    assert stored.status_code == 201
    written = client.post(f"/v1/visits/{visit_id}/record", headers=collector, json={
        "outcome": "no_promise", "borrower_attitude": "calm", "difficulties": "none said",
        "recording_sha256": stored.json()["recording_sha256"], "recording_seconds": 600,
        "ended_at": (START + timedelta(hours=1)).isoformat()})
    assert written.status_code == 202, written.text
