"""A field visit's leaves as the audit logs them, for C7-C12 and C14, built from the contract's
own models.

The honest visit: a loan in Shanghai with a residence on record; two collectors of agency A-1,
certified and holding lender-1's letter through 2026; the debtor verified and the visit
scheduled on 2026-10-14 09:00 for 2026-10-15 10:00-12:00 local; the notice delivered at 09:05
(almost 25 h ahead); the check-in at 10:10 with every credential; the recording stored and the
visit written up at 11:30; a complaint filed and answered in three days."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from shared.events import (
    AgencyRegistered,
    CollectorRegistered,
    CollectorRevoked,
    ComplaintFiled,
    ComplaintResolved,
    DebtorVerified,
    LoanOverdue,
    VisitCheckedIn,
    VisitConsented,
    VisitDeclined,
    VisitNoticeDelivered,
    VisitRecorded,
    VisitRecordingStored,
    VisitScheduled,
)
from tests.unit.audit.loans import LOAN, SHANGHAI, at_local, logged

Event = dict[str, Any]
LENDER = "lender-1"
VISIT = UUID("00000000-0000-4000-8000-00000000a001")
SCHEDULED_AT = at_local("2026-10-14 09:00")
START, END = at_local("2026-10-15 10:00"), at_local("2026-10-15 12:00")
DELIVERED_AT = at_local("2026-10-14 09:05")
CHECKED_IN_AT = at_local("2026-10-15 10:10")
ENDED_AT = at_local("2026-10-15 11:30")
REGISTERED_AT = at_local("2026-09-01 09:00")
SHA = "c" * 64
COLLECTORS = ("C-1", "C-2")


def loan(*, residence: bool = True, zone: str = SHANGHAI) -> Event:
    borrower = {"borrower_id": "B-1", "name": "Wang Fang", "phone": "+8613800000000",
                "timezone": zone, "residence_address": "1 Nanjing Road" if residence else None}
    return logged(LoanOverdue.model_validate({
        "loan_id": LOAN, "lender_id": LENDER, "borrower": borrower,
        "amount_overdue": Decimal("5000.00"), "currency": "CNY", "due_date": date(2026, 7, 1),
        "days_past_due": 105, "repayment_channel": "transfer to account 6222"}),
        at_local("2026-10-13 09:00"))


def agency(at: datetime = REGISTERED_AT, *, lenders: tuple[str, ...] = (LENDER,),
           review_due: date = date(2027, 6, 30)) -> Event:
    return logged(AgencyRegistered.model_validate({
        "agency_id": "A-1", "name": "Field Co", "licence_number": "LIC-1",
        "authorised_lenders": list(lenders), "reviewed_at": date(2026, 6, 30),
        "next_review_due": review_due, "registered_at": at}), at)


def collector(collector_id: str, at: datetime = REGISTERED_AT, *, lender: str = LENDER,
              letter_until: date = date(2026, 12, 31),
              certified_until: date = date(2027, 12, 31),
              agency_id: str | None = "A-1") -> Event:
    return logged(CollectorRegistered.model_validate({
        "collector_id": collector_id, "name": f"Collector {collector_id}", "agency": "Field Co",
        "agency_id": agency_id, "id_number": f"ID-{collector_id}", "contact": "+8613900000000",
        "certification": {"number": f"CERT-{collector_id}", "valid_until": certified_until},
        "authorisation_letter": {"letter_id": f"LET-{collector_id}", "lender_id": lender,
                                 "scope": "field visits", "valid_from": date(2026, 1, 1),
                                 "valid_until": letter_until},
        "registered_at": at}), at)


def revoked(collector_id: str, at: datetime) -> Event:
    return logged(CollectorRevoked(collector_id=collector_id, reason="left", revoked_at=at), at)


def registry() -> list[Event]:
    return [agency(), *(collector(c) for c in COLLECTORS)]


def verified(at: datetime = SCHEDULED_AT - timedelta(minutes=5), visit: UUID = VISIT,
             checked: tuple[str, ...] = ("name", "phone", "amount_overdue", "days_past_due")
             ) -> Event:
    return logged(DebtorVerified(loan_id=LOAN, visit_id=visit, checked=list(checked),
                                 verified_by="ops-1", verified_at=at), at)


def scheduled(at: datetime = SCHEDULED_AT, *, start: datetime = START, end: datetime = END,
              collectors: tuple[str, ...] = COLLECTORS, address_kind: str = "residence",
              visit: UUID = VISIT) -> Event:
    return logged(VisitScheduled.model_validate({
        "loan_id": LOAN, "visit_id": visit, "scheduled_start": start, "scheduled_end": end,
        "address_kind": address_kind, "collector_ids": list(collectors),
        "scheduled_at": at}), at)


def delivered(at: datetime = DELIVERED_AT, *, start: datetime = START, end: datetime = END,
              visit: UUID = VISIT) -> Event:
    return logged(VisitNoticeDelivered.model_validate({
        "visit_id": visit, "loan_id": LOAN, "channel": "sms", "window_start": start,
        "window_end": end, "address_kind": "residence", "delivered_at": at}), at)


def checked_in(at: datetime = CHECKED_IN_AT, *, collectors: tuple[str, ...] = COLLECTORS,
               badge: bool = True, visit: UUID = VISIT,
               address_kind: str | None = "residence") -> Event:
    return logged(VisitCheckedIn.model_validate({
        "visit_id": visit, "loan_id": LOAN, "collector_ids": list(collectors),
        "credentials_presented": {"id_card": True, "badge": badge,
                                  "authorisation_letter": True},
        "checked_in_at": at, "address_kind": address_kind}), at)


def stored(at: datetime = ENDED_AT, sha: str = SHA, visit: UUID = VISIT) -> Event:
    return logged(VisitRecordingStored(visit_id=visit, loan_id=LOAN, recording_sha256=sha,
                                       bytes=1000, media_type="audio/ogg", stored_at=at), at)


def recorded(at: datetime = ENDED_AT, sha: str = SHA, *, home_entered: bool = False,
             consent: str | None = None, visit: UUID = VISIT) -> Event:
    return logged(VisitRecorded.model_validate({
        "visit_id": visit, "loan_id": LOAN, "outcome": "promise_to_pay",
        "borrower_attitude": "cooperative", "difficulties": "lost job",
        "recording_sha256": sha, "recording_seconds": 1800, "ended_at": at,
        "home_entered": home_entered, "entry_consent": consent}), at)


def declined(at: datetime, visit: UUID = VISIT) -> Event:
    return logged(VisitDeclined.model_validate({
        "visit_id": visit, "loan_id": LOAN, "declined_at": at, "via": "phone"}), at)


def consented(at: datetime, visit: UUID = VISIT) -> Event:
    return logged(VisitConsented.model_validate({
        "visit_id": visit, "loan_id": LOAN, "consented_at": at, "via": "phone"}), at)


COMPLAINT = UUID("00000000-0000-4000-8000-00000000c001")


def complaint(at: datetime = ENDED_AT + timedelta(hours=2), name: UUID = COMPLAINT,
              answer_by: datetime | None = None) -> Event:
    return logged(ComplaintFiled.model_validate({
        "complaint_id": name, "loan_id": LOAN, "about": "visit", "filed_at": at,
        "visit_id": VISIT, "collector_id": "C-1", "answer_by": answer_by}), at)


def resolved(at: datetime, name: UUID = COMPLAINT) -> Event:
    return logged(ComplaintResolved(complaint_id=name, loan_id=LOAN, outcome="apologised",
                                    resolved_at=at, resolved_by="ops-1"), at)


def honest_visit() -> list[Event]:
    """Every leaf of the honest visit, in the order the log has them."""
    return [loan(), *registry(), verified(), scheduled(), delivered(), checked_in(), stored(),
            recorded()]

