"""Escalation's new routes in process over SQLite: strategies (PUT/GET, versions, 409 C6,
JSON and TOML), promises, plans and hardship through the intake, the case list with its
cursor, the richer case view and the performance report."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared import topics
from shared.auth import Role
from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import envelope, event_id_for
from tests.helpers import loan_body
from tests.service.records import consumer_record, tracking_of

from services.escalation import policy
from services.escalation.application import Cases
from services.escalation.handlers import HANDLERS
from services.escalation.relay import integration_event

Headers = Callable[..., dict[str, str]]


class Loop:
    """The relay and the consumer in one step: every stored event bound for loans.events
    comes back to escalation's handlers, as it would through Kafka."""

    def __init__(self, cases: Cases, clock: ManualClock) -> None:
        self.cases, self.clock, self.read, self.offset = cases, clock, 0, 0

    def __call__(self) -> None:
        for notification in self.cases.recorder.select_notifications(self.read + 1, 10_000):
            self.read = notification.id
            publication = integration_event(self.cases.mapper.to_domain_event(notification))
            if publication is None or publication.data.topic != topics.LOANS:
                continue
            event = envelope(publication.data, source="/dunwell/escalation",
                             time=self.clock.now(),
                             event_id=event_id_for(notification.originator_id,
                                                   notification.originator_version),
                             causation_id=None, correlation_id=None)
            record = consumer_record(event, topics.LOANS, offset=self.offset)
            self.offset += 1
            HandlerSink(self.cases, HANDLERS, self.clock).process(
                tracking_of(record), record, event, event.payload())


@pytest.fixture
def loop(cases: Cases, clock: ManualClock) -> Loop:
    return Loop(cases, clock)


def report(escalation: TestClient, loop: Loop, token: Headers, clock: ManualClock,
           loan_id: str, dpd: int = 85, amount: str = "5000.00",
           lender_id: str = "lender-1") -> None:
    body = loan_body(loan_id, amount=amount, dpd=dpd, lender_id=lender_id)
    local = clock.now().astimezone(policy.ZoneInfo("Asia/Shanghai")).date()
    body["due_date"] = (local - timedelta(days=dpd)).isoformat()
    response = escalation.post("/v1/loans/overdue", json=body,
                               headers=token(Role.LENDER, lender_id))
    assert response.status_code == 202, response.text
    loop()


def strategy(**visit: Any) -> dict[str, Any]:
    body = policy.DEFAULT_DOCUMENT.model_dump(mode="json")
    body["visit"] = {**body["visit"], **visit}
    body["stages"][-1]["entry"] = {**body["stages"][-1]["entry"], **visit}
    return body


# --- strategies ---


def test_the_shipped_default_is_shown_until_a_lender_publishes_one(
        escalation: TestClient, token: Headers) -> None:
    got = escalation.get("/v1/strategies/lender-1", headers=token(Role.OPS, "ops-1"))
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["version"], body["versions"]) == (0, [])
    assert body["policy_version"] == "cn-2026.1/default@1"
    assert [s["name"] for s in body["stages"]] == ["soft_reminders", "field_visit"]
    assert body["visit"] == {"min_dpd": 91, "min_amount": "3000.00", "min_failed_contacts": 3}


def test_a_strategy_that_loosens_c6_is_409_naming_the_rule(escalation: TestClient,
                                                          token: Headers) -> None:
    answer = escalation.put("/v1/strategies/lender-1", json=strategy(min_dpd=30),
                            headers=token(Role.OPS, "ops-1"))
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["code"] == "rule_refused" and error["details"]["rule"] == "C6"
    assert {f["field"] for f in error["details"]["loosened"]} == {
        "visit.min_dpd", "stages.field_visit.entry.min_dpd"}
    assert escalation.get("/v1/strategies/lender-1",
                          headers=token(Role.OPS, "ops-1")).json()["version"] == 0


def test_a_tighter_strategy_is_a_new_version_and_old_versions_are_kept(
        escalation: TestClient, token: Headers) -> None:
    ops = token(Role.OPS, "ops-1")
    first = escalation.put("/v1/strategies/lender-1", json=strategy(min_dpd=95), headers=ops)
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1
    again = escalation.put("/v1/strategies/lender-1", json=strategy(min_dpd=95), headers=ops)
    assert (again.status_code, again.json()["version"]) == (200, 1)
    toml = """
[visit]
min_dpd = 100
min_amount = "5000.00"
min_failed_contacts = 4

[[stages]]
name = "soft_reminders"
[stages.cadence]
steps = [{ day = 0, channel = "sms" }]
repeat = { channel = "call", from_day = 3, every_days = 2 }
"""
    second = escalation.put("/v1/strategies/lender-1", content=toml.encode(),
                            headers={**ops, "Content-Type": "application/toml"})
    assert second.status_code == 201, second.text
    assert second.json()["policy_version"] == "cn-2026.1/lender-1@2"
    current = escalation.get("/v1/strategies/lender-1", headers=ops).json()
    assert current["version"] == 2 and current["visit"]["min_dpd"] == 100
    assert [v["version"] for v in current["versions"]] == [1, 2]
    old = escalation.get("/v1/strategies/lender-1?version=1", headers=ops).json()
    assert old["visit"]["min_dpd"] == 95
    assert escalation.get("/v1/strategies/lender-1?version=9", headers=ops).status_code == 404


@pytest.mark.parametrize(("content", "media", "status"), [
    (b"{not json", "application/json", 400),
    (b"visit = [", "application/toml", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"{}", "text/plain", 415),
    (b'{"stages": [], "visit": {"min_dpd": 91}}', "application/json", 422),
    (json.dumps({**strategy(), "variants": [{"name": "a", "share": 50},
                                            {"name": "b", "share": 40}]}).encode(),
     "application/json", 400),
])
def test_a_strategy_that_cannot_be_read_is_refused_and_changes_nothing(
        content: bytes, media: str, status: int, escalation: TestClient,
        token: Headers) -> None:
    ops = token(Role.OPS, "ops-1")
    answer = escalation.put("/v1/strategies/lender-1", content=content,
                            headers={**ops, "Content-Type": media})
    assert answer.status_code == status, answer.text
    assert escalation.get("/v1/strategies/lender-1", headers=ops).json()["version"] == 0


def test_only_ops_may_publish_a_strategy(escalation: TestClient, token: Headers) -> None:
    for role in (Role.LENDER, Role.COLLECTOR, Role.AUDITOR):
        answer = escalation.put("/v1/strategies/lender-1", json=strategy(),
                                headers=token(role, "lender-1"))
        assert answer.status_code == 403, (role, answer.text)
    other = escalation.get("/v1/strategies/lender-2", headers=token(Role.LENDER, "lender-1"))
    assert other.status_code == 404


# --- promises, plans, hardship ---


def test_a_promise_pauses_the_case_and_shows_on_it(escalation: TestClient, loop: Loop,
                                                   token: Headers, clock: ManualClock) -> None:
    report(escalation, loop, token, clock, "L-1")
    lender = token(Role.LENDER, "lender-1")
    due = (clock.now() + timedelta(days=3)).date().isoformat()
    answer = escalation.post("/v1/loans/L-1/promises", headers={**lender, "Idempotency-Key": "k1"},
                             json={"amount": "1000.00", "currency": "CNY", "due_date": due})
    assert answer.status_code == 202, answer.text
    promise_id = answer.json()["promise_id"]
    repeat = escalation.post("/v1/loans/L-1/promises", headers={**lender, "Idempotency-Key": "k1"},
                             json={"amount": "1000.00", "currency": "CNY", "due_date": due})
    assert repeat.json() == answer.json()
    loop()
    view = escalation.get("/v1/cases/L-1", headers=lender).json()
    assert [(p["promise_id"], p["status"]) for p in view["promises"]] == [(promise_id, "current")]
    assert view["next_action"]["kind"] == "daily_evaluation"
    assert view["days_past_due"] == 85 and view["stage"] == "soft_reminders"


@pytest.mark.parametrize(("change", "field"), [
    ({"due_date": "2026-10-01"}, "due_date"),
    ({"due_date": "2027-06-01"}, "due_date"),
    ({"currency": "USD"}, "currency"),
])
def test_a_promise_outside_what_the_case_and_strategy_allow_is_409(
        change: dict[str, str], field: str, escalation: TestClient, loop: Loop,
        token: Headers, clock: ManualClock) -> None:
    report(escalation, loop, token, clock, "L-1")
    body = {"amount": "1000.00", "currency": "CNY", "due_date": "2026-10-20", **change}
    answer = escalation.post("/v1/loans/L-1/promises", json=body,
                             headers=token(Role.LENDER, "lender-1"))
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["code"] == "not_acceptable" and error["details"]["field"] == field


def test_a_collector_may_record_a_promise_and_a_hardship(escalation: TestClient, loop: Loop,
                                                         token: Headers,
                                                         clock: ManualClock) -> None:
    report(escalation, loop, token, clock, "L-1")
    collector = token(Role.COLLECTOR, "c-1")
    answer = escalation.post("/v1/loans/L-1/hardship", headers=collector, json={
        "reason": "illness", "note": "in hospital",
        "ends_at": (clock.now() + timedelta(days=30)).isoformat()})
    assert answer.status_code == 202, answer.text
    loop()
    view = escalation.get("/v1/cases/L-1", headers=token(Role.LENDER, "lender-1")).json()
    assert [h["status"] for h in view["hardships"]] == ["current"]
    assert view["next_action"]["kind"] == "daily_evaluation"
    too_long = escalation.post("/v1/loans/L-1/hardship", headers=collector, json={
        "reason": "illness", "note": "", "ends_at": (clock.now() + timedelta(days=91)).isoformat()})
    assert too_long.status_code == 409 and "max_days" in too_long.text
    ended = escalation.post("/v1/loans/L-1/hardship/end", headers=collector, json={})
    assert ended.status_code == 202, ended.text
    loop()
    view = escalation.get("/v1/cases/L-1", headers=token(Role.LENDER, "lender-1")).json()
    assert [h["status"] for h in view["hardships"]] == ["ended"]
    assert escalation.post("/v1/loans/L-9/hardship/end", headers=collector,
                           json={}).status_code == 404


def test_a_plan_is_recorded_with_its_instalments(escalation: TestClient, loop: Loop,
                                                 token: Headers, clock: ManualClock) -> None:
    report(escalation, loop, token, clock, "L-1")
    lender = token(Role.LENDER, "lender-1")
    answer = escalation.post("/v1/loans/L-1/repayment-plans", headers=lender, json={
        "currency": "CNY", "instalments": [{"due_date": "2026-10-20", "amount": "2500.00"},
                                           {"due_date": "2026-11-20", "amount": "2500.00"}]})
    assert answer.status_code == 202, answer.text
    loop()
    view = escalation.get("/v1/cases/L-1", headers=lender).json()
    assert [(p["plan_id"], p["status"]) for p in view["plans"]] == [
        (answer.json()["plan_id"], "current")]
    unordered = escalation.post("/v1/loans/L-1/repayment-plans", headers=lender, json={
        "currency": "CNY", "instalments": [{"due_date": "2026-11-20", "amount": "1.00"},
                                           {"due_date": "2026-10-20", "amount": "1.00"}]})
    assert unordered.status_code == 400


# --- the portfolio ---


def test_cases_page_by_cursor_and_a_lender_sees_only_its_own(
        escalation: TestClient, loop: Loop, token: Headers, clock: ManualClock) -> None:
    for n in range(5):
        report(escalation, loop, token, clock, f"L-{n}", dpd=10)
    report(escalation, loop, token, clock, "M-1", dpd=10, lender_id="lender-2")
    lender = token(Role.LENDER, "lender-1")
    first = escalation.get("/v1/cases?limit=3", headers=lender).json()
    assert [c["loan_id"] for c in first["cases"]] == ["L-0", "L-1", "L-2"]
    second = escalation.get(f"/v1/cases?limit=3&cursor={first['next']}", headers=lender).json()
    assert [c["loan_id"] for c in second["cases"]] == ["L-3", "L-4"] and second["next"] is None
    ops = escalation.get("/v1/cases?status=open", headers=token(Role.OPS, "ops-1")).json()
    assert len(ops["cases"]) == 6
    staged = escalation.get("/v1/cases?stage=field_visit", headers=lender).json()
    assert staged["cases"] == []
    bad = escalation.get("/v1/cases?cursor=zz", headers=lender)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_cursor"
    report_ = escalation.get("/v1/strategies/lender-1/performance", headers=lender).json()
    assert report_["variants"] == [{"variant": None, "cases": 5, "cured": 0, "promises_kept": 0,
                                    "median_days_to_cure": None}]


def test_a_retry_a_moment_later_is_the_same_report(escalation: TestClient, loop: Loop,
                                                   token: Headers, clock: ManualClock) -> None:
    """The service stamps made_at, agreed_at, starts_at from its clock: a retry with the same
    key and body, seconds later, answers as the first time."""
    report(escalation, loop, token, clock, "L-1")
    lender = {**token(Role.LENDER, "lender-1"), "Idempotency-Key": "retry-1"}
    routes = {
        "/v1/loans/L-1/promises": {"amount": "100.00", "currency": "CNY",
                                   "due_date": "2026-10-20"},
        "/v1/loans/L-1/repayment-plans": {"currency": "CNY", "instalments": [
            {"due_date": "2026-10-20", "amount": "100.00"}]},
        "/v1/loans/L-1/hardship": {"reason": "other", "note": "",
                                   "ends_at": "2026-11-01T00:00:00Z"},
    }
    for route, body in routes.items():
        headers = {**lender, "Idempotency-Key": route}
        first = escalation.post(route, json=body, headers=headers)
        assert first.status_code == 202, first.text
        clock.advance(timedelta(seconds=30))
        again = escalation.post(route, json=body, headers=headers)
        assert (again.status_code, again.json()) == (202, first.json()), route


def test_another_lenders_loan_shows_nothing_to_a_follow_up(
        escalation: TestClient, loop: Loop, token: Headers, clock: ManualClock) -> None:
    report(escalation, loop, token, clock, "L-1")
    other = token(Role.LENDER, "lender-2")
    for route, body in (
            ("/v1/loans/L-1/promises", {"amount": "1.00", "currency": "USD",
                                        "due_date": "2026-10-20"}),
            ("/v1/loans/L-1/hardship", {"reason": "other", "note": "",
                                        "ends_at": "2026-10-20T00:00:00Z"}),
            ("/v1/loans/L-1/hardship/end", {}),
            ("/v1/loans/L-1/repayment-plans", {"currency": "USD", "instalments": [
                {"due_date": "2026-10-20", "amount": "1.00"}]})):
        answer = escalation.post(route, json=body, headers=other)
        assert answer.status_code == 404, (route, answer.text)


def test_a_collectors_keys_are_never_a_lenders(escalation: TestClient, loop: Loop,
                                               token: Headers, clock: ManualClock) -> None:
    report(escalation, loop, token, clock, "L-1")
    body = {"amount": "100.00", "currency": "CNY", "due_date": "2026-10-20"}
    by_collector = escalation.post("/v1/loans/L-1/promises", json=body, headers={
        **token(Role.COLLECTOR, "c-1"), "Idempotency-Key": "k"})
    forged = json.dumps(["collector", "c-1", "k"])
    by_lender = escalation.post("/v1/loans/L-1/promises", json=body, headers={
        **token(Role.LENDER, "lender-1"), "Idempotency-Key": forged})
    assert by_collector.status_code == by_lender.status_code == 202
    assert by_collector.json()["promise_id"] != by_lender.json()["promise_id"]


def test_a_hardship_is_ended_only_inside_it_and_one_at_a_time(
        escalation: TestClient, loop: Loop, token: Headers, clock: ManualClock) -> None:
    report(escalation, loop, token, clock, "L-1")
    lender = token(Role.LENDER, "lender-1")
    ends = (clock.now() + timedelta(days=10)).isoformat()
    first = escalation.post("/v1/loans/L-1/hardship", headers=lender,
                            json={"reason": "other", "note": "", "ends_at": ends})
    assert first.status_code == 202, first.text
    loop()
    second = escalation.post("/v1/loans/L-1/hardship", headers=lender,
                             json={"reason": "other", "note": "", "ends_at": ends})
    assert second.status_code == 409 and second.json()["error"]["code"] == "not_acceptable"
    future = escalation.post("/v1/loans/L-1/hardship/end", headers=lender,
                             json={"ended_at": (clock.now() + timedelta(days=1)).isoformat()})
    assert future.status_code == 409, future.text
