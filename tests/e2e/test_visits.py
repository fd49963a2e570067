"""Field visits end to end on the simulated clock, as a lender, ops and two collectors see
them: a visit-eligible loan, the registry, verification, a schedule for tomorrow 10:00–12:00,
the notice SMS with the window and the codes, check-in 25 h later, the recording, the
write-up with a promise that reaches escalation; refusals with their rules; the case paid and
the visit called off; kill -9 of the visit service between notice and check-in.

One installation runs through every test of this module; its time only goes forward.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared import topics
from shared.events import Credentials, VisitCheckedIn, envelope
from shared.roles import Role
from tests.e2e.simulated import (
    SHANGHAI,
    clock,
    compliance,
    events,
    failed_calls,
    leaf_of,
    move_to_ten,
    now,
    pay,
    post_loan,
    produce,
    wait_event,
)
from tests.e2e.stack import Stack
from tests.helpers import wait_for

OPS = (Role.OPS, "ops-1")


def at_local(stack: Stack, hour: int, days: int = 0) -> datetime:
    local = now(stack).astimezone(SHANGHAI) + timedelta(days=days)
    return local.replace(hour=hour, minute=0, second=0, microsecond=0).astimezone(UTC)


def registry(stack: Stack, suffix: str) -> dict[str, str]:
    """An agency and two collectors with letters for lender-1; their codes."""
    codes = {}
    with stack.client("visit", *OPS) as ops:
        agency = ops.post("/v1/agencies", json={
            "agency_id": f"AG-{suffix}", "name": "North Field Services",
            "licence_number": "LIC-9", "authorised_lenders": ["lender-1"],
            "reviewed_at": "2026-03-01", "next_review_due": "2030-03-01"})
        assert agency.status_code == 201, agency.text
        for n in (1, 2):
            collector_id = f"C-{suffix}-{n}"
            answer = ops.post("/v1/collectors", json={
                "collector_id": collector_id, "name": f"Collector {n}",
                "agency_id": f"AG-{suffix}", "id_number": f"11010119900101123{n}",
                "contact": "+8613900000000",
                "certification": {"number": f"CERT-{n}", "valid_until": "2030-06-30"},
                "authorisation_letter": {"letter_id": f"LTR-{n}", "lender_id": "lender-1",
                                         "scope": "field visits", "valid_from": "2026-01-01",
                                         "valid_until": "2030-12-31"}})
            assert answer.status_code == 201, answer.text
            codes[collector_id] = answer.json()["verification_code"]
    return codes


def visit_of(stack: Stack, loan_id: str) -> dict[str, Any]:
    with stack.client("visit", *OPS) as ops:
        def found() -> dict[str, Any] | None:
            visits = ops.get("/v1/visits", params={"loan_id": loan_id}).json()["visits"]
            return visits[0] if visits else None
        listed = wait_for(found, timeout=60, what=f"the visit service to open {loan_id}'s visit")
        view: dict[str, Any] = ops.get(f"/v1/visits/{listed['visit_id']}").json()
    return view


def eligible_visit(stack: Stack) -> tuple[str, dict[str, Any]]:
    """A loan escalated to field_visit with its VisitRequested, the visit opened for it."""
    move_to_ten(stack)
    loan = post_loan(stack)
    failed_calls(stack, loan)
    clock(stack, "advance", "7d")
    wait_event(stack, loan, "VisitRequested")
    return loan, visit_of(stack, loan)


def verify(stack: Stack, visit: dict[str, Any], **changes: Any) -> httpx.Response:
    dossier = visit["dossier"]
    body = {"name": dossier["borrower"]["name"], "phone": dossier["borrower"]["phone"],
            "amount_overdue": dossier["amount_overdue"],
            "days_past_due": dossier["days_past_due"], **changes}
    with stack.client("visit", *OPS) as ops:
        return ops.post(f"/v1/visits/{visit['visit_id']}/verify", json=body)


def schedule(stack: Stack, visit_id: str, start: datetime, collectors: list[str],
             hours: int = 2) -> httpx.Response:
    with stack.client("visit", *OPS) as ops:
        return ops.post(f"/v1/visits/{visit_id}/schedule", json={
            "scheduled_start": start.isoformat(),
            "scheduled_end": (start + timedelta(hours=hours)).isoformat(),
            "address_kind": "residence", "collector_ids": collectors})


def check_in(stack: Stack, visit_id: str, collectors: list[str]) -> httpx.Response:
    with stack.client("visit", Role.COLLECTOR, collectors[0]) as collector:
        return collector.post(f"/v1/visits/{visit_id}/check-in", json={
            "collector_ids": collectors, "checked_in_at": now(stack).isoformat(),
            "credentials_presented": {"id_card": True, "badge": True,
                                      "authorisation_letter": True}})


def rule_of(answer: httpx.Response) -> str:
    assert answer.status_code == 409, answer.text
    rule: str = answer.json()["error"]["details"]["rule"]
    return rule


def notice_delivered(stack: Stack, loan: str, visit_id: str) -> dict[str, Any]:
    (delivered,) = wait_event(stack, loan, "VisitNoticeDelivered", visit_id=visit_id)
    return delivered


def test_a_visit_from_request_to_a_promise_that_reaches_escalation(sim: Stack) -> None:
    loan, visit = eligible_visit(sim)
    visit_id = visit["visit_id"]
    codes = registry(sim, "A")
    collectors = sorted(codes)
    clock(sim, "set", at_local(sim, 9, days=1).isoformat())  # 09:00: tomorrow's 10:00 is 25 h
    tomorrow_ten = at_local(sim, 10, days=1)

    assert rule_of(schedule(sim, visit_id, tomorrow_ten, collectors)) == "C7"
    wrong = verify(sim, visit, days_past_due=1)
    assert rule_of(wrong) == "C7"
    assert wrong.json()["error"]["details"]["fields"] == ["days_past_due"]
    visit = visit_of(sim, loan)
    assert verify(sim, visit).status_code == 202
    assert rule_of(schedule(sim, visit_id, tomorrow_ten, collectors[:1])) == "C10"
    assert rule_of(schedule(sim, visit_id, tomorrow_ten + timedelta(hours=11),
                            collectors)) == "C11"  # 21:00–23:00
    answer = schedule(sim, visit_id, tomorrow_ten, collectors)
    assert answer.status_code == 202, answer.text

    sent = notice_delivered(sim, loan, visit_id)
    assert sent["window_start"] == tomorrow_ten.isoformat().replace("+00:00", "Z")
    (sms,) = [m for m in sim.outbox("sms") if all(code in m["text"] for code in codes.values())]
    assert "10:00" in sms["text"] and "12:00" in sms["text"]
    with httpx.Client(base_url=sim.url("visit")) as anyone:
        checked = anyone.get(f"/v1/verify/{codes[collectors[0]]}")
    assert checked.status_code == 200 and checked.json()["valid"] is True
    assert "5000" not in checked.text and loan not in checked.text

    clock(sim, "advance", "25h")
    answer = check_in(sim, visit_id, collectors)
    assert answer.status_code == 202, answer.text
    audio = b"RIFF" + bytes(range(256)) * 512
    with sim.client("visit", Role.COLLECTOR, collectors[0]) as collector:
        uploaded = collector.put(f"/v1/visits/{visit_id}/recording", content=audio,
                                 headers={"Content-Type": "audio/wav"})
        assert uploaded.status_code == 201, uploaded.text
        sha = uploaded.json()["recording_sha256"]
        assert sha == hashlib.sha256(audio).hexdigest()
        due = (now(sim).astimezone(SHANGHAI).date() + timedelta(days=5)).isoformat()
        recorded = collector.post(f"/v1/visits/{visit_id}/record", json={
            "outcome": "promise", "borrower_attitude": "cooperative",
            "difficulties": "reduced hours at work", "recording_sha256": sha,
            "recording_seconds": 1500, "ended_at": now(sim).isoformat(),
            "promise_to_pay": {"amount": "800.00", "currency": "CNY", "due_date": due}})
        assert recorded.status_code == 202, recorded.text
    (promise,) = wait_event(sim, loan, "PromiseToPayMade", via="visit")
    assert promise["visit_id"] == visit_id and promise["amount"] == "800.00"
    wait_event(sim, loan, "CadencePaused", pause_id=f"promise:visit:{visit_id}")
    kinds = [e["type"] for e in sim.timeline(loan)]
    for kind in ("DebtorVerified", "VisitScheduled", "VisitNoticeSent", "VisitNoticeDelivered",
                 "VisitCheckedIn", "VisitRecordingStored", "VisitRecorded"):
        assert kind in kinds, kind
    assert visit_of(sim, loan)["status"] == "recorded"
    # The audit, from the log alone: every visit rule holds for this loan.
    verdicts = compliance(sim, loan, leaf_of(sim, loan, "VisitRecorded"))
    visit_rules = ("C7", "C8", "C9", "C10", "C11", "C12")
    assert {rule: verdicts[rule]["verdict"] for rule in visit_rules} == \
        dict.fromkeys(visit_rules, "pass"), {rule: verdicts[rule] for rule in visit_rules}
    check_in_leaf = leaf_of(sim, loan, "VisitCheckedIn")
    assert all(check_in_leaf in verdicts[rule]["evidence"] for rule in ("C8", "C10", "C12"))


def test_too_little_notice_a_decline_and_a_payment(sim: Stack) -> None:
    loan, visit = eligible_visit(sim)
    visit_id = visit["visit_id"]
    collectors = sorted(registry(sim, "B"))
    clock(sim, "set", at_local(sim, 14).isoformat())
    start = at_local(sim, 10, days=1)  # 20 h after the notice
    assert verify(sim, visit_of(sim, loan)).status_code == 202
    assert schedule(sim, visit_id, start, collectors).status_code == 202
    notice_delivered(sim, loan, visit_id)
    clock(sim, "set", (start + timedelta(minutes=5)).isoformat())
    assert rule_of(check_in(sim, visit_id, collectors)) == "C8"
    (blocked,) = wait_event(sim, loan, "VisitBlocked")
    assert blocked["rule"] == "C8"
    with sim.client("visit", Role.LENDER) as lender:
        declined = lender.post(f"/v1/visits/{visit_id}/decline", json={
            "declined_at": now(sim).isoformat(), "via": "phone"})
    assert declined.status_code == 202, declined.text
    assert rule_of(check_in(sim, visit_id, collectors)) == "C9"
    assert events(sim, loan, "VisitCheckedIn") == []


def test_a_payment_calls_the_scheduled_visit_off_at_once(sim: Stack) -> None:
    loan, visit = eligible_visit(sim)
    visit_id = visit["visit_id"]
    collectors = sorted(registry(sim, "C"))
    clock(sim, "set", at_local(sim, 9, days=1).isoformat())
    assert verify(sim, visit_of(sim, loan)).status_code == 202
    assert schedule(sim, visit_id, at_local(sim, 10, days=1), collectors).status_code == 202
    pay(sim, loan, "5000.00", "0.00")
    (cancelled,) = wait_event(sim, loan, "VisitCancelled")
    assert cancelled["rule"] == "C4"
    assert visit_of(sim, loan)["status"] == "cancelled"


def test_kill_9_of_the_visit_service_between_notice_and_check_in(sim: Stack) -> None:
    loan, visit = eligible_visit(sim)
    visit_id = visit["visit_id"]
    codes = registry(sim, "D")
    collectors = sorted(codes)
    clock(sim, "set", at_local(sim, 9, days=1).isoformat())
    assert verify(sim, visit_of(sim, loan)).status_code == 202
    assert schedule(sim, visit_id, at_local(sim, 10, days=1), collectors).status_code == 202
    notice_delivered(sim, loan, visit_id)
    sim.kill("visit")
    sim.start("visit")
    clock(sim, "advance", "25h")
    assert check_in(sim, visit_id, collectors).status_code == 202
    # the notice went once, and the log holds one of each step
    texts = [m for m in sim.outbox("sms") if all(code in m["text"] for code in codes.values())]
    assert len(texts) == 1
    for kind in ("VisitScheduled", "VisitNoticeSent", "VisitNoticeDelivered"):
        assert len(events(sim, loan, kind)) == 1, kind
    wait_event(sim, loan, "VisitCheckedIn")


def test_a_rogue_check_in_by_one_collector_with_no_notice_fails_c8_and_c10(sim: Stack) -> None:
    move_to_ten(sim)
    loan = post_loan(sim)
    wait_event(sim, loan, "LoanOverdue")
    rogue = VisitCheckedIn(visit_id=uuid.uuid4(), loan_id=loan, collector_ids=["C-rogue"],
                           credentials_presented=Credentials(id_card=True, badge=True,
                                                             authorisation_letter=True),
                           checked_in_at=now(sim))
    event = envelope(rogue, event_id=str(uuid.uuid4()), source="/dunwell/visit",
                     time=now(sim), causation_id=None, correlation_id=None)
    asyncio.run(produce(sim.bootstrap, topics.VISITS, [event]))
    wait_event(sim, loan, "VisitCheckedIn")
    leaf = leaf_of(sim, loan, "VisitCheckedIn")
    verdicts = compliance(sim, loan, leaf)
    for rule in ("C8", "C10"):
        assert verdicts[rule]["verdict"] == "fail", verdicts[rule]
        assert leaf in [f["leaf_index"] for f in verdicts[rule]["findings"]], verdicts[rule]
    with sim.client("audit", Role.AUDITOR) as audit:
        listed = audit.get("/v1/violations", params={"rule": "C10"}).json()["violations"]
    assert (loan, leaf) in {(v["loan_id"], v["leaf_index"]) for v in listed}


def test_a_complaint_left_unanswered_past_15_days_fails_c14(sim: Stack) -> None:
    move_to_ten(sim)
    loan = post_loan(sim)
    wait_event(sim, loan, "CaseOpened")
    with sim.client("visit", Role.LENDER) as lender:
        def filed() -> httpx.Response | None:
            answer = lender.post("/v1/complaints", json={
                "loan_id": loan, "about": "call", "details": "called at lunch, twice",
                "filed_at": now(sim).isoformat()})
            return answer if answer.status_code == 201 else None
        answer = wait_for(filed, timeout=60, what=f"the visit service to know {loan}")
    complaint_id = answer.json()["complaint_id"]
    clock(sim, "advance", "16d")
    (overdue,) = wait_event(sim, loan, "ComplaintOverdue", complaint_id=complaint_id)
    assert datetime.fromisoformat(overdue["answer_by"]) == \
        datetime.fromisoformat(answer.json()["answer_by"])
    c14 = compliance(sim, loan, leaf_of(sim, loan, "ComplaintOverdue"))["C14"]
    assert c14["verdict"] == "fail", c14
    assert [f["leaf_index"] for f in c14["findings"]] == [leaf_of(sim, loan, "ComplaintFiled")]
    assert "unanswered" in c14["findings"][0]["message"]
