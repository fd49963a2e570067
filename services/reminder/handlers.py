"""Integration events in, application calls out: one function per event type (cases.events,
and of visits.events what a visit's advance notice needs)."""

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
    ContactHeld,
    ContactResumed,
    EventData,
    VisitCancelled,
    VisitDeclined,
    VisitScheduled,
)

from services.reminder.application import NoticeIncomplete, Reminders


def on_case_opened(reminders: Reminders, unit: Unit, event: CloudEvent, data: CaseOpened,
                   now: datetime) -> None:
    reminders.open_plan(unit, event, data, now)


def on_case_updated(reminders: Reminders, unit: Unit, event: CloudEvent, data: CaseUpdated,
                    now: datetime) -> None:
    reminders.revise_plan(unit, event, data, now)


def on_case_escalated(reminders: Reminders, unit: Unit, event: CloudEvent,
                      data: CaseEscalated, now: datetime) -> None:
    reminders.escalate_plan(unit, event, data, now)


def on_cadence_paused(reminders: Reminders, unit: Unit, event: CloudEvent, data: CadencePaused,
                      now: datetime) -> None:
    reminders.pause_cadence(unit, event, data, now)


def on_cadence_resumed(reminders: Reminders, unit: Unit, event: CloudEvent,
                       data: CadenceResumed, now: datetime) -> None:
    reminders.resume_cadence(unit, event, data, now)


def on_case_closed(reminders: Reminders, unit: Unit, event: CloudEvent, data: CaseClosed,
                   now: datetime) -> None:
    reminders.close_plan(unit, event, data, now)


def on_contact_held(reminders: Reminders, unit: Unit, event: CloudEvent, data: ContactHeld,
                    now: datetime) -> None:
    reminders.hold(unit, event, data, now)


def on_contact_resumed(reminders: Reminders, unit: Unit, event: CloudEvent,
                       data: ContactResumed, now: datetime) -> None:
    reminders.resume(unit, event, data, now)


def on_visit_scheduled(reminders: Reminders, unit: Unit, event: CloudEvent,
                       data: VisitScheduled, now: datetime) -> None:
    """C8: the visit's advance notice; dead-lettered when the loan has no plan here, or when
    the notice could not say who comes and how to check them."""
    try:
        planned = reminders.plan_notice(unit, event, data, now)
    except NoticeIncomplete as error:
        raise Rejected(str(error)) from error
    if not planned:
        raise Rejected(f"no contact plan for loan {data.loan_id}")


def on_visit_called_off(reminders: Reminders, unit: Unit, event: CloudEvent,
                        data: VisitCancelled | VisitDeclined, now: datetime) -> None:
    reminders.withdraw_notice(unit, event, data, now)


HANDLERS: dict[type[EventData], Handler] = {
    CaseOpened: on_case_opened,
    CaseUpdated: on_case_updated,
    CaseEscalated: on_case_escalated,
    CaseClosed: on_case_closed,
    ContactHeld: on_contact_held,
    ContactResumed: on_contact_resumed,
    CadencePaused: on_cadence_paused,
    CadenceResumed: on_cadence_resumed,
    VisitScheduled: on_visit_scheduled,
    VisitCancelled: on_visit_called_off,
    VisitDeclined: on_visit_called_off,
}
