"""The escalation application: intake of the lender's reports, and the cases they open."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid4, uuid5

from shared.application import Conflict, ServiceApplication, Unit
from shared.events import (
    CeaseContactRequested,
    CloudEvent,
    DisputeOpened,
    DisputeResolved,
    EventData,
    LoanOverdue,
    PaymentReceived,
    event_id_for,
)
from shared.policy_pack import PolicyPack

from services.escalation import policy
from services.escalation.domain import CollectionCase, Intake, OtherLendersLoan, ReportedLoan

CEASE_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/cease-requests")


class DifferentReport(Exception):
    """An idempotency key reused for a different report."""


class NotTheReporter(Exception):
    """A LoanOverdue naming a lender other than the one reporting it."""


class UnknownLoan(Exception):
    """A follow-up (payment, dispute, cease-contact) on a loan nobody has reported overdue."""


class Cases(ServiceApplication):
    name = "escalation"

    def __init__(self, pack: PolicyPack, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.pack = pack

    def report(self, data: EventData, reporter: str, idempotency_key: str | None) -> str:
        """Record a report durably (the relay publishes it); returns its CloudEvents id.

        The same idempotency key from the same reporter returns the first report's id. A
        lender reports only for itself, only on loans that are not another lender's, and
        follows up (payments, disputes, cease-contact) only on loans it has reported.
        """
        if getattr(data, "lender_id", reporter) != reporter:
            raise NotTheReporter(reporter)
        try:
            return self._record_report(data, reporter, idempotency_key)
        except Conflict:  # a concurrent first report of the same loan or key: decide again
            return self._record_report(data, reporter, idempotency_key)

    def _record_report(self, data: EventData, reporter: str, idempotency_key: str | None) -> str:
        loan_id = data.subject()
        lender = self.lender_of(loan_id)
        if lender is not None and lender != reporter:
            raise OtherLendersLoan(loan_id)
        if lender is None and not isinstance(data, LoanOverdue):
            raise UnknownLoan(loan_id)
        # A pair, not a joined string: lender "a/b" with key "c" is not lender "a" with "b/c".
        key = (json.dumps([reporter, idempotency_key]) if idempotency_key is not None
               else json.dumps(["anonymous", str(uuid4())]))
        intake_id = Intake.create_id(key)
        payload = data.model_dump(mode="json", exclude_none=True)
        if self.exists(intake_id):
            earlier: Intake = self.load(intake_id)
            if earlier.event_type != data.event_type() or earlier.payload != payload:
                raise DifferentReport(idempotency_key)
            return event_id_for(intake_id, 1)
        recorded: list[Any] = [Intake(key=key, event_type=data.event_type(), payload=payload)]
        if lender is None:
            recorded.append(ReportedLoan(loan_id=loan_id, lender_id=reporter))
        self.save(*recorded)
        return event_id_for(intake_id, 1)

    def lender_of(self, loan_id: str) -> str | None:
        """Whose loan it is: its case's lender, else the lender whose LoanOverdue the intake
        recorded first (its case not opened yet); None for a loan nobody has reported."""
        case = self.case(loan_id)
        if case is not None:
            return case.lender_id
        reported_id = ReportedLoan.create_id(loan_id)
        if reported_id not in self.repository:
            return None
        reported: ReportedLoan = self.repository.get(reported_id)
        return reported.lender_id

    def open_or_update(self, unit: Unit, cause: CloudEvent, overdue: LoanOverdue,
                       now: datetime) -> None:
        stage = policy.opening_stage(self.pack, overdue.days_past_due, overdue.amount_overdue)
        terms = overdue.model_dump(mode="json", exclude={"loan_id"}, exclude_none=True)
        case: CollectionCase | None = unit.find(CollectionCase.create_id(overdue.loan_id))
        if case is not None:
            case.report_overdue(terms, stage, now, cause.id)
        else:
            case = CollectionCase(loan_id=overdue.loan_id, terms=terms, stage=stage,
                                  opened_at=now, cause=cause.id)
        unit.save(case)

    def apply_payment(self, unit: Unit, cause: CloudEvent, payment: PaymentReceived) -> bool:
        """False when there is no case for the loan (the caller dead-letters it)."""
        case: CollectionCase | None = unit.find(CollectionCase.create_id(payment.loan_id))
        if case is None:
            return False
        case.record_payment(payment.amount, payment.remaining_overdue, payment.paid_at,
                            policy.payment_closes_case(payment.remaining_overdue), cause.id)
        unit.save(case)
        return True

    def hold_contact(self, unit: Unit, cause: CloudEvent,
                     data: CeaseContactRequested | DisputeOpened) -> bool:
        """C3 at once: a cease request holds its channels for good, a dispute every channel
        until resolved. False when there is no case for the loan."""
        case: CollectionCase | None = unit.find(CollectionCase.create_id(data.loan_id))
        if case is None:
            return False
        if isinstance(data, CeaseContactRequested):
            channels = sorted(str(c) for c in data.channels)
            # Bounded whatever the lender's event id: a CloudEvents id may be 128 characters.
            hold_id = f"cease:{uuid5(CEASE_NAMESPACE, cause.id)}"
            case.hold_contact(hold_id, channels,
                              f"the borrower asked to stop contact by {', '.join(channels)}",
                              data.requested_at, True, cause.id)
        else:
            case.hold_contact(f"dispute:{data.dispute_id}", None,
                              f"dispute {data.dispute_id} is open", data.opened_at, False,
                              cause.id)
        unit.save(case)
        return True

    def resolve_dispute(self, unit: Unit, cause: CloudEvent, data: DisputeResolved) -> bool:
        case: CollectionCase | None = unit.find(CollectionCase.create_id(data.loan_id))
        if case is None:
            return False
        if case.resume_contact(f"dispute:{data.dispute_id}",
                               f"dispute {data.dispute_id} is resolved", data.resolved_at,
                               cause.id):
            unit.save(case)
        return True

    def case(self, loan_id: str) -> CollectionCase | None:
        case_id = CollectionCase.create_id(loan_id)
        return self.repository.get(case_id) if case_id in self.repository else None
