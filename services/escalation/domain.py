"""Escalation's aggregates: what the lender reported (Intake) and one CollectionCase per loan."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

CASE_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/cases")
INTAKE_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/intake")


class Intake(Aggregate):
    """One report received over HTTP, kept until the relay has published it."""

    @event("Reported")
    def __init__(self, key: str, event_type: str, payload: dict[str, Any]) -> None:
        self.key = key
        self.event_type = event_type
        self.payload = payload

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(INTAKE_NAMESPACE, key)


class OtherLendersLoan(Exception):
    """A report about a loan whose case belongs to another lender: refused, never merged."""


class CollectionCase(Aggregate):
    """One overdue loan being collected, from overdue to closed.

    `terms` are the facts the lender last reported (a LoanOverdue's data in JSON form, without
    the loan id): kept as one value, so every event carries them whole.
    """

    @event("Opened")
    def __init__(self, loan_id: str, terms: dict[str, Any], stage: str, opened_at: datetime,
                 cause: str) -> None:
        self.loan_id = loan_id
        self.status = "open"
        self.correlation_id = cause
        self._apply(terms)
        self.stage = stage
        self.opened_at = opened_at
        self.closed_at: datetime | None = None
        self.close_reason: str | None = None
        self.holds: dict[str, list[str] | None] = {}

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(CASE_NAMESPACE, loan_id)

    @property
    def lender_id(self) -> str:
        return str(self.terms["lender_id"])

    @property
    def currency(self) -> str:
        return str(self.terms["currency"])

    @property
    def days_past_due(self) -> int:
        return int(self.terms["days_past_due"])

    def report_overdue(self, terms: dict[str, Any], stage: str, at: datetime,
                       cause: str) -> None:
        """A later LoanOverdue updates the case; on a closed case it opens it again."""
        if terms["lender_id"] != self.lender_id:
            raise OtherLendersLoan(self.loan_id)
        if self.status == "closed":
            self._reopened(self.loan_id, terms, stage, at, cause)
        elif terms != self.terms:
            self._changed(self.loan_id, terms, "reported", cause, self.correlation_id)

    def record_payment(self, amount: Decimal, remaining: Decimal, paid_at: datetime,
                       closes: bool, cause: str) -> None:
        self._paid(amount, remaining, paid_at, cause)
        if closes and self.status == "open":
            self._closed(self.loan_id, "paid", paid_at, cause, self.correlation_id)
        elif self.status == "open":
            # What reminds the borrower must state the amount now overdue, not the opening's.
            self._changed(self.loan_id, {**self.terms, "amount_overdue": f"{remaining:.2f}"},
                          "paid", cause, self.correlation_id)

    def hold_contact(self, hold_id: str, channels: list[str] | None, reason: str,
                     at: datetime, permanent: bool, cause: str) -> None:
        """C3: contact stops (a cease request on its channels, for good; a dispute on every
        channel until it is resolved). The reminder service obeys what this publishes."""
        if hold_id not in self.holds:
            self._contact_held(self.loan_id, hold_id, channels, reason, at, permanent, cause,
                               self.correlation_id)

    def resume_contact(self, hold_id: str, reason: str, at: datetime, cause: str) -> bool:
        """False when no such hold is in force (nothing to resume)."""
        if hold_id not in self.holds:
            return False
        self._contact_resumed(self.loan_id, hold_id, self.holds[hold_id], reason, at, cause,
                              self.correlation_id)
        return True

    @event("ContactHeld")
    def _contact_held(self, loan_id: str, hold_id: str, channels: list[str] | None,
                      reason: str, at: datetime, permanent: bool, cause: str,
                      correlation: str) -> None:
        self.holds[hold_id] = channels

    @event("ContactResumed")
    def _contact_resumed(self, loan_id: str, hold_id: str, channels: list[str] | None,
                         reason: str, at: datetime, cause: str, correlation: str) -> None:
        del self.holds[hold_id]

    @event("Updated")
    def _updated(self, terms: dict[str, Any], cause: str) -> None:
        """Recorded by earlier versions (nothing was published for it); kept to replay them."""
        self._apply(terms)

    @event("TermsChanged")
    def _changed(self, loan_id: str, terms: dict[str, Any], reason: str, cause: str,
                 correlation: str) -> None:
        self._apply(terms)

    @event("Reopened")
    def _reopened(self, loan_id: str, terms: dict[str, Any], stage: str, opened_at: datetime,
                  cause: str) -> None:
        self._apply(terms)
        self.status = "open"
        self.stage = stage
        self.opened_at = opened_at
        self.correlation_id = cause
        self.closed_at = None
        self.close_reason = None

    @event("PaymentRecorded")
    def _paid(self, amount: Decimal, remaining: Decimal, paid_at: datetime, cause: str) -> None:
        self.amount_overdue = remaining

    @event("Closed")
    def _closed(self, loan_id: str, reason: str, closed_at: datetime, cause: str,
                correlation: str) -> None:
        self.status = "closed"
        self.closed_at = closed_at
        self.close_reason = reason

    def _apply(self, terms: dict[str, Any]) -> None:
        self.terms = terms
        self.amount_overdue = Decimal(str(terms["amount_overdue"]))


REPORTED_LOAN_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/reported-loans")


class ReportedLoan(Aggregate):
    """Whose loan this is, as the intake first heard it: recorded with a lender's first
    LoanOverdue over HTTP, in the same transaction as that report, so the lender's follow-ups
    are known at once, before the report has come back through Kafka and opened the case."""

    @event("Recorded")
    def __init__(self, loan_id: str, lender_id: str) -> None:
        self.loan_id = loan_id
        self.lender_id = lender_id

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(REPORTED_LOAN_NAMESPACE, loan_id)
