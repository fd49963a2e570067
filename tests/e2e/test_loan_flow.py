"""One loan through the suite: overdue, case, reminder or C1 block, payment, audit timeline."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from shared.auth import Role
from tests.e2e.stack import Stack
from tests.helpers import loan_body, wait_for, zone_at_local_hour


def _types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def _post_overdue(stack: Stack, body: dict) -> str:
    with stack.client("escalation", Role.LENDER) as lender:
        response = lender.post("/v1/loans/overdue", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["event_id"])


def test_daytime_loan_gets_reminder_in_causal_order(stack: Stack) -> None:
    body = loan_body(timezone_name=zone_at_local_hour(11))
    loan_id = body["loan_id"]
    overdue_id = _post_overdue(stack, body)

    events = wait_for(lambda: (t := stack.timeline(loan_id)) and "ReminderSent" in _types(t)
                      and t, timeout=30, what="ReminderSent in the audit timeline")

    by_type = {e["type"]: e for e in events}
    overdue, opened, sent = by_type["LoanOverdue"], by_type["CaseOpened"], by_type["ReminderSent"]
    assert overdue["id"] == overdue_id
    assert overdue["leaf_index"] < opened["leaf_index"] < sent["leaf_index"]
    assert opened["causationid"] == overdue["id"]
    assert sent["causationid"] == opened["id"]
    assert {opened["correlationid"], sent["correlationid"]} == {overdue["id"]}
    assert sent["cloudevent"]["data"]["template_id"] == "sms.reminder"
    assert "ContactBlocked" not in _types(events)
    with stack.client("reminder", Role.OPS) as ops:
        view = ops.get(f"/v1/loans/{loan_id}/reminders").json()
    assert len(view["sent"]) == 1 and view["pending"] == []


def test_night_borrower_is_blocked_by_c1_until_eight(stack: Stack) -> None:
    zone = zone_at_local_hour(23)
    body = loan_body(timezone_name=zone)
    loan_id = body["loan_id"]
    _post_overdue(stack, body)

    events = wait_for(lambda: (t := stack.timeline(loan_id)) and "ContactBlocked" in _types(t)
                      and t, timeout=30, what="ContactBlocked in the audit timeline")

    blocked = next(e for e in events if e["type"] == "ContactBlocked")["cloudevent"]["data"]
    assert blocked["rule"] == "C1"
    until = datetime.fromisoformat(blocked["deferred_until"]).astimezone(ZoneInfo(zone))
    tomorrow = datetime.now(ZoneInfo(zone)).date() + timedelta(days=1)
    assert (until.date(), until.hour, until.minute) == (tomorrow, 8, 0)
    assert "ReminderSent" not in _types(stack.timeline(loan_id))
    with stack.client("reminder", Role.AUDITOR) as auditor:
        view = auditor.get(f"/v1/loans/{loan_id}/reminders").json()
    assert view["sent"] == [] and len(view["pending"]) == 1
    assert view["pending"][0]["blocked"][0]["rule"] == "C1"


def test_full_payment_closes_case_and_cancels_pending_reminders(stack: Stack) -> None:
    body = loan_body(timezone_name=zone_at_local_hour(23))
    loan_id = body["loan_id"]
    _post_overdue(stack, body)
    wait_for(lambda: "ContactBlocked" in _types(stack.timeline(loan_id)), what="a pending reminder")

    with stack.client("escalation", Role.LENDER) as lender:
        paid = lender.post(f"/v1/loans/{loan_id}/payments", json={
            "amount": "1200.50", "currency": "CNY", "paid_at": "2026-11-23T10:00:00Z",
            "remaining_overdue": "0"})
    assert paid.status_code == 202, paid.text

    events = wait_for(lambda: (t := stack.timeline(loan_id)) and "ReminderCancelled" in _types(t)
                      and t, what="ReminderCancelled")
    types = _types(events)
    assert types.index("PaymentReceived") < types.index("CaseClosed") < types.index(
        "ReminderCancelled")
    cancelled = next(e for e in events if e["type"] == "ReminderCancelled")
    assert cancelled["cloudevent"]["data"]["rule"] == "C4"
    with stack.client("escalation", Role.AUDITOR) as auditor:
        case = auditor.get(f"/v1/cases/{loan_id}").json()
    assert case["status"] == "closed" and case["close_reason"] == "paid"
    with stack.client("reminder", Role.OPS) as ops:
        view = ops.get(f"/v1/loans/{loan_id}/reminders").json()
    assert view["pending"] == [] and view["sent"] == [] and len(view["cancelled"]) == 1
    assert "ReminderSent" not in _types(stack.timeline(loan_id))


def test_routes_need_a_token_with_the_right_role(stack: Stack) -> None:
    with stack.client("audit", None) as anonymous:
        assert anonymous.get("/v1/loans/L-1/timeline").status_code == 401
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
    with stack.client("audit", Role.LENDER) as lender:
        response = lender.get("/v1/loans/L-1/timeline")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
