"""The escalation engine end to end on the simulated clock, as a lender, an operator and an
auditor see it: cases that age and escalate with their reasons, field visits requested only
when C6 holds, promises and plans kept or broken, a hardship pause, strategies and their
versions, champion / challenger, kill -9 during the daily evaluation, and a rogue
VisitRequested that the audit fails under C6.

One installation runs through every test of this module; its time only goes forward.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from shared import topics
from shared.auth import Role
from shared.events import (
    CloudEvent,
    LoanOverdue,
    Reason,
    VisitRequested,
    envelope,
)
from tests.e2e.simulated import (
    advance,
    case,
    clock,
    compliance,
    events,
    failed_calls,
    leaf_of,
    move_to_ten,
    now,
    overdue_body,
    pay,
    post_loan,
    produce,
    today,
    wait_event,
)
from tests.e2e.stack import Stack
from tests.helpers import wait_for

VISIT_REASONS = {"dpd", "amount", "failed_contacts"}









def reasons(data: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {r["code"]: (r["value"], r["threshold"]) for r in data["reasons"]}




def lender_event(data: Any, at: datetime) -> CloudEvent:
    return envelope(data, event_id=str(uuid.uuid4()), source="/lender/core", time=at,
                    causation_id=None, correlation_id=None)


# --- C6: visits only when the criteria hold ---


def test_a_long_overdue_large_unreachable_loan_is_escalated_and_a_visit_requested(
        sim: Stack) -> None:
    move_to_ten(sim)
    large, small, disputed = post_loan(sim), post_loan(sim, amount="500.00"), post_loan(sim)
    for loan in (large, small, disputed):
        failed_calls(sim, loan)
    with sim.client("escalation", Role.LENDER) as lender:
        opened = lender.post(f"/v1/loans/{disputed}/disputes", json={
            "dispute_id": "D-1", "reason": "the amount is wrong",
            "opened_at": now(sim).isoformat()})
        assert opened.status_code == 202, opened.text
    wait_event(sim, disputed, "ContactHeld")
    clock(sim, "advance", "7d")

    (escalated,) = wait_event(sim, large, "CaseEscalated")
    assert (escalated["from_stage"], escalated["to_stage"]) == ("soft_reminders",
                                                                "field_visit")
    assert reasons(escalated) == {"dpd": ("92", "91"), "amount": ("5000.00", "3000.00"),
                                  "failed_contacts": ("3", "3")}
    assert escalated["policy_version"] == "cn-2026.1/default@1"
    (visit,) = wait_event(sim, large, "VisitRequested")
    assert reasons(visit) == reasons(escalated) and set(reasons(visit)) == VISIT_REASONS
    # The disputed loan escalates (its figures hold) but no visit is asked while disputed.
    wait_event(sim, disputed, "CaseEscalated", to_stage="field_visit")
    time.sleep(3)
    assert events(sim, disputed, "VisitRequested") == []
    assert events(sim, small, "VisitRequested") == []
    assert events(sim, small, "CaseEscalated") == []
    view = case(sim, large)
    assert view["stage"] == "field_visit" and view["days_past_due"] == 92
    assert [v["stage"] for v in view["visit_requests"]] == ["field_visit"]

    c6 = compliance(sim, large, leaf_of(sim, large, "VisitRequested"))["C6"]
    assert c6["verdict"] == "pass", c6
    assert leaf_of(sim, large, "VisitRequested") in c6["evidence"]


def test_a_rogue_visit_request_for_a_dpd_10_loan_fails_c6_at_its_leaf(sim: Stack) -> None:
    move_to_ten(sim)
    loan = post_loan(sim, dpd=10)
    wait_event(sim, loan, "CaseOpened")
    rogue = VisitRequested(loan_id=loan, policy_version="cn-2026.1/default@1",
                           stage="field_visit", requested_at=now(sim),
                           reasons=[Reason(code="dpd", value="95", threshold="91"),
                                    Reason(code="amount", value="5000.00", threshold="3000.00"),
                                    Reason(code="failed_contacts", value="3", threshold="3")])
    event = envelope(rogue, event_id=str(uuid.uuid4()), source="/dunwell/escalation",
                     time=now(sim), causation_id=None, correlation_id=None)
    asyncio.run(produce(sim.bootstrap, topics.CASES, [event]))
    wait_event(sim, loan, "VisitRequested")
    leaf = leaf_of(sim, loan, "VisitRequested")
    c6 = compliance(sim, loan, leaf)["C6"]
    assert c6["verdict"] == "fail"
    assert leaf in [f["leaf_index"] for f in c6["findings"]]
    with sim.client("audit", Role.AUDITOR) as audit:
        listed = audit.get("/v1/violations", params={"rule": "C6"}).json()["violations"]
    assert (loan, "C6", leaf) in {(v["loan_id"], v["rule"], v["leaf_index"]) for v in listed}


# --- promises and plans ---


def promise(stack: Stack, loan_id: str, due: date, amount: str = "1000.00") -> str:
    with stack.client("escalation", Role.LENDER) as lender:
        response = lender.post(f"/v1/loans/{loan_id}/promises", json={
            "amount": amount, "currency": "CNY", "due_date": due.isoformat()})
    assert response.status_code == 202, response.text
    return str(response.json()["promise_id"])



def test_a_promise_holds_escalation_and_pauses_the_cadence_until_it_is_broken(
        sim: Stack) -> None:
    move_to_ten(sim)
    broken_loan, kept_loan = post_loan(sim, dpd=89), post_loan(sim, dpd=60)
    failed_calls(sim, broken_loan)
    for loan in (broken_loan, kept_loan):
        wait_event(sim, loan, "ReminderSent", channel="sms")
    broken_id = promise(sim, broken_loan, today(sim) + timedelta(days=3))
    kept_id = promise(sim, kept_loan, today(sim) + timedelta(days=1), amount="500.00")
    for loan, pid in ((broken_loan, broken_id), (kept_loan, kept_id)):
        wait_event(sim, loan, "CadencePaused", pause_id=f"promise:{pid}")
    sent_before = len(events(sim, broken_loan, "ReminderSent"))
    pay(sim, kept_loan, "500.00", "4500.00")
    advance(sim, 3)  # the third day: DPD 92, figures met, but the promise is current
    assert events(sim, broken_loan, "CaseEscalated") == []
    assert events(sim, broken_loan, "VisitRequested") == []
    during = events(sim, broken_loan, "ReminderSent")[sent_before:]
    # While the promise is current, only the one courtesy reminder, the day before it is due.
    assert [(d["channel"], d["template_id"]) for d in during] == [
        ("sms", "sms.promise_courtesy")]
    (kept,) = wait_event(sim, kept_loan, "PromiseKept", promise_id=kept_id)
    assert kept["paid"] == "500.00"
    advance(sim, 1)  # past the due day's end in Shanghai
    (broken,) = wait_event(sim, broken_loan, "PromiseBroken", promise_id=broken_id)
    assert broken["paid"] == "0.00"
    wait_event(sim, broken_loan, "CadenceResumed", pause_id=f"promise:{broken_id}")
    (escalated,) = wait_event(sim, broken_loan, "CaseEscalated")
    assert escalated["to_stage"] == "field_visit"
    wait_event(sim, broken_loan, "VisitRequested")
    # The cadence goes on: the field-visit stage's call tasks.
    wait_event(sim, broken_loan, "CallTaskIssued")
    c6 = compliance(sim, broken_loan, leaf_of(sim, broken_loan, "VisitRequested"))["C6"]
    assert c6["verdict"] == "pass", c6


def test_a_plans_instalments_are_kept_or_broken_from_the_payments(sim: Stack) -> None:
    move_to_ten(sim)
    loan = post_loan(sim, dpd=40)
    wait_event(sim, loan, "CaseOpened")
    first, second = today(sim) + timedelta(days=1), today(sim) + timedelta(days=2)
    with sim.client("escalation", Role.LENDER) as lender:
        response = lender.post(f"/v1/loans/{loan}/repayment-plans", json={
            "currency": "CNY", "instalments": [
                {"due_date": first.isoformat(), "amount": "2000.00"},
                {"due_date": second.isoformat(), "amount": "3000.00"}]})
    assert response.status_code == 202, response.text
    plan_id = response.json()["plan_id"]
    wait_event(sim, loan, "CadencePaused", pause_id=f"plan:{plan_id}")
    pay(sim, loan, "2000.00", "3000.00")
    advance(sim, 3)
    (kept,) = wait_event(sim, loan, "PromiseKept", promise_id=f"{plan_id}/1")
    (broken,) = wait_event(sim, loan, "PromiseBroken", promise_id=f"{plan_id}/2")
    assert (kept["plan_id"], broken["plan_id"]) == (plan_id, plan_id)
    wait_event(sim, loan, "CadenceResumed", pause_id=f"plan:{plan_id}")
    plan = case(sim, loan)["plans"][0]
    assert plan["status"] == "completed" and plan["broken"] == 1


# --- hardship ---


def test_a_hardship_pause_of_30_days_stops_contact_escalation_and_visits(sim: Stack) -> None:
    move_to_ten(sim)
    loan = post_loan(sim, dpd=88)
    failed_calls(sim, loan)
    wait_event(sim, loan, "ReminderSent", channel="sms")
    with sim.client("escalation", Role.LENDER) as lender:
        response = lender.post(f"/v1/loans/{loan}/hardship", json={
            "reason": "illness", "note": "in hospital",
            "ends_at": (now(sim) + timedelta(days=30)).isoformat()})
    assert response.status_code == 202, response.text
    hardship_id = response.json()["hardship_id"]
    wait_event(sim, loan, "CadencePaused", pause_id=f"hardship:{hardship_id}")
    contact_before = len(events(sim, loan, "ReminderSent")) + \
        len(events(sim, loan, "CallTaskIssued"))
    for _ in range(29):
        clock(sim, "advance", "1d")
        time.sleep(0.2)
    time.sleep(2)
    assert len(events(sim, loan, "ReminderSent")) + \
        len(events(sim, loan, "CallTaskIssued")) == contact_before
    assert events(sim, loan, "CaseEscalated") == []
    assert events(sim, loan, "VisitRequested") == []
    assert case(sim, loan)["days_past_due"] == 88  # ageing suspended
    advance(sim, 2)
    wait_event(sim, loan, "CadenceResumed", pause_id=f"hardship:{hardship_id}")
    assert case(sim, loan)["days_past_due"] == 89  # one day aged since the pause ended
    advance(sim, 3)
    # The cadence resumes where it was (a message or a call task again), and the case,
    # aged to DPD 91 two days later, is escalated with its visit.
    wait_for(lambda: len(events(sim, loan, "ReminderSent"))
             + len(events(sim, loan, "CallTaskIssued")) > contact_before,
             timeout=90, what="contact to resume after the hardship")
    (visit,) = wait_event(sim, loan, "VisitRequested")
    # DPD 91 or 92, as the evaluation came before or after the last day's move; the audit
    # recomputes it from the log, hardship days taken out.
    assert reasons(visit)["dpd"] in {("91", "91"), ("92", "91")}
    c6 = compliance(sim, loan, leaf_of(sim, loan, "VisitRequested"))["C6"]
    assert c6["verdict"] == "pass", c6


# --- strategies ---


def strategy_body(**visit: Any) -> dict[str, Any]:
    with_visit = {"min_dpd": 91, "min_amount": "3000.00", "min_failed_contacts": 3, **visit}
    return {
        "stages": [
            {"name": "soft_reminders", "cadence": {"steps": [{"day": 0, "channel": "sms"}],
                                                    "repeat": {"channel": "call",
                                                               "from_day": 2}}},
            {"name": "calls", "entry": {"min_dpd": 31},
             "cadence": {"repeat": {"channel": "call", "from_day": 0}}},
            {"name": "field_visit", "entry": with_visit, "requests_visit": True,
             "cadence": {"repeat": {"channel": "call", "from_day": 0, "every_days": 2}}},
        ],
        "visit": with_visit,
    }


def test_a_strategy_loosening_c6_is_refused_and_a_tighter_one_is_the_next_version(
        sim: Stack) -> None:
    move_to_ten(sim)
    with sim.client("escalation", Role.OPS, "ops-1") as ops:
        loose = ops.put("/v1/strategies/lender-s", json=strategy_body(min_dpd=30))
        assert loose.status_code == 409, loose.text
        assert loose.json()["error"]["details"]["rule"] == "C6"
        before = ops.get("/v1/strategies/lender-s").json()["version"]
        tight = ops.put("/v1/strategies/lender-s", json=strategy_body(min_dpd=95))
        assert tight.status_code == 201, tight.text
        version = tight.json()["version"]
        assert version == before + 1
        shown = ops.get("/v1/strategies/lender-s").json()
        assert shown["version"] == version and shown["visit"]["min_dpd"] == 95
    loan = post_loan(sim, dpd=40, lender_id="lender-s")
    (opened,) = wait_event(sim, loan, "CaseOpened")
    assert opened["policy_version"] == f"cn-2026.1/lender-s@{version}"
    (escalated,) = wait_event(sim, loan, "CaseEscalated", to_stage="calls")
    assert escalated["policy_version"] == f"cn-2026.1/lender-s@{version}"
    assert reasons(escalated)["dpd"] == ("40", "31")


def test_champion_and_challenger_split_a_thousand_loans_and_both_are_reported(
        sim: Stack) -> None:
    move_to_ten(sim)
    body = strategy_body()
    body["variants"] = [{"name": "champion", "share": 50},
                        {"name": "challenger", "share": 50,
                         "visit": {"min_dpd": 120, "min_amount": "3000.00",
                                   "min_failed_contacts": 3}}]
    with sim.client("escalation", Role.OPS, "ops-1") as ops:
        published = ops.put("/v1/strategies/lender-cc", json=body)
        assert published.status_code == 201, published.text
    at = now(sim)
    reports = [lender_event(LoanOverdue.model_validate(overdue_body(sim, 20, "800.00",
                                                                    "lender-cc")), at)
               for _ in range(1000)]
    asyncio.run(produce(sim.bootstrap, topics.LOANS, reports))

    def performance() -> dict[str, Any] | None:
        with sim.client("escalation", Role.OPS, "ops-1") as ops:
            answer = ops.get("/v1/strategies/lender-cc/performance").json()
        total = sum(v["cases"] for v in answer["variants"])
        return answer if total == 1000 else None

    report = wait_for(performance, timeout=180, what="1000 cases of lender-cc")
    split = {v["variant"]: v["cases"] for v in report["variants"]}
    assert set(split) == {"champion", "challenger"}
    assert all(450 <= n <= 550 for n in split.values()), split
    with sim.client("escalation", Role.LENDER, "lender-cc") as lender:
        page = lender.get("/v1/cases", params={"limit": 5}).json()
    assert len(page["cases"]) == 5 and page["next"]
    assert {c["variant"] for c in page["cases"]} <= {"champion", "challenger"}
    assert all(c["policy_version"].startswith("cn-2026.1/lender-cc@1#")
               for c in page["cases"])


# --- kill -9 during the daily evaluation ---


def evaluations(stack: Stack) -> float:
    """How many case evaluations the escalation process has fired (its own metric)."""
    text = httpx.get(f"{stack.url('escalation')}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("dunwell_agenda_fired_total{")
               and 'kind="CollectionCase"' in line)


def test_kill_9_during_the_daily_evaluation_escalates_each_case_once(sim: Stack) -> None:
    move_to_ten(sim)
    total = 1500
    with sim.client("escalation", Role.OPS, "ops-1") as ops:
        assert ops.put("/v1/strategies/lender-k",
                       json=strategy_body()).status_code in (200, 201)
    at = now(sim)
    reports = [lender_event(LoanOverdue.model_validate(overdue_body(sim, 28, "800.00",
                                                                    "lender-k")), at)
               for _ in range(total)]
    loans = [r.subject for r in reports]
    asyncio.run(produce(sim.bootstrap, topics.LOANS, reports))

    def in_stage(stage: str) -> int:
        with sim.client("escalation", Role.OPS, "ops-1") as ops:
            count, cursor = 0, None
            while True:
                params: dict[str, Any] = {"lender_id": "lender-k", "stage": stage,
                                          "limit": 500}
                if cursor:
                    params["cursor"] = cursor
                page = ops.get("/v1/cases", params=params).json()
                count += len(page["cases"])
                cursor = page["next"]
                if not cursor:
                    return count

    wait_for(lambda: in_stage("soft_reminders") == total, timeout=180,
             what=f"{total} cases of lender-k")
    time.sleep(2)  # the evaluations the openings set off are done
    before = evaluations(sim)
    clock(sim, "advance", "4d")  # DPD 32: every case is due to move to calls
    wait_for(lambda: evaluations(sim) >= before + 50, every=0.02, timeout=60,
             what="the daily evaluation to be under way")
    fired_before_the_kill = evaluations(sim) - before
    sim.kill("escalation")
    sim.start("escalation")
    assert fired_before_the_kill < total, "the evaluation ended before the kill"
    wait_for(lambda: in_stage("calls") == total, timeout=240,
             what="every lender-k case in the calls stage")

    def escalations() -> dict[str, int]:
        # One query on the audit's leaves: 1 500 timeline requests took a minute a look.
        logged = dict(sim.query("audit", "SELECT subject, COUNT(*) FROM leaves WHERE "
                                         "event_type = 'CaseEscalated' GROUP BY subject"))
        return {loan: int(logged.get(loan, 0)) for loan in loans}

    def all_logged() -> dict[str, int] | None:
        counts = escalations()
        return counts if min(counts.values()) >= 1 else None

    counts = wait_for(all_logged, timeout=120, what="every CaseEscalated in the audit log")
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    for loan in loans[:: total // 30]:  # and the auditor's timeline says so, on a sample
        assert [e["to_stage"] for e in events(sim, loan, "CaseEscalated")] == ["calls"]
