"""The numbers of each jurisdiction's conduct rules (DOMAIN.md), kept once and versioned.

Enforcement lives in the service that acts, verification in audit; both read these numbers.
A lender may tighten a pack (`tighten`), never loosen it: each number says in its field's
metadata which rule it belongs to and which way is tighter, and `tighten` checks nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, assert_never


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

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


class Tighter(Enum):
    """Which way a rule's number moves when a lender makes the rule stricter."""

    LOWER = "lower is tighter"    # a cap: fewer calls, fewer attempts
    HIGHER = "higher is tighter"  # a floor: more days past due, a longer notice
    WITHIN = "must lie within"    # a window: the stricter one lies inside the shipped one


@dataclass(frozen=True)
class Rule:
    """What a pack field is: the number of which conduct rule(s), and which way is tighter."""

    ids: tuple[str, ...]
    tighter: Tighter

    def loosens(self, shipped: Any, proposed: Any) -> bool:
        """Whether `proposed` in place of `shipped` would make this rule less strict."""
        match self.tighter:
            case Tighter.LOWER:
                return bool(proposed > shipped)
            case Tighter.HIGHER:
                return bool(proposed < shipped)
            case Tighter.WITHIN:
                return not proposed.within(shipped)
            case unknown:
                assert_never(unknown)


_RULE = "dunwell.rule"


def rule(*ids: str, tighter: Tighter) -> dict[str, Rule]:
    """Field metadata tying a pack number to its rule ids and its direction."""
    return {_RULE: Rule(ids, tighter)}


@dataclass(frozen=True)
class Loosening:
    """One field a proposed pack would loosen."""

    name: str
    rule: Rule
    shipped: object
    proposed: object

    def __str__(self) -> str:
        return (f"{'/'.join(self.rule.ids)} {self.name}: {self.shipped} -> {self.proposed}"
                f" ({self.rule.tighter.value})")


class PackLoosened(ValueError):
    """A lender's variant would loosen a rule; names every loosened field and its rule id."""

    def __init__(self, pack: str, loosened: Sequence[Loosening]) -> None:
        self.pack = pack
        self.loosened = tuple(loosened)
        super().__init__(f"a lender may tighten the {pack} pack, never loosen it: "
                         + "; ".join(map(str, self.loosened)))

    @property
    def rules(self) -> tuple[str, ...]:
        """The rule ids loosened, in catalogue order of the fields, without repeats."""
        return tuple(dict.fromkeys(i for loose in self.loosened for i in loose.rule.ids))


@dataclass(frozen=True)
class PolicyPack:
    """One jurisdiction's numbers. Every field but name and version is a rule's number and
    says, in its metadata, which way is tighter; `tighten` reads nothing else."""

    name: str
    version: str
    contact_hours: DailyWindow = field(metadata=rule("C1", "C11", tighter=Tighter.WITHIN))
    max_answered_calls_per_day: int = field(metadata=rule("C2", tighter=Tighter.LOWER))
    max_unanswered_per_number_per_day: int = field(metadata=rule("C2", tighter=Tighter.LOWER))
    max_call_attempts_per_7_days: int = field(metadata=rule("C2", tighter=Tighter.LOWER))
    # No call attempt for this long after a conversation (a call the borrower answered).
    quiet_after_conversation: timedelta = field(metadata=rule("C2", tighter=Tighter.HIGHER))
    visit_min_dpd: int = field(metadata=rule("C6", tighter=Tighter.HIGHER))
    visit_min_amount: Decimal = field(metadata=rule("C6", tighter=Tighter.HIGHER))
    visit_min_failed_contacts: int = field(metadata=rule("C6", tighter=Tighter.HIGHER))
    notice_lead: timedelta = field(metadata=rule("C8", tighter=Tighter.HIGHER))
    min_collectors_per_visit: int = field(metadata=rule("C10", tighter=Tighter.HIGHER))
    third_party_after_failed_attempts: int = field(metadata=rule("C13", tighter=Tighter.HIGHER))
    # Calls to pre-agreed contact persons per case. The cn code sets no count (only the
    # purpose, re-establishing contact), so its number is a ceiling a lender may lower.
    max_third_party_contacts: int = field(metadata=rule("C13", tighter=Tighter.LOWER))
    # C5: the repayment deadline a reminder states. A shorter one presses the borrower
    # harder, so a longer one is the stricter rule.
    reminder_deadline_days: int = field(metadata=rule("C5", tighter=Tighter.HIGHER))
    # C14: the days a complaint may wait for its answer.
    complaint_answer_days: int = field(metadata=rule("C14", tighter=Tighter.LOWER))

    @classmethod
    def rules(cls) -> dict[str, Rule | None]:
        """Each field's rule, None for a field that carries no direction (name, version)."""
        return {f.name: f.metadata.get(_RULE) for f in fields(cls)}

    def tighten(self, **changes: object) -> PolicyPack:
        """A lender's stricter variant; refuses anything that would loosen a rule.

        A field without a direction cannot be changed at all: it fails closed, so a number
        added without saying which way is tighter can never be loosened by a lender.
        """
        rules = self.rules()
        undirected = sorted(name for name in changes if name in rules and rules[name] is None)
        if undirected:
            raise ValueError(f"{', '.join(undirected)}: not a rule's number (no direction), "
                             f"so a lender cannot change it in the {self.name} pack")
        tighter = replace(self, **changes)  # type: ignore[arg-type]
        loosened = [
            Loosening(name, bound, getattr(self, name), getattr(tighter, name))
            for name, bound in rules.items()
            if bound is not None and bound.loosens(getattr(self, name), getattr(tighter, name))
        ]
        if loosened:
            raise PackLoosened(self.name, loosened)
        return replace(tighter, version=f"{self.version}+lender")


CN = PolicyPack(
    name="cn", version="cn-2026.1",
    contact_hours=DailyWindow(time(8, 0), time(22, 0)),
    max_answered_calls_per_day=3, max_unanswered_per_number_per_day=6,
    max_call_attempts_per_7_days=21, quiet_after_conversation=timedelta(0),
    visit_min_dpd=91, visit_min_amount=Decimal("3000.00"), visit_min_failed_contacts=3,
    notice_lead=timedelta(hours=24), min_collectors_per_visit=2,
    third_party_after_failed_attempts=3, max_third_party_contacts=100,
    reminder_deadline_days=7, complaint_answer_days=15,
)

US = PolicyPack(
    name="us", version="us-2026.1",
    contact_hours=DailyWindow(time(8, 0), time(21, 0)),
    max_answered_calls_per_day=3, max_unanswered_per_number_per_day=7,
    max_call_attempts_per_7_days=7, quiet_after_conversation=timedelta(days=7),
    visit_min_dpd=91, visit_min_amount=Decimal("500.00"), visit_min_failed_contacts=3,
    notice_lead=timedelta(hours=24), min_collectors_per_visit=1,
    third_party_after_failed_attempts=3, max_third_party_contacts=1,
    reminder_deadline_days=7, complaint_answer_days=30,
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
    held: bool = False  # refused for now, with no time known: until a hold is lifted (C3)

    @classmethod
    def allow(cls) -> Decision:
        return cls(True)

    @classmethod
    def refuse(cls, rule: str, reason: str) -> Decision:
        return cls(False, rule, reason)

    @classmethod
    def defer(cls, rule: str, reason: str, until: datetime) -> Decision:
        return cls(False, rule, reason, until)

    @classmethod
    def hold(cls, rule: str, reason: str) -> Decision:
        return cls(False, rule, reason, held=True)
