"""Visit's pure rules, with time passed in: a verified debtor (C7), notice kept (C8), the
collectors' standing (C10), hours and place (C11), the days to answer a complaint (C14).

Each check answers the problems it finds as short sentences (empty: none), so the aggregate
that decides can name them in its refusal. Days written without a time (a letter's validity,
a certification's, an agency's review) are inclusive and read in the borrower's zone: the
visit happens there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from shared.policy_pack import PolicyPack

VERIFIED_FIELDS = ("name", "phone", "amount_overdue", "days_past_due")
WRITE_UP_WITHIN = timedelta(hours=24)  # C12: a visit checked in to is written up within this
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read aloud over a phone
CODE_LENGTH = 10


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def local(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        return self.start.astimezone(zone), self.end.astimezone(zone)

    def days(self, zone: ZoneInfo) -> tuple[date, date]:
        start, end = self.local(zone)
        return start.date(), end.date()

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end


@dataclass(frozen=True)
class Letter:
    letter_id: str
    lender_id: str
    valid_from: date
    valid_until: date


@dataclass(frozen=True)
class Standing:
    """What the registry says of a collector, as the rules read it."""

    collector_id: str
    name: str
    agency_id: str | None
    agency: str | None
    certified_until: date
    letter: Letter
    revoked: bool
    code: str = ""  # the verification code printed on the letter


@dataclass(frozen=True)
class AgencyStanding:
    agency_id: str
    name: str
    authorised_lenders: tuple[str, ...]
    next_review_due: date


def collector_problems(collector: Standing, agency: AgencyStanding | None, lender_id: str,
                       first: date, last: date) -> list[str]:
    """C10: what keeps this collector from visiting for `lender_id` on days first..last."""
    who = collector.collector_id
    problems: list[str] = []
    if collector.revoked:
        problems.append(f"{who}: registration revoked")
    if collector.certified_until < last:
        problems.append(f"{who}: certification valid until {collector.certified_until}")
    letter = collector.letter
    if letter.lender_id != lender_id:
        problems.append(f"{who}: authorisation letter {letter.letter_id} is for another lender")
    elif letter.valid_from > first or letter.valid_until < last:
        problems.append(f"{who}: authorisation letter {letter.letter_id} valid "
                        f"{letter.valid_from}..{letter.valid_until}")
    if collector.agency_id is not None:
        if agency is None:
            problems.append(f"{who}: agency {collector.agency_id} is not registered")
        else:
            if lender_id not in agency.authorised_lenders:
                problems.append(f"{who}: agency {agency.agency_id} is not authorised by "
                                f"this lender")
            if agency.next_review_due < last:
                problems.append(f"{who}: agency {agency.agency_id} review was due "
                                f"{agency.next_review_due}")
    return problems


def too_few(count: int, pack: PolicyPack) -> str | None:
    need = pack.min_collectors_per_visit
    if count < need:
        return f"{count} collector(s); the {pack.name} pack needs at least {need}"
    return None


def c11_window(window: Window, zone: ZoneInfo, pack: PolicyPack) -> list[str]:
    """The window lies inside one local day's allowed hours."""
    start, end = window.local(zone)
    hours = pack.contact_hours
    problems = []
    if start.date() != end.date():
        problems.append(f"the window {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} spans "
                        f"more than one local day")
    elif not (hours.start <= start.time() and end.time() <= hours.end):
        problems.append(f"the window {start:%H:%M}-{end:%H:%M} local lies outside the "
                        f"allowed hours {hours}")
    return problems


def in_hours(moment: datetime, zone: ZoneInfo, pack: PolicyPack) -> bool:
    return pack.contact_hours.contains(moment.astimezone(zone).time())


def c8_check_in(delivered_at: datetime | None, window: Window, at: datetime,
                pack: PolicyPack) -> list[str]:
    """C8: the notice reached the borrower the pack's lead before the window, and the
    collectors arrive inside it."""
    problems = []
    lead = pack.notice_lead
    if delivered_at is None:
        problems.append("no notice of the visit has been delivered to the borrower")
    elif window.start - delivered_at < lead:
        problems.append(f"the notice was delivered {_hours(window.start - delivered_at)} "
                        f"before the window; the {pack.name} pack needs {_hours(lead)}")
    if not window.holds(at):
        problems.append(f"checked in at {at.isoformat()}, outside the notified window "
                        f"{window.start.isoformat()}..{window.end.isoformat()}")
    return problems


def _hours(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    sign = "-" if minutes < 0 else ""
    minutes = abs(minutes)
    return f"{sign}{minutes // 60} h {minutes % 60:02d} min"


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _same_amount(a: str, b: str) -> bool:
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def mismatches(claimed: dict[str, str | int], actual: dict[str, str | int]) -> list[str]:
    """C7: the fields whose claimed value differs from the case's (names of fields only)."""
    differ = []
    if not _same_name(str(claimed["name"]), str(actual["name"])):
        differ.append("name")
    if _digits(str(claimed["phone"])) != _digits(str(actual["phone"])):
        differ.append("phone")
    if not _same_amount(str(claimed["amount_overdue"]), str(actual["amount_overdue"])):
        differ.append("amount_overdue")
    if int(claimed["days_past_due"]) != int(actual["days_past_due"]):
        differ.append("days_past_due")
    return differ


def dpd_now(dpd_at_request: int, requested_at: datetime, zone: ZoneInfo,
            now: datetime) -> int:
    """The case's DPD today: the figure escalation stated with the request, aged by the local
    days since (a visit lives only while no hardship pause stops the ageing)."""
    days = (now.astimezone(zone).date() - requested_at.astimezone(zone).date()).days
    return dpd_at_request + max(days, 0)


def answer_by(filed_at: datetime, pack: PolicyPack) -> datetime:
    """C14: the moment by which a complaint must have its answer."""
    return filed_at + timedelta(days=pack.complaint_answer_days)
