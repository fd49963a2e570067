"""The numbers of each jurisdiction's conduct rules (DOMAIN.md), kept once and versioned.

Enforcement lives in the service that acts, verification in audit; both read these numbers.
A lender may tighten a pack (`tighten`), never loosen it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from decimal import Decimal


@dataclass(frozen=True)
class DailyWindow:
    """Allowed local hours [start, end): C1 contact and C11 visits."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        return self.start <= local < self.end

    def next_opening(self, local: datetime) -> datetime:
        """The next moment, in the same zone, at which the window opens (today or tomorrow)."""
        opening = datetime.combine(local.date(), self.start, tzinfo=local.tzinfo)
        if local.time() >= self.start:
            opening = datetime.combine(local.date() + timedelta(days=1), self.start,
                                       tzinfo=local.tzinfo)
        return opening

    def within(self, other: DailyWindow) -> bool:
        return other.start <= self.start and self.end <= other.end


@dataclass(frozen=True)
class PolicyPack:
    name: str
    version: str
    contact_hours: DailyWindow          # C1, C11
    max_answered_calls_per_day: int     # C2 (cn)
    max_unanswered_per_number_per_day: int
    max_call_attempts_per_7_days: int   # C2 (us)
    visit_min_dpd: int                  # C6
    visit_min_amount: Decimal
    visit_min_failed_contacts: int
    notice_lead: timedelta              # C8
    min_collectors_per_visit: int       # C10
    third_party_after_failed_attempts: int  # C13
    reminder_deadline_days: int         # C5: the repayment deadline a reminder states

    def tighten(self, **changes: object) -> PolicyPack:
        """A lender's stricter variant; refuses anything that would loosen a rule."""
        tighter = replace(self, **changes)  # type: ignore[arg-type]
        loosened = [
            not tighter.contact_hours.within(self.contact_hours),
            tighter.max_answered_calls_per_day > self.max_answered_calls_per_day,
            tighter.max_unanswered_per_number_per_day > self.max_unanswered_per_number_per_day,
            tighter.max_call_attempts_per_7_days > self.max_call_attempts_per_7_days,
            tighter.visit_min_dpd < self.visit_min_dpd,
            tighter.visit_min_amount < self.visit_min_amount,
            tighter.visit_min_failed_contacts < self.visit_min_failed_contacts,
            tighter.notice_lead < self.notice_lead,
            tighter.min_collectors_per_visit < self.min_collectors_per_visit,
            tighter.third_party_after_failed_attempts < self.third_party_after_failed_attempts,
            # A shorter repayment deadline presses the borrower harder: that loosens, too.
            tighter.reminder_deadline_days < self.reminder_deadline_days,
        ]
        if any(loosened):
            raise ValueError(f"a lender may tighten the {self.name} pack, never loosen it")
        return replace(tighter, version=f"{self.version}+lender")


CN = PolicyPack(
    name="cn", version="cn-2026.1",
    contact_hours=DailyWindow(time(8, 0), time(22, 0)),
    max_answered_calls_per_day=3, max_unanswered_per_number_per_day=6,
    max_call_attempts_per_7_days=21,
    visit_min_dpd=91, visit_min_amount=Decimal("3000.00"), visit_min_failed_contacts=3,
    notice_lead=timedelta(hours=24), min_collectors_per_visit=2,
    third_party_after_failed_attempts=3, reminder_deadline_days=7,
)

US = PolicyPack(
    name="us", version="us-2026.1",
    contact_hours=DailyWindow(time(8, 0), time(21, 0)),
    max_answered_calls_per_day=3, max_unanswered_per_number_per_day=7,
    max_call_attempts_per_7_days=7,
    visit_min_dpd=91, visit_min_amount=Decimal("500.00"), visit_min_failed_contacts=3,
    notice_lead=timedelta(hours=24), min_collectors_per_visit=1,
    third_party_after_failed_attempts=1, reminder_deadline_days=7,
)

PACKS = {pack.name: pack for pack in (CN, US)}


def pack(name: str) -> PolicyPack:
    try:
        return PACKS[name]
    except KeyError:
        raise ValueError(f"unknown policy pack {name!r}; known: {', '.join(PACKS)}") from None


@dataclass(frozen=True)
class Decision:
    """A rule's verdict: allowed, or refused/deferred with the rule id and the reason."""

    allowed: bool
    rule: str | None = None
    reason: str | None = None
    until: datetime | None = None

    @classmethod
    def allow(cls) -> Decision:
        return cls(True)

    @classmethod
    def refuse(cls, rule: str, reason: str) -> Decision:
        return cls(False, rule, reason)

    @classmethod
    def defer(cls, rule: str, reason: str, until: datetime) -> Decision:
        return cls(False, rule, reason, until)
