"""Reminder's HTTP routes: what was sent and blocked; the collectors' call tasks, pre-dial gate
and call outcomes; the providers' delivery receipts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shared import telemetry
from shared.auth import Principal, require
from shared.clock import Clock
from shared.events import (
    AttemptOutcome,
    Channel,
    EventUUID,
    Ident,
    LoanId,
    Phone,
    PromiseToPay,
    Text,
    Time,
)
from shared.http import error_responses
from shared.roles import Role

from services.reminder.application import (
    Attempt,
    ContactPaused,
    KeyReused,
    NotFound,
    NotOpen,
    Reminders,
    RuleRefused,
)
from services.reminder.domain import CallTask, ContactPlan, Reminder


def _reminders(request: Request) -> Reminders:
    return request.app.state.service  # type: ignore[no-any-return]


def _clock(request: Request) -> Clock:
    return request.app.state.clock  # type: ignore[no-any-return]


RemindersDep = Annotated[Reminders, Depends(_reminders)]
ClockDep = Annotated[Clock, Depends(_clock)]
ReaderDep = Annotated[Principal, Depends(require(Role.LENDER, Role.OPS, Role.AUDITOR))]
def _collector(user: Annotated[Principal, Depends(require(Role.COLLECTOR))]) -> Principal:
    """A collector's token names the collector id its calls are recorded under."""
    if not 1 <= len(user.subject) <= 64 or not user.subject.strip():
        raise HTTPException(403, "the token's subject is not a collector id (1-64 characters)")
    return user


CollectorDep = Annotated[Principal, Depends(_collector)]
ProviderDep = Annotated[Principal, Depends(require(Role.PROVIDER))]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=128,
    description="The same key from the same caller answers as the first time.")]

router = APIRouter(tags=["reminder"])

RULE_REFUSED = ("`rule_refused`: a conduct rule refuses it; `details.rule` names it (C1, C2, "
                "C3, C4, C13) and `details.deferred_until` says when it may be asked again.")
PAUSED = ("`contact_paused`: the case's cadence is paused (a promise to pay, a repayment plan, "
          "hardship); not a conduct rule, so no rule id: `details` names the pause (`pause_id`, "
          "`reason`, `since`, `until`).")
REUSED = {"code": "idempotency_key_reused",
          "message": "this Idempotency-Key was used for another request"}
UNREADABLE = "The body cannot be read as text (it is not UTF-8)."
MAX_CLOCK_SKEW = timedelta(minutes=5)


# --- what was sent ---


class Block(BaseModel):
    rule: str
    reason: str
    deferred_until: datetime | None


class ReminderView(BaseModel):
    reminder_id: UUID
    channel: str
    template_id: str
    template_version: int
    status: str
    due_at: datetime
    sent_at: datetime | None
    attempts: int
    blocked: list[Block]
    cancelled_rule: str | None
    delivery: Literal["delivered", "failed"] | None = None
    party: str = "borrower"
    paused_by: str | None = None  # the pause holding it back, if one does
    courtesy_of: str | None = None  # a courtesy reminder: the pause that planned it
    visit_id: UUID | None = None  # a visit's advance notice (C8): its visit


class CallTaskView(BaseModel):
    task_id: UUID
    loan_id: str
    phone_kind: str
    status: str
    due_from: datetime | None
    due_until: datetime | None
    template_id: str
    template_version: int
    contact_id: str | None
    blocked: list[Block]
    paused_by: str | None = None


class PauseView(BaseModel):
    """One pause of the cadence; in force while `lifted_at` is null (or still ahead)."""

    pause_id: str
    reason: str
    at: datetime
    until: datetime | None
    lifted_at: datetime | None
    courtesy: list[UUID]


class RemindersView(BaseModel):
    loan_id: str
    sent: list[ReminderView]
    pending: list[ReminderView]
    cancelled: list[ReminderView]
    call_tasks: list[CallTaskView] = []
    stage: str | None = None  # the case's stage, as escalation last published it
    policy_version: str | None = None
    stage_entered_at: datetime | None = None  # day 0 of the stage's cadence, before pauses
    pauses: list[PauseView] = []


def _view(reminder: Reminder) -> ReminderView:
    return ReminderView(
        reminder_id=reminder.id, channel=reminder.channel, template_id=reminder.template_id,
        template_version=reminder.template_version, status=reminder.status,
        due_at=reminder.due_at, sent_at=reminder.sent_at, attempts=reminder.attempts,
        blocked=[Block(**b) for b in reminder.blocks],
        cancelled_rule=reminder.cancelled["rule"] if reminder.cancelled else None,
        delivery=reminder.delivery, party=reminder.party,  # type: ignore[arg-type]
        paused_by=reminder.paused_by, courtesy_of=reminder.courtesy_of,
        visit_id=reminder.visit_id)  # type: ignore[arg-type]


def _task_view(task: CallTask) -> CallTaskView:
    return CallTaskView(
        task_id=task.id, loan_id=task.loan_id, phone_kind=task.phone_kind, status=task.status,
        due_from=task.due_from, due_until=task.due_until, template_id=task.template_id,
        template_version=task.template_version, contact_id=task.contact_id,
        blocked=[Block(**b) for b in task.blocks], paused_by=task.paused_by)


def _pause_views(plan: ContactPlan) -> list[PauseView]:
    return [PauseView(pause_id=pause_id, reason=p["reason"], at=p["at"], until=p["until"],
                      lifted_at=p["lifted_at"], courtesy=p["courtesy"])
            for pause_id, p in plan.pauses.items()]


@router.get("/loans/{loan_id}/reminders", response_model=RemindersView,
            responses=error_responses(401, 403, 404, 422,
                                      meaning={404: "No reminders for the loan."}))
def list_reminders(loan_id: LoanId, reminders: RemindersDep, user: ReaderDep) -> Any:
    lender = user.subject if user.role is Role.LENDER else None
    plan = reminders.plan_of(loan_id, lender)
    found = reminders.reminders_of(loan_id, lender)
    tasks = reminders.tasks_of(loan_id, lender)
    if plan is None or found is None or tasks is None:
        raise HTTPException(404, f"no reminders for loan {loan_id}")
    views = [_view(r) for r in found]
    return RemindersView(
        loan_id=loan_id,
        sent=[v for v in views if v.status == "sent"],
        pending=[v for v in views if v.status in ("pending", "sending")],
        cancelled=[v for v in views if v.status == "cancelled"],
        call_tasks=[_task_view(t) for t in tasks],
        stage=plan.stage, policy_version=plan.policy_version,
        stage_entered_at=plan.stage_entered_at, pauses=_pause_views(plan))


# --- the collectors ---


class TaskItem(BaseModel):
    task_id: UUID
    loan_id: str
    phone_kind: str
    due_from: datetime
    due_until: datetime
    template_id: str
    template_version: int
    contact_id: str | None = None


class Tasks(BaseModel):
    tasks: list[TaskItem]


@router.get("/call-tasks", response_model=Tasks,
            responses=error_responses(401, 403, 422))
def call_tasks(reminders: RemindersDep, clock: ClockDep, user: CollectorDep,
               collector_id: Annotated[Ident | None, Query(
                   description="The collector asking; tasks are not yet assigned to "
                               "collectors, so every collector sees every open task.")] = None,
               due: Annotated[Literal["now"], Query(
                   description="Only `now`: the calls that may be made now.")] = "now",
               ) -> Any:
    now = clock.now()
    return Tasks(tasks=[
        TaskItem(task_id=t.id, loan_id=t.loan_id, phone_kind=t.phone_kind,
                 due_from=t.due_from, due_until=t.due_until,  # type: ignore[arg-type]
                 template_id=t.template_id, template_version=t.template_version,
                 contact_id=t.contact_id)
        for t in reminders.open_call_tasks(now)])


class DialPermitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loan_id: LoanId
    task_id: EventUUID
    phone: Phone


class PermitOut(BaseModel):
    permit_id: UUID
    expires_at: datetime


@router.post("/dial-permits", status_code=201, response_model=PermitOut,
             responses=error_responses(
                 400, 401, 403, 404, 409, 413, 422,
                 meaning={400: UNREADABLE, 404: "No such call task for the loan.",
                          409: RULE_REFUSED + " Or " + PAUSED + " Or `task_not_open`: the "
                                              "task is not open for calls now; or "
                                              "`idempotency_key_reused`."}))
def dial_permit(body: DialPermitIn, reminders: RemindersDep, clock: ClockDep,
                user: CollectorDep, key: IdempotencyKey = None) -> Any:
    """The pre-dial gate: a dial only with a permit, which the rules may refuse."""
    try:
        permit = reminders.permit_dial(body.loan_id, body.task_id, body.phone, user.subject,
                                       clock.now(), key)
    except NotFound as error:
        raise HTTPException(404, str(error)) from error
    except RuleRefused as refused:
        telemetry.REFUSALS.labels("reminder", refused.decision.rule or "unknown").inc()
        raise HTTPException(409, refused.as_error()) from refused
    except ContactPaused as paused:
        raise HTTPException(409, paused.as_error()) from paused
    except NotOpen as error:
        raise HTTPException(409, {"code": "task_not_open", "message": str(error)}) from error
    except KeyReused as error:
        raise HTTPException(409, REUSED) from error
    return PermitOut(permit_id=permit.permit_id, expires_at=permit.expires_at)


class ContactAttemptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loan_id: LoanId
    permit_id: EventUUID | None = None
    task_id: EventUUID | None = None
    channel: Literal[Channel.CALL]
    phone: Phone
    outcome: AttemptOutcome
    attempted_at: Time
    promise_to_pay: PromiseToPay | None = None


class AttemptOut(BaseModel):
    attempt_id: UUID
    status: Literal["accepted"] = "accepted"
    permit_recognised: bool


@router.post("/contact-attempts", status_code=202, response_model=AttemptOut,
             responses=error_responses(
                 400, 401, 403, 404, 409, 413, 422,
                 meaning={400: UNREADABLE, 404: "No contact plan for the loan.",
                          409: "`attempt_in_future`: `attempted_at` lies more than five "
                               "minutes after this service's clock; or "
                               "`idempotency_key_reused`."}))
def contact_attempt(body: ContactAttemptIn, reminders: RemindersDep, clock: ClockDep,
                    user: CollectorDep, key: IdempotencyKey = None) -> Any:
    """A call's outcome: always recorded as the fact it is. A dial without a recognised
    permit is recorded without one (`permit_recognised: false`), for the audit to flag."""
    now = clock.now()
    if body.attempted_at > now + MAX_CLOCK_SKEW:
        raise HTTPException(409, {"code": "attempt_in_future",
                                  "message": "attempted_at lies after this service's clock"})
    promise = body.promise_to_pay.model_dump(mode="json") if body.promise_to_pay else None
    attempt = Attempt(loan_id=body.loan_id, channel=body.channel.value, phone=body.phone,
                      outcome=body.outcome.value, attempted_at=body.attempted_at,
                      permit_id=body.permit_id, task_id=body.task_id, promise=promise)
    try:
        attempt_id, recognised = reminders.record_attempt(attempt, user.subject, now, key)
    except NotFound as error:
        raise HTTPException(404, str(error)) from error
    except KeyReused as error:
        raise HTTPException(409, REUSED) from error
    return AttemptOut(attempt_id=attempt_id, permit_recognised=recognised)


# --- the providers ---


class ReceiptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: EventUUID
    status: Literal["delivered", "failed"]
    at: Time
    reason: Text | None = None


class ReceiptOut(BaseModel):
    status: Literal["accepted"] = "accepted"


RECEIPTS_A_BATCH = 1000


class ReceiptsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    receipts: list[ReceiptIn] = Field(min_length=1, max_length=RECEIPTS_A_BATCH)


class ReceiptProblem(BaseModel):
    code: Literal["not_found"]
    message: str


class ReceiptItem(BaseModel):
    index: int
    message_id: UUID
    status: Literal["accepted", "rejected"]
    error: ReceiptProblem | None = None


class ReceiptsOut(BaseModel):
    accepted: int
    rejected: int
    items: list[ReceiptItem]


@router.post("/receipts/{channel}:batch", response_model=ReceiptsOut,
             responses=error_responses(
                 400, 401, 403, 413, 422,
                 meaning={400: UNREADABLE,
                          422: "The body is not `{receipts: [...]}` with 1 to 1 000 receipts, "
                               "each as the single route takes it."}))
def receipts(channel: Literal["sms", "email", "push"], body: ReceiptsIn,
             reminders: RemindersDep, user: ProviderDep) -> Any:
    """Many delivery receipts of one channel, recorded in one transaction (a provider that
    reports receipts in batches). Each is answered on its own: `accepted`, or `rejected` with
    `not_found` when no message with its id was sent on this channel (or its send is not
    recorded yet: send that receipt again shortly). A repeated receipt changes nothing."""
    said = reminders.receipts(channel, [
        (item.message_id, item.status == "delivered", item.at, item.reason)
        for item in body.receipts])
    items = [ReceiptItem(index=index, message_id=item.message_id,
                         status="accepted" if why is None else "rejected",
                         error=None if why is None else ReceiptProblem(code="not_found",
                                                                       message=why))
             for index, (item, why) in enumerate(zip(body.receipts, said, strict=True))]
    accepted = sum(item.status == "accepted" for item in items)
    return ReceiptsOut(accepted=accepted, rejected=len(items) - accepted, items=items)


@router.post("/receipts/{channel}", status_code=202, response_model=ReceiptOut,
             responses=error_responses(
                 400, 401, 403, 404, 413, 422,
                 meaning={400: UNREADABLE,
                          404: "No message with this id was sent on this channel (or its "
                               "send is not recorded yet: send the receipt again shortly)."}))
def receipt(channel: Literal["sms", "email", "push"], body: ReceiptIn,
            reminders: RemindersDep, user: ProviderDep) -> Any:
    """A provider's delivery receipt; `message_id` is the reminder id it was given as the
    idempotency key. A repeated receipt changes nothing."""
    try:
        reminders.receipt(channel, body.message_id, body.status == "delivered", body.at,
                          body.reason)
    except NotFound as error:
        raise HTTPException(404, str(error)) from error
    return ReceiptOut()
