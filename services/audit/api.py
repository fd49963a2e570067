"""Audit's HTTP routes (role auditor): a loan's timeline, leaf by leaf."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from shared.auth import Principal, Role, require
from shared.events import LoanId

from services.audit.application import AuditLog


def _log(request: Request) -> AuditLog:
    return request.app.state.service  # type: ignore[no-any-return]


LogDep = Annotated[AuditLog, Depends(_log)]
AuditorDep = Annotated[Principal, Depends(require(Role.AUDITOR))]

router = APIRouter(tags=["audit"])


class TimelineEntry(BaseModel):
    leaf_index: int
    id: str
    type: str
    time: str | None
    causationid: str | None
    correlationid: str | None
    leaf: str | None


class Timeline(BaseModel):
    loan_id: str
    tree_size: int
    events: list[TimelineEntry]


@router.get("/loans/{loan_id}/timeline", response_model=Timeline)
def timeline(loan_id: LoanId, log: LogDep, user: AuditorDep) -> Any:
    leaves = log.timeline(loan_id)
    if not leaves:
        raise HTTPException(404, f"no events for loan {loan_id}")
    entries = []
    for leaf in leaves:
        event = json.loads(leaf.data) if leaf.data is not None else {}
        entries.append(TimelineEntry(
            leaf_index=leaf.leaf_index, id=leaf.event_id, type=leaf.event_type,
            time=event.get("time"), causationid=event.get("causationid"),
            correlationid=event.get("correlationid"),
            leaf=None if leaf.data is None else base64.b64encode(leaf.data).decode()))
    return Timeline(loan_id=loan_id, tree_size=log.store.size, events=entries)
