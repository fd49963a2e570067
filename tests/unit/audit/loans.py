"""One loan's leaves as the audit logs them, built from the contract's own event models."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

from shared.events import (
    Borrower,
    CallTaskIssued,
    CaseClosed,
    CaseOpened,
    CeaseContactRequested,
    Channel,
    CloudEvent,
    ContactAttemptRecorded,
    ContactHeld,
    ContactResumed,
    DialPermitted,
    DisputeOpened,
    DisputeResolved,
    EventData,
    LoanOverdue,
    PaymentReceived,
    ReminderSent,
    envelope,
)

LOAN = "L-audit-1"
SHANGHAI = "Asia/Shanghai"
NEW_YORK = "America/New_York"
NUMBER = "a" * 64
OTHER_NUMBER = "b" * 64


def at_local(text: str, zone: str = SHANGHAI) -> datetime:
    """`at_local("2026-10-14 07:59")`: that wall time in the borrower's zone."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def cloud(data: EventData, at: datetime | None = None) -> CloudEvent:
    moment = at or datetime.fromisoformat("2026-10-14T00:00:00+00:00")
    return envelope(data, event_id=str(uuid4()), source="/dunwell/test", time=moment,
                    causation_id=None, correlation_id=None)


def logged(data: EventData, at: datetime | None = None) -> dict[str, Any]:
    """The event as an auditor reads it from the leaf bytes."""
    parsed: dict[str, Any] = json.loads(cloud(data, at).encode())
    return parsed


def leaves(*events: dict[str, Any], start: int = 0) -> list[tuple[int, dict[str, Any]]]:
    return list(enumerate(events, start=start))


def _borrower(zone: str) -> Borrower:
    return Borrower(borrower_id="B-1", name="Wang Fang", phone="+8613800000000", timezone=zone)


def overdue(zone: str = SHANGHAI, jurisdiction: str | None = None,
            lender: str = "lender-1") -> dict[str, Any]:
    return logged(LoanOverdue.model_validate({
        "loan_id": LOAN, "lender_id": lender, "borrower": _borrower(zone),
        "amount_overdue": Decimal("1200.50"), "currency": "CNY", "due_date": date(2026, 10, 1),
        "days_past_due": 13, "repayment_channel": "transfer to account 6222",
        "jurisdiction": jurisdiction}))


def opened(at: datetime, zone: str = SHANGHAI, jurisdiction: str | None = None
           ) -> dict[str, Any]:
    return logged(CaseOpened.model_validate({
        "loan_id": LOAN, "lender_id": "lender-1", "borrower": _borrower(zone),
        "amount_overdue": Decimal("1200.50"), "currency": "CNY", "due_date": date(2026, 10, 1),
        "days_past_due": 13, "repayment_channel": "transfer to account 6222",
        "jurisdiction": jurisdiction, "stage": "soft_reminders", "opened_at": at}), at)


def sent(at: datetime, channel: str = "sms", template: tuple[str, int] | None = None,
         party: str | None = None) -> dict[str, Any]:
    template_id, version = template or (f"{channel}.reminder", 1)
    return logged(ReminderSent(
        loan_id=LOAN, reminder_id=uuid4(), channel=Channel(channel), template_id=template_id,
        template_version=version, sent_at=at, borrower_local_time=at.isoformat(),
        party=party), at)  # type: ignore[arg-type]


def attempt(at: datetime, outcome: str = "no_answer", *, number: str = NUMBER,
            permit: bool = True, party: str | None = None,
            channel: str = "call") -> dict[str, Any]:
    return logged(ContactAttemptRecorded.model_validate({
        "loan_id": LOAN, "attempt_id": uuid4(), "channel": channel, "outcome": outcome,
        "attempted_at": at, "permit_id": uuid4() if permit else None, "number_sha256": number,
        "party": party}), at)


def task(at: datetime, phone_kind: str = "borrower",
         template: tuple[str, int] = ("call.reminder", 1)) -> dict[str, Any]:
    return logged(CallTaskIssued.model_validate({
        "loan_id": LOAN, "task_id": uuid4(), "phone_kind": phone_kind, "due_from": at,
        "due_until": at, "template_id": template[0], "template_version": template[1]}), at)


def permit(at: datetime, party: str | None = None) -> dict[str, Any]:
    return logged(DialPermitted.model_validate({
        "loan_id": LOAN, "permit_id": uuid4(), "task_id": uuid4(), "collector_id": "C-1",
        "number_sha256": NUMBER, "permitted_at": at, "expires_at": at, "party": party}), at)


def cease(at: datetime, *channels: str) -> dict[str, Any]:
    return logged(CeaseContactRequested.model_validate(
        {"loan_id": LOAN, "channels": list(channels), "requested_at": at}), at)


def dispute_opened(at: datetime, dispute_id: str = "D-1") -> dict[str, Any]:
    return logged(DisputeOpened(loan_id=LOAN, dispute_id=dispute_id, reason="not mine",
                                opened_at=at), at)


def dispute_resolved(at: datetime, dispute_id: str = "D-1") -> dict[str, Any]:
    return logged(DisputeResolved(loan_id=LOAN, dispute_id=dispute_id, resolution="checked",
                                  resolved_at=at), at)


def held(at: datetime, hold_id: str = "H-1", channels: list[str] | None = None
         ) -> dict[str, Any]:
    return logged(ContactHeld.model_validate({
        "loan_id": LOAN, "rule": "C3", "reason": "hardship", "channels": channels, "at": at,
        "hold_id": hold_id}), at)


def resumed(at: datetime, hold_id: str = "H-1") -> dict[str, Any]:
    return logged(ContactResumed.model_validate({
        "loan_id": LOAN, "rule": "C3", "reason": "over", "at": at, "hold_id": hold_id}), at)


def closed(at: datetime) -> dict[str, Any]:
    return logged(CaseClosed(loan_id=LOAN, reason="paid", closed_at=at), at)


def paid(at: datetime, remaining: str = "0") -> dict[str, Any]:
    return logged(PaymentReceived(loan_id=LOAN, amount=Decimal("1200.50"), currency="CNY",
                                  paid_at=at, remaining_overdue=Decimal(remaining)), at)
