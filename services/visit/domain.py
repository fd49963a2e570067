"""Visit's aggregates: the registry (Agency, Collector), what the visit service knows of a case
(CaseFile), one Visit per request from escalation, and Complaint.

Decisions are made here, with time passed in: a Visit verifies, schedules, checks in and is
written up only when its rules hold, and otherwise raises `Refused` naming the rule. The
facts a decision needs from other aggregates (the case, the collectors' standing) are handed
in as plain values by the application.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.domain import Aggregate, event

from shared.policy_pack import PolicyPack
from shared.store import Listing

from services.visit import policy

AGENCY_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/agencies")
COLLECTOR_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/collectors")
CASE_FILE_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/visit-case-files")
VISIT_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/visits")

OPEN_STATUSES = ("requested", "verified", "scheduled", "notified")  # nobody has gone yet
CODE_KIND = "verification-code"
VISIT_KIND = "visit"


class Refused(Exception):
    """A conduct rule refuses the step: a 409 naming the rule, its reason and details."""

    recorded = False  # True once the refusal is stored as a Blocked event (counted there)

    def __init__(self, rule: str, problems: list[str], **details: Any) -> None:
        super().__init__(f"{rule}: {'; '.join(problems)}")
        self.rule = rule
        self.problems = problems
        self.details = details


class NotNow(Exception):
    """A step the visit's state does not allow (`code` says why); not a conduct rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- the registry ---


class Agency(Aggregate):
    @event("Registered")
    def __init__(self, agency_id: str, details: dict[str, Any], registered_at: datetime) -> None:
        self.agency_id = agency_id
        self.details = details
        self.registered_at = registered_at

    @staticmethod
    def create_id(agency_id: str) -> UUID:
        return uuid5(AGENCY_NAMESPACE, agency_id)

    @event("Reviewed")
    def review(self, details: dict[str, Any], registered_at: datetime) -> None:
        self.details = details
        self.registered_at = registered_at

    def standing(self) -> policy.AgencyStanding:
        return policy.AgencyStanding(
            agency_id=self.agency_id, name=str(self.details["name"]),
            authorised_lenders=tuple(self.details["authorised_lenders"]),
            next_review_due=date.fromisoformat(self.details["next_review_due"]))


class Collector(Aggregate):
    """A collector, their latest registration (certification, letter), whether revoked, the
    visits they are scheduled on and the complaints open against them."""

    @event("Registered")
    def __init__(self, collector_id: str, details: dict[str, Any], code: str,
                 registered_at: datetime) -> None:
        self.collector_id = collector_id
        self.details = details
        self.code = code
        self.registered_at = registered_at
        self.revoked_at: datetime | None = None
        self.revoke_reason: str | None = None
        self.visits: list[str] = []
        self.open_complaints: list[str] = []

    @staticmethod
    def create_id(collector_id: str) -> UUID:
        return uuid5(COLLECTOR_NAMESPACE, collector_id)

    @event("Reregistered")
    def register_again(self, details: dict[str, Any], code: str,
                       registered_at: datetime) -> None:
        """A new letter or certification: the latest is in force and revocation ends."""
        self.details = details
        self.code = code
        self.registered_at = registered_at
        self.revoked_at = None
        self.revoke_reason = None

    @event("Revoked")
    def revoke(self, reason: str, revoked_at: datetime) -> None:
        self.revoked_at = revoked_at
        self.revoke_reason = reason

    @event("Assigned")
    def assign(self, visit_id: str) -> None:
        if visit_id not in self.visits:
            self.visits.append(visit_id)

    @event("ComplaintOpened")
    def complaint_opened(self, complaint_id: str) -> None:
        if complaint_id not in self.open_complaints:
            self.open_complaints.append(complaint_id)

    @event("ComplaintClosed")
    def complaint_closed(self, complaint_id: str) -> None:
        if complaint_id in self.open_complaints:
            self.open_complaints.remove(complaint_id)

    @property
    def name(self) -> str:
        return str(self.details["name"])

    @property
    def agency_id(self) -> str | None:
        value = self.details.get("agency_id")
        return None if value is None else str(value)

    def letter(self) -> policy.Letter:
        letter = self.details["authorisation_letter"]
        return policy.Letter(letter_id=letter["letter_id"], lender_id=letter["lender_id"],
                             valid_from=date.fromisoformat(letter["valid_from"]),
                             valid_until=date.fromisoformat(letter["valid_until"]))

    def standing(self, agency_name: str | None = None) -> policy.Standing:
        return policy.Standing(
            collector_id=self.collector_id, name=self.name, agency_id=self.agency_id,
            agency=agency_name or self.details.get("agency"),
            certified_until=date.fromisoformat(self.details["certification"]["valid_until"]),
            letter=self.letter(), revoked=self.revoked_at is not None, code=self.code)

    def listing(self) -> Listing:
        """Found by the code printed on the letter (GET /v1/verify/{code})."""
        return Listing(kind=CODE_KIND, owner=self.code, key=self.collector_id, facets={})


# --- what the visit service knows of a case ---


class CaseFile(Aggregate):
    """A loan as the visit service needs it: the reported terms (who, where, how much), the
    case open or closed, the holds that stop visits (C3), a refusal not yet withdrawn (C9),
    the contact history in short and the promises, and the visits asked for."""

    @event("Opened")
    def __init__(self, loan_id: str, terms: dict[str, Any], opened_at: datetime) -> None:
        self.loan_id = loan_id
        self.terms = terms
        self.opened_at = opened_at
        self.status = "open"
        self.closed_at: datetime | None = None
        self.holds: dict[str, list[str] | None] = {}  # hold id -> channels (None: all)
        self.refused_by: str | None = None  # the visit whose refusal stands
        self.hardship: list[str] = []  # pause ids of hardship pauses in force
        self.visits: list[str] = []
        self.contacts: dict[str, int] = {}  # "sms_sent", "call_no_answer", ...
        self.last_contact_at: datetime | None = None
        self.promises: dict[str, dict[str, Any]] = {}
        self.stage: str | None = None

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(CASE_FILE_NAMESPACE, loan_id)

    @property
    def lender_id(self) -> str:
        return str(self.terms["lender_id"])

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(str(self.terms["borrower"]["timezone"]))

    @property
    def borrower(self) -> dict[str, Any]:
        return dict(self.terms["borrower"])

    def addresses(self) -> dict[str, str]:
        """The kinds of address on record, with the address."""
        found = {}
        for kind in ("residence", "workplace"):
            value = self.terms["borrower"].get(f"{kind}_address")
            if value and str(value).strip():
                found[kind] = str(value)
        return found

    def visits_stopped(self) -> str | None:
        """C3: why visits may not go ahead now (a dispute, a cease naming visits), or None."""
        for hold_id, channels in sorted(self.holds.items()):
            if channels is None or "visit" in channels:
                return f"contact is held ({hold_id.split(':', 1)[0]})"
        return None

    @event("TermsChanged")
    def change_terms(self, terms: dict[str, Any]) -> None:
        self.terms = terms

    @event("Reopened")
    def reopen(self, terms: dict[str, Any], opened_at: datetime) -> None:
        self.terms = terms
        self.opened_at = opened_at
        self.status = "open"
        self.closed_at = None

    @event("Closed")
    def close(self, closed_at: datetime) -> None:
        self.status = "closed"
        self.closed_at = closed_at

    @event("Held")
    def hold(self, hold_id: str, channels: list[str] | None) -> None:
        self.holds[hold_id] = channels

    def release(self, hold_id: str) -> None:
        if hold_id in self.holds:
            self._released(hold_id)

    @event("Released")
    def _released(self, hold_id: str) -> None:
        self.holds.pop(hold_id, None)

    @event("HardshipStarted")
    def hardship_started(self, pause_id: str) -> None:
        if pause_id not in self.hardship:
            self.hardship.append(pause_id)

    def hardship_over(self, pause_id: str) -> None:
        if pause_id in self.hardship:
            self._hardship_over(pause_id)

    @event("HardshipOver")
    def _hardship_over(self, pause_id: str) -> None:
        self.hardship.remove(pause_id)

    @event("VisitAdded")
    def add_visit(self, visit_id: str) -> None:
        if visit_id not in self.visits:
            self.visits.append(visit_id)

    @event("Refused")
    def refuse(self, visit_id: str) -> None:
        self.refused_by = visit_id

    @event("Consented")
    def consent(self) -> None:
        self.refused_by = None

    @event("Contacted")
    def contacted(self, kind: str, at: datetime) -> None:
        self.contacts[kind] = self.contacts.get(kind, 0) + 1
        if self.last_contact_at is None or at > self.last_contact_at:
            self.last_contact_at = at

    @event("PromiseNoted")
    def note_promise(self, promise_id: str, promise: dict[str, Any]) -> None:
        self.promises[promise_id] = {**self.promises.get(promise_id, {}), **promise}

    def see_stage(self, stage: str) -> None:
        if stage != self.stage:
            self._stage_seen(stage)

    @event("StageSeen")
    def _stage_seen(self, stage: str) -> None:
        self.stage = stage


@dataclass(frozen=True)
class CaseView:
    """The facts of a case a visit's decisions read, taken from its CaseFile."""

    loan_id: str
    lender_id: str
    status: str
    zone: ZoneInfo
    addresses: dict[str, str]
    facts: dict[str, str | int]  # name, phone, amount_overdue (as reported)
    stopped: str | None
    refused_by: str | None


def case_view(case: CaseFile) -> CaseView:
    borrower = case.terms["borrower"]
    return CaseView(loan_id=case.loan_id, lender_id=case.lender_id, status=case.status,
                    zone=case.zone, addresses=case.addresses(),
                    facts={"name": str(borrower["name"]), "phone": str(borrower["phone"]),
                           "amount_overdue": str(case.terms["amount_overdue"])},
                    stopped=case.visits_stopped(), refused_by=case.refused_by)


# --- the visit ---


class Visit(Aggregate):
    """One field visit, from escalation's request to its write-up (or its end)."""

    @event("Requested")
    def __init__(self, loan_id: str, lender_id: str, reasons: list[dict[str, Any]],
                 stage: str | None, policy_version: str, requested_at: datetime,
                 dpd_at_request: int, cause: str) -> None:
        self.loan_id = loan_id
        self.lender_id = lender_id
        self.reasons = reasons
        self.stage = stage
        self.policy_version = policy_version
        self.requested_at = requested_at
        self.dpd_at_request = dpd_at_request
        self.cause = cause
        self.status = "requested"
        self.steps: list[dict[str, Any]] = [{"step": "requested", "at": requested_at}]
        # Idempotency-Keys used on this visit's steps: the request's fingerprint, what it did.
        self.keys: dict[str, list[Any]] = {}
        self.verified: dict[str, Any] | None = None
        self.schedule: dict[str, Any] | None = None
        self.notice: dict[str, Any] = {}
        self.declined: dict[str, Any] | None = None
        self.checked_in: dict[str, Any] | None = None
        self.recordings: dict[str, dict[str, Any]] = {}  # sha256 -> {bytes, media_type, ...}
        self.record: dict[str, Any] | None = None
        self.write_up_overdue_at: datetime | None = None
        self.cancelled: dict[str, Any] | None = None
        self.blocked: list[dict[str, Any]] = []

    @staticmethod
    def create_id(cause: str) -> UUID:
        """One visit per VisitRequested: named by the request's event id."""
        return uuid5(VISIT_NAMESPACE, cause)

    @property
    def visit_id(self) -> str:
        return str(self.id)

    def answer_to(self, key: str, fingerprint: str) -> bool | None:
        """What a step sent with `key` did the first time (whether it changed the visit);
        None for a key not used on this visit. The key with another request: 409."""
        used = self.keys.get(key)
        if used is None:
            return None
        if used[0] != fingerprint:
            raise NotNow("idempotency_key_reused",
                         "this Idempotency-Key was used for another request")
        return bool(used[1])

    @event("KeyUsed")
    def remember_key(self, key: str, fingerprint: str, changed: bool) -> None:
        self.keys[key] = [fingerprint, changed]

    def window(self) -> policy.Window | None:
        if self.schedule is None:
            return None
        return policy.Window(self.schedule["scheduled_start"], self.schedule["scheduled_end"])

    def collector_ids(self) -> list[str]:
        return list(self.schedule["collector_ids"]) if self.schedule else []

    def dpd(self, zone: ZoneInfo, now: datetime) -> int:
        return policy.dpd_now(self.dpd_at_request, self.requested_at, zone, now)

    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def listing(self) -> Listing:
        return Listing(kind=VISIT_KIND, owner=self.lender_id,
                       key=f"{self.requested_at.isoformat()}|{self.visit_id}",
                       facets={"loan_id": self.loan_id, "status": self.status})

    def _ended(self) -> None:
        if self.status == "cancelled":
            raise NotNow("visit_cancelled", f"the visit was cancelled "
                         f"({self.cancelled['reason'] if self.cancelled else ''})")
        if self.status == "recorded":
            raise NotNow("visit_recorded", "the visit is written up")

    # --- C7 ---

    def verify(self, claimed: dict[str, str | int], case: CaseView, by: str,
               now: datetime) -> bool:
        """C7: check the back office's facts against the case; False when already verified
        with the same facts (a retry)."""
        self._ended()
        if self.status == "declined":
            raise Refused("C9", ["the borrower declined this visit"])
        if case.status != "open":
            raise Refused("C4", ["the case is closed"])
        actual = {**case.facts, "days_past_due": self.dpd(case.zone, now)}
        differ = policy.mismatches(claimed, actual)
        if differ:
            raise Refused("C7", [f"{', '.join(differ)} differ from the case"], fields=differ)
        if self.verified is not None:
            return False
        self._verify(list(policy.VERIFIED_FIELDS), by, now)
        return True

    @event("Verified")
    def _verify(self, checked: list[str], verified_by: str, verified_at: datetime) -> None:
        self.verified = {"checked": checked, "verified_by": verified_by,
                         "verified_at": verified_at}
        if self.status == "requested":
            self.status = "verified"
        self.steps.append({"step": "verified", "at": verified_at})

    # --- scheduling: C3, C4, C7, C9, C10, C11 ---

    def plan(self, window: policy.Window, address_kind: str,
             collectors: list[tuple[policy.Standing, policy.AgencyStanding | None]],
             open_complaints: list[str], case: CaseView, pack: PolicyPack, by: str,
             now: datetime) -> bool:
        """Schedule the visit; False when already scheduled exactly so (a retry)."""
        self._ended()
        ids = [standing.collector_id for standing, _ in collectors]
        if self.schedule is not None and self.status != "declined":
            if (window, address_kind, ids) == (self.window(), self.schedule["address_kind"],
                                               self.collector_ids()):
                return False
            raise NotNow("already_scheduled", "the visit is already scheduled; cancel it and "
                         "ask for another to change the time, place or collectors")
        if case.status != "open":
            raise Refused("C4", ["the case is closed"])
        if case.stopped is not None:
            raise Refused("C3", [f"visits may not go ahead: {case.stopped}"])
        if self.verified is None:
            raise Refused("C7", ["the debtor's data has not been verified for this visit"])
        if self.status == "declined" or case.refused_by is not None:
            raise Refused("C9", ["the borrower refused a visit and has not agreed since"])
        first, last = window.days(case.zone)
        problems = [p for p in [policy.too_few(len(ids), pack)] if p]
        for standing, agency in collectors:
            problems += policy.collector_problems(standing, agency, case.lender_id, first, last)
        if problems:
            raise Refused("C10", problems)
        problems = policy.c11_window(window, case.zone, pack)
        if address_kind not in case.addresses:
            problems.append(f"the borrower has no {address_kind} address on record")
        if window.start <= now:
            problems.append("the window has already begun")
        if problems:
            raise Refused("C11", problems)
        self._plan(window.start, window.end, address_kind, ids,
                   [{"collector_id": s.collector_id, "name": s.name, "agency": s.agency,
                     "letter_id": s.letter.letter_id, "verification_code": s.code}
                    for s, _ in collectors],
                   open_complaints, by, now)
        return True

    @event("Scheduled")
    def _plan(self, scheduled_start: datetime, scheduled_end: datetime, address_kind: str,
              collector_ids: list[str], collectors: list[dict[str, Any]],
              open_complaints: list[str], scheduled_by: str, scheduled_at: datetime) -> None:
        self.schedule = {"scheduled_start": scheduled_start, "scheduled_end": scheduled_end,
                         "address_kind": address_kind, "collector_ids": collector_ids,
                         "collectors": collectors, "open_complaints": open_complaints,
                         "scheduled_by": scheduled_by, "scheduled_at": scheduled_at}
        self.status = "scheduled"
        self.steps.append({"step": "scheduled", "at": scheduled_at})

    # --- the notice (C8), sent by the reminder service ---

    def notice_sent(self, reminder_id: str, channel: str, sent_at: datetime) -> bool:
        """The notice of this schedule went out; one sent before the schedule was made (of an
        earlier schedule of the visit) is not its notice."""
        if self.schedule is None or self.notice.get("sent_at") is not None \
                or sent_at < self.schedule["scheduled_at"]:
            return False
        self._notice_sent(reminder_id, channel, sent_at)
        return True

    @event("NoticeSent")
    def _notice_sent(self, reminder_id: str, channel: str, sent_at: datetime) -> None:
        self.notice.update(reminder_id=reminder_id, channel=channel, sent_at=sent_at)
        self.steps.append({"step": "notice_sent", "at": sent_at})

    def notice_delivered(self, reminder_id: str, channel: str, delivered_at: datetime) -> bool:
        """C8: the receipt of the notice this schedule sent, never one of a message not sent
        (or sent for an earlier schedule), nor one dated before its send."""
        if self.schedule is None or self.notice.get("delivered_at") is not None:
            return False
        sent_at = self.notice.get("sent_at")
        if self.notice.get("reminder_id") != reminder_id or sent_at is None \
                or delivered_at < sent_at:
            return False
        self._notice_delivered(reminder_id, channel, delivered_at)
        return True

    @event("NoticeDelivered")
    def _notice_delivered(self, reminder_id: str, channel: str,
                          delivered_at: datetime) -> None:
        self.notice.update(reminder_id=reminder_id, channel=channel,
                           delivered_at=delivered_at)
        if self.status == "scheduled":
            self.status = "notified"
        self.steps.append({"step": "notice_delivered", "at": delivered_at})

    # --- C9 ---

    def decline(self, declined_at: datetime, via: str, reason: str | None) -> bool:
        if self.status == "declined":
            return False
        self._ended()
        if self.checked_in is not None:
            raise NotNow("visit_under_way", "the collectors have checked in; the refusal is "
                         "written up in the visit's record")
        self._decline(declined_at, via, reason)
        return True

    @event("Declined")
    def _decline(self, declined_at: datetime, via: str, reason: str | None) -> None:
        self.declined = {"declined_at": declined_at, "via": via, "reason": reason}
        self.status = "declined"
        self.steps.append({"step": "declined", "at": declined_at})

    def consent(self, consented_at: datetime, via: str) -> bool:
        """After a refusal the borrower agreed: the visit starts again from verification."""
        if self.status != "declined":
            raise NotNow("not_declined", "only a declined visit can be agreed to again")
        self._consent(consented_at, via)
        return True

    @event("Consented")
    def _consent(self, consented_at: datetime, via: str) -> None:
        self.status = "requested"
        self.verified = None
        self.schedule = None
        self.notice = {}
        self.steps.append({"step": "consented", "at": consented_at, "via": via})

    # --- check-in: C4, C8, C9, C10, C11 ---

    def check_in(self, collector_ids: list[str], credentials: dict[str, bool],
                 collectors: list[tuple[policy.Standing, policy.AgencyStanding | None]],
                 case: CaseView, pack: PolicyPack, at: datetime, now: datetime) -> bool:
        """Check the collectors in, or record the refusal and raise it."""
        if self.checked_in is not None:
            if (collector_ids, credentials, at) == (self.checked_in["collector_ids"],
                                                   self.checked_in["credentials"],
                                                   self.checked_in["checked_in_at"]):
                return False
            raise NotNow("already_checked_in", "the collectors have already checked in")
        self._ended()
        try:
            self._may_check_in(collector_ids, credentials, collectors, case, pack, at)
        except Refused as refused:
            self._block("check_in", refused.rule, "; ".join(refused.problems)[:500],
                        collector_ids, now)
            raise
        self._check_in(collector_ids, credentials, at, self.schedule["address_kind"]
                       if self.schedule else None)
        return True

    def _may_check_in(self, collector_ids: list[str], credentials: dict[str, bool],
                      collectors: list[tuple[policy.Standing, policy.AgencyStanding | None]],
                      case: CaseView, pack: PolicyPack, at: datetime) -> None:
        if case.status != "open":
            raise Refused("C4", ["the case is closed"])
        if self.status == "declined" or case.refused_by is not None:
            raise Refused("C9", ["the borrower refused the visit"])
        window = self.window()
        if window is None:
            raise Refused("C8", ["the visit has no notified time and place"])
        problems = policy.c8_check_in(self.notice.get("delivered_at"), window, at, pack)
        if problems:
            raise Refused("C8", problems)
        day = at.astimezone(case.zone).date()
        problems = [p for p in [policy.too_few(len(set(collector_ids)), pack)] if p]
        if len(set(collector_ids)) != len(collector_ids):
            problems.append("a collector is named more than once")
        strangers = [c for c in collector_ids if c not in self.collector_ids()]
        if strangers:
            problems.append(f"not scheduled for this visit: {', '.join(strangers)}")
        missing = [name for name, shown in credentials.items() if not shown]
        if missing:
            problems.append(f"not presented: {', '.join(missing)}")
        for standing, agency in collectors:
            problems += policy.collector_problems(standing, agency, case.lender_id, day, day)
        if problems:
            raise Refused("C10", problems)
        if not policy.in_hours(at, case.zone, pack):
            local = at.astimezone(case.zone)
            said = f"{local:%H:%M} local is outside the allowed hours {pack.contact_hours}"
            raise Refused("C11", [said])

    @event("Blocked")
    def _block(self, action: str, rule: str, reason: str, collector_ids: list[str],
               at: datetime) -> None:
        self.blocked.append({"action": action, "rule": rule, "reason": reason,
                             "collector_ids": collector_ids, "at": at})

    @event("CheckedIn")
    def _check_in(self, collector_ids: list[str], credentials: dict[str, bool],
                  checked_in_at: datetime, address_kind: str | None) -> None:
        self.checked_in = {"collector_ids": collector_ids, "credentials": credentials,
                           "checked_in_at": checked_in_at, "address_kind": address_kind}
        self.status = "checked_in"
        self.steps.append({"step": "checked_in", "at": checked_in_at})

    # --- C12 ---

    def store_recording(self, sha256: str, size: int, media_type: str,
                        now: datetime) -> bool:
        if sha256 in self.recordings:
            return False
        self.may_take_recording()
        self._store_recording(sha256, size, media_type, now)
        return True

    def may_take_recording(self) -> None:
        """A recording comes between the check-in and the write-up."""
        if self.checked_in is None:
            raise NotNow("not_checked_in", "a recording is uploaded after the check-in")
        if self.record is not None:
            raise NotNow("visit_recorded", "the visit is written up: no recording is added")

    @event("RecordingStored")
    def _store_recording(self, recording_sha256: str, size: int, media_type: str,
                         stored_at: datetime) -> None:
        self.recordings[recording_sha256] = {"bytes": size, "media_type": media_type,
                                             "stored_at": stored_at}
        self.steps.append({"step": "recording_stored", "at": stored_at})

    def write_up(self, record: dict[str, Any], now: datetime) -> bool:
        """C12: the write-up names a stored recording; False when it is the same write-up
        again (a retry)."""
        if self.record is not None:
            if record == self.record:
                return False
            raise NotNow("visit_recorded", "the visit is already written up")
        if self.checked_in is None:
            raise NotNow("not_checked_in", "only a visit the collectors checked in to is "
                         "written up")
        sha = record["recording_sha256"]
        if sha not in self.recordings:
            raise Refused("C12", ["no recording with that SHA-256 is stored for this visit"
                                  if self.recordings else "the visit's recording has not been "
                                  "uploaded"], recording_sha256=sha)
        if record["ended_at"] < self.checked_in["checked_in_at"]:
            raise NotNow("ended_before_check_in", "`ended_at` is before the check-in")
        self._write_up(record, now)
        return True

    def next_due(self) -> datetime | None:
        """C12: on the agenda from the check-in until written up, due when the write-up is
        late (said once)."""
        if self.checked_in is None or self.record is not None \
                or self.write_up_overdue_at is not None or self.status != "checked_in":
            return None
        checked_in_at: datetime = self.checked_in["checked_in_at"]
        return checked_in_at + policy.WRITE_UP_WITHIN

    def fall_behind(self, now: datetime) -> bool:
        """C12: checked in to and not written up in time. Said once (VisitWriteUpOverdue), for
        the operators and for the audit, which judges the deadline by the loan's leaves."""
        due = self.next_due()
        if due is None or now < due:
            return False
        self._write_up_overdue(now)
        return True

    @event("WriteUpOverdue")
    def _write_up_overdue(self, at: datetime) -> None:
        self.write_up_overdue_at = at

    @event("Recorded")
    def _write_up(self, record: dict[str, Any], recorded_at: datetime) -> None:
        self.record = record
        self.status = "recorded"
        self.steps.append({"step": "recorded", "at": record["ended_at"]})

    # --- the end ---

    def cancel(self, reason: str, rule: str | None, now: datetime) -> bool:
        """Call the visit off (C4 closed, C3 a dispute or a cease, hardship, ops); False when
        it is over already or nobody is to go any more."""
        if not (self.is_open() or (self.status == "declined" and rule == "C4")):
            return False
        self._cancel(reason, rule, now)
        return True

    def call_off(self, reason: str, now: datetime) -> bool:
        """Ops call the visit off; one the collectors have checked in to is written up."""
        if self.checked_in is not None:
            raise NotNow("visit_under_way", "the collectors have checked in; the visit is "
                         "written up, not cancelled")
        return self.cancel(reason, None, now)

    @event("Cancelled")
    def _cancel(self, reason: str, rule: str | None, cancelled_at: datetime) -> None:
        self.cancelled = {"reason": reason, "rule": rule, "cancelled_at": cancelled_at}
        self.status = "cancelled"
        self.steps.append({"step": "cancelled", "at": cancelled_at})


class Complaint(Aggregate):
    """C14: a complaint about a visit, a collector, a call or a message, until answered."""

    @event("Filed")
    def __init__(self, complaint_id: str, loan_id: str, lender_id: str, about: str,
                 visit_id: str | None, collector_id: str | None, details: str | None,
                 filed_at: datetime,
                 answer_by: datetime, fingerprint: str) -> None:
        self.loan_id = loan_id
        self.lender_id = lender_id
        self.about = about
        self.visit_id = visit_id
        self.collector_id = collector_id
        self.details = details
        self.filed_at = filed_at
        self.answer_by = answer_by
        self.fingerprint = fingerprint
        self.resolution: dict[str, Any] | None = None
        self.overdue_at: datetime | None = None

    @staticmethod
    def create_id(complaint_id: str) -> UUID:
        return UUID(complaint_id)

    @event("Resolved")
    def _resolve(self, outcome: str, resolved_at: datetime, resolved_by: str) -> None:
        self.resolution = {"outcome": outcome, "resolved_at": resolved_at,
                           "resolved_by": resolved_by}

    def next_due(self) -> datetime | None:
        """On the agenda until answered: due when its days to answer run out (said once)."""
        return self.answer_by if self.resolution is None and self.overdue_at is None else None

    @event("Overdue")
    def _overdue(self, at: datetime) -> None:
        self.overdue_at = at

    def fall_overdue(self, now: datetime) -> bool:
        """C14: the days to answer ran out with no answer. Said once (ComplaintOverdue), for
        the lender's operators and for the audit, which judges the deadline by the loan's
        leaves: this one shows it passed. Nothing when answered or not yet due."""
        if self.resolution is not None or self.overdue_at is not None or now < self.answer_by:
            return False
        self._overdue(now)
        return True

    def resolve(self, outcome: str, resolved_at: datetime, resolved_by: str) -> bool:
        if self.resolution is not None:
            if self.resolution["outcome"] == outcome:
                return False
            raise NotNow("complaint_resolved", "the complaint has its answer already")
        if resolved_at < self.filed_at:
            raise NotNow("resolved_before_filed", "`resolved_at` is before `filed_at`")
        self._resolve(outcome, resolved_at, resolved_by)
        return True
