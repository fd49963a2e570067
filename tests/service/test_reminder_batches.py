"""The reminder in batches: a claim's due entries fired together (plans' steps in one
transaction, reminders sent together on a pool, what the providers said in one more), and a
provider's receipts taken many to a request. Every outcome is as one at a time would record it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.application import Conflict
from shared.roles import Role
from tests.service.test_agenda import NIGHT_SHANGHAI, NOON_SHANGHAI, open_cases

from services.reminder.application import Reminders
from services.reminder.channels import ChannelError, ChannelRefused, OutboundMessage
from services.reminder.domain import ContactPlan

RETRY = timedelta(minutes=1)


class Provider:
    """Takes every message but those to the numbers it is told to refuse or fail; counts the
    hand-overs and the most it held at once."""

    def __init__(self, refuse: frozenset[str] = frozenset(),
                 fail: frozenset[str] = frozenset(), hold: float = 0.0) -> None:
        self.refuse, self.fail, self.hold = refuse, fail, hold
        self.handed: list[str] = []
        self.at_once = self._now = 0
        self._lock = threading.Lock()

    def send(self, message: OutboundMessage) -> str:
        with self._lock:
            self.handed.append(message.idempotency_key)
            self._now += 1
            self.at_once = max(self.at_once, self._now)
        try:
            if self.hold:
                threading.Event().wait(self.hold)
            if message.to in self.refuse:
                raise ChannelRefused("sms provider refused the message (400)")
            if message.to in self.fail:
                raise ChannelError("sms provider answered 503")
            return f"p-{message.idempotency_key[:8]}"
        finally:
            with self._lock:
                self._now -= 1


@pytest.fixture
def reminders(build: Callable[[str], FastAPI]) -> Iterator[Reminders]:
    app = build("reminder")
    with TestClient(app):
        yield app.state.service


def statuses(reminders: Reminders, ids: list[UUID]) -> list[str]:
    return [reminders.repository.get(i).status for i in ids]


def test_a_claim_of_reminders_is_sent_together_and_recorded_as_one_at_a_time_would(
        reminders: Reminders) -> None:
    ids = open_cases(reminders, 6, NOON_SHANGHAI)
    provider = Provider(hold=0.05)
    before = reminders.recorder.max_notification_id() or 0
    with ThreadPoolExecutor(8) as pool:
        reminders.fire_many(ids, "Reminder", {"sms": provider}, NOON_SHANGHAI, RETRY, pool)
    assert sorted(provider.handed) == sorted(str(i) for i in ids)
    assert provider.at_once > 1  # together, not one after the other
    assert statuses(reminders, ids) == ["sent"] * 6
    sent = reminders.recorder.max_notification_id() or 0
    assert sent > before
    # A second firing finds nothing due: nothing handed over twice.
    reminders.fire_many(ids, "Reminder", {"sms": provider}, NOON_SHANGHAI, RETRY)
    assert len(provider.handed) == 6
    plans = [reminders.repository.get(ContactPlan.create_id(f"L-{i}")) for i in range(6)]
    assert all(plan.current is None for plan in plans)


def test_refused_and_failing_sends_of_a_claim_are_told_apart(
        build: Callable[[str], FastAPI]) -> None:
    app = build("reminder")
    with TestClient(app):
        reminders: Reminders = app.state.service
        ids = open_cases(reminders, 3, NOON_SHANGHAI)
        phone = reminders.repository.get(ids[0]).recipient  # the cases share one number
        refusing = Provider(refuse=frozenset({phone}))
        reminders.fire_many(ids[:1], "Reminder", {"sms": refusing}, NOON_SHANGHAI, RETRY)
        failing = Provider(fail=frozenset({phone}))
        reminders.fire_many(ids[1:], "Reminder", {"sms": failing}, NOON_SHANGHAI, RETRY)
        assert statuses(reminders, ids) == ["cancelled", "pending", "pending"]
        gone = reminders.repository.get(ids[0]).cancelled
        assert gone["rule"] is None and "refused" in gone["reason"]
        later = reminders.repository.get(ids[1])
        assert later.due_at == NOON_SHANGHAI + RETRY  # tried again after the pause
        assert reminders.repository.get(ContactPlan.create_id("L-0")).current is None
        assert reminders.repository.get(ContactPlan.create_id("L-1")).current == ids[1]


def test_a_claim_at_night_is_deferred_whole_and_nothing_is_handed_over(
        reminders: Reminders) -> None:
    ids = open_cases(reminders, 4, NOON_SHANGHAI)
    provider = Provider()
    night = NIGHT_SHANGHAI + timedelta(days=1)
    reminders.fire_many(ids, "Reminder", {"sms": provider}, night, RETRY)
    assert provider.handed == []
    assert all(reminders.repository.get(i).blocks[-1]["rule"] == "C1" for i in ids)


def test_a_claim_whose_marking_conflicts_sends_nothing_and_raises(
        reminders: Reminders, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agenda fires such a claim one by one; before that nothing may have gone."""
    ids = open_cases(reminders, 3, NOON_SHANGHAI)
    provider = Provider()
    real = reminders.commit

    def conflicting(unit: Any) -> Any:
        raise Conflict("another writer")

    monkeypatch.setattr(reminders, "commit", conflicting)
    with pytest.raises(Conflict):
        reminders.fire_many(ids, "Reminder", {"sms": provider}, NOON_SHANGHAI, RETRY)
    assert provider.handed == []
    monkeypatch.setattr(reminders, "commit", real)
    assert statuses(reminders, ids) == ["pending"] * 3


def test_what_the_providers_said_is_recorded_one_by_one_after_a_conflict(
        reminders: Reminders, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = open_cases(reminders, 3, NOON_SHANGHAI)
    real = reminders.commit
    commits = []

    def second_conflicts(unit: Any) -> Any:
        commits.append(unit)
        if len(commits) == 2:  # the one transaction of every answer
            raise Conflict("a payment arrived meanwhile")
        return real(unit)

    monkeypatch.setattr(reminders, "commit", second_conflicts)
    reminders.fire_many(ids, "Reminder", {"sms": Provider()}, NOON_SHANGHAI, RETRY)
    assert len(commits) == 2 + 3
    assert statuses(reminders, ids) == ["sent"] * 3


def test_plans_steps_of_a_claim_are_taken_in_one_transaction(reminders: Reminders) -> None:
    ids = open_cases(reminders, 3, NOON_SHANGHAI)
    reminders.fire_many(ids, "Reminder", {"sms": Provider()}, NOON_SHANGHAI, RETRY)
    plans = [ContactPlan.create_id(f"L-{i}") for i in range(3)]
    step = NOON_SHANGHAI + timedelta(days=2)
    before = reminders.recorder.max_notification_id() or 0
    commits = []
    real = reminders.commit

    def counted(unit: Any) -> Any:
        commits.append(unit)
        return real(unit)

    reminders.commit = counted  # type: ignore[method-assign]
    reminders.fire_many(plans, "ContactPlan", {}, step, RETRY)
    assert len(commits) == 1
    assert (reminders.recorder.max_notification_id() or 0) > before
    assert all(reminders.repository.get(p).step == 2 for p in plans)


# --- receipts, many to a request ---------------------------------------------------------------


def test_a_provider_posts_receipts_in_a_batch_each_answered_on_its_own(
        build: Callable[[str], FastAPI], token: Callable[..., dict[str, str]]) -> None:
    app = build("reminder")
    with TestClient(app) as client:
        reminders: Reminders = app.state.service
        ids = open_cases(reminders, 3, NOON_SHANGHAI)
        reminders.fire_many(ids[:2], "Reminder", {"sms": Provider()}, NOON_SHANGHAI, RETRY)
        at = datetime(2026, 10, 14, 4, 1, tzinfo=UTC).isoformat()
        body = {"receipts": [
            {"message_id": str(ids[0]), "status": "delivered", "at": at},
            {"message_id": str(ids[1]), "status": "failed", "at": at, "reason": "off"},
            {"message_id": str(ids[2]), "status": "delivered", "at": at},  # not sent yet
        ]}
        provider = token(Role.PROVIDER, "sink")
        answer = client.post("/v1/receipts/sms:batch", headers=provider, json=body)
        assert answer.status_code == 200
        said = answer.json()
        assert (said["accepted"], said["rejected"]) == (2, 1)
        assert [item["status"] for item in said["items"]] == ["accepted", "accepted",
                                                              "rejected"]
        assert said["items"][2]["error"]["code"] == "not_found"
        assert [item["message_id"] for item in said["items"]] == [str(i) for i in ids]
        deliveries = [reminders.repository.get(i).delivery for i in ids]
        assert deliveries[0] == "delivered" and deliveries[1] == "failed"
        assert deliveries[2] is None
        # The same batch again changes nothing.
        after = reminders.recorder.max_notification_id()
        again = client.post("/v1/receipts/sms:batch", headers=provider, json=body).json()
        assert [item["status"] for item in again["items"]] == ["accepted", "accepted",
                                                              "rejected"]
        assert reminders.recorder.max_notification_id() == after
        # On another channel none of them was sent.
        email = client.post("/v1/receipts/email:batch", headers=provider, json=body).json()
        assert email["accepted"] == 0


def test_a_receipts_batch_that_does_not_fit_is_422_and_records_nothing(
        build: Callable[[str], FastAPI], token: Callable[..., dict[str, str]]) -> None:
    app = build("reminder")
    with TestClient(app) as client:
        reminders: Reminders = app.state.service
        ids = open_cases(reminders, 1, NOON_SHANGHAI)
        reminders.fire_many(ids, "Reminder", {"sms": Provider()}, NOON_SHANGHAI, RETRY)
        before = reminders.recorder.max_notification_id()
        provider = token(Role.PROVIDER, "sink")
        good = {"message_id": str(ids[0]), "status": "delivered",
                "at": "2026-10-14T04:01:00Z"}
        for body in ({"receipts": []}, {"receipts": [good] * 1001},
                     {"receipts": [good, {**good, "status": "lost"}]},
                     {"receipts": [good], "extra": 1}, [good]):
            answer = client.post("/v1/receipts/sms:batch", headers=provider, json=body)
            assert answer.status_code == 422, body
            assert answer.json()["error"]["code"] == "invalid_request"
        assert client.post("/v1/receipts/fax:batch", headers=provider,
                           json={"receipts": [good]}).status_code == 422
        assert client.post("/v1/receipts/sms:batch", headers=token(Role.COLLECTOR, "C-7"),
                           json={"receipts": [good]}).status_code == 403
        assert client.post("/v1/receipts/sms:batch", json={"receipts": [good]}).status_code \
            == 401
        assert reminders.recorder.max_notification_id() == before
        assert reminders.repository.get(ids[0]).delivery is None
