"""Escalation's HTTP routes: the lender's intake, and case look-ups."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.auth import Principal, Role, require
from shared.events import (
    Channel,
    CeaseContactRequested,
    DisputeOpened,
    DisputeResolved,
    EventData,
    LoanId,
    LoanOverdue,
    Money,
    PaymentReceived,
)

from services.escalation.application import Cases, DifferentReport, NotTheReporter
from services.escalation.domain import OtherLendersLoan


def _cases(request: Request) -> Cases:
    return request.app.state.service  # type: ignore[no-any-return]


CasesDep = Annotated[Cases, Depends(_cases)]
LenderDep = Annotated[Principal, Depends(require(Role.LENDER))]
ReaderDep = Annotated[Principal, Depends(require(Role.LENDER, Role.OPS, Role.AUDITOR))]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]

router = APIRouter(tags=["escalation"])


class Accepted(BaseModel):
    event_id: str
    status: str = "accepted"


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=2)]
    currency: str
    paid_at: AwareDatetime
    remaining_overdue: Money


class CeaseContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: Annotated[list[Channel], Field(min_length=1)]
    requested_at: AwareDatetime


class DisputeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dispute_id: str
    reason: str
    opened_at: AwareDatetime


class DisputeResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dispute_id: str
    resolution: str
    resolved_at: AwareDatetime


class CaseView(BaseModel):
    loan_id: str
    lender_id: str
    status: str
    stage: str
    amount_overdue: Decimal
    currency: str
    days_past_due: int
    opened_at: datetime
    closed_at: datetime | None
    close_reason: str | None
    next_planned_action: str | None


def _record(cases: Cases, data: EventData, user: Principal, key: str | None) -> Accepted:
    try:
        return Accepted(event_id=cases.report(data, user.subject, key))
    except NotTheReporter as error:
        raise HTTPException(403, f"this token reports for lender {user.subject!r} only") \
            from error
    except OtherLendersLoan as error:
        if isinstance(data, LoanOverdue):
            raise HTTPException(409, {"code": "loan_of_another_lender",
                                      "message": f"loan {error} is another lender's"}) from error
        raise HTTPException(404, f"no case for loan {error}") from error
    except DifferentReport as error:
        raise HTTPException(409, {"code": "idempotency_key_reused",
                                  "message": "this Idempotency-Key was used for another report",
                                  "details": {"key": str(error)}}) from error


def _with_loan(model: type[EventData], loan_id: str, body: BaseModel) -> EventData:
    try:
        return model.model_validate({"loan_id": loan_id, **body.model_dump()})
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from error


@router.post("/loans/overdue", status_code=202, response_model=Accepted)
def loan_overdue(body: LoanOverdue, cases: CasesDep, user: LenderDep,
                 key: IdempotencyKey = None) -> Accepted:
    return _record(cases, body, user, key)


@router.post("/loans/{loan_id}/payments", status_code=202, response_model=Accepted)
def payment(loan_id: LoanId, body: PaymentIn, cases: CasesDep, user: LenderDep,
            key: IdempotencyKey = None) -> Accepted:
    return _record(cases, _with_loan(PaymentReceived, loan_id, body), user, key)


@router.post("/loans/{loan_id}/cease-contact", status_code=202, response_model=Accepted)
def cease_contact(loan_id: LoanId, body: CeaseContactIn, cases: CasesDep, user: LenderDep,
                  key: IdempotencyKey = None) -> Accepted:
    return _record(cases, _with_loan(CeaseContactRequested, loan_id, body), user, key)


@router.post("/loans/{loan_id}/disputes", status_code=202, response_model=Accepted)
def dispute(loan_id: LoanId, body: DisputeIn, cases: CasesDep, user: LenderDep,
            key: IdempotencyKey = None) -> Accepted:
    return _record(cases, _with_loan(DisputeOpened, loan_id, body), user, key)


@router.post("/loans/{loan_id}/disputes/resolve", status_code=202, response_model=Accepted)
def resolve_dispute(loan_id: LoanId, body: DisputeResolveIn, cases: CasesDep, user: LenderDep,
                    key: IdempotencyKey = None) -> Accepted:
    return _record(cases, _with_loan(DisputeResolved, loan_id, body), user, key)


@router.get("/cases/{loan_id}", response_model=CaseView)
def get_case(loan_id: LoanId, cases: CasesDep, user: ReaderDep) -> Any:
    case = cases.case(loan_id)
    if case is None or (user.role is Role.LENDER and case.lender_id != user.subject):
        raise HTTPException(404, f"no case for loan {loan_id}")
    return CaseView(
        loan_id=case.loan_id, lender_id=case.lender_id, status=case.status, stage=case.stage,
        amount_overdue=case.amount_overdue, currency=case.currency,
        days_past_due=case.days_past_due, opened_at=case.opened_at, closed_at=case.closed_at,
        close_reason=case.close_reason,
        next_planned_action="reminders" if case.status == "open" else None)
