"""Visit's HTTP routes: the registry (ops), each visit's steps, complaints, and the borrower's
check of a collector's letter (no token, rate-limited)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from shared import telemetry
from shared.auth import Principal, require
from shared.clock import Clock
from shared.events import (
    AddressKind,
    AuthorisationLetter,
    Certification,
    Code,
    Credentials,
    EventUUID,
    Ident,
    Lenders,
    Line,
    LoanId,
    Money,
    Name,
    PlanTerms,
    PromiseToPay,
    ReviewDay,
    Sha256Hex,
    Text,
    Time,
)
from shared.http import ErrorBody, error_responses
from shared.roles import Role

from services.visit.application import Keyed, Unknown, Visits, keyed
from services.visit.domain import CaseFile, NotNow, Refused, Visit
from services.visit.policy import Window
from services.visit.recordings import Empty, RecordingStore, TooLarge

router = APIRouter(tags=["visit"])

OpsDep = Annotated[Principal, Depends(require(Role.OPS))]
CollectorDep = Annotated[Principal, Depends(require(Role.COLLECTOR))]
ReaderDep = Annotated[Principal, Depends(require(Role.COLLECTOR, Role.OPS, Role.AUDITOR,
                                                 Role.LENDER))]
BorrowerSideDep = Annotated[Principal, Depends(require(Role.LENDER, Role.COLLECTOR))]
LenderDep = Annotated[Principal, Depends(require(Role.LENDER))]
VisitId = Annotated[EventUUID, Path(description="The visit's id, as `GET /v1/visits` gives it.")]
ComplaintId = Annotated[EventUUID, Path(description="The id `POST /v1/complaints` answered.")]
CollectorId = Annotated[str, Path(min_length=1, max_length=64)]
# A reason, a subject or an answer is its text: never empty or only spaces.
SaidLine = Annotated[Line, Field(pattern=r"\S")]
SaidText = Annotated[Text, Field(pattern=r"\S")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=128,
    description="The caller's key: the same key and body answers as the first time (a "
                "complaint: the same id); another body is 409 idempotency_key_reused.")]

FUTURE_SLACK = timedelta(minutes=5)  # a device's clock may run a little ahead of ours
RULE_REFUSED = ("`rule_refused`: a conduct rule refuses it; `details.rule` names it and "
                "`details.problems` says why. Or a step the visit's state does not allow "
                "(`code` names it).")


def _visits(request: Request) -> Visits:
    return request.app.state.service  # type: ignore[no-any-return]


def _clock(request: Request) -> Clock:
    return request.app.state.clock  # type: ignore[no-any-return]


def _recordings(request: Request) -> RecordingStore:
    return request.app.state.recordings  # type: ignore[no-any-return]


VisitsDep = Annotated[Visits, Depends(_visits)]
ClockDep = Annotated[Clock, Depends(_clock)]
RecordingsDep = Annotated[RecordingStore, Depends(_recordings)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the registry ---


class AgencyIn(Body):
    agency_id: Ident
    name: Name
    licence_number: Ident
    authorised_lenders: Lenders
    reviewed_at: ReviewDay
    next_review_due: ReviewDay


class CollectorIn(Body):
    collector_id: Ident
    name: Name
    agency_id: Ident | None = None
    id_number: Ident
    contact: Annotated[str, Field(min_length=1, max_length=256)]
    certification: Certification
    authorisation_letter: AuthorisationLetter


class RevokeIn(Body):
    reason: SaidLine


def _refused(error: Refused) -> HTTPException:
    if not error.recorded:  # a recorded one was counted when it was stored
        telemetry.REFUSALS.labels("visit", error.rule).inc()
    return HTTPException(409, {"code": "rule_refused", "message": str(error)[:1000],
                               "details": {"rule": error.rule,
                                           "reason": "; ".join(error.problems)[:1000],
                                           "problems": error.problems, **error.details}})


def _not_now(error: NotNow) -> HTTPException:
    return HTTPException(409, {"code": error.code, "message": str(error)})


def _unknown(error: Unknown) -> HTTPException:
    if error.field is not None:
        return HTTPException(409, {"code": "unknown_reference", "message": str(error),
                                   "details": {"field": error.field}})
    return HTTPException(404, str(error))


async def _run(work: Any) -> Any:
    try:
        return await run_in_threadpool(work)
    except Refused as error:
        raise _refused(error) from error
    except NotNow as error:
        raise _not_now(error) from error
    except Unknown as error:
        raise _unknown(error) from error


@router.post("/agencies", status_code=201, responses=error_responses(400, 401, 403, 413, 422))
async def register_agency(body: AgencyIn, visits: VisitsDep, clock: ClockDep,
                          user: OpsDep) -> dict[str, Any]:
    """Register an agency, or record its yearly review (the same body again changes nothing)."""
    details = body.model_dump(mode="json")
    created = await _run(lambda: visits.register_agency(details, clock.now()))
    return {"agency_id": body.agency_id, "created": created}


@router.post("/collectors", status_code=201,
             responses=error_responses(400, 401, 403, 409, 413, 422, meaning={
                 409: "`unknown_reference`: the agency is not registered."}))
async def register_collector(body: CollectorIn, visits: VisitsDep, clock: ClockDep,
                             user: OpsDep) -> dict[str, Any]:
    """Register a collector with their certification and the lender's letter; answers the
    verification code to print on the letter. The same body again answers the same code; a
    new letter or certification is a new registration with a new code."""
    details = body.model_dump(mode="json", exclude_none=True)
    if body.agency_id is not None:
        agency = visits.agency(body.agency_id)
        if agency is not None:
            details["agency"] = agency.details["name"]
    registered = await _run(lambda: visits.register_collector(details, clock.now()))
    return {"collector_id": registered.collector_id,
            "verification_code": registered.verification_code, "created": registered.created}


@router.post("/collectors/{collector_id}/revoke", status_code=202,
             responses=error_responses(400, 401, 403, 404, 413, 422))
async def revoke_collector(collector_id: CollectorId,
                           body: RevokeIn, visits: VisitsDep, clock: ClockDep,
                           user: OpsDep) -> dict[str, Any]:
    revoked = await _run(lambda: visits.revoke_collector(collector_id, body.reason,
                                                         clock.now()))
    return {"collector_id": collector_id, "status": "revoked", "changed": revoked}


@router.get("/collectors/{collector_id}", responses=error_responses(401, 403, 404, 422))
def get_collector(collector_id: CollectorId,
                  visits: VisitsDep, user: ReaderDep) -> dict[str, Any]:
    collector = visits.collector(collector_id)
    if collector is None or user.role is Role.LENDER or (
            user.role is Role.COLLECTOR and user.subject != collector_id):
        raise HTTPException(404, f"no collector {collector_id}")
    view = {**collector.details, "registered_at": collector.registered_at,
            "revoked_at": collector.revoked_at, "revoke_reason": collector.revoke_reason,
            "open_complaints": collector.open_complaints, "visits": collector.visits}
    if user.role in (Role.OPS, Role.COLLECTOR):
        view["verification_code"] = collector.code
    return view


# --- the borrower's check of a letter ---


class RateLimit:
    """A token bucket per client: `rate` a second, bursts of twice that."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(2.0 * rate, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > 100_000:  # forget the quiet ones
                stale = [k for k, (_, t) in self._buckets.items() if now - t > 60]
                for key in stale:
                    del self._buckets[key]
            return allowed


class VerifyOut(BaseModel):
    valid: bool
    collector_name: str
    agency: str | None
    lender_id: str
    valid_until: str
    visit_window: dict[str, datetime] | None


@router.get("/verify/{code}", response_model=VerifyOut, openapi_extra={"security": []},
            responses={**error_responses(404, 422), 429: {
                "model": ErrorBody,
                "description": "Too many checks from this client; `Retry-After` says when."}})
def verify_code(code: Annotated[str, Path(min_length=1, max_length=64)], request: Request,
                visits: VisitsDep, clock: ClockDep) -> Any:
    """Whether the authorisation letter with this code is valid now, whose it is, for which
    lender, and the window of a visit of theirs due about now. Nothing about any debt. No
    token: the borrower (or the lender's hotline) asks; each client is rate-limited."""
    limit: RateLimit = request.app.state.verify_limit
    client = request.client.host if request.client else "unknown"
    if not limit.allow(client):
        raise HTTPException(429, {"code": "rate_limited",
                                  "message": "too many checks; try again shortly"},
                            headers={"Retry-After": "1"})
    found = visits.check_code(code.strip().upper(), clock.now())
    if found is None:
        raise HTTPException(404, "no authorisation letter has this code")
    return {**found, "valid_until": found["valid_until"].isoformat()}


# --- the visits ---


def _may_see(user: Principal, visit: Visit) -> bool:
    if user.role in (Role.OPS, Role.AUDITOR):
        return True
    if user.role is Role.LENDER:
        return visit.lender_id == user.subject
    return user.subject in visit.collector_ids()


def _case_facts(case: CaseFile | None, visit: Visit, now: datetime) -> dict[str, Any] | None:
    """The dossier a visit needs, from events only: who and where, how much, the contact
    history in short and the promises."""
    if case is None:
        return None
    addresses = case.addresses()
    return {"borrower": {"name": case.borrower["name"], "phone": case.borrower["phone"]},
            "address_kinds": sorted(addresses), "addresses": addresses,
            "amount_overdue": case.terms["amount_overdue"], "currency": case.terms["currency"],
            "days_past_due": visit.dpd(case.zone, now), "timezone": str(case.zone),
            "stage": case.stage, "case_status": case.status,
            "contact_history": {"counts": dict(sorted(case.contacts.items())),
                                "last_contact_at": case.last_contact_at},
            "promises": list(case.promises.values()),
            "visits_stopped": case.visits_stopped(),
            "refused": case.refused_by is not None}


def visit_view(visit: Visit, case: CaseFile | None, now: datetime,
               dossier: bool = True) -> dict[str, Any]:
    window = visit.window()
    schedule = visit.schedule or {}
    view: dict[str, Any] = {
        "visit_id": visit.visit_id, "loan_id": visit.loan_id, "lender_id": visit.lender_id,
        "status": visit.status, "requested_at": visit.requested_at, "reasons": visit.reasons,
        "stage": visit.stage, "policy_version": visit.policy_version,
        "window": {"start": window.start, "end": window.end} if window else None,
        "scheduled_start": window.start if window else None,
        "scheduled_end": window.end if window else None,
        "address_kind": schedule.get("address_kind"),
        "collector_ids": visit.collector_ids(),
        "collectors": [{k: v for k, v in c.items() if k != "verification_code"}
                       for c in schedule.get("collectors", [])],
        "open_complaints": schedule.get("open_complaints", []),
        "verification": visit.verified, "notice": visit.notice or None,
        "declined": visit.declined, "checked_in": visit.checked_in,
        "recordings": [{"recording_sha256": sha, **meta}
                       for sha, meta in visit.recordings.items()],
        "record": visit.record, "cancelled": visit.cancelled, "refusals": visit.blocked,
        "steps": visit.steps,
    }
    if dossier:
        view["dossier"] = _case_facts(case, visit, now)
    return view


@router.get("/visits", responses=error_responses(400, 401, 403, 422))
def list_visits(visits: VisitsDep, clock: ClockDep, user: ReaderDep,
                loan_id: Annotated[LoanId | None, Query()] = None,
                collector_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                status: Annotated[str | None, Query(max_length=32)] = None) -> dict[str, Any]:
    """A loan's visits, a collector's, or (ops and auditors) every visit; a collector sees
    only their own, a lender only its loans'."""
    if user.role is Role.COLLECTOR:
        if collector_id not in (None, user.subject):
            raise HTTPException(403, "a collector sees only their own visits")
        collector_id = user.subject
    if collector_id is not None:
        found = visits.visits_of_collector(collector_id)
        if loan_id is not None:
            found = [v for v in found if v.loan_id == loan_id]
    elif loan_id is not None:
        found = visits.visits_of_loan(loan_id)
    else:
        found = visits.visits_of_lender(user.subject if user.role is Role.LENDER else None)
    now = clock.now()
    shown = [v for v in found if _may_see(user, v) and (status is None or v.status == status)]
    return {"visits": [visit_view(v, visits.case_file(v.loan_id), now, dossier=False)
                       for v in shown]}


def _seen(visits: Visits, visit_id: UUID, user: Principal) -> Visit:
    visit = visits.visit(visit_id)
    if visit is None or not _may_see(user, visit):
        raise HTTPException(404, f"no visit {visit_id} that this caller may see")
    return visit


@router.get("/visits/{visit_id}", responses=error_responses(401, 403, 404, 422))
def get_visit(visit_id: VisitId, visits: VisitsDep, clock: ClockDep,
              user: ReaderDep) -> dict[str, Any]:
    """The visit, every step with its time, and the dossier it needs."""
    visit = _seen(visits, visit_id, user)
    return visit_view(visit, visits.case_file(visit.loan_id), clock.now(),
                      dossier=user.role is not Role.AUDITOR)


def _accepted(visits: Visits, visit_id: UUID, changed: bool) -> dict[str, Any]:
    visit = visits.visit(visit_id)
    return {"status": "accepted", "visit_id": str(visit_id),
            "visit_status": visit.status if visit else None, "changed": changed}


def _not_ahead(moment: datetime, now: datetime, name: str) -> None:
    if moment > now + FUTURE_SLACK:
        raise HTTPException(409, {"code": "time_in_future",
                                  "message": f"`{name}` lies ahead of the installation's "
                                             f"clock ({now.isoformat()})"})


STEP_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422, meaning={
    409: RULE_REFUSED + " With an `Idempotency-Key` used for another request: "
         "`idempotency_key_reused`.",
    422: "A body that does not fit, or whose `visit_id` is not the path's."})


class StepIn(Body):
    """A step's body. It may carry the path's `visit_id`, as the event does; another is 422."""

    visit_id: EventUUID | None = None


def _step_key(visit_id: UUID, body: StepIn, step: str, user: Principal,
              key: str | None) -> Keyed | None:
    """The body's own `visit_id` checked against the path's, and the caller's
    Idempotency-Key on this step with this body (None without one)."""
    if body.visit_id is not None and body.visit_id != visit_id:
        raise RequestValidationError([{
            "type": "visit_id_mismatch", "loc": ("body", "visit_id"),
            "msg": f"the body's visit_id {body.visit_id} is not the path's {visit_id}"}])
    return keyed(f"{user.role.value}:{user.subject}", key, step,
                 body.model_dump(mode="json", exclude={"visit_id"}))


class VerifyIn(StepIn):
    name: Name
    phone: Annotated[str, Field(min_length=1, max_length=32)]
    amount_overdue: Money
    days_past_due: Annotated[int, Field(ge=0, le=36500)]


@router.post("/visits/{visit_id}/verify", status_code=202, responses=STEP_ERRORS)
async def verify_debtor(visit_id: VisitId, body: VerifyIn, visits: VisitsDep, clock: ClockDep,
                        user: OpsDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """C7: the back office's check of name, phone, amount and DPD against the case; a
    mismatch is 409 C7 naming the fields that differ (never their values)."""
    claimed: dict[str, str | int] = {"name": body.name, "phone": body.phone,
               "amount_overdue": str(body.amount_overdue), "days_past_due": body.days_past_due}
    step = _step_key(visit_id, body, "verify", user, key)
    changed = await _run(lambda: visits.verify(visit_id, claimed, user.subject, clock.now(),
                                               step))
    return _accepted(visits, visit_id, changed)


class ScheduleIn(StepIn):
    scheduled_start: Time
    scheduled_end: Time
    address_kind: AddressKind
    collector_ids: Annotated[list[Ident], Field(min_length=1, max_length=10)]


@router.post("/visits/{visit_id}/schedule", status_code=202, responses=STEP_ERRORS)
async def schedule_visit(visit_id: VisitId, body: ScheduleIn, visits: VisitsDep,
                         clock: ClockDep, user: OpsDep,
                         key: IdempotencyKey = None) -> dict[str, Any]:
    """Set the time, place and collectors: C3, C4, C7, C9, C10 and C11 must hold. The reminder
    service then sends the borrower the notice (C8)."""
    if body.scheduled_end <= body.scheduled_start:
        raise HTTPException(400, "`scheduled_end` must be after `scheduled_start`")
    window = Window(body.scheduled_start, body.scheduled_end)
    step = _step_key(visit_id, body, "schedule", user, key)
    changed = await _run(lambda: visits.schedule(visit_id, window, str(body.address_kind),
                                                 list(body.collector_ids), user.subject,
                                                 clock.now(), step))
    return _accepted(visits, visit_id, changed)


class DeclineIn(StepIn):
    declined_at: Time
    via: Code
    reason: Line | None = None


def _lender(user: Principal) -> str | None:
    return user.subject if user.role is Role.LENDER else None


@router.post("/visits/{visit_id}/decline", status_code=202, responses=STEP_ERRORS)
async def decline_visit(visit_id: VisitId, body: DeclineIn, visits: VisitsDep,
                        clock: ClockDep, user: BorrowerSideDep,
                        key: IdempotencyKey = None) -> dict[str, Any]:
    """C9: the borrower refuses the visit. It is cancelled, and no visit of the loan goes
    ahead until the borrower agrees (`consent`)."""
    _not_ahead(body.declined_at, clock.now(), "declined_at")
    if user.role is Role.COLLECTOR:
        _seen(visits, visit_id, user)
    step = _step_key(visit_id, body, "decline", user, key)
    changed = await _run(lambda: visits.decline(visit_id, body.declined_at, body.via,
                                                body.reason, _lender(user), step))
    return _accepted(visits, visit_id, changed)


class ConsentIn(StepIn):
    consented_at: Time
    via: Code


@router.post("/visits/{visit_id}/consent", status_code=202, responses=STEP_ERRORS)
async def consent_to_visit(visit_id: VisitId, body: ConsentIn, visits: VisitsDep,
                           clock: ClockDep, user: LenderDep,
                           key: IdempotencyKey = None) -> dict[str, Any]:
    """After a refusal the borrower agreed to a visit after all (a recorded consent): the
    visit starts again from verification."""
    _not_ahead(body.consented_at, clock.now(), "consented_at")
    step = _step_key(visit_id, body, "consent", user, key)
    changed = await _run(lambda: visits.consent(visit_id, body.consented_at, body.via,
                                                user.subject, step))
    return _accepted(visits, visit_id, changed)


class CheckInIn(StepIn):
    collector_ids: Annotated[list[Ident], Field(min_length=1, max_length=10)]
    credentials_presented: Credentials
    checked_in_at: Time


@router.post("/visits/{visit_id}/check-in", status_code=202, responses=STEP_ERRORS)
async def check_in(visit_id: VisitId, body: CheckInIn, visits: VisitsDep, clock: ClockDep,
                   user: CollectorDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """The collectors arrive: C4, C8 (notice delivered the pack's lead before, inside the
    window), C9, C10 (enough of the scheduled collectors, each with ID card, badge and letter,
    each still valid) and C11. A refusal is recorded as VisitBlocked and nothing else."""
    if user.subject not in body.collector_ids:
        raise HTTPException(403, "the caller checks in only as one of `collector_ids`")
    now = clock.now()
    _not_ahead(body.checked_in_at, now, "checked_in_at")
    _seen(visits, visit_id, user)
    credentials = body.credentials_presented.model_dump()
    step = _step_key(visit_id, body, "check-in", user, key)
    changed = await _run(lambda: visits.check_in(visit_id, list(body.collector_ids),
                                                 credentials, body.checked_in_at, now, step))
    return _accepted(visits, visit_id, changed)


def _on_visit(visit: Visit, user: Principal) -> None:
    if user.role is Role.COLLECTOR and (
            visit.checked_in is None or user.subject not in visit.checked_in["collector_ids"]):
        raise HTTPException(403, "only a collector checked in to the visit may do this")


MEDIA = ("audio/mpeg", "audio/mp4", "audio/wav", "audio/ogg", "video/mp4", "video/webm")


@router.put("/visits/{visit_id}/recording", status_code=201, openapi_extra={"requestBody": {
    "required": True, "description": "The recording's bytes; any audio/* or video/* type.",
    "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA}}},
            responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, meaning={
                400: "`empty_recording`: the body is empty.",
                409: "`not_checked_in`: a recording comes after the check-in; "
                     "`visit_recorded`: and before the write-up.",
                413: "The recording exceeds the store's limit.",
                415: "The Content-Type is not audio/* or video/*."}))
async def upload_recording(visit_id: VisitId, request: Request, visits: VisitsDep,
                           clock: ClockDep, store: RecordingsDep,
                           user: CollectorDep) -> dict[str, Any]:
    """The visit's recording (C12), uploaded by one of its collectors between the check-in
    and the write-up, streamed to the store under its SHA-256 (never held in memory);
    `Content-Type` audio/* or video/*."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not re.fullmatch(r"(audio|video)/[a-z0-9][a-z0-9.+-]{0,100}", media_type):
        raise HTTPException(415, {"code": "unsupported_media_type",
                                  "message": "a recording is audio/* or video/*"})
    visit = _seen(visits, visit_id, user)
    try:
        visit.may_take_recording()
    except NotNow as error:
        raise _not_now(error) from error
    _on_visit(visit, user)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > store.max_bytes:
        raise HTTPException(413, {"code": "payload_too_large",
                                  "message": f"the recording exceeds {store.max_bytes} bytes"})

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            yield chunk

    try:
        stored = await store.put(chunks())
    except TooLarge as error:
        raise HTTPException(413, {"code": "payload_too_large", "message": str(error)}) from error
    except Empty as error:
        raise HTTPException(400, {"code": "empty_recording", "message": str(error)}) from error
    await _run(lambda: visits.recording_stored(visit_id, stored.sha256, stored.size,
                                               media_type, clock.now()))
    return {"recording_sha256": stored.sha256, "bytes": stored.size}


class RecordIn(StepIn):
    outcome: Code
    borrower_attitude: Code
    difficulties: Text
    repayment_plan: PlanTerms | Text | None = None
    promise_to_pay: PromiseToPay | None = None
    recording_sha256: Sha256Hex
    recording_seconds: Annotated[int, Field(gt=0, le=86_400)]
    ended_at: Time
    home_entered: bool = False
    entry_consent: Code | None = None
    person_met: Code | None = None
    notes: Text | None = None


@router.post("/visits/{visit_id}/record", status_code=202, responses=STEP_ERRORS)
async def record_visit(visit_id: VisitId, body: RecordIn, visits: VisitsDep, clock: ClockDep,
                       store: RecordingsDep, user: CollectorDep,
                       key: IdempotencyKey = None) -> dict[str, Any]:
    """C12: the write-up, naming the stored recording by its SHA-256 (missing or different:
    409 C12). A promise or a repayment plan made in the visit goes to escalation."""
    now = clock.now()
    _not_ahead(body.ended_at, now, "ended_at")
    visit = _seen(visits, visit_id, user)
    _on_visit(visit, user)
    step = _step_key(visit_id, body, "record", user, key)
    record = body.model_dump(mode="json", exclude_none=True, exclude={"visit_id"})
    record["ended_at"] = body.ended_at
    if isinstance(body.repayment_plan, str):
        record.pop("repayment_plan")
        record["notes"] = "; ".join(filter(None, [body.notes, body.repayment_plan]))[:2000]
    if body.recording_sha256 in visit.recordings and not store.has(
            body.recording_sha256, visit.recordings[body.recording_sha256]["bytes"]):
        raise _refused(Refused("C12", ["the recording named is missing from the store"],
                               recording_sha256=body.recording_sha256))
    changed = await _run(lambda: visits.record(visit_id, record, now, step))
    return _accepted(visits, visit_id, changed)


class CancelIn(StepIn):
    reason: SaidLine


@router.post("/visits/{visit_id}/cancel", status_code=202, responses=STEP_ERRORS)
async def cancel_visit(visit_id: VisitId, body: CancelIn, visits: VisitsDep, clock: ClockDep,
                       user: OpsDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """Ops call the visit off, with a reason."""
    step = _step_key(visit_id, body, "cancel", user, key)
    changed = await _run(lambda: visits.cancel(visit_id, body.reason, clock.now(), step))
    return _accepted(visits, visit_id, changed)


# --- complaints (C14) ---


class ComplaintIn(Body):
    loan_id: LoanId
    about: SaidText
    visit_id: EventUUID | None = None
    collector_id: Ident | None = None
    details: Text | None = None
    filed_at: Time


@router.post("/complaints", status_code=201, responses=error_responses(
    400, 401, 403, 409, 413, 422, meaning={409: "`unknown_reference`: no such loan of this lender, "
                                           "visit of the loan, or collector; or "
                                           "`idempotency_key_reused`."}))
async def file_complaint(body: ComplaintIn, visits: VisitsDep, clock: ClockDep,
                         user: LenderDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """A complaint on the borrower's behalf about a visit, a collector, a call or a message;
    it must be answered within the pack's days (cn 15, us 30)."""
    _not_ahead(body.filed_at, clock.now(), "filed_at")
    filed = body.model_dump(mode="json", exclude_none=True)
    filed["filed_at"] = body.filed_at
    complaint_id, created = await _run(lambda: visits.file_complaint(filed, user.subject, key,
                                                                     clock.now()))
    complaint = visits.complaint(UUID(complaint_id))
    return {"complaint_id": complaint_id, "created": created,
            "answer_by": complaint.answer_by if complaint else None}


class ResolveIn(Body):
    outcome: SaidText
    resolved_at: Time


@router.post("/complaints/{complaint_id}/resolve", status_code=202,
             responses=error_responses(400, 401, 403, 404, 409, 413, 422))
async def resolve_complaint(complaint_id: ComplaintId, body: ResolveIn, visits: VisitsDep,
                            clock: ClockDep, user: OpsDep) -> dict[str, Any]:
    _not_ahead(body.resolved_at, clock.now(), "resolved_at")
    changed = await _run(lambda: visits.resolve_complaint(complaint_id, body.outcome,
                                                          body.resolved_at, user.subject))
    return {"complaint_id": str(complaint_id), "status": "resolved", "changed": changed}


@router.get("/complaints/{complaint_id}", responses=error_responses(401, 403, 404, 422))
def get_complaint(complaint_id: ComplaintId, visits: VisitsDep, user: ReaderDep) -> dict[str, Any]:
    complaint = visits.complaint(complaint_id)
    if complaint is None or user.role is Role.COLLECTOR or (
            user.role is Role.LENDER and complaint.lender_id != user.subject):
        raise HTTPException(404, f"no complaint {complaint_id}")
    return {"complaint_id": str(complaint_id), "loan_id": complaint.loan_id,
            "about": complaint.about, "visit_id": complaint.visit_id,
            "collector_id": complaint.collector_id, "details": complaint.details,
            "filed_at": complaint.filed_at, "answer_by": complaint.answer_by,
            "status": "resolved" if complaint.resolution else "open",
            "resolution": complaint.resolution}

