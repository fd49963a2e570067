"""Integration events in, application calls out: one function per event type."""

from __future__ import annotations

from datetime import datetime

from shared.application import Unit
from shared.consumer import Handler, Rejected
from shared.events import (
    CeaseContactRequested,
    CloudEvent,
    DisputeOpened,
    DisputeResolved,
    EventData,
    LoanOverdue,
    PaymentReceived,
)

from services.escalation.application import Cases
from services.escalation.domain import OtherLendersLoan


def on_loan_overdue(cases: Cases, unit: Unit, event: CloudEvent, data: LoanOverdue,
                    now: datetime) -> None:
    try:
        cases.open_or_update(unit, event, data, now)
    except OtherLendersLoan as error:
        raise Rejected(f"loan {error} belongs to another lender's case") from error


def on_payment_received(cases: Cases, unit: Unit, event: CloudEvent, data: PaymentReceived,
                        now: datetime) -> None:
    if not cases.apply_payment(unit, event, data):
        raise Rejected(f"no case for loan {data.loan_id}")


def on_contact_stopped(cases: Cases, unit: Unit, event: CloudEvent,
                       data: CeaseContactRequested | DisputeOpened, now: datetime) -> None:
    if not cases.hold_contact(unit, event, data):
        raise Rejected(f"no case for loan {data.loan_id}")


def on_dispute_resolved(cases: Cases, unit: Unit, event: CloudEvent, data: DisputeResolved,
                        now: datetime) -> None:
    if not cases.resolve_dispute(unit, event, data):
        raise Rejected(f"no case for loan {data.loan_id}")


HANDLERS: dict[type[EventData], Handler] = {
    LoanOverdue: on_loan_overdue,
    PaymentReceived: on_payment_received,
    CeaseContactRequested: on_contact_stopped,
    DisputeOpened: on_contact_stopped,
    DisputeResolved: on_dispute_resolved,
}
