"""Reminder domain events as integration events on reminders.events."""

from __future__ import annotations

from typing import Any

from shared.events import (
    CallTaskIssued,
    Channel,
    ContactAttemptRecorded,
    ContactBlocked,
    DialPermitted,
    EventData,
    ReminderCancelled,
    ReminderDelivered,
    ReminderFailed,
    ReminderScheduled,
    ReminderSent,
)
from shared.relay import Publication, is_event

from services.reminder.domain import CallTask, ContactPlan, Debtor, Reminder


def integration_event(event: Any) -> Publication | None:
    for mapping in (_reminder, _call_task, _plan, _debtor):
        data = mapping(event)
        if data is not None:
            return Publication(data, causation_id=getattr(event, "cause", None),
                               correlation_id=event.correlation)
    return None


def _reminder(event: Any) -> EventData | None:
    ids = {"loan_id": event.__dict__.get("loan_id"), "reminder_id": event.originator_id,
           "channel": event.__dict__.get("channel")}
    if is_event(event, Reminder, "Scheduled"):
        return ReminderScheduled(**ids, template_id=event.template_id,
                                 template_version=event.template_version, due_at=event.due_at)
    if is_event(event, Reminder, "Blocked"):
        return ContactBlocked(**ids, rule=event.rule, reason=event.reason,
                              deferred_until=event.until)
    if is_event(event, Reminder, "HeldBack", "Barred"):
        return ContactBlocked(**ids, rule=event.rule, reason=event.reason)
    # A visit's notice (C8) names its visit when it is sent, delivered or failed.
    visit_id = event.__dict__.get("visit_id")
    if is_event(event, Reminder, "Sent"):
        return ReminderSent(**ids, template_id=event.template_id,
                            template_version=event.template_version, sent_at=event.sent_at,
                            borrower_local_time=event.borrower_local_time,
                            party=event.__dict__.get("party", "borrower"), visit_id=visit_id)
    if is_event(event, Reminder, "Failed", "Refused", "Undelivered"):
        return ReminderFailed(**ids, reason=event.reason, failed_at=event.failed_at,
                              visit_id=visit_id)
    if is_event(event, Reminder, "Delivered"):
        return ReminderDelivered(**ids, delivered_at=event.delivered_at, visit_id=visit_id)
    if is_event(event, Reminder, "Cancelled"):
        return ReminderCancelled(**ids, rule=event.rule, reason=event.reason,
                                 cancelled_at=event.cancelled_at)
    return None


def _call_task(event: Any) -> EventData | None:
    if is_event(event, CallTask, "Blocked"):
        return ContactBlocked(loan_id=event.loan_id, channel=Channel.CALL, rule=event.rule,
                              reason=event.reason, deferred_until=event.until,
                              task_id=event.originator_id)
    if is_event(event, CallTask, "HeldBack"):
        return ContactBlocked(loan_id=event.loan_id, channel=Channel.CALL, rule=event.rule,
                              reason=event.reason, task_id=event.originator_id)
    if is_event(event, CallTask, "Issued"):
        return CallTaskIssued(loan_id=event.loan_id, task_id=event.originator_id,
                              phone_kind=event.phone_kind, due_from=event.due_from,
                              due_until=event.due_until, template_id=event.template_id,
                              template_version=event.template_version,
                              contact_id=event.contact_id)
    if is_event(event, CallTask, "Cancelled"):
        return ReminderCancelled(loan_id=event.loan_id, reminder_id=event.originator_id,
                                 channel=Channel.CALL, rule=event.rule, reason=event.reason,
                                 cancelled_at=event.cancelled_at)
    return None


def _plan(event: Any) -> EventData | None:
    if is_event(event, ContactPlan, "AttemptRecorded"):
        return ContactAttemptRecorded(
            loan_id=event.loan_id, attempt_id=event.attempt_id, channel=event.channel,
            outcome=event.outcome, attempted_at=event.at, collector_id=event.collector_id,
            promise_to_pay=event.promise, permit_id=event.permit_id,
            number_sha256=event.number, party=event.party, task_id=event.task_id)
    return None


def _debtor(event: Any) -> EventData | None:
    if is_event(event, Debtor, "Permitted"):
        return DialPermitted(loan_id=event.loan_id, permit_id=event.permit_id,
                             task_id=event.task_id, collector_id=event.collector_id,
                             number_sha256=event.number, permitted_at=event.permitted_at,
                             expires_at=event.expires_at, party=event.party)
    return None
