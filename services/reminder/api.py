"""Reminder's HTTP routes: what was sent, what is pending, what a rule blocked."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from shared.auth import Principal, require
from shared.events import LoanId
from shared.http import error_responses
from shared.roles import Role

from services.reminder.application import Reminders
from services.reminder.domain import Reminder


def _reminders(request: Request) -> Reminders:
    return request.app.state.service  # type: ignore[no-any-return]


RemindersDep = Annotated[Reminders, Depends(_reminders)]
ReaderDep = Annotated[Principal, Depends(require(Role.LENDER, Role.OPS, Role.AUDITOR))]

router = APIRouter(tags=["reminder"])


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


class RemindersView(BaseModel):
    loan_id: str
    sent: list[ReminderView]
    pending: list[ReminderView]
    cancelled: list[ReminderView]


def _view(reminder: Reminder) -> ReminderView:
    return ReminderView(
        reminder_id=reminder.id, channel=reminder.channel, template_id=reminder.template_id,
        template_version=reminder.template_version, status=reminder.status,
        due_at=reminder.due_at, sent_at=reminder.sent_at, attempts=reminder.attempts,
        blocked=[Block(**b) for b in reminder.blocks],
        cancelled_rule=reminder.cancelled["rule"] if reminder.cancelled else None)


@router.get("/loans/{loan_id}/reminders", response_model=RemindersView,
            responses=error_responses(401, 403, 404, 422,
                                      meaning={404: "No reminders for the loan."}))
def list_reminders(loan_id: LoanId, reminders: RemindersDep, user: ReaderDep) -> Any:
    found = reminders.reminders_of(loan_id, user.subject if user.role is Role.LENDER else None)
    if found is None:
        raise HTTPException(404, f"no reminders for loan {loan_id}")
    views = [_view(r) for r in found]
    return RemindersView(
        loan_id=loan_id,
        sent=[v for v in views if v.status == "sent"],
        pending=[v for v in views if v.status in ("pending", "sending")],
        cancelled=[v for v in views if v.status == "cancelled"])
