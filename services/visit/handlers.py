"""Integration events in, application calls out: what the visit service follows of a case
(cases.events) and of the notices the reminder service sends for it (reminders.events)."""

from __future__ import annotations

from datetime import datetime

from shared.application import Unit
from shared.consumer import Handler, Rejected
from shared.events import (
    CadencePaused,
    CadenceResumed,
    CaseClosed,
    CaseEscalated,
    CaseOpened,
    CaseUpdated,
    CloudEvent,
    ContactAttemptRecorded,
    ContactHeld,
    ContactResumed,
    EventData,
    PromiseBroken,
    PromiseKept,
    ReminderDelivered,
    ReminderSent,
    VisitRequested,
)

from services.visit.application import Visits


def _known(found: bool, loan_id: str) -> None:
    if not found:
        raise Rejected(f"no case for loan {loan_id} (its CaseOpened comes first)")


def on_case_opened(visits: Visits, unit: Unit, event: CloudEvent,
                   data: CaseOpened | CaseUpdated, now: datetime) -> None:
    visits.case_opened(unit, data, now)


def on_case_escalated(visits: Visits, unit: Unit, event: CloudEvent, data: CaseEscalated,
                      now: datetime) -> None:
    _known(visits.case_escalated(unit, data), data.loan_id)


def on_visit_requested(visits: Visits, unit: Unit, event: CloudEvent, data: VisitRequested,
                       now: datetime) -> None:
    _known(visits.visit_requested(unit, event, data, now), data.loan_id)


def on_case_closed(visits: Visits, unit: Unit, event: CloudEvent, data: CaseClosed,
                   now: datetime) -> None:
    _known(visits.case_closed(unit, event, data), data.loan_id)


def on_contact_held(visits: Visits, unit: Unit, event: CloudEvent, data: ContactHeld,
                    now: datetime) -> None:
    _known(visits.contact_held(unit, data), data.loan_id)


def on_contact_resumed(visits: Visits, unit: Unit, event: CloudEvent, data: ContactResumed,
                       now: datetime) -> None:
    _known(visits.contact_resumed(unit, data), data.loan_id)


def on_cadence_paused(visits: Visits, unit: Unit, event: CloudEvent, data: CadencePaused,
                      now: datetime) -> None:
    _known(visits.cadence_paused(unit, data), data.loan_id)


def on_cadence_resumed(visits: Visits, unit: Unit, event: CloudEvent, data: CadenceResumed,
                       now: datetime) -> None:
    _known(visits.cadence_resumed(unit, data), data.loan_id)


def on_promise_decided(visits: Visits, unit: Unit, event: CloudEvent,
                       data: PromiseKept | PromiseBroken, now: datetime) -> None:
    _known(visits.promise_decided(unit, data), data.loan_id)


def on_contacted(visits: Visits, unit: Unit, event: CloudEvent,
                 data: ReminderSent | ContactAttemptRecorded, now: datetime) -> None:
    _known(visits.contacted(unit, data), data.loan_id)


def on_delivered(visits: Visits, unit: Unit, event: CloudEvent, data: ReminderDelivered,
                 now: datetime) -> None:
    visits.delivered(unit, data)


HANDLERS: dict[type[EventData], Handler] = {
    CaseOpened: on_case_opened,
    CaseUpdated: on_case_opened,
    CaseEscalated: on_case_escalated,
    VisitRequested: on_visit_requested,
    CaseClosed: on_case_closed,
    ContactHeld: on_contact_held,
    ContactResumed: on_contact_resumed,
    CadencePaused: on_cadence_paused,
    CadenceResumed: on_cadence_resumed,
    PromiseKept: on_promise_decided,
    PromiseBroken: on_promise_decided,
    ReminderSent: on_contacted,
    ContactAttemptRecorded: on_contacted,
    ReminderDelivered: on_delivered,
}
