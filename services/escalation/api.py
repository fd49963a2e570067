"""Escalation's HTTP routes: the lender's intake, and case look-ups."""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.auth import Principal, require
from shared.clock import Clock
from shared.events import (
    CeaseContactRequested,
    Currency,
    Day,
    DisputeOpened,
    DisputeResolved,
    EventData,
    HardshipEnded,
    HardshipGranted,
    HardshipReason,
    Ident,
    Instalment,
    LoanId,
    LoanOverdue,
    Money,
    PaymentReceived,
    PositiveMoney,
    PromiseToPayMade,
    RepaymentPlanAgreed,
    StageName,
    StopChannels,
    StrategyDocument,
    Text,
    Time,
    Via,
)
from shared.http import error_responses, field_problems
from shared.roles import Role

from services.escalation.application import (
    CaseClosed,
    Cases,
    DifferentReport,
    Incoherent,
    Loosens,
    NotTheReporter,
    RepeatedInBatch,
    Unacceptable,
    UnknownLoan,
)
from services.escalation.domain import CollectionCase, OtherLendersLoan
from services.escalation.policy import Strategy


def _cases(request: Request) -> Cases:
    return request.app.state.service  # type: ignore[no-any-return]


CasesDep = Annotated[Cases, Depends(_cases)]
LenderDep = Annotated[Principal, Depends(require(Role.LENDER))]
ReaderDep = Annotated[Principal, Depends(require(Role.LENDER, Role.OPS, Role.AUDITOR))]
FollowerDep = Annotated[Principal, Depends(require(Role.LENDER, Role.COLLECTOR))]
OpsDep = Annotated[Principal, Depends(require(Role.OPS))]
StrategyReaderDep = Annotated[Principal, Depends(require(Role.OPS, Role.AUDITOR, Role.LENDER))]


def _clock(request: Request) -> Clock:
    return request.app.state.clock  # type: ignore[no-any-return]


ClockDep = Annotated[Clock, Depends(_clock)]
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
    channels: StopChannels
    requested_at: Time


class DisputeIn(FollowUp):
    dispute_id: Ident
    reason: Text
    opened_at: Time


class DisputeResolveIn(FollowUp):
    dispute_id: Ident
    resolution: Text
    resolved_at: Time


class Step(BaseModel):
    """The next thing escalation will do for the case, and when."""

    kind: Literal["daily_evaluation", "promise_due", "hardship_ends"]
    at: datetime


class PromiseView(BaseModel):
    promise_id: str
    amount: Money
    currency: str
    due_date: str
    status: Literal["current", "kept", "broken", "ended"]
    paid: Money | None = None
    decided_at: datetime | None = None
    plan_id: str | None = None
    via: str


class PlanView(BaseModel):
    plan_id: str
    currency: str
    agreed_at: datetime
    instalments: list[dict[str, str]]
    status: Literal["current", "completed", "broken", "paid"]
    broken: int


class HardshipView(BaseModel):
    hardship_id: str
    reason: str
    starts_at: datetime
    ends_at: datetime
    ended_at: datetime | None
    status: Literal["current", "ended"]


class HoldView(BaseModel):
    hold_id: str
    channels: list[str] | None


class CaseView(BaseModel):
    """What the store holds, as it was accepted; no input rule is applied again on the way out.
    `days_past_due` is the case's own, aged with the clock; the lender's figure as reported is
    `reported_days_past_due`."""

    loan_id: str
    lender_id: str
    status: Literal["open", "closed"]
    stage: str
    amount_overdue: Money
    currency: str
    days_past_due: int
    reported_days_past_due: int
    due_date: str
    opened_at: datetime
    closed_at: datetime | None
    close_reason: str | None
    next_planned_action: Literal["reminders"] | None
    next_action: Step | None
    reasons: list[dict[str, str]]
    policy_version: str | None
    variant: str | None
    failed_contacts: int
    broken_promises: int
    promises: list[PromiseView]
    plans: list[PlanView]
    hardships: list[HardshipView]
    holds: list[HoldView]
    visit_requests: list[dict[str, Any]]


class CasePage(BaseModel):
    cases: list[CaseView]
    next: str | None


class PromiseIn(FollowUp):
    amount: PositiveMoney
    currency: Currency
    due_date: Day
    via: Via | None = None  # the lender's own by default; a collector's: a call


class PromiseAccepted(Accepted):
    promise_id: str


class PlanIn(FollowUp):
    currency: Currency
    instalments: Annotated[list[Instalment], Field(min_length=1, max_length=120)]


class PlanAccepted(Accepted):
    plan_id: str


class HardshipIn(FollowUp):
    reason: HardshipReason
    note: Text
    ends_at: Time


class HardshipAccepted(Accepted):
    hardship_id: str


class HardshipEndIn(FollowUp):
    hardship_id: Ident | None = None  # the one in force when left out
    ended_at: Time | None = None  # now when left out
    note: Text | None = None


class VersionView(BaseModel):
    version: int
    published_at: datetime
    policy_version: str


class StrategyView(StrategyDocument):
    """The strategy in force (or the version asked for), with every version published."""

    lender_id: str
    version: int  # 0: the shipped default, until the lender's first is published
    policy_version: str
    published_at: datetime | None
    versions: list[VersionView]


class Published(BaseModel):
    version: int
    policy_version: str
    created: bool
    document: StrategyDocument


class VariantPerformance(BaseModel):
    variant: str | None
    cases: int
    cured: int
    promises_kept: int
    median_days_to_cure: float | None


class Performance(BaseModel):
    lender_id: str
    policy_version: str
    variants: list[VariantPerformance]


def _record(cases: Cases, data: EventData, user: Principal, key: str | None,
            stamped: tuple[str, ...] = (), collector: str | None = None) -> Accepted:
    try:
        return Accepted(event_id=cases.report(data, user.subject, key, stamped, collector))
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


def _with_loan(model: type[EventData], loan_id: str, body: FollowUp,
               **more: Any) -> EventData:
    if body.loan_id is not None and body.loan_id != loan_id:
        raise RequestValidationError([{
            "type": "loan_id_mismatch", "loc": ("body", "loan_id"),
            "msg": f"the body's loan_id {body.loan_id!r} is not the path's {loan_id!r}"}])
    fields = body.model_dump(exclude={"loan_id"}, exclude_none=True)
    fields = {name: value for name, value in fields.items() if name in model.model_fields}
    try:
        return model.model_validate({**fields, **more, "loan_id": loan_id})
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from error


@router.post("/loans/overdue", status_code=202, response_model=Accepted,
             responses=OVERDUE_ERRORS)
def loan_overdue(body: LoanOverdue, cases: CasesDep, user: LenderDep,
                 key: IdempotencyKey = None) -> Accepted:
    return _record(cases, body, user, key)


MAX_BATCH = 1000
BATCH_ROUTE = "/loans/overdue:batch"
# A real loan with its contacts, addresses and a bank's repayment instruction is about 1.1 KiB
# (1.3 KiB with non-ASCII escaped): 1 000 of them pass the 1 MiB other routes take. 4 KiB a
# loan is three times that, and keeps what one request may make the service parse bounded.
MAX_BATCH_BODY_BYTES = 4 * 1024 * 1024


class BatchIn(BaseModel):
    """The nightly batch: up to 1 000 LoanOverdue, each judged on its own."""

    model_config = ConfigDict(extra="forbid")
    loans: list[Any] = Field(
        min_length=1, max_length=MAX_BATCH,
        description="Each a LoanOverdue (the schema `LoanOverdue`, as for "
                    "`POST /v1/loans/overdue`). An item that does not fit it is answered "
                    "`rejected` (`invalid_request`) on its own, so the items are not "
                    "constrained here.")


class ItemProblem(BaseModel):
    code: str
    message: str
    details: Any = None


class BatchItem(BaseModel):
    index: int
    loan_id: str | None
    status: Literal["accepted", "rejected"]
    event_id: str | None = None
    error: ItemProblem | None = None


class BatchAnswer(BaseModel):
    accepted: int
    rejected: int
    items: list[BatchItem]


BATCH_ERRORS = error_responses(
    400, 401, 403, 413, 422,
    meaning={400: UNREADABLE,
             413: f"The body exceeds {MAX_BATCH_BODY_BYTES} bytes (this route's limit).",
             422: "The body is not `{loans: [...]}` with 1 to 1 000 items (the items "
                  "themselves are judged one by one, in the answer)."})


_LOAN_ID: TypeAdapter[str] = TypeAdapter(LoanId)


def _given_loan_id(raw: Any) -> str | None:
    """An invalid item's loan id, answered only when it is one: anything else (a huge
    string, a lone surrogate that cannot be written as UTF-8) could fail the whole answer
    after the batch's valid loans were recorded; the index still says which item it was."""
    loan_id = raw.get("loan_id") if isinstance(raw, dict) else None
    try:
        return _LOAN_ID.validate_python(loan_id)
    except ValidationError:
        return None


def _refusal(error: Exception, user: Principal) -> ItemProblem:
    if isinstance(error, NotTheReporter):
        return ItemProblem(code="forbidden",
                           message=f"this token reports for lender {user.subject!r} only")
    if isinstance(error, OtherLendersLoan):
        return ItemProblem(code="loan_of_another_lender", message=f"loan {error} is another "
                           "lender's")
    if isinstance(error, DifferentReport):
        return ItemProblem(code="idempotency_key_reused", message="this Idempotency-Key was "
                           "used for another report of this loan")
    if isinstance(error, RepeatedInBatch):
        return ItemProblem(code="repeated_in_batch", message=f"loan {error} is given earlier in "
                           "this batch, which was taken")
    raise error


@router.post(BATCH_ROUTE, status_code=200, response_model=BatchAnswer,
             responses=BATCH_ERRORS)
def loans_overdue_batch(body: BatchIn, cases: CasesDep, user: LenderDep,
                        key: IdempotencyKey = None) -> BatchAnswer:
    """Each loan is validated and recorded on its own terms: the answer says, item by item,
    accepted (with its event id) or rejected and why; a loan is recorded whole or not at all.
    Under an Idempotency-Key each loan has its own key (the batch's and its loan id), so the
    same batch sent again, whole or in parts, answers the same event ids and records nothing
    twice."""
    items: list[BatchItem | None] = [None] * len(body.loans)
    valid: list[tuple[int, LoanOverdue]] = []
    for index, raw in enumerate(body.loans):
        try:
            valid.append((index, LoanOverdue.model_validate(raw)))
        except ValidationError as error:
            items[index] = BatchItem(
                index=index, loan_id=_given_loan_id(raw), status="rejected", error=ItemProblem(
                    code="invalid_request", message="the loan does not fit the schema",
                    details=field_problems(error.errors())))
    results = cases.report_batch([loan for _, loan in valid], user.subject, key) \
        if valid else []
    for (index, loan), result in zip(valid, results, strict=True):
        items[index] = (BatchItem(index=index, loan_id=loan.loan_id, status="accepted",
                                  event_id=result) if isinstance(result, str) else
                        BatchItem(index=index, loan_id=loan.loan_id, status="rejected",
                                  error=_refusal(result, user)))
    answered = [item for item in items if item is not None]
    accepted = sum(item.status == "accepted" for item in answered)
    return BatchAnswer(accepted=accepted, rejected=len(answered) - accepted, items=answered)


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


def _case_view(case: CollectionCase, now: datetime) -> CaseView:
    statuses = {None: "current", "kept": "kept", "broken": "broken"}
    promises = []
    for promise_id, p in case.promises.items():
        plan = case.plans.get(p["plan_id"]) if p["plan_id"] else None
        status: Any = ("ended" if p["decided"] is None and plan and plan["ended"]
                       else statuses[p["decided"]])
        promises.append(PromiseView(
            promise_id=promise_id, amount=p["amount"], currency=p["currency"],
            due_date=p["due_date"], status=status, paid=p.get("paid"),
            decided_at=p.get("decided_at"), plan_id=p["plan_id"], via=p["via"]))
    plans = [PlanView(plan_id=plan_id, currency=plan["currency"], agreed_at=plan["agreed_at"],
                      instalments=[{"due_date": i["due_date"], "amount": i["amount"]}
                                   for i in plan["instalments"]],
                      status=plan.get("outcome", "current") if plan["ended"] else "current",
                      broken=plan["broken"])
             for plan_id, plan in case.plans.items()]
    hardships = [HardshipView(hardship_id=hid, reason=h["reason"], starts_at=h["starts_at"],
                              ends_at=h["ends_at"], ended_at=h["ended_at"],
                              status="current" if case.hardship_at(now) == hid else "ended")
                 for hid, h in case.hardships.items()]
    step = case.next_action(now)
    return CaseView(
        loan_id=case.loan_id, lender_id=case.lender_id,
        status=case.status, stage=case.stage,  # type: ignore[arg-type]
        amount_overdue=case.amount_overdue, currency=case.currency,
        days_past_due=case.dpd_at(now), reported_days_past_due=case.days_past_due,
        due_date=case.due_date.isoformat(), opened_at=case.opened_at,
        closed_at=case.closed_at, close_reason=case.close_reason,
        next_planned_action="reminders" if case.status == "open" else None,
        next_action=Step(kind=step[0], at=step[1]) if step else None,  # type: ignore[arg-type]
        reasons=case.reasons, policy_version=case.policy_version, variant=case.variant,
        failed_contacts=case.failed_contacts_at(now), broken_promises=case.broken_promises,
        promises=promises, plans=plans, hardships=hardships,
        holds=[HoldView(hold_id=h, channels=c) for h, c in case.holds.items()],
        visit_requests=case.visit_requests)


@router.get("/cases/{loan_id}", response_model=CaseView, responses=READ_ERRORS)
def get_case(loan_id: LoanId, cases: CasesDep, clock: ClockDep, user: ReaderDep) -> Any:
    case = cases.case(loan_id)
    if case is None or (user.role is Role.LENDER and case.lender_id != user.subject):
        raise HTTPException(404, f"no case for loan {loan_id}")
    return _case_view(case, clock.now())


@router.get("/cases", response_model=CasePage,
            responses=error_responses(400, 401, 403, 422, meaning={
                400: "`bad_cursor`: the cursor is not one this route gave."}))
def list_cases(cases: CasesDep, clock: ClockDep, user: ReaderDep,
               stage: Annotated[StageName | None, Query()] = None,
               status: Annotated[Literal["open", "closed"] | None, Query()] = None,
               cursor: Annotated[str | None, Query(max_length=600)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100,
               lender_id: Annotated[Ident | None, Query(
                   description="ops and auditors: one lender's cases (all when left out); "
                               "a lender always sees only its own")] = None) -> Any:
    owner = user.subject if user.role is Role.LENDER else lender_id
    try:
        page = cases.page(owner, stage, status, cursor, limit)
    except ValueError as error:
        raise HTTPException(400, {"code": "bad_cursor", "message": str(error)}) from error
    now = clock.now()
    return CasePage(cases=[_case_view(case, now) for case in page.cases], next=page.next)


# --- promises, plans, hardship ---


def _as_reporter(cases: Cases, loan_id: str, user: Principal) -> tuple[str, str | None]:
    """Who reports a follow-up, and whose keys it uses: a lender for itself, on its own
    loans only; a collector for the loan's lender, with keys of its own. Asked before any
    other check, so nothing of another lender's loan shows."""
    lender = cases.lender_of(loan_id)
    if lender is None or (user.role is Role.LENDER and lender != user.subject):
        raise HTTPException(404, f"no case for loan {loan_id} that this token may see")
    return lender, None if user.role is Role.LENDER else user.subject


def _unacceptable(error: Unacceptable) -> HTTPException:
    return HTTPException(409, {"code": "not_acceptable", "message": str(error),
                               "details": {"field": error.field, "reason": str(error)}})


def _closed(loan_id: str) -> HTTPException:
    return HTTPException(409, {"code": "case_closed",
                               "message": f"the case of loan {loan_id} is closed"})


CASE_FOLLOW_UP_ERRORS = error_responses(
    400, 401, 403, 404, 409, 413, 422,
    meaning={400: UNREADABLE, 404: NO_SUCH_LOAN,
             409: "`case_closed`: the case is closed; `not_acceptable`: a date, currency or "
                  "length the case or its strategy does not allow (`details.field` names "
                  "it); or " + REPORT_CONFLICT,
             422: "The request does not fit the schema, or the body's `loan_id` is not the "
                  "path's."})


@router.post("/loans/{loan_id}/promises", status_code=202, response_model=PromiseAccepted,
             responses=CASE_FOLLOW_UP_ERRORS)
def promise(loan_id: LoanId, body: PromiseIn, cases: CasesDep, clock: ClockDep,
            user: FollowerDep, key: IdempotencyKey = None) -> PromiseAccepted:
    """A promise to pay: holds escalation and pauses the cadence (one courtesy reminder the
    day before it is due) until the end of its due day, when it is kept or broken."""
    reporter, collector = _as_reporter(cases, loan_id, user)
    now = clock.now()
    if not cases.known_report(reporter, key, collector):
        try:
            cases.check_promise(loan_id, reporter, body.currency, body.due_date, now)
        except Unacceptable as error:
            raise _unacceptable(error) from error
        except CaseClosed as error:
            raise _closed(loan_id) from error
    via = body.via or (Via.LENDER if user.role is Role.LENDER else Via.CALL)
    promise_id = cases.follow_up_id("promise", reporter, key, collector)
    data = _with_loan(PromiseToPayMade, loan_id, body, promise_id=promise_id, made_at=now,
                      via=via)
    accepted = _record(cases, data, _acting(user, reporter), key, stamped=("made_at",),
                       collector=collector)
    return PromiseAccepted(event_id=accepted.event_id, promise_id=promise_id)


@router.post("/loans/{loan_id}/repayment-plans", status_code=202, response_model=PlanAccepted,
             responses=CASE_FOLLOW_UP_ERRORS | error_responses(400, meaning={
                 400: "The body cannot be read, or its instalments are not on distinct days "
                      "in order."}))
def repayment_plan(loan_id: LoanId, body: PlanIn, cases: CasesDep, clock: ClockDep,
                   user: LenderDep, key: IdempotencyKey = None) -> PlanAccepted:
    """Instalments agreed with the borrower: each is kept or broken at the end of its day;
    the strategy's number of broken ones ends the plan and the cadence resumes."""
    now = clock.now()
    days = [i.due_date for i in body.instalments]
    if days != sorted(set(days)):
        raise HTTPException(400, {"code": "bad_request",
                                  "message": "instalments must fall on distinct days, in order"})
    _as_reporter(cases, loan_id, user)
    if not cases.known_report(user.subject, key):
        try:
            cases.check_plan(loan_id, user.subject, body.currency, days, now)
        except Unacceptable as error:
            raise _unacceptable(error) from error
        except CaseClosed as error:
            raise _closed(loan_id) from error
    plan_id = cases.follow_up_id("plan", user.subject, key)
    data = _with_loan(RepaymentPlanAgreed, loan_id, body, plan_id=plan_id, agreed_at=now)
    accepted = _record(cases, data, user, key, stamped=("agreed_at",))
    return PlanAccepted(event_id=accepted.event_id, plan_id=plan_id)


@router.post("/loans/{loan_id}/hardship", status_code=202, response_model=HardshipAccepted,
             responses=CASE_FOLLOW_UP_ERRORS)
def hardship(loan_id: LoanId, body: HardshipIn, cases: CasesDep, clock: ClockDep,
             user: FollowerDep, key: IdempotencyKey = None) -> HardshipAccepted:
    """A hardship pause (illness, unemployment, disaster): no contact, no escalation and no
    DPD ageing until `ends_at`, at most the strategy's `hardship.max_days` ahead."""
    reporter, collector = _as_reporter(cases, loan_id, user)
    now = clock.now()
    if not cases.known_report(reporter, key, collector):
        try:
            cases.check_hardship(loan_id, reporter, body.ends_at, now)
        except Unacceptable as error:
            raise _unacceptable(error) from error
        except CaseClosed as error:
            raise _closed(loan_id) from error
    hardship_id = cases.follow_up_id("hardship", reporter, key, collector)
    data = _with_loan(HardshipGranted, loan_id, body, hardship_id=hardship_id, starts_at=now)
    accepted = _record(cases, data, _acting(user, reporter), key, stamped=("starts_at",),
                       collector=collector)
    return HardshipAccepted(event_id=accepted.event_id, hardship_id=hardship_id)


@router.post("/loans/{loan_id}/hardship/end", status_code=202, response_model=HardshipAccepted,
             responses=CASE_FOLLOW_UP_ERRORS | error_responses(
                 404, meaning={404: "No such loan, or no hardship pause in force on it."}))
def end_hardship(loan_id: LoanId, body: HardshipEndIn, cases: CasesDep, clock: ClockDep,
                 user: FollowerDep, key: IdempotencyKey = None) -> HardshipAccepted:
    reporter, collector = _as_reporter(cases, loan_id, user)
    now = clock.now()
    case = cases.case(loan_id)
    current = case.hardship_at(now) if case is not None else None
    earlier = cases.earlier_report(reporter, key, collector)
    known = earlier is not None
    hardship_id = body.hardship_id or (str(earlier.get("hardship_id")) if earlier else current)
    if not known and case is not None and case.status != "open":
        raise _closed(loan_id)
    if hardship_id is None or (not known and (case is None or hardship_id != current)):
        raise HTTPException(404, f"no hardship pause in force on loan {loan_id}")
    if not known and body.ended_at is not None and not (
            case is not None and case.hardships[hardship_id]["starts_at"] <= body.ended_at <= now):
        raise HTTPException(409, {"code": "not_acceptable",
                                  "message": "ended_at must lie between the pause's start and "
                                             "now",
                                  "details": {"field": "ended_at",
                                              "reason": "outside the pause, or in the future"}})
    data = _with_loan(HardshipEnded, loan_id, body, hardship_id=hardship_id,
                      ended_at=body.ended_at or now)
    accepted = _record(cases, data, _acting(user, reporter), key,
                       stamped=() if body.ended_at else ("ended_at",), collector=collector)
    return HardshipAccepted(event_id=accepted.event_id, hardship_id=hardship_id)


def _acting(user: Principal, reporter: str) -> Principal:
    """A collector's follow-up is recorded as the loan's lender's (it is the lender's loan)."""
    return user if user.role is Role.LENDER else Principal(subject=reporter, role=Role.LENDER)


# --- strategies ---

STRATEGY_ERRORS = error_responses(
    401, 403, 404, 422, meaning={404: "No such version of this lender's strategy, or a "
                                      "lender asking for another's."})
PUT_ERRORS = error_responses(
    400, 401, 403, 409, 413, 415, 422,
    meaning={400: "The body cannot be read as UTF-8 JSON or TOML; or `invalid_strategy`: "
                  "it fits the schema but cannot be followed (names repeated, shares not "
                  "adding up to 100, steps out of order), `details.problems` says what.",
             409: "`rule_refused`: the strategy would loosen a conduct rule of the pack; "
                  "`details.rule` names it (C6) and `details.loosened` every field.",
             415: "The body is neither `application/json` nor `application/toml`."})


def _strategy_view(cases: Cases, lender_id: str, strategy: Strategy) -> StrategyView:
    return StrategyView(
        **strategy.document.model_dump(), lender_id=lender_id, version=strategy.version,
        policy_version=strategy.policy_version(cases.pack, None),
        published_at=strategy.published_at,
        versions=[VersionView(**v) for v in cases.strategy_versions(lender_id)])


@router.get("/strategies/{lender_id}", response_model=StrategyView, responses=STRATEGY_ERRORS)
def get_strategy(lender_id: Ident, cases: CasesDep, user: StrategyReaderDep,
                 version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None) -> Any:
    """The lender's strategy in force (the shipped default, version 0, until one is
    published), or an earlier `version`; every version is listed under `versions`."""
    _own(user, lender_id)
    strategy = (cases.strategy_for(lender_id) if version is None
                else cases.strategy_version(lender_id, version))
    if strategy is None:
        raise HTTPException(404, f"lender {lender_id} has no strategy version {version}")
    return _strategy_view(cases, lender_id, strategy)


@router.put("/strategies/{lender_id}", status_code=201, response_model=Published,
            responses=PUT_ERRORS | {200: {"model": Published,
                                          "description": "The same document as the version "
                                                         "in force: nothing new recorded."}},
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/StrategyDocument"}},
                "application/toml": {"schema": {"type": "string"}}}}})
async def put_strategy(lender_id: Ident, request: Request, response: Response,
                       cases: CasesDep, clock: ClockDep, user: OpsDep) -> Any:
    """A new version of the lender's strategy, validated against the pack: anything that
    would loosen a rule is refused naming it. Published as StrategyPublished."""
    document = _strategy_document(await request.body(),
                                  request.headers.get("content-type", "application/json"))
    try:
        version, created = await run_in_threadpool(cases.publish_strategy, lender_id, document,
                                                   clock.now())
    except Incoherent as error:
        raise HTTPException(400, {"code": "invalid_strategy", "message": str(error),
                                  "details": {"problems": error.problems}}) from error
    except Loosens as refused:
        raise HTTPException(409, {
            "code": "rule_refused", "message": f"the strategy would loosen {refused}",
            "details": {"rule": refused.rules[0], "reason": str(refused),
                        "deferred_until": None,
                        "loosened": [{"field": loose.name, "rules": list(loose.rule.ids),
                                      "pack": str(loose.shipped),
                                      "proposed": str(loose.proposed)}
                                     for loose in refused.loosened]}}) from refused
    strategy = cases.strategy_version(lender_id, version)
    assert strategy is not None
    if not created:
        response.status_code = 200
    return Published(version=version, policy_version=strategy.policy_version(cases.pack, None),
                     created=created, document=strategy.document)


def _strategy_document(raw: bytes, content_type: str) -> StrategyDocument:
    media = content_type.split(";")[0].strip().lower()
    if media not in ("application/json", "application/toml", "text/toml"):
        raise HTTPException(415, {"code": "unsupported_media_type",
                                  "message": "send the strategy as application/json or "
                                             "application/toml"})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HTTPException(400, UNREADABLE) from error
    try:
        parsed = tomllib.loads(text) if "toml" in media else json.loads(text)
    except (ValueError, RecursionError) as error:  # tomllib.TOMLDecodeError is a ValueError
        raise HTTPException(400, {"code": "unreadable",
                                  "message": f"the body is not {media}: {str(error)[:200]}"}) \
            from error
    try:
        return StrategyDocument.model_validate(parsed)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from error


@router.get("/strategies/{lender_id}/performance", response_model=Performance,
            responses=error_responses(401, 403, 404, 422, meaning={
                404: "A lender asking for another lender's."}))
def performance(lender_id: Ident, cases: CasesDep, user: StrategyReaderDep) -> Performance:
    """Champion / challenger, per variant: cases, cured (closed paid), promises kept, and
    the median days from opening to cure."""
    _own(user, lender_id)
    rows = cases.performance(lender_id)
    return Performance(lender_id=lender_id,
                       policy_version=cases.strategy_for(lender_id).policy_version(cases.pack,
                                                                                  None),
                       variants=[VariantPerformance(**row) for row in rows])


def _own(user: Principal, lender_id: str) -> None:
    """A lender sees only its own strategy: another's is as if there were none."""
    if user.role is Role.LENDER and user.subject != lender_id:
        raise HTTPException(404, f"no strategy of lender {lender_id} that this token may see")
