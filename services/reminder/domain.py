"""Reminder's aggregates: a ContactPlan per loan, a Reminder per outbound message.

A reminder is recorded before it is handed to a channel and again after, so a crash between
the two is seen on restart and the send is retried with the same idempotency key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

PLAN_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/contact-plans")
REMINDER_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/reminders")

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
CANCELLED = "cancelled"


class ContactPlan(Aggregate):
    """The reminders planned for one loan, and whether its case is still open."""

    @event("Started")
    def __init__(self, loan_id: str, lender_id: str) -> None:
        self.loan_id = loan_id
        self.lender_id = lender_id
        self.reminder_ids: list[UUID] = []
        self.open = True

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(PLAN_NAMESPACE, loan_id)

    def seen_by(self, lender_id: str | None) -> bool:
        """A lender sees only its own loans' plans; None stands for ops and auditors."""
        return lender_id is None or lender_id == self.lender_id

    def add(self, reminder_id: UUID) -> None:
        if reminder_id not in self.reminder_ids:
            self._added(reminder_id)
        if not self.open:
            self._reopened()

    def close(self) -> None:
        if self.open:
            self._closed()

    @event("ReminderAdded")
    def _added(self, reminder_id: UUID) -> None:
        self.reminder_ids.append(reminder_id)

    @event("Reopened")
    def _reopened(self) -> None:
        self.open = True

    @event("Closed")
    def _closed(self) -> None:
        self.open = False


class Reminder(Aggregate):
    """One outbound message on one channel, from planned to sent or cancelled."""

    @event("Scheduled")
    def __init__(self, key: str, loan_id: str, channel: str, template_id: str,
                 template_version: int, recipient: str, timezone: str,
                 content: dict[str, str], due_at: datetime, cause: str,
                 correlation: str) -> None:
        self.loan_id = loan_id
        self.channel = channel
        self.template_id = template_id
        self.template_version = template_version
        self.recipient = recipient
        self.timezone = timezone
        self.content = content
        self.due_at = due_at
        self.cause = cause
        self.correlation = correlation
        self.status = PENDING
        self.attempts = 0
        self.sent_at: datetime | None = None
        self.blocks: list[dict[str, Any]] = []
        self.cancelled: dict[str, Any] | None = None

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(REMINDER_NAMESPACE, key)

    @property
    def pending(self) -> bool:
        return self.status in (PENDING, SENDING)

    def next_due(self) -> datetime | None:
        """On the agenda while pending; a send cut short by a crash is due again at once."""
        return self.due_at if self.pending else None

    def defer(self, rule: str, reason: str, until: datetime) -> None:
        if self.pending:
            self._blocked(self.loan_id, self.channel, rule, reason, until, self.cause,
                          self.correlation)

    def start_sending(self, at: datetime) -> None:
        self._sending(at)

    def mark_sent(self, at: datetime, local_time: str, provider_id: str) -> None:
        if self.status != SENT:
            self._sent(self.loan_id, self.channel, self.template_id, self.template_version, at,
                       local_time, provider_id, self.cause, self.correlation)

    def fail(self, reason: str, at: datetime, retry_at: datetime) -> None:
        self._failed(self.loan_id, self.channel, reason, at, retry_at, self.cause,
                     self.correlation)

    def cancel(self, rule: str, reason: str, at: datetime, cause: str) -> None:
        """A rule drops a planned message. One being handed over is left to finish: its send
        is then recorded as it happened (and a failed one is dropped at its next try)."""
        if self.status == PENDING:
            self._cancelled(self.loan_id, self.channel, rule, reason, at, cause,
                            self.correlation)

    def abandon(self, rule: str, reason: str, at: datetime) -> None:
        """A send cut short by a crash, which a rule now forbids to finish: dropped, saying
        that the provider may have had it (the reminder id was its idempotency key)."""
        if self.status == SENDING:
            self._cancelled(self.loan_id, self.channel, rule,
                            f"{reason}; a send was in flight when it stopped, and the provider "
                            f"may have it", at, self.cause, self.correlation)

    @event("Blocked")
    def _blocked(self, loan_id: str, channel: str, rule: str, reason: str, until: datetime,
                 cause: str, correlation: str) -> None:
        self.status = PENDING
        self.due_at = until
        self.blocks.append({"rule": rule, "reason": reason, "deferred_until": until})

    @event("SendStarted")
    def _sending(self, at: datetime) -> None:
        self.status = SENDING
        self.attempts += 1

    @event("Sent")
    def _sent(self, loan_id: str, channel: str, template_id: str, template_version: int,
              sent_at: datetime, borrower_local_time: str, provider_id: str, cause: str,
              correlation: str) -> None:
        self.status = SENT
        self.sent_at = sent_at

    @event("Failed")
    def _failed(self, loan_id: str, channel: str, reason: str, failed_at: datetime,
                retry_at: datetime, cause: str, correlation: str) -> None:
        self.status = PENDING
        self.due_at = retry_at

    @event("Cancelled")
    def _cancelled(self, loan_id: str, channel: str, rule: str, reason: str,
                   cancelled_at: datetime, cause: str, correlation: str) -> None:
        self.status = CANCELLED
        self.cancelled = {"rule": rule, "reason": reason, "at": cancelled_at}


# C5: approved, versioned templates. A new wording is a new version, never an edit.
TEMPLATES: dict[tuple[str, int], str] = {
    ("sms.first_reminder", 1): (
        "Loan {loan_id}: {amount} {currency} is overdue. Please repay by {deadline} via "
        "{repayment_channel}. To check that this message is genuine, contact "
        "{verification_channel}."
    ),
}
FIRST_REMINDER = ("sms.first_reminder", 1)
REQUIRED_CONTENT = ("amount", "currency", "deadline", "repayment_channel",
                    "verification_channel")


def render(template_id: str, version: int, content: dict[str, str]) -> str:
    return TEMPLATES[(template_id, version)].format(**content)
