"""What a helper tried against the reminder's batched firing and receipts: a claim whose send
breaks in a gateway part-way, two reminders of one loan in one claim, a receipts batch that
repeats an id or meets a conflict. Each outcome is as one at a time would record it, and
nothing goes to a provider twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.agenda import Agenda
from shared.application import Conflict
from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import ScheduledCollector, VisitScheduled, envelope
from shared.roles import Role
from tests.service.records import consumer_record, tracking_of
from tests.service.test_agenda import NOON_SHANGHAI, open_cases, run_until
from tests.service.test_reminder_batches import RETRY, Provider, statuses

from services.reminder.application import Reminders
from services.reminder.channels import OutboundMessage
from services.reminder.handlers import HANDLERS

VISIT = UUID("6f1c2a4e-0000-4000-8000-00000000000b")


@pytest.fixture
def reminders(build: Callable[[str], FastAPI]) -> Iterator[Reminders]:
    app = build("reminder")
    with TestClient(app):
        yield app.state.service


class Broken(Provider):
    """A provider whose adapter breaks (a bug, not a ChannelError) on one message."""

    def __init__(self, breaks_on: str) -> None:
        super().__init__()
        self.breaks_on = breaks_on

    def send(self, message: OutboundMessage) -> str:
        if message.idempotency_key == self.breaks_on:
            with self._lock:
                self.handed.append(message.idempotency_key)
            raise RuntimeError("the adapter broke")
        return super().send(message)


@pytest.mark.parametrize("together", [False, True])
def test_a_send_that_breaks_in_a_claim_leaves_the_others_recorded_and_never_sent_twice(
        reminders: Reminders, together: bool) -> None:
    """The agenda fires a claim that raised one by one: a message already handed over must
    not be handed over again (an e-mail would reach the borrower twice)."""
    ids = open_cases(reminders, 4, NOON_SHANGHAI)
    provider = Broken(str(ids[1]))
    with ThreadPoolExecutor(4) as pool, pytest.raises(RuntimeError):
        reminders.fire_many(ids, "Reminder", {"sms": provider}, NOON_SHANGHAI, RETRY,
                            pool if together else None)
    # What the provider took is recorded; the broken one is still being handed over.
    assert statuses(reminders, ids) == ["sent", "sending", "sent", "sent"]
    # The agenda's fallback: one by one, the broken one breaking again.
    for reminder_id in ids:
        try:
            reminders.fire(reminder_id, "Reminder", {"sms": provider}, NOON_SHANGHAI, RETRY)
        except RuntimeError:
            assert reminder_id == ids[1]
    assert sorted(provider.handed) == sorted([str(i) for i in ids] + [str(ids[1])])


def notice_of(reminders: Reminders, loan_id: str = "L-0") -> UUID:
    """A visit's advance notice for the loan, due at once beside its cadence reminder."""
    visit = VisitScheduled(
        loan_id=loan_id, visit_id=VISIT, address_kind="residence",  # type: ignore[arg-type]
        scheduled_start=datetime(2026, 10, 17, 2, 0, tzinfo=UTC),
        scheduled_end=datetime(2026, 10, 17, 4, 0, tzinfo=UTC),
        collector_ids=["C-7"],
        collectors=[ScheduledCollector(collector_id="C-7", name="Zhang Wei",
                                       letter_id="LTR-C-7", verification_code="VC7K2M9Q")])
    event = envelope(visit, event_id="ev-visit-scheduled", source="/dunwell/visit",
                     time=NOON_SHANGHAI, causation_id=None, correlation_id=None)
    record = consumer_record(event, "visits.events", 0)
    assert HandlerSink(reminders, HANDLERS, ManualClock(NOON_SHANGHAI)).process(
        tracking_of(record), record, event, event.payload())
    plan = reminders.plan_of(loan_id)
    assert plan is not None
    (notice_id,) = plan.notices[str(VISIT)]
    return notice_id


@pytest.mark.parametrize("conflict", [False, True])
def test_two_reminders_of_one_loan_in_a_claim_share_its_plan(
        reminders: Reminders, monkeypatch: pytest.MonkeyPatch, conflict: bool) -> None:
    """A cadence reminder and a visit's notice of one loan fired together: both sent, the
    plan's step done once, in the one transaction or after a conflict in one each."""
    (cadence,) = open_cases(reminders, 1, NOON_SHANGHAI)
    notice = notice_of(reminders)
    real, commits = reminders.commit, []

    def second_conflicts(unit: Any) -> Any:
        commits.append(unit)
        if conflict and len(commits) == 2:
            raise Conflict("a payment arrived meanwhile")
        return real(unit)

    monkeypatch.setattr(reminders, "commit", second_conflicts)
    provider = Provider()
    reminders.fire_many([cadence, notice], "Reminder", {"sms": provider}, NOON_SHANGHAI,
                        RETRY)
    assert sorted(provider.handed) == sorted([str(cadence), str(notice)])
    assert statuses(reminders, [cadence, notice]) == ["sent", "sent"]
    plan = reminders.plan_of("L-0")
    assert plan is not None and plan.current is None and plan.next_due() is not None
    assert len(commits) == (2 + 2 if conflict else 2)


# --- receipts, many to a request ---------------------------------------------------------------


@pytest.fixture
def receipted(build: Callable[[str], FastAPI]) -> Iterator[tuple[TestClient, Reminders]]:
    app = build("reminder")
    with TestClient(app) as client:
        yield client, app.state.service


AT = "2026-10-14T04:01:00Z"


def test_a_repeated_message_id_in_one_receipts_batch_is_taken_once(
        receipted: tuple[TestClient, Reminders], token: Callable[..., dict[str, str]]) -> None:
    client, reminders = receipted
    ids = open_cases(reminders, 1, NOON_SHANGHAI)
    reminders.fire_many(ids, "Reminder", {"sms": Provider()}, NOON_SHANGHAI, RETRY)
    before = reminders.recorder.max_notification_id() or 0
    body = {"receipts": [{"message_id": str(ids[0]), "status": "delivered", "at": AT},
                         {"message_id": str(ids[0]), "status": "failed", "at": AT,
                          "reason": "off"}]}
    answer = client.post("/v1/receipts/sms:batch", headers=token(Role.PROVIDER, "sink"),
                         json=body)
    assert answer.status_code == 200
    assert [item["status"] for item in answer.json()["items"]] == ["accepted", "accepted"]
    assert reminders.repository.get(ids[0]).delivery == "delivered"  # the first one counts
    assert (reminders.recorder.max_notification_id() or 0) == before + 1


def test_a_receipts_batch_that_conflicts_answers_as_without_the_conflict(
        receipted: tuple[TestClient, Reminders], token: Callable[..., dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, reminders = receipted
    ids = open_cases(reminders, 3, NOON_SHANGHAI)
    reminders.fire_many(ids[:2], "Reminder", {"sms": Provider()}, NOON_SHANGHAI, RETRY)
    real, commits = reminders.commit, []

    def first_conflicts(unit: Any) -> Any:
        commits.append(unit)
        if len(commits) == 1:
            raise Conflict("a reminder changed meanwhile")
        return real(unit)

    monkeypatch.setattr(reminders, "commit", first_conflicts)
    unknown = "6f1c2a4e-0000-4000-8000-0000000000ff"
    body = {"receipts": [{"message_id": str(ids[0]), "status": "delivered", "at": AT},
                         {"message_id": unknown, "status": "delivered", "at": AT},
                         {"message_id": str(ids[2]), "status": "delivered", "at": AT},
                         {"message_id": str(ids[1]), "status": "failed", "at": AT}]}
    answer = client.post("/v1/receipts/sms:batch", headers=token(Role.PROVIDER, "sink"),
                         json=body)
    assert answer.status_code == 200
    said = answer.json()
    assert [item["status"] for item in said["items"]] == ["accepted", "rejected", "rejected",
                                                          "accepted"]
    assert (said["accepted"], said["rejected"]) == (2, 2)
    assert [reminders.repository.get(i).delivery for i in ids] == ["delivered", "failed", None]
    assert len(commits) == 1 + 2  # then one per receipt taken


# --- through the agenda -------------------------------------------------------------------------


def through_the_agenda(reminders: Reminders, provider: Provider, done: Callable[[], bool]
                       ) -> None:
    clock = ManualClock(NOON_SHANGHAI)

    def fire(aggregate_id: UUID, kind: str, now: datetime) -> None:
        reminders.fire(aggregate_id, kind, {"sms": provider}, now, RETRY)

    def fire_many(ids: list[UUID], kind: str, now: datetime) -> None:
        with ThreadPoolExecutor(4) as pool:
            reminders.fire_many(ids, kind, {"sms": provider}, now, RETRY, pool)

    loop = Agenda(app=reminders, fire=fire, fire_many=fire_many, clock=clock, owner="r-1",
                  idle_seconds=0.05, batch=20, pause=timedelta(milliseconds=50))
    asyncio.run(run_until([loop], done, timeout=20))


def test_a_claim_whose_one_send_breaks_goes_on_one_by_one_through_the_agenda(
        reminders: Reminders) -> None:
    ids = open_cases(reminders, 5, NOON_SHANGHAI)
    provider = Broken(str(ids[2]))
    through_the_agenda(reminders, provider, lambda: len(provider.handed) >= 5 + 2)
    assert statuses(reminders, ids) == ["sent", "sent", "sending", "sent", "sent"]
    handed = Counter(provider.handed)
    assert all(handed[str(i)] == 1 for i in ids if i != ids[2])  # none handed over twice


def test_a_claim_whose_one_message_cannot_be_worded_sends_the_rest_once(
        reminders: Reminders, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wording raises before anything is recorded: the claim is fired one by one, the
    others go once, the one that cannot be worded never."""
    ids = open_cases(reminders, 4, NOON_SHANGHAI)
    real = reminders._ready_to_send

    def wording(unit: Any, reminder_id: UUID, now: datetime) -> Any:
        if reminder_id == ids[1]:
            raise KeyError("amount")  # a template naming a term the case lacks
        return real(unit, reminder_id, now)

    monkeypatch.setattr(reminders, "_ready_to_send", wording)
    provider = Provider()
    through_the_agenda(reminders, provider,
                       lambda: statuses(reminders, ids).count("sent") == 3)
    assert sorted(provider.handed) == sorted(str(i) for i in ids if i != ids[1])
    assert statuses(reminders, ids)[1] == "pending"
