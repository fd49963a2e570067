"""Escalation's pure rules: the strategy in force, how a case ages, where it belongs, when a
payment closes it (C4) and when a field visit may be asked for (C6).

Everything here is a function of its arguments, time included; the aggregates in domain.py
call these to decide, and record what they decided with its reasons.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from shared.events import (
    Cadence,
    CadenceStep,
    Channel,
    Repeat,
    StageDef,
    StageEntry,
    StrategyDocument,
    VariantDef,
    VisitThresholds,
)
from shared.policy_pack import Decision, Loosening, PackLoosened, PolicyPack, Rule, Tighter

SOFT_REMINDERS = "soft_reminders"
DEFAULT_NAME = "default"
DEFAULT_VERSION = 1

# The shipped default: the contact engine's cadence until the case meets the cn pack's C6
# numbers, then the field-visit stage (calls every other day while the visit is prepared).
# A lender's own strategy may put stages between (calls from DPD 31, say).
DEFAULT_DOCUMENT = StrategyDocument(
    stages=[
        StageDef(name=SOFT_REMINDERS, cadence=Cadence(
            steps=[CadenceStep(day=0, channel=Channel.SMS),
                   CadenceStep(day=2, channel=Channel.EMAIL),
                   CadenceStep(day=4, channel=Channel.PUSH)],
            repeat=Repeat(channel=Channel.CALL, from_day=6))),
        StageDef(name="field_visit",
                 entry=StageEntry(min_dpd=91, min_amount=Decimal("3000.00"),
                                  min_failed_contacts=3),
                 cadence=Cadence(repeat=Repeat(channel=Channel.CALL, from_day=0, every_days=2)),
                 requests_visit=True),
    ],
    visit=VisitThresholds(min_dpd=91, min_amount=Decimal("3000.00"), min_failed_contacts=3),
)

C6 = Rule(("C6",), Tighter.HIGHER)


# --- the strategy in force ---


@dataclass(frozen=True)
class Strategy:
    """One version of a lender's strategy (or the shipped default, `lender_id` None)."""

    lender_id: str | None
    version: int
    document: StrategyDocument
    published_at: datetime | None = None

    @property
    def name(self) -> str:
        return f"{self.lender_id}@{self.version}" if self.lender_id else \
            f"{DEFAULT_NAME}@{DEFAULT_VERSION}"

    def variant_of(self, loan_id: str) -> str | None:
        """Champion / challenger: each case falls in one variant, by a hash of its loan id,
        so the same loan lands in the same variant on every replica and every evaluation."""
        variants = self.document.variants
        if not variants:
            return None
        bucket = int.from_bytes(hashlib.sha256(
            f"{self.lender_id}\x1f{loan_id}".encode()).digest()[:8], "big") % 10_000
        edge = 0
        for variant in variants:
            edge += variant.share * 100
            if bucket < edge:
                return variant.name
        return variants[-1].name

    def _variant(self, name: str | None) -> VariantDef | None:
        return next((v for v in self.document.variants or [] if v.name == name), None)

    def stages(self, variant: str | None) -> list[StageDef]:
        chosen = self._variant(variant)
        return list(chosen.stages) if chosen and chosen.stages else list(self.document.stages)

    def visit(self, variant: str | None) -> VisitThresholds:
        chosen = self._variant(variant)
        return chosen.visit if chosen and chosen.visit else self.document.visit

    def policy_version(self, pack: PolicyPack, variant: str | None) -> str:
        """What every decision names: the pack, the strategy version and the variant."""
        return f"{pack.version}/{self.name}" + (f"#{variant}" if variant else "")


DEFAULT_STRATEGY = Strategy(None, 0, DEFAULT_DOCUMENT)


def loosenings(document: StrategyDocument, pack: PolicyPack) -> list[Loosening]:
    """Whatever in a proposed strategy would loosen the pack's C6 numbers: its visit
    thresholds (the document's and each variant's), and a visit-requesting stage that cases
    would enter below them."""
    found: list[Loosening] = []
    visits = [("visit", document.visit)]
    visits += [(f"variants.{v.name}.visit", v.visit) for v in document.variants or [] if v.visit]
    for where, visit in visits:
        try:
            pack.tighten(visit_min_dpd=visit.min_dpd, visit_min_amount=visit.min_amount,
                         visit_min_failed_contacts=visit.min_failed_contacts)
        except PackLoosened as loosened:
            found += [Loosening(f"{where}.{loose.name.removeprefix('visit_')}", loose.rule,
                                loose.shipped, loose.proposed) for loose in loosened.loosened]
    sets = [("stages", document.stages, document.visit)]
    sets += [(f"variants.{v.name}.stages", v.stages, v.visit or document.visit)
             for v in document.variants or [] if v.stages]
    for where, stages, visit in sets:
        floor = thresholds(pack, visit)
        for stage in stages:
            if not stage.requests_visit:
                continue
            for name, proposed, minimum in (
                    ("min_dpd", stage.entry.min_dpd, floor.min_dpd),
                    ("min_amount", stage.entry.min_amount, floor.min_amount),
                    ("min_failed_contacts", stage.entry.min_failed_contacts,
                     floor.min_failed_contacts)):
                if proposed < minimum:
                    found.append(Loosening(f"{where}.{stage.name}.entry.{name}", C6, minimum,
                                           proposed))
    return found


def incoherence(document: StrategyDocument) -> list[str]:
    """What a strategy says that cannot be followed, though it fits the schema: stage or
    variant names repeated, a first stage with entry criteria (cases start there), shares not
    adding up to 100, cadence steps out of day order."""
    problems = []
    sets = [("stages", document.stages)]
    sets += [(f"variants.{v.name}.stages", v.stages) for v in document.variants or [] if v.stages]
    for where, stages in sets:
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            problems.append(f"{where}: stage names must be unique")
        if stages[0].entry != StageEntry():
            problems.append(f"{where}: the first stage ({stages[0].name}) must have no entry "
                            f"criteria, since every case starts there")
        for stage in stages:
            days = [step.day for step in stage.cadence.steps]
            repeat = stage.cadence.repeat
            if days != sorted(days):
                problems.append(f"{where}.{stage.name}.cadence: steps must be in day order")
            elif repeat is not None and days and repeat.from_day < days[-1]:
                problems.append(f"{where}.{stage.name}.cadence: repeat.from_day comes before "
                                f"the last step")
    if document.variants is not None:
        names = [variant.name for variant in document.variants]
        if len(set(names)) != len(names):
            problems.append("variants: names must be unique")
        if sum(variant.share for variant in document.variants) != 100:
            problems.append("variants: shares must add up to 100")
    return problems


def thresholds(pack: PolicyPack, visit: VisitThresholds) -> VisitThresholds:
    """C6's numbers for one case: the stricter of the pack's and the strategy's."""
    return VisitThresholds(min_dpd=max(pack.visit_min_dpd, visit.min_dpd),
                           min_amount=max(pack.visit_min_amount, visit.min_amount),
                           min_failed_contacts=max(pack.visit_min_failed_contacts,
                                                   visit.min_failed_contacts))


# --- ageing ---

MAX_DPD = 36500  # the contract's bound on a DPD (a hundred years)


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def next_local_midnight(now: datetime, zone: ZoneInfo) -> datetime:
    """When the borrower's day after `now` begins: DPD moves then, and due days end."""
    return end_of_day(local_day(now, zone), zone)


def end_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The end of `day` in the borrower's zone (00:00 of the next day there)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)


@dataclass(frozen=True)
class Pause:
    """A hardship pause: DPD does not age from `start` until `end` (None: still on)."""

    start: datetime
    end: datetime | None


def suspended_days(pauses: Iterable[Pause], zone: ZoneInfo, now: datetime) -> int:
    """The borrower-local days that hardship pauses took out of ageing, up to `now`."""
    total = 0
    for pause in pauses:
        if pause.start > now:
            continue
        end = now if pause.end is None or pause.end > now else pause.end
        total += max(0, (local_day(end, zone) - local_day(pause.start, zone)).days)
    return total


def days_past_due(due_date: date, zone: ZoneInfo, now: datetime,
                  pauses: Iterable[Pause] = ()) -> int:
    """DPD follows the clock from the reported due date, in the borrower's zone, less the
    days spent in hardship."""
    aged = (local_day(now, zone) - due_date).days - suspended_days(pauses, zone, now)
    return min(MAX_DPD, max(0, aged))


# --- stages ---


@dataclass(frozen=True)
class Facts:
    """What the criteria look at, as they are at one moment."""

    days_past_due: int
    amount: Decimal
    failed_contacts: int
    broken_promises: int


@dataclass(frozen=True)
class Reason:
    code: str
    value: str
    threshold: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "value": self.value, "threshold": self.threshold}


def _figures(facts: Facts, entry: StageEntry) -> list[tuple[str, object, object]]:
    return [("dpd", facts.days_past_due, entry.min_dpd),
            ("amount", facts.amount, entry.min_amount),
            ("failed_contacts", facts.failed_contacts, entry.min_failed_contacts),
            ("broken_promises", facts.broken_promises, entry.min_broken_promises)]


def _text(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, Decimal) else str(value)


def meets(entry: StageEntry, facts: Facts) -> list[Reason] | None:
    """The reasons a case meets a stage's entry criteria (DPD always, then every criterion
    the stage sets), or None when one is not met."""
    reasons = []
    for code, value, minimum in _figures(facts, entry):
        if value < minimum:  # type: ignore[operator]
            return None
        if code == "dpd" or minimum:
            reasons.append(Reason(code, _text(value), _text(minimum)))
    return reasons


@dataclass(frozen=True)
class Move:
    to_stage: StageDef
    reasons: list[Reason]


def next_stage(stages: Sequence[StageDef], current: str, facts: Facts) -> Move | None:
    """The furthest stage beyond the current one whose entry criteria the case meets; cases
    move forward only."""
    names = [stage.name for stage in stages]
    # A stage the strategy no longer has: only a stage beyond the first can be a move (the
    # first is where every case starts, so going there would be going back).
    position = names.index(current) if current in names else 0
    for index in range(len(stages) - 1, position, -1):
        reasons = meets(stages[index].entry, facts)
        if reasons is not None:
            return Move(stages[index], reasons)
    return None


def stage_named(stages: Sequence[StageDef], name: str) -> StageDef | None:
    return next((stage for stage in stages if stage.name == name), None)


# --- C6: a field visit only when the criteria hold ---


@dataclass(frozen=True)
class Standing:
    """What else C6 asks of a case besides its figures."""

    open: bool
    in_dispute: bool
    in_hardship: bool
    visits_ceased: bool
    promise_current: bool
    plan_current: bool


def visit_allowed(pack: PolicyPack, visit: VisitThresholds, facts: Facts,
                  standing: Standing) -> tuple[Decision, list[Reason]]:
    """C6: the figures reach the thresholds (the stricter of pack and strategy), and the case
    is open, undisputed, not paused for hardship, not ceased for visits, with no promise or
    plan current. The reasons name each figure and its threshold."""
    floor = thresholds(pack, visit)
    reasons = [Reason("dpd", str(facts.days_past_due), str(floor.min_dpd)),
               Reason("amount", _text(facts.amount), _text(floor.min_amount)),
               Reason("failed_contacts", str(facts.failed_contacts),
                      str(floor.min_failed_contacts))]
    blocked = [
        (not standing.open, "the case is closed"),
        (standing.in_dispute, "a dispute is open"),
        (standing.in_hardship, "the borrower is in a hardship pause"),
        (standing.visits_ceased, "the borrower asked for no visits"),
        (standing.promise_current, "a promise to pay is current"),
        (standing.plan_current, "a repayment plan is current"),
        (facts.days_past_due < floor.min_dpd,
         f"DPD {facts.days_past_due} is below {floor.min_dpd}"),
        (facts.amount < floor.min_amount,
         f"amount {_text(facts.amount)} is below {_text(floor.min_amount)}"),
        (facts.failed_contacts < floor.min_failed_contacts,
         f"{facts.failed_contacts} failed contacts, below {floor.min_failed_contacts}"),
    ]
    for refused, reason in blocked:
        if refused:
            return Decision.refuse("C6", reason), reasons
    return Decision.allow(), reasons


# --- contact attempts, payments ---

FAILED = frozenset({"no_answer", "refused", "wrong_number"})
RESETS = frozenset({"answered", "promise_to_pay"})


def failed_streak(streak: int, outcome: str) -> int:
    """Consecutive failed contacts: no answer, a refusal or a wrong number add one; a
    conversation or a promise starts again from nothing."""
    if outcome in FAILED:
        return streak + 1
    return 0 if outcome in RESETS else streak


def payment_closes_case(remaining_overdue: Decimal) -> bool:
    """C4: nothing after payment. Zero remaining closes the case and cancels what is pending."""
    return remaining_overdue <= 0


def promise_due_ok(due_date: date, made_at: datetime, zone: ZoneInfo,
                   max_days_ahead: int) -> str | None:
    """Why a promise's due date cannot be taken, or None: not already past in the borrower's
    zone, and not further ahead than the strategy allows."""
    today = local_day(made_at, zone)
    if due_date < today:
        return f"due_date {due_date} is already past (today is {today} for the borrower)"
    if due_date > today + timedelta(days=max_days_ahead):
        return (f"due_date {due_date} is more than {max_days_ahead} days ahead "
                f"(the strategy's promises.max_days_ahead)")
    return None


PLAN_HORIZON_DAYS = 3660  # no instalment further ahead than ten years


def plan_days_ok(days: Sequence[date], agreed_at: datetime, zone: ZoneInfo) -> str | None:
    """Why a plan's instalment days cannot be taken, or None: distinct, in order, none past
    and none more than ten years ahead in the borrower's zone."""
    if list(days) != sorted(set(days)):
        return "instalments must fall on distinct days, in order"
    today = local_day(agreed_at, zone)
    if days[0] < today:
        return f"the first instalment ({days[0]}) is already past (today is {today})"
    if days[-1] > today + timedelta(days=PLAN_HORIZON_DAYS):
        return f"the last instalment ({days[-1]}) is more than ten years ahead"
    return None


def opening_stage(stages: Sequence[StageDef]) -> StageDef:
    """Every case starts with the gentlest means; later stages are decided by evaluation."""
    return stages[0]


def cadence_json(cadence: Cadence) -> dict[str, object]:
    return cadence.model_dump(mode="json", exclude_none=True)
