"""Audit's HTTP routes (role auditor): a loan's timeline leaf by leaf, its compliance verdicts
and evidence, checkpoints, the log's keys and proofs, and the violations across the
portfolio."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict

from shared.auth import Principal, require
from shared.events import Ident, LoanId, RuleId, Time
from shared.http import error_responses
from shared.roles import Role

from services.audit.application import AuditLog
from services.audit.policy import EPOCH
from services.audit.store import Verdicts, ViolationQuery


def _log(request: Request) -> AuditLog:
    return request.app.state.service  # type: ignore[no-any-return]


LogDep = Annotated[AuditLog, Depends(_log)]
AuditorDep = Annotated[Principal, Depends(require(Role.AUDITOR))]
LARGEST = 2**63 - 1  # the store keeps indices and sizes as SQLite integers

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


NO_CHECKPOINT = "No checkpoint has been signed yet."
NOT_SIGNED = "No signed checkpoint of that tree size."


@router.get("/loans/{loan_id}/timeline", response_model=Timeline,
            responses=error_responses(401, 403, 404, 422,
                                      meaning={404: "No events for the loan."}))
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


class KeyView(BaseModel):
    """One verifier key of the log: the current signer's, or one retired by a key rotation,
    which still verifies the checkpoints it signed (sizes `from_size`..`until_size`, signed
    `from_time`..`until_time`; null where none was found, and the current key's run is open).
    """

    vkey: str
    key_id: str
    status: Literal["current", "retired"]
    from_size: int | None
    until_size: int | None
    from_time: str | None
    until_time: str | None


class CheckpointView(BaseModel):
    tree_size: int
    note: str
    public_key: str  # the current signer's vkey
    keys: list[KeyView]  # every key of the log, retired ones first: the note may be by one


class KeysView(BaseModel):
    """The keys an auditor verifies this log's checkpoints with, across key rotations; saved
    as a file, `dunwell verify --key` and `verify-store --key` read it as it is."""

    origin: str
    public_key: str
    keys: list[KeyView]


class Proof(BaseModel):
    proof: list[str]


class EvidenceLeaf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    leaf_index: int
    leaf: str
    inclusion_proof: list[str]


class FindingView(BaseModel):
    leaf_index: int
    message: str


class RuleView(BaseModel):
    """One conduct rule's verdict; `not_evaluated` for a rule that could not be judged on the
    loan's leaves."""

    rule: str
    verdict: Literal["pass", "fail", "not_applicable", "not_evaluated"]
    evidence: list[int]
    findings: list[FindingView]


class Compliance(BaseModel):
    """Every rule C1..C14 over the loan's leaves below `tree_size`, a signed checkpoint's."""

    loan_id: str
    tree_size: int
    pack: str
    rules: list[RuleView]


class ViolationView(BaseModel):
    loan_id: str
    rule: str
    leaf_index: int
    time: str
    message: str


class Violations(BaseModel):
    violations: list[ViolationView]
    next: str | None


class Evidence(BaseModel):
    """A self-contained bundle: the loan's leaves, each with its inclusion proof against the
    signed checkpoint whose note is included, the StrategyPublished leaves (a lender's) that
    its visit requests name, the registry leaves (CollectorRegistered, CollectorRevoked,
    AgencyRegistered) of the collectors its visits name and of their agencies, proven alike,
    and the verdicts judged over all of those leaves.
    Forbidding other keys makes a bundle that grows without this model fail loudly in the tests
    rather than lose what it added."""

    model_config = ConfigDict(extra="forbid")
    format: str
    loan_id: str
    checkpoint: str
    leaves: list[EvidenceLeaf]
    strategies: list[EvidenceLeaf] = []
    registry: list[EvidenceLeaf] = []
    pack: str
    verdicts: list[RuleView]


def _latest(log: AuditLog) -> tuple[int, str]:
    latest = log.latest()
    if latest is None:
        raise HTTPException(404, "no checkpoint has been signed yet")
    return latest


def _signed_size(log: AuditLog, size: int) -> None:
    """Proofs are pinned to a signed checkpoint's size, so a growing tree cannot move them."""
    if log.store.checkpoint_note(size) is None:
        raise HTTPException(404, f"no signed checkpoint of size {size}")


@router.get("/checkpoint", response_model=CheckpointView,
            responses=error_responses(401, 403, 404, meaning={404: NO_CHECKPOINT}))
def checkpoint(log: LogDep, user: AuditorDep) -> Any:
    size, note = _latest(log)
    return CheckpointView(tree_size=size, note=note, public_key=log.vkey, keys=_keys(log))


@router.get("/keys", response_model=KeysView, responses=error_responses(401, 403))
def keys(log: LogDep, user: AuditorDep) -> Any:
    """The log's verifier keys: the current signer's and those retired by key rotations."""
    return KeysView(origin=log.origin, public_key=log.vkey, keys=_keys(log))


def _keys(log: AuditLog) -> list[KeyView]:
    return [KeyView(vkey=key.vkey, key_id=key.key_id, status=key.status,
                    from_size=key.from_size, until_size=key.until_size,
                    from_time=None if key.from_time is None else key.from_time.isoformat(),
                    until_time=None if key.until_time is None else key.until_time.isoformat())
            for key in log.published_keys()]


@router.get("/proofs/inclusion", response_model=Proof,
            responses=error_responses(400, 401, 403, 404, 422, meaning={
                400: "`leaf_index` is not below `tree_size`.", 404: NOT_SIGNED}))
def inclusion(leaf_index: Annotated[int, Query(ge=0, le=LARGEST, examples=[0])],
              tree_size: Annotated[int, Query(ge=1, le=LARGEST, examples=[1])],
              log: LogDep, user: AuditorDep) -> Any:
    _signed_size(log, tree_size)
    if leaf_index >= tree_size:
        raise HTTPException(400, f"leaf_index {leaf_index} is not below tree_size {tree_size}")
    return Proof(proof=log.inclusion(leaf_index, tree_size))


@router.get("/proofs/consistency", response_model=Proof,
            responses=error_responses(400, 401, 403, 404, 422, meaning={
                400: "`first` is past `second`.", 404: NOT_SIGNED}))
def consistency(first: Annotated[int, Query(ge=1, le=LARGEST, examples=[1])],
                second: Annotated[int, Query(ge=1, le=LARGEST, examples=[1])],
                log: LogDep, user: AuditorDep) -> Any:
    _signed_size(log, first)
    _signed_size(log, second)
    if first > second:
        raise HTTPException(400, f"first {first} is past second {second}")
    return Proof(proof=log.consistency(first, second))


@router.get("/loans/{loan_id}/evidence", response_model=Evidence,
            responses=error_responses(401, 403, 404, 422, meaning={
                404: "No signed evidence for the loan yet."}))
def evidence(loan_id: LoanId, log: LogDep, user: AuditorDep) -> Any:
    bundle = log.evidence(loan_id)
    if bundle is None:
        raise HTTPException(404, f"no signed evidence for loan {loan_id} yet")
    return bundle


NO_VERDICTS = "No signed leaves for the loan yet (or no checkpoint signed)."


@router.get("/loans/{loan_id}/compliance", response_model=Compliance,
            responses=error_responses(401, 403, 404, 422, meaning={404: NO_VERDICTS}))
def compliance(loan_id: LoanId, log: LogDep, user: AuditorDep) -> Any:
    verdicts = log.compliance(loan_id)
    if verdicts is None:
        raise HTTPException(404, f"no signed leaves for loan {loan_id} yet")
    return _compliance_of(verdicts)


def _compliance_of(verdicts: Verdicts) -> Compliance:
    return Compliance(loan_id=verdicts.loan_id, tree_size=verdicts.tree_size,
                      pack=verdicts.pack, rules=[RuleView.model_validate(rule)
                                                 for rule in verdicts.rules])


Cursor = Annotated[str, Query(
    max_length=18, pattern=r"^[0-9]{1,18}$", examples=["42"],
    description="Opaque: the `next` of the previous page.")]


@router.get("/violations", response_model=Violations,
            responses=error_responses(401, 403, 422))
def violations(log: LogDep, user: AuditorDep,
               since: Annotated[Time | None, Query(
                   description="Only violations whose event time is at or after this.")] = None,
               rule: Annotated[RuleId | None, Query(examples=["C1"])] = None,
               lender_id: Annotated[Ident | None, Query()] = None,
               cursor: Cursor | None = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
    """Every finding of a failed rule across the portfolio, in the order they were found."""
    since_us = None if since is None else (since - EPOCH) // timedelta(microseconds=1)
    query = ViolationQuery(after=int(cursor) if cursor else 0, limit=limit, since_us=since_us,
                           rule=rule, lender_id=lender_id)
    found, after = log.violations(query)
    return Violations(violations=[ViolationView(
        loan_id=v.loan_id, rule=v.rule, leaf_index=v.leaf_index, time=v.time,
        message=v.message) for v in found], next=None if after is None else str(after))
