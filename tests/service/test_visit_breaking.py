"""Trying to break the field-visit feature: bad input on every route, retries, steps out of
order, rogue events on the topics the visit and reminder services consume, and roles.

Each finding of the helper who wrote them is fixed, and its test states what now holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from shared.clock import ManualClock
from shared.consumer import DecodeError, Rejected, decode
from shared.events import (
    CaseClosed,
    Channel,
    ReminderDelivered,
    ReminderSent,
    VisitRecordingStored,
    VisitRequested,
    envelope,
)
from shared.roles import Role
from tests.service import test_visit_routes as routes
from tests.service.test_visit_routes import (
    AUDIO,
    END,
    FACTS,
    START,
    Feed,
    check_in,
    letter,
    noticed,
    open_case,
    published,
    register,
    requested,
    schedule,
    verified,
)

from services.visit.application import Visits

Headers = Callable[..., dict[str, str]]
OPS = (Role.OPS, "ops-1")
# The visit routes' fixtures, shared: the app, its client, the service, the feed, the registry.
app, client, visits, feed, registry = (routes.app, routes.client, routes.visits, routes.feed,
                                       routes.registry)


def _ops(token: Headers) -> dict[str, str]:
    return token(*OPS)


def events_stored(visits: Visits) -> int:
    return len(visits.recorder.select_notifications(1, 1_000_000))


def snapshot(client: TestClient, token: Headers, visits: Visits, visit_id: str) -> Any:
    view = client.get(f"/v1/visits/{visit_id}", headers=_ops(token)).json()
    return json.dumps(view, sort_keys=True), events_stored(visits)


@pytest.fixture
def fresh(client: TestClient, token: Headers, feed: Feed, visits: Visits,
          clock: ManualClock, registry: dict[str, str]) -> str:
    """A verified visit, not scheduled."""
    open_case(feed, clock)
    visit_id = requested(feed, visits, clock)
    verified(client, token, visit_id)
    return visit_id


@pytest.fixture
def ready(client: TestClient, token: Headers, feed: Feed, fresh: str) -> str:
    """Scheduled 10:00–12:00 two days on, its notice delivered now."""
    assert schedule(client, token, fresh).status_code == 202
    noticed(feed, fresh, feed.clock.now())
    return fresh


@pytest.fixture
def inside(client: TestClient, token: Headers, ready: str, clock: ManualClock) -> str:
    """Checked in 10 minutes into the window."""
    clock.set(START + timedelta(minutes=10))
    assert check_in(client, token, ready, clock.now()).status_code == 202
    return ready


def _uploaded(client: TestClient, token: Headers, visit_id: str, audio: bytes) -> str:
    answer = client.put(f"/v1/visits/{visit_id}/recording", content=audio,
                        headers={**token(Role.COLLECTOR, "C-1"), **AUDIO})
    assert answer.status_code == 201, answer.text
    return hashlib.sha256(audio).hexdigest()


def _write_up(clock: ManualClock, sha: str, **changes: Any) -> dict[str, Any]:
    return {"outcome": "no_promise", "borrower_attitude": "calm", "difficulties": "none",
            "recording_sha256": sha, "recording_seconds": 600,
            "ended_at": clock.now().isoformat(), **changes}


# --- 1. bad input: a clear 4xx, and nothing changes ---

NAIVE = "2026-10-16T10:00:00"
HUGE_IDS = [f"C-{i}" for i in range(100_000)]
ZW = "2026-10-16T02:00:00Z"


def _steps_bad(collector: bool) -> list[tuple[str, str, dict[str, Any] | list[Any] | str]]:
    """(route suffix, who, body) — bodies no visit route may take."""
    good_schedule = {"scheduled_start": START.isoformat(), "scheduled_end": END.isoformat(),
                     "address_kind": "residence", "collector_ids": ["C-1", "C-2"]}
    good_check_in = {"collector_ids": ["C-1", "C-2"], "checked_in_at": ZW,
                     "credentials_presented": {"id_card": True, "badge": True,
                                               "authorisation_letter": True}}
    return [
        ("verify", "ops", {}),
        ("verify", "ops", {**FACTS, "name": 123}),
        ("verify", "ops", {**FACTS, "name": ""}),
        ("verify", "ops", {**FACTS, "days_past_due": "ninety"}),
        ("verify", "ops", {**FACTS, "days_past_due": -1}),
        ("verify", "ops", {**FACTS, "amount_overdue": "lots"}),
        ("verify", "ops", {**FACTS, "extra": 1}),
        ("verify", "ops", {**FACTS, "name": "x" * 100_000}),
        ("verify", "ops", [FACTS]),
        ("verify", "ops", "not json at all"),
        ("schedule", "ops", {**good_schedule, "scheduled_start": NAIVE}),
        ("schedule", "ops", {**good_schedule, "scheduled_end": END.isoformat(),
                             "scheduled_start": (END + timedelta(hours=1)).isoformat()}),
        ("schedule", "ops", {**good_schedule, "scheduled_end": START.isoformat()}),
        ("schedule", "ops", {**good_schedule, "collector_ids": HUGE_IDS}),
        ("schedule", "ops", {**good_schedule, "collector_ids": []}),
        ("schedule", "ops", {**good_schedule, "collector_ids": [""]}),
        ("schedule", "ops", {**good_schedule, "collector_ids": "C-1"}),
        ("schedule", "ops", {**good_schedule, "address_kind": "office"}),
        ("schedule", "ops", {**good_schedule, "scheduled_start": "tomorrow"}),
        ("schedule", "ops", {k: v for k, v in good_schedule.items() if k != "address_kind"}),
        ("decline", "lender", {"declined_at": NAIVE, "via": "sms"}),
        ("decline", "lender", {"declined_at": ZW, "via": ""}),
        ("decline", "lender", {"via": "sms"}),
        ("decline", "lender", {"declined_at": "2030-01-01T00:00:00Z", "via": "sms"}),
        ("consent", "lender", {"consented_at": NAIVE, "via": "hotline"}),
        ("consent", "lender", {"consented_at": ZW}),
        ("check-in", "collector", {**good_check_in, "checked_in_at": NAIVE}),
        ("check-in", "collector", {**good_check_in, "collector_ids": HUGE_IDS}),
        ("check-in", "collector", {**good_check_in, "credentials_presented": {
            "id_card": "yes", "badge": True, "authorisation_letter": True}}),
        ("check-in", "collector", {**good_check_in, "credentials_presented": {
            "id_card": True, "badge": True}}),
        ("check-in", "collector", {**good_check_in, "collector_ids": ["C-2"]}),  # not caller
        ("check-in", "collector", {**good_check_in, "checked_in_at": "2030-01-01T00:00:00Z"}),
        ("record", "collector", {"outcome": "x"}),
        ("cancel", "ops", {}),
        ("cancel", "ops", {"reason": "r" * 100_000}),
        ("cancel", "ops", {"reason": "x", "rule": "C4"}),
    ]


BAD = _steps_bad(False)


@pytest.mark.parametrize(("step", "who", "body"), BAD, ids=[f"{s}-{i}" for i, (s, _, _) in
                                                             enumerate(BAD)])
def test_bad_input_on_a_step_is_a_clear_4xx_and_changes_nothing(
        client: TestClient, token: Headers, visits: Visits, fresh: str, step: str, who: str,
        body: Any) -> None:
    headers = {"ops": _ops(token), "lender": token(Role.LENDER, "lender-1"),
               "collector": token(Role.COLLECTOR, "C-1")}[who]
    before = snapshot(client, token, visits, fresh)
    if isinstance(body, str):
        answer = client.post(f"/v1/visits/{fresh}/{step}", content=body.encode(),
                             headers={**headers, "Content-Type": "application/json"})
    else:
        answer = client.post(f"/v1/visits/{fresh}/{step}", json=body, headers=headers)
    assert answer.status_code in (400, 403, 404, 409, 413, 415, 422), answer.text
    assert "error" in answer.json() or "detail" in answer.json()
    assert snapshot(client, token, visits, fresh) == before


@pytest.mark.parametrize("step", ["verify", "schedule", "cancel", "decline", "consent"])
def test_an_unknown_or_malformed_visit_id_is_404_or_422(
        client: TestClient, token: Headers, step: str) -> None:
    who = token(Role.LENDER) if step in ("decline", "consent") else _ops(token)
    body = {"verify": FACTS, "cancel": {"reason": "x"},
            "schedule": {"scheduled_start": START.isoformat(), "scheduled_end":
                         END.isoformat(), "address_kind": "residence",
                         "collector_ids": ["C-1", "C-2"]},
            "decline": {"declined_at": ZW.replace("16T02", "14T02"), "via": "sms"},
            "consent": {"consented_at": ZW.replace("16T02", "14T02"), "via": "sms"}}[step]
    assert client.post(f"/v1/visits/{uuid4()}/{step}", json=body,
                       headers=who).status_code == 404
    assert client.post(f"/v1/visits/not-a-uuid/{step}", json=body,
                       headers=who).status_code == 422


def test_a_window_of_days_or_before_it_starts_is_refused(
        client: TestClient, token: Headers, visits: Visits, fresh: str) -> None:
    before = snapshot(client, token, visits, fresh)
    days = schedule(client, token, fresh, scheduled_end=(END + timedelta(days=3)).isoformat())
    assert days.status_code == 409 and days.json()["error"]["details"]["rule"] == "C11"
    backwards = schedule(client, token, fresh, scheduled_start=END.isoformat(),
                         scheduled_end=START.isoformat())
    assert backwards.status_code == 400
    past = schedule(client, token, fresh,
                    scheduled_start=(START - timedelta(days=3)).isoformat(),
                    scheduled_end=(END - timedelta(days=3)).isoformat())
    assert past.status_code == 409
    assert schedule(client, token, fresh, collector_ids=["C-1", "C-1"]).status_code == 409
    assert schedule(client, token, fresh, collector_ids=["C-1", "NOBODY"]).status_code == 409
    assert snapshot(client, token, visits, fresh) == before


def test_bad_recording_uploads(client: TestClient, token: Headers, visits: Visits,
                               inside: str) -> None:
    collector = token(Role.COLLECTOR, "C-1")
    before = snapshot(client, token, visits, inside)
    for headers, content, status in [
            ({"Content-Type": "text/plain"}, b"abc", 415),
            ({"Content-Type": "application/octet-stream"}, b"abc", 415),
            ({}, b"abc", 415),
            ({"Content-Type": "audio/"}, b"abc", 415),
            ({"Content-Type": "audio/mpeg"}, b"", 400)]:
        answer = client.put(f"/v1/visits/{inside}/recording", content=content,
                            headers={**collector, **headers})
        assert answer.status_code == status, (headers, answer.text)
    assert client.put(f"/v1/visits/{uuid4()}/recording", content=b"abc",
                      headers={**collector, **AUDIO}).status_code == 404
    assert snapshot(client, token, visits, inside) == before


def test_bad_write_ups(client: TestClient, token: Headers, visits: Visits, inside: str,
                       clock: ManualClock) -> None:
    sha = _uploaded(client, token, inside, b"audio" * 100)
    collector = token(Role.COLLECTOR, "C-1")
    before = snapshot(client, token, visits, inside)
    clock.advance(timedelta(minutes=30)) if hasattr(clock, "advance") else None
    for body in [_write_up(clock, "xyz"), _write_up(clock, sha, recording_seconds=0),
                 _write_up(clock, sha, ended_at=NAIVE),
                 _write_up(clock, sha, ended_at=(START - timedelta(hours=1)).isoformat()),
                 _write_up(clock, sha, ended_at="2030-01-01T00:00:00Z"),
                 _write_up(clock, "0" * 64), _write_up(clock, sha, surprise=True),
                 _write_up(clock, sha, promise_to_pay={"amount": "-5", "currency": "CNY",
                                                       "due_date": "2026-10-20"})]:
        answer = client.post(f"/v1/visits/{inside}/record", json=body, headers=collector)
        assert answer.status_code in (400, 409, 422), (body, answer.text)
    assert snapshot(client, token, visits, inside) == before


def test_bad_registry_and_complaint_input(client: TestClient, token: Headers, visits: Visits,
                                          fresh: str, feed: Feed, clock: ManualClock) -> None:
    ops, lender = _ops(token), token(Role.LENDER)
    agency = {"agency_id": "AG-2", "name": "n", "licence_number": "L", "reviewed_at":
              "2026-03-01", "next_review_due": "2027-03-01", "authorised_lenders": ["lender-1"]}
    collector = {"collector_id": "C-7", "name": "n", "id_number": "1", "contact": "x",
                 "certification": {"number": "c", "valid_until": "2027-01-01"},
                 "authorisation_letter": letter()}
    open_case(feed, clock, loan_id="L-2")
    other_visit = requested(feed, visits, clock, loan_id="L-2")
    now = clock.now().isoformat()
    cases = [
        ("/v1/agencies", {**agency, "authorised_lenders": HUGE_IDS}, (413, 422)),
        ("/v1/agencies", {**agency, "authorised_lenders": []}, (422,)),
        ("/v1/agencies", {**agency, "next_review_due": "soon"}, (422,)),
        ("/v1/agencies", {**agency, "agency_id": ""}, (422,)),
        ("/v1/collectors", {**collector, "agency_id": "AG-NONE"}, (409,)),
        ("/v1/collectors", {k: v for k, v in collector.items() if k != "certification"},
         (422,)),
        ("/v1/collectors", {**collector, "authorisation_letter": {**letter(),
                                                                  "valid_until": "x"}}, (422,)),
        ("/v1/collectors/NOBODY/revoke", {"reason": "x"}, (404,)),
        ("/v1/collectors/C-1/revoke", {}, (422,)),
        ("/v1/complaints", {"loan_id": "L-NONE", "about": "x", "filed_at": now}, (409,)),
        ("/v1/complaints", {"loan_id": "L-1", "about": "x", "visit_id": other_visit,
                            "filed_at": now}, (409,)),
        ("/v1/complaints", {"loan_id": "L-1", "about": "x", "visit_id": str(uuid4()),
                            "filed_at": now}, (409,)),
        ("/v1/complaints", {"loan_id": "L-1", "about": "x", "collector_id": "NOBODY",
                            "filed_at": now}, (409,)),
        ("/v1/complaints", {"loan_id": "L-1", "about": "x", "filed_at": NAIVE}, (422,)),
        ("/v1/complaints", {"loan_id": "L-1", "about": "x",
                            "filed_at": "2030-01-01T00:00:00Z"}, (409,)),
        (f"/v1/complaints/{uuid4()}/resolve", {"outcome": "x", "resolved_at": now}, (404,)),
        ("/v1/complaints/nope/resolve", {"outcome": "x", "resolved_at": now}, (422,)),
    ]
    before = events_stored(visits)
    for path, body, statuses in cases:
        who = lender if path.startswith("/v1/complaints") and "resolve" not in path else ops
        answer = client.post(path, json=body, headers=who)
        assert answer.status_code in statuses, (path, body, answer.status_code, answer.text)
    assert events_stored(visits) == before
    # the registry's routes are ops-only
    assert client.post("/v1/agencies", json=agency, headers=lender).status_code == 403
    assert client.post("/v1/collectors/C-1/revoke", json={"reason": "x"},
                       headers=token(Role.COLLECTOR, "C-2")).status_code == 403


def test_a_body_may_carry_the_paths_visit_id(client: TestClient, token: Headers,
                                             fresh: str) -> None:
    answer = client.post(f"/v1/visits/{fresh}/cancel", headers=_ops(token),
                         json={"reason": "x", "visit_id": fresh})
    assert answer.status_code == 202, answer.text


def test_a_body_naming_another_visit_id_is_422(client: TestClient, token: Headers,
                                               fresh: str) -> None:
    answer = client.post(f"/v1/visits/{fresh}/cancel", headers=_ops(token),
                         json={"reason": "x", "visit_id": str(uuid4())})
    assert answer.status_code == 422


# --- 2. retries ---


def test_the_same_step_twice_is_one_effect(client: TestClient, token: Headers, visits: Visits,
                                           inside: str, clock: ManualClock) -> None:
    again = check_in(client, token, inside, START + timedelta(minutes=10))
    assert again.status_code == 202 and again.json()["changed"] is False
    sha = _uploaded(client, token, inside, b"a" * 500)
    count = events_stored(visits)
    assert _uploaded(client, token, inside, b"a" * 500) == sha  # the same bytes again
    assert events_stored(visits) == count
    body = _write_up(clock, sha)
    collector = token(Role.COLLECTOR, "C-1")
    first = client.post(f"/v1/visits/{inside}/record", json=body, headers=collector)
    assert first.status_code == 202 and first.json()["changed"] is True
    count = events_stored(visits)
    second = client.post(f"/v1/visits/{inside}/record", json=body, headers=collector)
    assert second.status_code == 202 and second.json()["changed"] is False
    other = client.post(f"/v1/visits/{inside}/record", headers=collector,
                        json={**body, "outcome": "promise"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "visit_recorded"
    assert events_stored(visits) == count


def test_a_schedule_retried_with_another_body_is_409(client: TestClient, token: Headers,
                                                     visits: Visits, ready: str) -> None:
    before = snapshot(client, token, visits, ready)
    answer = schedule(client, token, ready, address_kind="residence",
                      scheduled_start=(START + timedelta(minutes=30)).isoformat())
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "already_scheduled"
    assert snapshot(client, token, visits, ready) == before


def test_the_same_key_with_another_body_is_idempotency_key_reused(
        client: TestClient, token: Headers, ready: str, clock: ManualClock) -> None:
    lender = {**token(Role.LENDER), "Idempotency-Key": "k-1"}
    first = client.post(f"/v1/visits/{ready}/decline", headers=lender,
                        json={"declined_at": clock.now().isoformat(), "via": "sms_reply"})
    assert first.status_code == 202
    second = client.post(f"/v1/visits/{ready}/decline", headers=lender,
                         json={"declined_at": clock.now().isoformat(), "via": "hotline",
                               "reason": "another body"})
    assert second.status_code == 409, second.text
    assert second.json()["error"]["code"] == "idempotency_key_reused"


def test_a_complaint_with_a_key_is_filed_once(client: TestClient, token: Headers,
                                              visits: Visits, fresh: str,
                                              clock: ManualClock) -> None:
    lender = {**token(Role.LENDER), "Idempotency-Key": "c-1"}
    body = {"loan_id": "L-1", "about": "visit", "visit_id": fresh,
            "filed_at": clock.now().isoformat()}
    first = client.post("/v1/complaints", json=body, headers=lender)
    count = events_stored(visits)
    second = client.post("/v1/complaints", json=body, headers=lender)
    assert first.status_code == second.status_code == 201
    assert first.json()["complaint_id"] == second.json()["complaint_id"]
    assert second.json()["created"] is False and events_stored(visits) == count
    reused = client.post("/v1/complaints", json={**body, "about": "other"}, headers=lender)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    # another lender's same key is its own key, and this loan is not theirs
    assert client.post("/v1/complaints", json=body, headers={
        **token(Role.LENDER, "lender-2"), "Idempotency-Key": "c-1"}).status_code == 409


# --- 3. order ---


def test_steps_out_of_order_are_refused_and_change_nothing(
        client: TestClient, token: Headers, visits: Visits, feed: Feed, clock: ManualClock,
        registry: dict[str, str]) -> None:
    open_case(feed, clock)
    visit_id = requested(feed, visits, clock)
    before = snapshot(client, token, visits, visit_id)
    # check-in and record before a schedule: the collector is on no visit yet
    assert check_in(client, token, visit_id, clock.now()).status_code == 404
    assert client.post(f"/v1/visits/{visit_id}/record", json=_write_up(clock, "0" * 64),
                       headers=token(Role.COLLECTOR, "C-1")).status_code == 404
    assert client.put(f"/v1/visits/{visit_id}/recording", content=b"x",
                      headers={**token(Role.COLLECTOR, "C-1"), **AUDIO}).status_code == 404
    consent = client.post(f"/v1/visits/{visit_id}/consent", headers=token(Role.LENDER),
                          json={"consented_at": clock.now().isoformat(), "via": "x"})
    assert consent.status_code == 202 and consent.json()["changed"] is False
    assert snapshot(client, token, visits, visit_id) == before


def test_record_before_check_in_and_consent_without_decline(
        client: TestClient, token: Headers, visits: Visits, ready: str,
        clock: ManualClock) -> None:
    before = snapshot(client, token, visits, ready)
    answer = client.post(f"/v1/visits/{ready}/record", json=_write_up(clock, "0" * 64),
                         headers=token(Role.COLLECTOR, "C-1"))
    assert answer.status_code == 403
    consent = client.post(f"/v1/visits/{ready}/consent", headers=token(Role.LENDER),
                          json={"consented_at": clock.now().isoformat(), "via": "x"})
    assert consent.status_code == 409 and consent.json()["error"]["code"] == "not_declined"
    assert snapshot(client, token, visits, ready) == before


def test_decline_or_cancel_after_check_in_is_409(client: TestClient, token: Headers,
                                                 visits: Visits, inside: str,
                                                 clock: ManualClock) -> None:
    before = snapshot(client, token, visits, inside)
    declined = client.post(f"/v1/visits/{inside}/decline", headers=token(Role.LENDER),
                           json={"declined_at": clock.now().isoformat(), "via": "door"})
    assert declined.status_code == 409 and declined.json()["error"]["code"] == "visit_under_way"
    cancelled = client.post(f"/v1/visits/{inside}/cancel", headers=_ops(token),
                            json={"reason": "x"})
    assert cancelled.status_code == 409
    assert snapshot(client, token, visits, inside) == before


def test_no_upload_after_the_write_up(client: TestClient, token: Headers, visits: Visits,
                                      inside: str, clock: ManualClock) -> None:
    sha = _uploaded(client, token, inside, b"first" * 10)
    assert client.post(f"/v1/visits/{inside}/record", json=_write_up(clock, sha),
                       headers=token(Role.COLLECTOR, "C-1")).status_code == 202
    before = snapshot(client, token, visits, inside)
    late = client.put(f"/v1/visits/{inside}/recording", content=b"second" * 10,
                      headers={**token(Role.COLLECTOR, "C-1"), **AUDIO})
    try:
        assert late.status_code == 409, late.text
        assert snapshot(client, token, visits, inside) == before
    finally:
        stored = [e for e in published(visits) if isinstance(e, VisitRecordingStored)]
        print("recordings stored:", len(stored), "status", late.status_code)


def test_cancel_twice_and_a_complaint_resolved_twice(
        client: TestClient, token: Headers, visits: Visits, ready: str,
        clock: ManualClock) -> None:
    first = client.post(f"/v1/visits/{ready}/cancel", headers=_ops(token), json={"reason": "a"})
    assert first.status_code == 202 and first.json()["changed"] is True
    before = snapshot(client, token, visits, ready)
    again = client.post(f"/v1/visits/{ready}/cancel", headers=_ops(token), json={"reason": "b"})
    assert again.status_code == 202 and again.json()["changed"] is False
    for step, body in [("verify", FACTS), ("decline", {"declined_at": clock.now().isoformat(),
                                                        "via": "x"})]:
        who = _ops(token) if step == "verify" else token(Role.LENDER)
        answer = client.post(f"/v1/visits/{ready}/{step}", json=body, headers=who)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "visit_cancelled"
    assert snapshot(client, token, visits, ready) == before

    filed = client.post("/v1/complaints", headers=token(Role.LENDER), json={
        "loan_id": "L-1", "about": "visit", "visit_id": ready,
        "filed_at": clock.now().isoformat()}).json()["complaint_id"]
    resolve = {"outcome": "apologised", "resolved_at": clock.now().isoformat()}
    path = f"/v1/complaints/{filed}/resolve"
    assert client.post(path, json=resolve, headers=_ops(token)).json()["changed"] is True
    count = events_stored(visits)
    assert client.post(path, json=resolve, headers=_ops(token)).json()["changed"] is False
    other = client.post(path, json={**resolve, "outcome": "other"}, headers=_ops(token))
    assert other.status_code == 409 and other.json()["error"]["code"] == "complaint_resolved"
    early = client.post("/v1/complaints", headers=token(Role.LENDER), json={
        "loan_id": "L-1", "about": "x", "filed_at": clock.now().isoformat()}).json()
    before_filed = client.post(f"/v1/complaints/{early['complaint_id']}/resolve",
                               headers=_ops(token), json={
                                   "outcome": "x", "resolved_at": (
                                       clock.now() - timedelta(days=1)).isoformat()})
    assert before_filed.status_code == 409
    assert events_stored(visits) == count + 1  # only the second complaint's filing


def test_a_revoked_collector_re_registered_identically_is_back_in_force(
        client: TestClient, token: Headers, registry: dict[str, str]) -> None:
    """Observed behaviour (documented in docs/visits.md): re-posting the very same body lifts
    a revocation and issues a new code. Flagged in the report as a policy question."""
    assert client.post("/v1/collectors/C-1/revoke", json={"reason": "misconduct"},
                       headers=_ops(token)).status_code == 202
    assert client.get(f"/v1/verify/{registry['C-1']}").json()["valid"] is False
    code = register(client, token, "C-1")
    assert code != registry["C-1"]
    assert client.get(f"/v1/verify/{code}").json()["valid"] is True
    view = client.get("/v1/collectors/C-1", headers=_ops(token)).json()
    assert view["revoked_at"] is None and view["revoke_reason"] is None


def test_the_code_in_a_sent_notice_still_verifies_after_a_renewal(
        client: TestClient, token: Headers, ready: str, registry: dict[str, str],
        clock: ManualClock) -> None:
    register(client, token, "C-1",
             certification={"number": "CERT-C-1", "valid_until": "2028-06-30"})
    clock.set(START + timedelta(minutes=5))
    assert client.get(f"/v1/verify/{registry['C-1']}").status_code == 200


def test_one_collector_named_twice_is_not_two(client: TestClient, token: Headers,
                                              visits: Visits, ready: str,
                                              clock: ManualClock) -> None:
    clock.set(START + timedelta(minutes=10))
    answer = check_in(client, token, ready, clock.now(), collectors=("C-1", "C-1"))
    assert answer.status_code == 409, answer.text


# --- 4. rogue events ---


def test_rogue_case_events(client: TestClient, token: Headers, feed: Feed, visits: Visits,
                           clock: ManualClock, registry: dict[str, str]) -> None:
    count = events_stored(visits)
    with pytest.raises(Rejected):
        feed(CaseClosed(loan_id="L-NONE", reason="x", closed_at=clock.now()))
    with pytest.raises(Rejected):
        feed(VisitRequested(loan_id="L-NONE", policy_version="p", requested_at=clock.now(),
                            reasons=[]))
    assert events_stored(visits) == count
    assert visits.visits_of_loan("L-NONE") == []

    open_case(feed, clock)
    request = VisitRequested(loan_id="L-1", policy_version="cn-2026.1/default@1",
                             stage="field_visit", requested_at=clock.now(), reasons=[])
    feed(request, event_id="ev-req-1")
    count = events_stored(visits)
    feed(request, event_id="ev-req-1")  # the same event again: de-duplicated
    assert len(visits.visits_of_loan("L-1")) == 1
    assert events_stored(visits) == count


def test_a_second_request_with_a_new_id_opens_a_second_visit(
        feed: Feed, visits: Visits, clock: ManualClock) -> None:
    """Each request is a visit of its own: a second stage entry's request opens a second
    visit beside one still open (a repeated event id opens none)."""
    open_case(feed, clock)
    request = VisitRequested(loan_id="L-1", policy_version="cn-2026.1/default@1",
                             stage="field_visit", requested_at=clock.now(), reasons=[])
    feed(request, event_id="ev-req-1")
    feed(request, event_id="ev-req-2")
    assert [v.status for v in visits.visits_of_loan("L-1")] == ["requested", "requested"]


def test_a_visit_request_missing_a_field_is_not_decoded(clock: ManualClock) -> None:
    event = envelope(VisitRequested(loan_id="L-1", policy_version="p", requested_at=NOW_(clock),
                                    reasons=[]), event_id="ev-x", source="/dunwell/test",
                     time=clock.now(), causation_id=None, correlation_id=None)
    raw = json.loads(event.encode())
    del raw["data"]["policy_version"]
    with pytest.raises(DecodeError):
        decode(json.dumps(raw).encode())


def NOW_(clock: ManualClock) -> datetime:
    return clock.now()


# --- 5. the notice's reports ---


def test_a_delivery_report_without_a_send_or_before_the_schedule_is_ignored(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, fresh: str,
        clock: ManualClock) -> None:
    assert schedule(client, token, fresh).status_code == 202
    feed(ReminderDelivered(loan_id="L-1", reminder_id=uuid4(), channel=Channel.SMS,
                           delivered_at=clock.now() - timedelta(days=3),
                           visit_id=UUID(fresh)))
    view = client.get(f"/v1/visits/{fresh}", headers=_ops(token)).json()
    assert view["status"] == "scheduled" and view["notice"] is None, view["notice"]


def test_a_late_receipt_of_the_old_notice_does_not_notify_a_new_schedule(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, fresh: str,
        clock: ManualClock) -> None:
    assert schedule(client, token, fresh).status_code == 202
    old = uuid4()
    feed(ReminderSent(loan_id="L-1", reminder_id=old, channel=Channel.SMS,
                      template_id="visit.notice", template_version=1, sent_at=clock.now(),
                      borrower_local_time="x", visit_id=UUID(fresh)))
    lender = token(Role.LENDER)
    assert client.post(f"/v1/visits/{fresh}/decline", headers=lender, json={
        "declined_at": clock.now().isoformat(), "via": "sms_reply"}).status_code == 202
    assert client.post(f"/v1/visits/{fresh}/consent", headers=lender, json={
        "consented_at": clock.now().isoformat(), "via": "hotline"}).status_code == 202
    verified(client, token, fresh)
    later = START + timedelta(days=1)
    assert schedule(client, token, fresh, scheduled_start=later.isoformat(),
                    scheduled_end=(later + timedelta(hours=2)).isoformat()).status_code == 202
    feed(ReminderDelivered(loan_id="L-1", reminder_id=old, channel=Channel.SMS,
                           delivered_at=clock.now(), visit_id=UUID(fresh)))
    view = client.get(f"/v1/visits/{fresh}", headers=_ops(token)).json()
    assert view["status"] == "scheduled", view["notice"]


def test_a_delivery_of_another_reminder_than_the_one_sent_is_ignored(
        client: TestClient, token: Headers, feed: Feed, visits: Visits, fresh: str,
        clock: ManualClock) -> None:
    assert schedule(client, token, fresh).status_code == 202
    feed(ReminderSent(loan_id="L-1", reminder_id=uuid4(), channel=Channel.SMS,
                      template_id="visit.notice", template_version=1, sent_at=clock.now(),
                      borrower_local_time="x", visit_id=UUID(fresh)))
    feed(ReminderDelivered(loan_id="L-1", reminder_id=uuid4(), channel=Channel.SMS,
                           delivered_at=clock.now(), visit_id=UUID(fresh)))
    view = client.get(f"/v1/visits/{fresh}", headers=_ops(token)).json()
    assert view["status"] == "scheduled" and "delivered_at" not in view["notice"]


def test_another_collector_can_neither_see_nor_act(client: TestClient, token: Headers,
                                                   visits: Visits, ready: str,
                                                   clock: ManualClock) -> None:
    register(client, token, "C-9")
    stranger = token(Role.COLLECTOR, "C-9")
    clock.set(START + timedelta(minutes=10))
    before = snapshot(client, token, visits, ready)
    assert client.get(f"/v1/visits/{ready}", headers=stranger).status_code == 404
    assert client.get("/v1/visits?collector_id=C-1", headers=stranger).status_code == 403
    assert client.get("/v1/visits?loan_id=L-1", headers=stranger).json() == {"visits": []}
    assert client.get("/v1/collectors/C-1", headers=stranger).status_code == 404
    assert client.post(f"/v1/visits/{ready}/decline", headers=stranger, json={
        "declined_at": clock.now().isoformat(), "via": "x"}).status_code == 404
    answer = client.post(f"/v1/visits/{ready}/check-in", headers=stranger, json={
        "collector_ids": ["C-9", "C-1"], "checked_in_at": clock.now().isoformat(),
        "credentials_presented": {"id_card": True, "badge": True,
                                  "authorisation_letter": True}})
    assert answer.status_code == 404
    assert client.put(f"/v1/visits/{ready}/recording", content=b"x",
                      headers={**stranger, **AUDIO}).status_code == 404
    assert client.post(f"/v1/visits/{ready}/record", json=_write_up(clock, "0" * 64),
                       headers=stranger).status_code == 404
    # collectors never act as ops or lender
    assert client.post(f"/v1/visits/{ready}/cancel", headers=token(Role.COLLECTOR, "C-1"),
                       json={"reason": "x"}).status_code == 403
    assert client.post(f"/v1/visits/{ready}/consent", headers=token(Role.COLLECTOR, "C-1"),
                       json={"consented_at": clock.now().isoformat(),
                             "via": "x"}).status_code == 403
    assert snapshot(client, token, visits, ready) == before


def test_another_lender_can_neither_see_nor_act(client: TestClient, token: Headers,
                                                visits: Visits, ready: str,
                                                clock: ManualClock) -> None:
    other = token(Role.LENDER, "lender-2")
    before = snapshot(client, token, visits, ready)
    assert client.get(f"/v1/visits/{ready}", headers=other).status_code == 404
    assert client.get("/v1/visits", headers=other).json() == {"visits": []}
    assert client.get("/v1/visits?collector_id=C-1", headers=other).json() == {"visits": []}
    for step, body in [("decline", {"declined_at": clock.now().isoformat(), "via": "x"}),
                       ("consent", {"consented_at": clock.now().isoformat(), "via": "x"})]:
        assert client.post(f"/v1/visits/{ready}/{step}", json=body,
                           headers=other).status_code == 404
    assert client.post("/v1/complaints", headers=other, json={
        "loan_id": "L-1", "about": "x", "visit_id": ready,
        "filed_at": clock.now().isoformat()}).status_code == 409
    assert snapshot(client, token, visits, ready) == before


def test_the_tokenless_check_and_the_auditor_see_no_debt(client: TestClient, token: Headers,
                                                         ready: str, clock: ManualClock,
                                                         registry: dict[str, str]) -> None:
    clock.set(START + timedelta(minutes=5))
    answer = client.get(f"/v1/verify/{registry['C-1'].lower()}")
    assert answer.status_code == 200
    for secret in ("5000", "L-1", "Wang", "Hill Road", "13800000000", ready, "problems"):
        assert secret not in answer.text, secret
    audited = client.get(f"/v1/visits/{ready}", headers=token(Role.AUDITOR, "aud-1")).json()
    assert "dossier" not in audited
    assert client.get(f"/v1/verify/{'A' * 65}").status_code == 422


def test_ops_may_not_upload_a_recording(client: TestClient, token: Headers,
                                        inside: str) -> None:
    answer = client.put(f"/v1/visits/{inside}/recording", content=b"ops bytes",
                        headers={**_ops(token), **AUDIO})
    assert answer.status_code == 403


@pytest.mark.parametrize("what", ["resolve", "about", "cancel", "revoke"])
def test_blank_text_is_422(client: TestClient, token: Headers, visits: Visits, fresh: str,
                           clock: ManualClock, what: str) -> None:
    now = clock.now().isoformat()
    if what == "resolve":
        filed = client.post("/v1/complaints", headers=token(Role.LENDER), json={
            "loan_id": "L-1", "about": "visit", "filed_at": now}).json()["complaint_id"]
        answer = client.post(f"/v1/complaints/{filed}/resolve", headers=_ops(token),
                             json={"outcome": "  ", "resolved_at": now})
    elif what == "about":
        answer = client.post("/v1/complaints", headers=token(Role.LENDER), json={
            "loan_id": "L-1", "about": "", "filed_at": now})
    elif what == "cancel":
        answer = client.post(f"/v1/visits/{fresh}/cancel", headers=_ops(token),
                             json={"reason": ""})
    else:
        answer = client.post("/v1/collectors/C-1/revoke", headers=_ops(token),
                             json={"reason": " "})
    assert answer.status_code == 422, answer.text


def test_the_same_key_and_body_answers_as_the_first_time(
        client: TestClient, token: Headers, visits: Visits, ready: str,
        clock: ManualClock) -> None:
    ops = {**_ops(token), "Idempotency-Key": "cancel-1"}
    first = client.post(f"/v1/visits/{ready}/cancel", headers=ops,
                        json={"reason": "collector ill", "visit_id": ready})
    assert first.status_code == 202 and first.json()["changed"] is True
    count = events_stored(visits)
    again = client.post(f"/v1/visits/{ready}/cancel", headers=ops,
                        json={"reason": "collector ill", "visit_id": ready})
    assert again.json() == first.json()  # changed: true, as the first time
    assert events_stored(visits) == count
    other = client.post(f"/v1/visits/{ready}/cancel", headers=ops,
                        json={"reason": "another reason"})
    assert other.status_code == 409 and other.json()["error"]["code"] == \
        "idempotency_key_reused"
    # Another caller's key of the same name is its own.
    someone = {**token(Role.OPS, "ops-2"), "Idempotency-Key": "cancel-1"}
    theirs = client.post(f"/v1/visits/{ready}/cancel", headers=someone,
                         json={"reason": "another reason"})
    assert theirs.status_code == 202 and theirs.json()["changed"] is False
