"""Escalation's HTTP routes: the lender's intake, and case look-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.auth import Principal, require
from shared.events import (
    CeaseContactRequested,
    Channels,
    Currency,
    DisputeOpened,
    DisputeResolved,
    EventData,
    Ident,
    LoanId,
    LoanOverdue,
    Money,
    PaymentReceived,
    PositiveMoney,
    Text,
    Time,
)
from shared.http import error_responses
from shared.roles import Role

from services.escalation.application import Cases, DifferentReport, NotTheReporter, UnknownLoan
from services.escalation.domain import OtherLendersLoan


def _cases(request: Request) -> Cases:
    return request.app.state.service  # type: ignore[no-any-return]


CasesDep = Annotated[Cases, Depends(_cases)]
LenderDep = Annotated[Principal, Depends(require(Role.LENDER))]
ReaderDep = Annotated[Principal, Depends(require(Role.LENDER, Role.OPS, Role.AUDITOR))]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=128,
    description="The same key and body answers as the first time; the same key with another "
                "body is `409 idempotency_key_reused`. Keys are the lender's own.")]

router = APIRouter(tags=["escalation"])

NO_SUCH_LOAN = "This lender has reported no such loan (a LoanOverdue comes first)."
UNREADABLE = "The body cannot be read as text (it is not UTF-8)."
REPORT_CONFLICT = "`idempotency_key_reused`: the key was used for another report."
OVERDUE_ERRORS = error_responses(
    400, 401, 403, 409, 413, 422,
    meaning={400: UNREADABLE,
             403: "The token's role is not lender, or `lender_id` is not the token's subject.",
             409: "`loan_of_another_lender`: the loan is another lender's; or "
                  + REPORT_CONFLICT})
FOLLOW_UP_ERRORS = error_responses(
    400, 401, 403, 404, 409, 413, 422,
    meaning={400: UNREADABLE, 404: NO_SUCH_LOAN, 409: REPORT_CONFLICT,
             422: "The request does not fit the schema, or the body's `loan_id` is not the "
                  "path's."})
READ_ERRORS = error_responses(401, 403, 404, 422,
                              meaning={404: "No case for the loan that this caller may see."})


class Accepted(BaseModel):
    event_id: str
    status: Literal["accepted"] = "accepted"


class FollowUp(BaseModel):
    """A per-loan report: the body may repeat the path's loan id, as the event carries it."""

    model_config = ConfigDict(extra="forbid")
    loan_id: LoanId | None = None


class PaymentIn(FollowUp):
    amount: PositiveMoney
    currency: Currency
    paid_at: Time
    remaining_overdue: Money


class CeaseContactIn(FollowUp):
    channels: Channels
    requested_at: Time


class DisputeIn(FollowUp):
    dispute_id: Ident
    reason: Text
    opened_at: Time


class DisputeResolveIn(FollowUp):
    dispute_id: Ident
    resolution: Text
    resolved_at: Time


class CaseView(BaseModel):
    """What the store holds, as it was accepted; no input rule is applied again on the way out."""

    loan_id: str
    lender_id: str
    status: Literal["open", "closed"]
    stage: str
    amount_overdue: Money
    currency: str
    days_past_due: int
    opened_at: datetime
    closed_at: datetime | None
    close_reason: str | None
    next_planned_action: Literal["reminders"] | None


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
        raise HTTPException(404, f"lender {user.subject!r} has reported no loan {error}") \
            from error
    except UnknownLoan as error:
        raise HTTPException(404, f"lender {user.subject!r} has reported no loan {error}") \
            from error
    except DifferentReport as error:
        raise HTTPException(409, {"code": "idempotency_key_reused",
                                  "message": "this Idempotency-Key was used for another report",
                                  "details": {"key": str(error)}}) from error


def _with_loan(model: type[EventData], loan_id: str, body: FollowUp) -> EventData:
    if body.loan_id is not None and body.loan_id != loan_id:
        raise RequestValidationError([{
            "type": "loan_id_mismatch", "loc": ("body", "loan_id"),
            "msg": f"the body's loan_id {body.loan_id!r} is not the path's {loan_id!r}"}])
    try:
        return model.model_validate({**body.model_dump(exclude={"loan_id"}), "loan_id": loan_id})
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from error


@router.post("/loans/overdue", status_code=202, response_model=Accepted,
             responses=OVERDUE_ERRORS)
def loan_overdue(body: LoanOverdue, cases: CasesDep, user: LenderDep,
                 key: IdempotencyKey = None) -> Accepted:
    return _record(cases, body, user, key)


@router.post("/loans/{loan_id}/payments", status_code=202, response_model=Accepted,
             responses=FOLLOW_UP_ERRORS)
def payment(loan_id: LoanId, body: PaymentIn, cases: CasesDep, user: LenderDep,
            key: IdempotencyKey = None) -> Accepted:
    return _record(cases, _with_loan(PaymentReceived, loan_id, body), user, key)


@router.post("/loans/{loan_id}/cease-contact", status_code=202, response_model=Accepted,
             responses=FOLLOW_UP_ERRORS)
def cease_contact(loan_id: LoanId, body: CeaseContactIn, cases: CasesDep, user: LenderDep,
                  key: IdempotencyKey = None) -> Accepted:
    return _record(cases, _with_loan(CeaseContactRequested, loan_id, body), user, key)


@router.post("/loans/{loan_id}/disputes", status_code=202, response_model=Accepted,
             responses=FOLLOW_UP_ERRORS)
def dispute(loan_id: LoanId, body: DisputeIn, cases: CasesDep, user: LenderDep,
            key: IdempotencyKey = None) -> Accepted:
    return _record(cases, _with_loan(DisputeOpened, loan_id, body), user, key)


@router.post("/loans/{loan_id}/disputes/resolve", status_code=202, response_model=Accepted,
             responses=FOLLOW_UP_ERRORS)
def resolve_dispute(loan_id: LoanId, body: DisputeResolveIn, cases: CasesDep, user: LenderDep,
                    key: IdempotencyKey = None) -> Accepted:
    return _record(cases, _with_loan(DisputeResolved, loan_id, body), user, key)


@router.get("/cases/{loan_id}", response_model=CaseView, responses=READ_ERRORS)
def get_case(loan_id: LoanId, cases: CasesDep, user: ReaderDep) -> Any:
    case = cases.case(loan_id)
    if case is None or (user.role is Role.LENDER and case.lender_id != user.subject):
        raise HTTPException(404, f"no case for loan {loan_id}")
    return CaseView.model_validate({
        "loan_id": case.loan_id, "lender_id": case.lender_id, "status": case.status,
        "stage": case.stage, "amount_overdue": case.amount_overdue, "currency": case.currency,
        "days_past_due": case.days_past_due, "opened_at": case.opened_at,
        "closed_at": case.closed_at, "close_reason": case.close_reason,
        "next_planned_action": "reminders" if case.status == "open" else None})
