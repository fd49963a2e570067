"""The contact engine end to end on the simulated clock (`DUNWELL_CLOCK=simulated`, moved by
`dunwell clock`), as a lender, a collector and an auditor see it: the cadence over every
channel, C1 deferrals to 08:00 local, the pre-dial gate's C2 and C13 refusals, cease and
dispute (C3), and delivery receipts in the audit timeline.

One installation runs through every test of this module, and its time only goes forward, so
each test first moves the clock to a moment of its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from shared import topics
from shared.auth import Role
from shared.events import Channel, CloudEvent, ReminderSent, envelope
from tests.e2e.simulated import clock, events, now, produce, wait_event
from tests.e2e.stack import Stack
from tests.helpers import loan_body, wait_for

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
PHONE = "+8613800000000"
CONTACT_PHONE = "+8613900000000"


def move_to(stack: Stack, zone: ZoneInfo, hour: int) -> datetime:
    """Set the clock forward to the next whole `hour` o'clock in `zone`; returns that moment."""
    local = now(stack).astimezone(zone) + timedelta(hours=1)
    target = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if target < local:
        target += timedelta(days=1)
    clock(stack, "set", target.isoformat())
    return target.astimezone(UTC)


def post_loan(stack: Stack, zone: str, **extra: Any) -> str:
    body = {**loan_body(timezone_name=zone), **extra}
    body["borrower"] = {**body["borrower"], "borrower_id": f"B-{uuid.uuid4().hex[:10]}",
                        **extra.get("borrower", {})}
    with stack.client("escalation", Role.LENDER) as lender:
        response = lender.post("/v1/loans/overdue", json=body)
    assert response.status_code == 202, response.text
    return str(body["loan_id"])


def sent_channels(stack: Stack, loan_id: str) -> list[str]:
    return [d["channel"] for d in events(stack, loan_id, "ReminderSent")]


# --- the cadence, receipts, and the gate ---


def test_a_daytime_borrower_gets_sms_email_push_then_call_tasks(sim: Stack) -> None:
    opened = move_to(sim, SHANGHAI, 10)
    loan = post_loan(sim, "Asia/Shanghai")
    (sms,) = wait_event(sim, loan, "ReminderSent", channel="sms")
    local_day = opened.astimezone(SHANGHAI).strftime("%Y-%m-%d")
    assert sms["borrower_local_time"].startswith(f"{local_day}T10")
    assert sms["reminder_id"] in {m["idempotency_key"] for m in sim.outbox("sms")}
    wait_event(sim, loan, "ReminderDelivered", channel="sms")  # the sink's receipt

    clock(sim, "advance", "2d")
    (mail,) = wait_event(sim, loan, "ReminderSent", channel="email")
    kept = wait_for(lambda: [m for m in sim.mail()
                             if m["Message-ID"] == f"<{mail['reminder_id']}@dunwell>"],
                    what="the e-mail in var/mail/")
    assert kept[0]["To"] == "wang@example.org"

    clock(sim, "advance", "2d")
    (push,) = wait_event(sim, loan, "ReminderSent", channel="push")
    assert push["reminder_id"] in {m["idempotency_key"] for m in sim.outbox("push")}
    assert sent_channels(sim, loan) == ["sms", "email", "push"]

    clock(sim, "advance", "2d")
    (task,) = wait_event(sim, loan, "CallTaskIssued")
    assert task["phone_kind"] == "borrower"
    with sim.client("reminder", Role.COLLECTOR, "C-1") as collector:
        listed = collector.get("/v1/call-tasks", params={"due": "now"}).json()["tasks"]
    assert task["task_id"] in {t["task_id"] for t in listed}


def permit(collector: httpx.Client, loan: str, task_id: str, phone: str = PHONE
           ) -> httpx.Response:
    return collector.post("/v1/dial-permits",
                          json={"loan_id": loan, "task_id": task_id, "phone": phone})


def call(stack: Stack, collector: httpx.Client, loan: str, task_id: str, outcome: str,
         phone: str = PHONE) -> None:
    granted = permit(collector, loan, task_id, phone)
    assert granted.status_code == 201, granted.text
    recorded = collector.post("/v1/contact-attempts", json={
        "loan_id": loan, "permit_id": granted.json()["permit_id"], "channel": "call",
        "phone": phone, "outcome": outcome, "attempted_at": now(stack).isoformat()})
    assert recorded.status_code == 202, recorded.text


def refused_rule(response: httpx.Response) -> str:
    assert response.status_code == 409, response.text
    return str(response.json()["error"]["details"]["rule"])


def on_call_day(stack: Stack, zone: ZoneInfo, *loans: dict[str, Any]) -> list[tuple[str, str]]:
    """Loans opened at 09:00 in `zone`, six days on: each with its call task issued."""
    move_to(stack, zone, 9)
    ids = [post_loan(stack, str(zone), **options) for options in loans]
    for loan in ids:
        wait_event(stack, loan, "ReminderSent", channel="sms")
    for _ in range(3):
        clock(stack, "advance", "2d")
        for loan in ids:
            wait_for(lambda loan=loan: events(stack, loan, "ContactBlocked")
                     or len(sent_channels(stack, loan)) >= 2 or
                     events(stack, loan, "CallTaskIssued"), what="the next step")
    return [(loan, wait_event(stack, loan, "CallTaskIssued")[0]["task_id"]) for loan in ids]


def test_cn_the_gate_refuses_the_4th_answered_call_and_the_7th_unanswered_dial(
        sim: Stack) -> None:
    (answered, a_task), (unanswered, u_task) = on_call_day(sim, SHANGHAI, {}, {})
    with sim.client("reminder", Role.COLLECTOR, "C-1") as collector:
        for _ in range(3):
            call(sim, collector, answered, a_task, "answered")
        assert refused_rule(permit(collector, answered, a_task)) == "C2"
        for _ in range(6):
            call(sim, collector, unanswered, u_task, "no_answer")
        assert refused_rule(permit(collector, unanswered, u_task)) == "C2"
    attempts = events(sim, answered, "ContactAttemptRecorded")
    assert len(attempts) == 3 and all(a["permit_id"] for a in attempts)
    assert len(events(sim, answered, "DialPermitted")) == 3


def test_a_contact_person_only_after_three_failed_calls(sim: Stack) -> None:
    contacts = [{"contact_id": "K-1", "name": "Li Lei", "phone": CONTACT_PHONE,
                 "relation": "sibling"}]
    ((loan, task_id),) = on_call_day(sim, SHANGHAI, {"contacts": contacts})
    with sim.client("reminder", Role.COLLECTOR, "C-1") as collector:
        assert refused_rule(permit(collector, loan, task_id, CONTACT_PHONE)) == "C13"
        for _ in range(3):
            call(sim, collector, loan, task_id, "no_answer")
        (contact_task,) = wait_event(sim, loan, "CallTaskIssued", phone_kind="contact")
        assert contact_task["template_id"] == "contact.reestablish"
        assert refused_rule(permit(collector, loan, contact_task["task_id"], PHONE)) == "C13"
        assert permit(collector, loan, contact_task["task_id"], CONTACT_PHONE).status_code == 201


def test_us_no_call_within_7_days_of_a_conversation_nor_an_8th_in_7_days(sim: Stack) -> None:
    us = {"jurisdiction": "us"}
    (talked, t_task), (busy, b_task) = on_call_day(sim, NEW_YORK, us, us)
    with sim.client("reminder", Role.COLLECTOR, "C-1") as collector:
        call(sim, collector, talked, t_task, "answered")
        assert refused_rule(permit(collector, talked, t_task)) == "C2"
        for _ in range(7):
            call(sim, collector, busy, b_task, "no_answer")
        assert refused_rule(permit(collector, busy, b_task)) == "C2"


# --- C1 at night ---


def test_a_2300_borrowers_steps_are_deferred_to_0800_local_by_c1(sim: Stack) -> None:
    opened = move_to(sim, SHANGHAI, 23)
    loan = post_loan(sim, "Asia/Shanghai")
    eight = (opened.astimezone(SHANGHAI) + timedelta(hours=9)).astimezone(UTC)
    (blocked,) = wait_event(sim, loan, "ContactBlocked", channel="sms")
    assert blocked["rule"] == "C1"
    assert datetime.fromisoformat(blocked["deferred_until"]) == eight
    clock(sim, "set", eight.isoformat())
    (sms,) = wait_event(sim, loan, "ReminderSent", channel="sms")
    assert "T08:0" in sms["borrower_local_time"]

    clock(sim, "set", (opened + timedelta(days=2)).isoformat())  # day 2, 23:00 local
    (deferred,) = wait_event(sim, loan, "ContactBlocked", channel="email")
    assert deferred["rule"] == "C1"
    assert datetime.fromisoformat(deferred["deferred_until"]) == eight + timedelta(days=2)
    assert sent_channels(sim, loan) == ["sms"]


# --- C3 ---


def test_cease_for_sms_cancels_it_while_email_goes_on_and_a_dispute_holds_everything(
        sim: Stack) -> None:
    opened = move_to(sim, SHANGHAI, 23)
    ceased, disputed = post_loan(sim, "Asia/Shanghai"), post_loan(sim, "Asia/Shanghai")
    for loan in (ceased, disputed):
        wait_event(sim, loan, "ContactBlocked", channel="sms", rule="C1")
    at = now(sim).isoformat()
    with sim.client("escalation", Role.LENDER) as lender:
        assert lender.post(f"/v1/loans/{ceased}/cease-contact",
                           json={"channels": ["sms"], "requested_at": at}).status_code == 202
        assert lender.post(f"/v1/loans/{disputed}/disputes",
                           json={"dispute_id": "D-1", "reason": "not my loan",
                                 "opened_at": at}).status_code == 202
    (cancelled,) = wait_event(sim, ceased, "ReminderCancelled", channel="sms")
    assert cancelled["rule"] == "C3"
    wait_event(sim, disputed, "ContactHeld")

    clock(sim, "set", (opened + timedelta(days=2, hours=11)).isoformat())  # day 2, 10:00
    wait_event(sim, ceased, "ReminderSent", channel="email")
    assert sent_channels(sim, ceased) == ["email"]
    wait_event(sim, disputed, "ContactBlocked", channel="sms", rule="C3")
    assert sent_channels(sim, disputed) == []

    with sim.client("escalation", Role.LENDER) as lender:
        assert lender.post(f"/v1/loans/{disputed}/disputes/resolve",
                           json={"dispute_id": "D-1", "resolution": "confirmed",
                                 "resolved_at": now(sim).isoformat()}).status_code == 202
    wait_event(sim, disputed, "ContactResumed")
    wait_event(sim, disputed, "ReminderSent", channel="email")
    assert sent_channels(sim, disputed) == ["sms", "email"]  # in order, once resumed


# --- the audit's verdicts, from the log alone ---


def rogue_sent(loan_id: str, at: datetime) -> CloudEvent:
    """A ReminderSent as a rogue service would write it, straight onto reminders.events."""
    data = ReminderSent(loan_id=loan_id, reminder_id=uuid.uuid4(), channel=Channel.SMS,
                        template_id="sms.reminder", template_version=1, sent_at=at,
                        borrower_local_time=at.astimezone(SHANGHAI).isoformat())
    return envelope(data, event_id=str(uuid.uuid4()), source="/dunwell/reminder", time=at,
                    causation_id=None, correlation_id=None)


def compliance(stack: Stack, loan_id: str, covering: int) -> dict[str, Any]:
    """The loan's verdicts once a signed checkpoint covers leaf `covering`."""
    with stack.client("audit", Role.AUDITOR) as audit:
        def answered() -> dict[str, Any] | None:
            response = audit.get(f"/v1/loans/{loan_id}/compliance")
            body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            return body if body.get("tree_size", 0) > covering else None

        return wait_for(answered, timeout=60, what=f"verdicts of {loan_id} past {covering}")


def verdicts(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["rule"]: rule for rule in body["rules"]}


def leaf_of(stack: Stack, loan_id: str, event_id: str) -> int:
    return int(next(e["leaf_index"] for e in stack.timeline(loan_id) if e["id"] == event_id))


def test_rogue_events_fail_their_rule_and_an_honest_loan_never_fails(sim: Stack) -> None:
    day = move_to(sim, SHANGHAI, 10)
    honest, night, closed = (post_loan(sim, "Asia/Shanghai") for _ in range(3))
    for loan in (honest, night, closed):
        wait_event(sim, loan, "ReminderSent", channel="sms")
    with sim.client("escalation", Role.LENDER) as lender:
        paid = lender.post(f"/v1/loans/{closed}/payments", json={
            "amount": "1200.50", "currency": "CNY", "paid_at": now(sim).isoformat(),
            "remaining_overdue": "0"})
        assert paid.status_code == 202, paid.text
    (closing,) = wait_event(sim, closed, "CaseClosed")
    at_night = day + timedelta(hours=13)  # 23:00 in Shanghai
    after_close = datetime.fromisoformat(closing["closed_at"]) + timedelta(minutes=5)
    late, after = rogue_sent(night, at_night), rogue_sent(closed, after_close)
    asyncio.run(produce(sim.bootstrap, topics.REMINDERS, [late, after]))
    wait_for(lambda: all(any(e["id"] == r.id for e in sim.timeline(loan))
                         for loan, r in ((night, late), (closed, after))),
             what="the rogue events in the audit log")
    late_leaf, after_leaf = leaf_of(sim, night, late.id), leaf_of(sim, closed, after.id)

    c1 = verdicts(compliance(sim, night, late_leaf))["C1"]
    assert c1["verdict"] == "fail"
    assert [f["leaf_index"] for f in c1["findings"]] == [late_leaf]
    c4 = verdicts(compliance(sim, closed, after_leaf))["C4"]
    assert c4["verdict"] == "fail" and after_leaf in [f["leaf_index"] for f in c4["findings"]]
    with sim.client("audit", Role.AUDITOR) as audit:
        listed = audit.get("/v1/violations", params={"limit": 500}).json()["violations"]
    found = {(v["loan_id"], v["rule"], v["leaf_index"]) for v in listed}
    assert {(night, "C1", late_leaf), (closed, "C4", after_leaf)} <= found

    honest_leaves = sim.timeline(honest)
    judged = verdicts(compliance(sim, honest, honest_leaves[-1]["leaf_index"]))
    assert set(judged) == {f"C{n}" for n in range(1, 15)}
    assert {v["verdict"] for v in judged.values()} <= {"pass", "not_applicable"}
    assert judged["C1"]["verdict"] == "pass" and judged["C5"]["verdict"] == "pass"
    assert judged["C6"]["verdict"] == "not_applicable"  # no visit asked, nothing escalated
    assert {judged[f"C{n}"]["verdict"] for n in (7, 8, 9, 10, 11, 12, 14)} == {
        "not_applicable"}  # no visit, no complaint
    assert {(v["loan_id"]) for v in listed} & {honest} == set()


def test_dunwell_verify_rederives_the_bundles_verdicts_and_names_an_edited_one(
        sim: Stack, tmp_path: Path) -> None:
    move_to(sim, SHANGHAI, 10)
    loan = post_loan(sim, "Asia/Shanghai")
    wait_event(sim, loan, "ReminderSent", channel="sms")
    with sim.client("audit", Role.AUDITOR) as audit:
        vkey = audit.get("/v1/checkpoint").json()["public_key"]

        def bundle() -> dict[str, Any] | None:
            body: dict[str, Any] = audit.get(f"/v1/loans/{loan}/evidence").json()
            sent = [leaf for leaf in body.get("leaves", [])
                    if b"ReminderSent" in base64.b64decode(leaf["leaf"])]
            return body if sent and body.get("verdicts") else None

        evidence = wait_for(bundle, what="a signed bundle with the ReminderSent and verdicts")

    def verify(document: dict[str, Any], name: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        return subprocess.run([str(Path(sys.executable).with_name("dunwell")), "verify",
                               str(path), "--key", vkey], capture_output=True, text=True,
                              timeout=60, check=False)

    good = verify(evidence, "good")
    assert good.returncode == 0, good.stdout + good.stderr
    edited = json.loads(json.dumps(evidence))
    c1 = next(rule for rule in edited["verdicts"] if rule["rule"] == "C1")
    assert c1["verdict"] == "pass"
    c1["verdict"] = "fail"
    bad = verify(edited, "edited")
    assert bad.returncode != 0
    assert "C1" in bad.stdout + bad.stderr
