"""Reminder domain events as integration events on reminders.events."""

from __future__ import annotations

from typing import Any

from shared.events import (
    ContactBlocked,
    ReminderCancelled,
    ReminderFailed,
    ReminderScheduled,
    ReminderSent,
)
from shared.relay import Publication, is_event

from services.reminder.domain import Reminder


def integration_event(event: Any) -> Publication | None:
    data: Any
    if is_event(event, Reminder, "Scheduled"):
        data = ReminderScheduled(loan_id=event.loan_id, reminder_id=event.originator_id,
                                 channel=event.channel, template_id=event.template_id,
                                 template_version=event.template_version, due_at=event.due_at)
    elif is_event(event, Reminder, "Blocked"):
        data = ContactBlocked(loan_id=event.loan_id, channel=event.channel, rule=event.rule,
                              reason=event.reason, deferred_until=event.until,
                              reminder_id=event.originator_id)
    elif is_event(event, Reminder, "Sent"):
        data = ReminderSent(loan_id=event.loan_id, reminder_id=event.originator_id,
                            channel=event.channel, template_id=event.template_id,
                            template_version=event.template_version, sent_at=event.sent_at,
                            borrower_local_time=event.borrower_local_time)
    elif is_event(event, Reminder, "Failed"):
        data = ReminderFailed(loan_id=event.loan_id, reminder_id=event.originator_id,
                              channel=event.channel, reason=event.reason,
                              failed_at=event.failed_at)
    elif is_event(event, Reminder, "Cancelled"):
        data = ReminderCancelled(loan_id=event.loan_id, reminder_id=event.originator_id,
                                 channel=event.channel, rule=event.rule, reason=event.reason,
                                 cancelled_at=event.cancelled_at)
    else:
        return None
    return Publication(data, causation_id=event.cause, correlation_id=event.correlation)
