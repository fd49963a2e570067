"""The visit application: the registry of agencies and collectors, the case facts a visit
needs (from cases.events and reminders.events), each visit's steps, and complaints.

Commands load what a decision needs, hand it to the aggregate that decides, and save what
changed in one unit; a conflict with another replica is tried again from the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from shared.application import Conflict, ServiceApplication, Unit
from shared.events import (
    CadencePaused,
    CadenceResumed,
    CaseClosed,
    CaseEscalated,
    CaseOpened,
    CaseUpdated,
    CloudEvent,
    ContactAttemptRecorded,
    ContactHeld,
    ContactResumed,
    PromiseBroken,
    PromiseKept,
    ReminderDelivered,
    ReminderSent,
    VisitRequested,
)
from shared.policy_pack import PolicyPack
from shared.policy_pack import pack as pack_named

from services.visit import policy
from services.visit.domain import (
    CODE_KIND,
    VISIT_KIND,
    Agency,
    CaseFile,
    Collector,
    Complaint,
    NotNow,
    Refused,
    Visit,
    case_view,
)

log = logging.getLogger(__name__)

COMPLAINT_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/complaints")
ATTEMPTS = 5
T = TypeVar("T")


class Unknown(LookupError):
    """No such loan, visit, collector, agency or complaint (for this caller): a 404, or a 409
    when it is a field of the body that names it (`field`)."""

    def __init__(self, what: str, field: str | None = None) -> None:
        super().__init__(what)
        self.field = field


@dataclass(frozen=True)
class Registered:
    collector_id: str
    verification_code: str
    created: bool


# An Idempotency-Key on a visit's step: the caller's key (role, subject, key) and the request's
# fingerprint (the step and its body).
Keyed = tuple[str, str]


def _fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def keyed(caller: str, key: str | None, step: str, body: dict[str, Any]) -> Keyed | None:
    """The Idempotency-Key of `caller` on a step with this body; None without a key."""
    return None if key is None else (f"{caller}\0{key}", _fingerprint({"step": step, **body}))


def new_code() -> str:
    return "".join(secrets.choice(policy.CODE_ALPHABET) for _ in range(policy.CODE_LENGTH))


class Visits(ServiceApplication):
    name = "visit"

    def __init__(self, pack: PolicyPack, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.pack = pack

    def pack_of(self, case: CaseFile) -> PolicyPack:
        name = case.terms.get("jurisdiction")
        return pack_named(str(name)) if name else self.pack

    def _retry(self, work: Callable[[], T]) -> T:
        for _ in range(ATTEMPTS - 1):
            try:
                return work()
            except Conflict:
                continue
        return work()

    # --- the registry ---

    def register_agency(self, details: dict[str, Any], now: datetime) -> bool:
        """Register an agency or record its new review; False when nothing changed."""
        agency_id = str(details["agency_id"])

        def work() -> bool:
            unit = self.unit()
            agency: Agency | None = unit.find(Agency.create_id(agency_id))
            if agency is None:
                agency = Agency(agency_id, details, now)
            elif agency.details == details:
                return False
            else:
                agency.review(details, now)
            unit.save(agency)
            self.commit(unit)
            return True
        return self._retry(work)

    def agency(self, agency_id: str) -> Agency | None:
        found: Agency | None = self.find(Agency.create_id(agency_id))
        return found

    def register_collector(self, details: dict[str, Any], now: datetime) -> Registered:
        """Register a collector, or again: a renewed certification or new details keep the
        letter's verification code (the borrower may hold it from a notice already sent); a
        new letter, or a registration after a revocation, gets a new one. The same
        registration again answers the code it was given."""
        collector_id = str(details["collector_id"])
        agency_id = details.get("agency_id")
        if agency_id is not None and self.agency(str(agency_id)) is None:
            raise Unknown(f"agency {agency_id} is not registered", field="agency_id")

        def work() -> Registered:
            unit = self.unit()
            collector: Collector | None = unit.find(Collector.create_id(collector_id))
            if collector is not None and collector.details == details \
                    and collector.revoked_at is None:
                return Registered(collector_id, collector.code, False)
            same_letter = collector is not None and collector.revoked_at is None \
                and collector.details.get("authorisation_letter") \
                == details.get("authorisation_letter")
            code = collector.code if same_letter and collector is not None else new_code()
            if collector is None:
                collector = Collector(collector_id, details, code, now)
            else:
                collector.register_again(details, code, now)
            unit.save(collector)
            self.commit(unit)
            return Registered(collector_id, code, True)
        return self._retry(work)

    def revoke_collector(self, collector_id: str, reason: str, now: datetime) -> bool:
        def work() -> bool:
            unit = self.unit()
            collector: Collector | None = unit.find(Collector.create_id(collector_id))
            if collector is None:
                raise Unknown(f"no collector {collector_id}")
            if collector.revoked_at is not None:
                return False
            collector.revoke(reason, now)
            unit.save(collector)
            self.commit(unit)
            return True
        return self._retry(work)

    def collector(self, collector_id: str) -> Collector | None:
        found: Collector | None = self.find(Collector.create_id(collector_id))
        return found

    def find(self, aggregate_id: UUID) -> Any:
        return self.repository.get(aggregate_id) if aggregate_id in self.repository else None

    def standing(self, unit: Unit, collector_id: str
                 ) -> tuple[policy.Standing, policy.AgencyStanding | None] | None:
        collector: Collector | None = unit.find(Collector.create_id(collector_id))
        if collector is None:
            return None
        agency: Agency | None = None
        if collector.agency_id is not None:
            agency = unit.find(Agency.create_id(collector.agency_id))
        return (collector.standing(agency.details["name"] if agency else None),
                agency.standing() if agency else None)

    def by_code(self, code: str) -> Collector | None:
        rows = self.extras.listed(CODE_KIND, code, {}, None, 1)
        return self.repository.get(rows[0][0]) if rows else None

    def check_code(self, code: str, now: datetime) -> dict[str, Any] | None:
        """What a borrower may learn from a letter's code: whether it is valid now, whose it
        is, for which lender, and whether a visit of theirs is due about now."""
        collector = self.by_code(code)
        if collector is None:
            return None
        unit = self.unit()
        found = self.standing(unit, collector.collector_id)
        assert found is not None
        standing, agency = found
        window = None
        zone_day = now.date()
        for visit_id in reversed(collector.visits):
            visit: Visit | None = unit.find(UUID(visit_id))
            span = visit.window() if visit is not None else None
            if visit is None or span is None or visit.status in ("cancelled", "declined"):
                continue
            if span.start - timedelta(hours=1) <= now <= span.end + timedelta(hours=1):
                case: CaseFile | None = unit.find(CaseFile.create_id(visit.loan_id))
                if case is not None:
                    zone_day = now.astimezone(case.zone).date()
                window = {"start": span.start, "end": span.end}
                break
        problems = policy.collector_problems(standing, agency, standing.letter.lender_id,
                                             zone_day, zone_day)
        return {"valid": not problems, "collector_name": standing.name,
                "agency": standing.agency, "lender_id": standing.letter.lender_id,
                "valid_until": min(standing.letter.valid_until, standing.certified_until),
                "visit_window": window, "problems": problems}

    # --- what the visit service knows of a case (handlers) ---

    def _case(self, unit: Unit, loan_id: str) -> CaseFile | None:
        found: CaseFile | None = unit.find(CaseFile.create_id(loan_id))
        return found

    def case_file(self, loan_id: str) -> CaseFile | None:
        found: CaseFile | None = self.find(CaseFile.create_id(loan_id))
        return found

    def case_opened(self, unit: Unit, data: CaseOpened | CaseUpdated, now: datetime) -> None:
        terms = data.model_dump(mode="json", include=set(_TERMS))
        case = self._case(unit, data.loan_id)
        if case is None:
            if isinstance(data, CaseUpdated):
                case = CaseFile(data.loan_id, terms, now)
            else:
                case = CaseFile(data.loan_id, terms, data.opened_at)
        elif isinstance(data, CaseOpened) and case.status == "closed":
            case.reopen(terms, data.opened_at)
        elif case.terms != terms:
            case.change_terms(terms)
        if isinstance(data, CaseOpened) and data.stage:
            case.see_stage(data.stage)
        unit.save(case)

    def _on_case(self, unit: Unit, loan_id: str, change: Callable[[CaseFile], object]) -> bool:
        """Apply `change` to the loan's case file and save it; False when there is none."""
        case = self._case(unit, loan_id)
        if case is None:
            return False
        change(case)
        unit.save(case)
        return True

    def case_escalated(self, unit: Unit, data: CaseEscalated) -> bool:
        return self._on_case(unit, data.loan_id, lambda case: case.see_stage(data.to_stage))

    def case_closed(self, unit: Unit, event: CloudEvent, data: CaseClosed) -> bool:
        def change(case: CaseFile) -> None:
            if case.status != "closed":
                case.close(data.closed_at)
            self._call_off(unit, case, f"the case closed ({data.reason[:200]})", "C4",
                           data.closed_at)
        return self._on_case(unit, data.loan_id, change)

    def contact_held(self, unit: Unit, data: ContactHeld) -> bool:
        def change(case: CaseFile) -> None:
            case.hold(data.hold_id, [str(c) for c in data.channels] if data.channels else None)
            stopped = case.visits_stopped()
            if stopped is not None:
                self._call_off(unit, case, f"visits may not go ahead: {stopped}", "C3",
                               data.at)
        return self._on_case(unit, data.loan_id, change)

    def contact_resumed(self, unit: Unit, data: ContactResumed) -> bool:
        return self._on_case(unit, data.loan_id, lambda case: case.release(data.hold_id))

    def cadence_paused(self, unit: Unit, data: CadencePaused) -> bool:
        def change(case: CaseFile) -> None:
            if data.reason == "hardship":
                case.hardship_started(data.pause_id)
                self._call_off(unit, case, "hardship: the borrower is not to be pressed",
                               None, data.at)
                return
            for courtesy in data.courtesy:
                case.note_promise(f"{data.pause_id}:{courtesy.due_date}", {
                    "kind": str(data.reason), "due_date": courtesy.due_date.isoformat(),
                    "amount": str(courtesy.amount), "currency": courtesy.currency,
                    "status": "current"})
        return self._on_case(unit, data.loan_id, change)

    def cadence_resumed(self, unit: Unit, data: CadenceResumed) -> bool:
        return self._on_case(unit, data.loan_id,
                             lambda case: case.hardship_over(data.pause_id))

    def promise_decided(self, unit: Unit, data: PromiseKept | PromiseBroken) -> bool:
        def change(case: CaseFile) -> None:
            decided = {"status": "kept" if isinstance(data, PromiseKept) else "broken"}
            due = data.due_date.isoformat()
            key = next((k for k, p in case.promises.items()
                        if p.get("due_date") == due and p.get("status") == "current"), None)
            if key is None:
                key, decided = f"{data.promise_id}:{due}", {
                    **decided, "kind": "promise", "due_date": due}
            case.note_promise(key, decided)
        return self._on_case(unit, data.loan_id, change)

    def contacted(self, unit: Unit, data: ReminderSent | ContactAttemptRecorded) -> bool:
        def change(case: CaseFile) -> None:
            if isinstance(data, ContactAttemptRecorded):
                case.contacted(f"call_{data.outcome}", data.attempted_at)
                return
            case.contacted(f"{data.channel}_sent", data.sent_at)
            visit = self._visit_of(unit, data.visit_id, data.loan_id)
            if visit is not None and visit.notice_sent(str(data.reminder_id),
                                                       str(data.channel), data.sent_at):
                unit.save(visit)
        return self._on_case(unit, data.loan_id, change)

    def _visit_of(self, unit: Unit, visit_id: UUID | None, loan_id: str) -> Visit | None:
        """The visit a reminder's report names, if it is one of that loan's."""
        if visit_id is None:
            return None
        visit: Visit | None = unit.find(visit_id)
        return visit if visit is not None and visit.loan_id == loan_id else None

    def delivered(self, unit: Unit, data: ReminderDelivered) -> None:
        visit = self._visit_of(unit, data.visit_id, data.loan_id)
        if visit is not None and visit.notice_delivered(str(data.reminder_id),
                                                        str(data.channel), data.delivered_at):
            unit.save(visit)

    def visit_requested(self, unit: Unit, event: CloudEvent, data: VisitRequested,
                        now: datetime) -> bool:
        case = self._case(unit, data.loan_id)
        if case is None:
            return False
        visit_id = Visit.create_id(event.id)
        if unit.exists(visit_id):
            return True
        if case.status != "open":
            log.info("a visit request for a closed case is not taken (event %s)", event.id)
            return True
        dpd = next((int(r.value) for r in data.reasons
                    if r.code == "dpd" and r.value and r.value.isdigit()),
                   int(case.terms["days_past_due"]))
        visit = Visit(data.loan_id, case.lender_id,
                      [r.model_dump(mode="json") for r in data.reasons], data.stage,
                      data.policy_version, data.requested_at or now, dpd, event.id)
        case.add_visit(str(visit_id))
        unit.save(visit, case)
        return True

    def _call_off(self, unit: Unit, case: CaseFile, reason: str, rule: str | None,
                  at: datetime) -> None:
        for visit_id in case.visits:
            visit: Visit | None = unit.find(UUID(visit_id))
            if visit is not None and visit.cancel(reason, rule, at):
                unit.save(visit)

    # --- a visit's steps (commands) ---

    def _visit(self, unit: Unit, visit_id: UUID) -> tuple[Visit, CaseFile]:
        visit: Visit | None = unit.find(visit_id)
        if visit is None:
            raise Unknown(f"no visit {visit_id}")
        case = self._case(unit, visit.loan_id)
        assert case is not None, "a visit is made only for a known case"
        return visit, case

    def visit(self, visit_id: UUID) -> Visit | None:
        found: Visit | None = self.find(visit_id)
        return found

    def _step(self, visit_id: UUID, act: Callable[[Unit, Visit, CaseFile], bool],
              key: Keyed | None = None) -> bool:
        """One step of a visit in one unit of work, tried again on a conflict: `act` decides
        (through the visit) and saves what else it changed; False when nothing changed (a
        retry of the same step). With an Idempotency-Key (the caller's key, the request's
        fingerprint) the same request again answers as the first time, another is 409."""
        def work() -> bool:
            unit = self.unit()
            visit, case = self._visit(unit, visit_id)
            if key is not None:
                said = visit.answer_to(*key)
                if said is not None:
                    return said
            changed = act(unit, visit, case)
            if key is not None:
                visit.remember_key(*key, changed)
            if changed or key is not None:
                unit.save(visit)
                self.commit(unit)
            return changed
        return self._retry(work)

    def _standings(self, unit: Unit, collector_ids: list[str]
                   ) -> list[tuple[policy.Standing, policy.AgencyStanding | None]]:
        """The registry's word on each collector named; C10 when one is not registered."""
        found = {c: self.standing(unit, c) for c in collector_ids}
        unknown = [c for c, standing in found.items() if standing is None]
        if unknown:
            raise Refused("C10", [f"{c}: not a registered collector" for c in unknown])
        if len(found) != len(collector_ids):
            raise Refused("C10", ["a collector is named more than once"])
        return [standing for standing in found.values() if standing is not None]

    def verify(self, visit_id: UUID, claimed: dict[str, str | int], by: str,
               now: datetime, key: Keyed | None = None) -> bool:
        return self._step(visit_id, lambda unit, visit, case: visit.verify(
            claimed, case_view(case), by, now), key)

    def schedule(self, visit_id: UUID, window: policy.Window, address_kind: str,
                 collector_ids: list[str], by: str, now: datetime,
                 key: Keyed | None = None) -> bool:
        def act(unit: Unit, visit: Visit, case: CaseFile) -> bool:
            collectors = self._standings(unit, collector_ids)
            named: list[Collector] = [unit.get(Collector.create_id(c)) for c in collector_ids]
            complaints = list(dict.fromkeys(c for n in named for c in n.open_complaints))
            if not visit.plan(window, address_kind, collectors, complaints, case_view(case),
                              self.pack_of(case), by, now):
                return False
            for collector in named:
                collector.assign(visit.visit_id)
                unit.save(collector)
            return True
        return self._step(visit_id, act, key)

    def decline(self, visit_id: UUID, declined_at: datetime, via: str, reason: str | None,
                lender: str | None, key: Keyed | None = None) -> bool:
        def act(unit: Unit, visit: Visit, case: CaseFile) -> bool:
            self._lenders(case, lender, visit_id)
            if not visit.decline(declined_at, via, reason):
                return False
            case.refuse(visit.visit_id)
            unit.save(case)
            return True
        return self._step(visit_id, act, key)

    def consent(self, visit_id: UUID, consented_at: datetime, via: str,
                lender: str | None, key: Keyed | None = None) -> bool:
        def act(unit: Unit, visit: Visit, case: CaseFile) -> bool:
            self._lenders(case, lender, visit_id)
            if visit.status == "requested" and case.refused_by is None:
                return False
            visit.consent(consented_at, via)
            case.consent()
            unit.save(case)
            return True
        return self._step(visit_id, act, key)

    @staticmethod
    def _lenders(case: CaseFile, lender: str | None, visit_id: UUID) -> None:
        if lender is not None and case.lender_id != lender:
            raise Unknown(f"no visit {visit_id}")

    def check_in(self, visit_id: UUID, collector_ids: list[str], credentials: dict[str, bool],
                 at: datetime, now: datetime, key: Keyed | None = None) -> bool:
        def act(unit: Unit, visit: Visit, case: CaseFile) -> bool:
            collectors = [found for found in (self.standing(unit, c) for c in collector_ids)
                          if found is not None]
            try:
                return visit.check_in(collector_ids, credentials, collectors, case_view(case),
                                      self.pack_of(case), at, now)
            except Refused as refused:
                unit.save(visit)  # the refusal itself is recorded (VisitBlocked)
                self.commit(unit)
                refused.recorded = True
                raise
        return self._step(visit_id, act, key)

    def recording_stored(self, visit_id: UUID, sha256: str, size: int, media_type: str,
                         now: datetime) -> bool:
        return self._step(visit_id, lambda unit, visit, case: visit.store_recording(
            sha256, size, media_type, now))

    def record(self, visit_id: UUID, record: dict[str, Any], now: datetime,
               key: Keyed | None = None) -> bool:
        return self._step(visit_id, lambda unit, visit, case: visit.write_up(record, now), key)

    def cancel(self, visit_id: UUID, reason: str, now: datetime,
               key: Keyed | None = None) -> bool:
        return self._step(visit_id, lambda unit, visit, case: visit.call_off(reason, now), key)

    # --- complaints (C14) ---

    def file_complaint(self, body: dict[str, Any], lender: str, key: str | None,
                       now: datetime) -> tuple[str, bool]:
        """File a complaint for the lender's loan; (complaint id, whether it is new). The same
        Idempotency-Key with the same body answers the same id."""
        loan_id = str(body["loan_id"])
        case = self.case_file(loan_id)
        if case is None or case.lender_id != lender:
            raise Unknown(f"no loan {loan_id} of this lender", field="loan_id")
        visit_id = body.get("visit_id")
        if visit_id is not None:
            visit = self.visit(UUID(str(visit_id)))
            if visit is None or visit.loan_id != loan_id:
                raise Unknown(f"no visit {visit_id} of loan {loan_id}", field="visit_id")
        collector_id = body.get("collector_id")
        if collector_id is not None and self.collector(str(collector_id)) is None:
            raise Unknown(f"no collector {collector_id}", field="collector_id")
        fingerprint = _fingerprint(body)
        complaint_id = uuid5(COMPLAINT_NAMESPACE, f"{lender}\0{key}") if key else uuid4()
        filed_at: datetime = body["filed_at"]
        pack = self.pack_of(case)

        def work() -> tuple[str, bool]:
            unit = self.unit()
            found: Complaint | None = unit.find(complaint_id)
            if found is not None:
                if found.fingerprint != fingerprint:
                    raise NotNow("idempotency_key_reused",
                                 "the key was used for another complaint")
                return str(complaint_id), False
            complaint = Complaint(str(complaint_id), loan_id, lender, str(body["about"]),
                                  None if visit_id is None else str(visit_id),
                                  None if collector_id is None else str(collector_id),
                                  body.get("details"), filed_at,
                                  policy.answer_by(filed_at, pack), fingerprint)
            unit.save(complaint)
            for against in self._against(unit, complaint):
                against.complaint_opened(str(complaint_id))
                unit.save(against)
            self.commit(unit)
            return str(complaint_id), True
        return self._retry(work)

    def _against(self, unit: Unit, complaint: Complaint) -> list[Collector]:
        """The collectors a complaint is about: the one named, or those of the visit."""
        ids: list[str] = []
        if complaint.collector_id is not None:
            ids.append(complaint.collector_id)
        if complaint.visit_id is not None:
            visit: Visit | None = unit.find(UUID(complaint.visit_id))
            if visit is not None:
                ids += [c for c in visit.collector_ids() if c not in ids]
        return [found for found in (unit.find(Collector.create_id(c)) for c in ids) if found]

    def resolve_complaint(self, complaint_id: UUID, outcome: str, resolved_at: datetime,
                          by: str) -> bool:
        def work() -> bool:
            unit = self.unit()
            complaint: Complaint | None = unit.find(complaint_id)
            if complaint is None:
                raise Unknown(f"no complaint {complaint_id}")
            changed = complaint.resolve(outcome, resolved_at, by)
            if changed:
                unit.save(complaint)
                for against in self._against(unit, complaint):
                    against.complaint_closed(str(complaint_id))
                    unit.save(against)
                self.commit(unit)
            return changed
        return self._retry(work)

    def fire(self, aggregate_id: UUID, kind: str, now: datetime) -> None:
        """An agenda entry fell due: a complaint's days to answer ran out (C14), or a visit
        checked in to is not written up in time (C12). Saved even when answered (written up)
        meanwhile, so its entry leaves the agenda."""
        unit = self.unit()
        if kind == "Complaint":
            complaint: Complaint = unit.get(aggregate_id)
            complaint.fall_overdue(now)
            unit.save(complaint)
        elif kind == "Visit":
            visit: Visit = unit.get(aggregate_id)
            visit.fall_behind(now)
            unit.save(visit)
        else:
            raise ValueError(f"nothing of kind {kind!r} is due in the visit service")
        self.commit(unit)

    def complaint(self, complaint_id: UUID) -> Complaint | None:
        found: Complaint | None = self.find(complaint_id)
        return found

    # --- queries ---

    def visits_of_loan(self, loan_id: str) -> list[Visit]:
        case = self.case_file(loan_id)
        if case is None:
            return []
        return [self.repository.get(UUID(v)) for v in case.visits]

    def visits_of_collector(self, collector_id: str) -> list[Visit]:
        collector = self.collector(collector_id)
        if collector is None:
            return []
        return [self.repository.get(UUID(v)) for v in collector.visits]

    def visits_of_lender(self, lender_id: str | None, limit: int = 500) -> list[Visit]:
        rows = self.extras.listed(VISIT_KIND, lender_id, {}, None, limit)
        return [self.repository.get(row[0]) for row in rows]


# The LoanTerms fields a CaseFile keeps (CaseOpened/CaseUpdated without their own fields).
_TERMS = ("lender_id", "borrower", "amount_overdue", "currency", "due_date", "days_past_due",
          "repayment_channel", "verification_channel", "contacts", "language", "jurisdiction")
