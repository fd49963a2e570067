"""Integration events in, application calls out: one function per event type."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from shared.application import Unit
from shared.consumer import Handler, Rejected
from shared.events import (
    CeaseContactRequested,
    CloudEvent,
    ContactAttemptRecorded,
    DisputeOpened,
    DisputeResolved,
    EventData,
    HardshipEnded,
    HardshipGranted,
    LoanOverdue,
    PaymentReceived,
    PromiseToPayMade,
    RepaymentPlanAgreed,
    VisitRecorded,
)

from services.escalation.application import Cases, Unacceptable
from services.escalation.domain import OtherLendersLoan


def _taken(apply: Callable[[], bool], loan_id: str) -> None:
    """A follow-up the case refuses (outside the strategy's limits) or cannot find is
    dead-lettered with the reason."""
    try:
        known = apply()
    except Unacceptable as error:
        raise Rejected(f"{error.field}: {error}") from error
    if not known:
        raise Rejected(f"no case for loan {loan_id}")


def on_loan_overdue(cases: Cases, unit: Unit, event: CloudEvent, data: LoanOverdue,
                    now: datetime) -> None:
    try:
        cases.open_or_update(unit, event, data, now)
    except OtherLendersLoan as error:
        raise Rejected(f"loan {error} belongs to another lender's case") from error


def on_payment_received(cases: Cases, unit: Unit, event: CloudEvent, data: PaymentReceived,
                        now: datetime) -> None:
    _taken(lambda: cases.apply_payment(unit, event, data, now), data.loan_id)


def on_contact_stopped(cases: Cases, unit: Unit, event: CloudEvent,
                       data: CeaseContactRequested | DisputeOpened, now: datetime) -> None:
    _taken(lambda: cases.hold_contact(unit, event, data, now), data.loan_id)


def on_dispute_resolved(cases: Cases, unit: Unit, event: CloudEvent, data: DisputeResolved,
                        now: datetime) -> None:
    _taken(lambda: cases.resolve_dispute(unit, event, data, now), data.loan_id)


def on_promise(cases: Cases, unit: Unit, event: CloudEvent, data: PromiseToPayMade,
               now: datetime) -> None:
    _taken(lambda: cases.make_promise(unit, event, data, now), data.loan_id)


def on_plan(cases: Cases, unit: Unit, event: CloudEvent, data: RepaymentPlanAgreed,
            now: datetime) -> None:
    _taken(lambda: cases.agree_plan(unit, event, data, now), data.loan_id)


def on_hardship_granted(cases: Cases, unit: Unit, event: CloudEvent, data: HardshipGranted,
                        now: datetime) -> None:
    _taken(lambda: cases.grant_hardship(unit, event, data, now), data.loan_id)


def on_hardship_ended(cases: Cases, unit: Unit, event: CloudEvent, data: HardshipEnded,
                      now: datetime) -> None:
    _taken(lambda: cases.end_hardship(unit, event, data, now), data.loan_id)


def on_contact_attempt(cases: Cases, unit: Unit, event: CloudEvent,
                       data: ContactAttemptRecorded, now: datetime) -> None:
    cases.record_attempt(unit, event, data, now)


def on_visit_recorded(cases: Cases, unit: Unit, event: CloudEvent, data: VisitRecorded,
                      now: datetime) -> None:
    cases.record_visit(unit, event, data, now)


HANDLERS: dict[type[EventData], Handler] = {
    LoanOverdue: on_loan_overdue,
    PaymentReceived: on_payment_received,
    CeaseContactRequested: on_contact_stopped,
    DisputeOpened: on_contact_stopped,
    DisputeResolved: on_dispute_resolved,
    PromiseToPayMade: on_promise,
    RepaymentPlanAgreed: on_plan,
    HardshipGranted: on_hardship_granted,
    HardshipEnded: on_hardship_ended,
    ContactAttemptRecorded: on_contact_attempt,
    VisitRecorded: on_visit_recorded,
}
