"""The public event contract (CONTRACT.md): every event's data, the CloudEvents envelope, the codec.

Consumers validate every message against these models; a message that does not fit goes to
the topic's dead-letter queue with the reason. The same models (and the field types below)
check what the HTTP routes take, so an event and a request are held to one standard, and each
JSON Schema says exactly what is accepted:

- money: a JSON string, digits with an optional fraction of one or two digits, no sign, no
  exponent, no leading zeros, at most 16 integer digits (`0`, `12.5`, `1200.50`); always
  written back with two places (`1000000.00`);
- times: RFC 3339 with an upper-case `T`, seconds, at most six fraction digits and a `Z` or
  `±hh:mm` offset, in the years 1000-2999; dates: `YYYY-MM-DD` in the same years;
- integers and booleans: JSON integers and booleans only (no `"30"`, `30.0` or `true` for 30);
- currencies: an active ISO 4217 code in upper case (shared/currencies.py);
- time zones: an IANA zone name from the tzdata database (not `Factory`, `posixrules`,
  `localtime`);
- every string has a length bound, every list a size bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any, ClassVar, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from shared import topics
from shared.currencies import ISO_4217
from shared.errors import mask

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
EVENT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/events")

# --- the value types every event and request is made of ---

MONEY_PATTERN = r"^(0|[1-9][0-9]{0,15})(\.[0-9]{1,2})?$"
POSITIVE_MONEY_PATTERN = r"^([1-9][0-9]{0,15}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$"
MONEY_OUT_PATTERN = r"^(0|[1-9][0-9]{0,15})\.[0-9]{2}$"
POSITIVE_MONEY_OUT_PATTERN = r"^([1-9][0-9]{0,15}\.[0-9]{2}|0\.(0[1-9]|[1-9][0-9]))$"
_YEAR_MONTH_DAY = r"[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
DATE_PATTERN = rf"^{_YEAR_MONTH_DAY}$"
TIME_PATTERN = (rf"^{_YEAR_MONTH_DAY}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{{1,6}})?"
                r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# Not tzdata's placeholder zone, nor the names a system directory adds beside the zones.
NOT_ZONES = frozenset({"Factory", "posixrules", "localtime"})


def _tzdata_zones() -> frozenset[str]:
    """Every zone and link name of the IANA database as the pinned tzdata package lists it."""
    listed = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(listed.split()) - NOT_ZONES


TIME_ZONES = _tzdata_zones()


def _text(pattern: str, kinds: tuple[type, ...], what: str) -> Callable[[object], object]:
    """A before-validator: JSON gives only the text form, which must match `pattern`; values of
    `kinds` (made by code, never parsed from JSON) pass on to the type's own checks."""
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if isinstance(value, kinds):
            return value
        if isinstance(value, str) and compiled.fullmatch(value):
            return value
        raise ValueError(f"{what} must be {_EXAMPLES[what]}")

    return check


_EXAMPLES = {
    "money": 'a decimal string with at most two places, such as "1200.50" (no sign, exponent '
             "or JSON number)",
    "positive money": 'a decimal string above zero with at most two places, such as "100.00"',
    "time": 'an RFC 3339 time with seconds and an offset, such as "2026-10-14T03:00:00Z"',
    "date": 'a date written YYYY-MM-DD, such as "2026-10-01"',
    "uuid": 'a UUID written 8-4-4-4-12 hex digits',
}


def _two_places(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _money_schema(pattern: str, description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "maxLength": 19, "pattern": pattern,
                           "description": description}, mode="validation")


def _money_out_schema(pattern: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "maxLength": 19, "pattern": pattern,
                           "description": "A decimal string with two places."},
                          mode="serialization")


def _not_naive_date(value: object) -> object:
    if isinstance(value, datetime):  # a datetime is a date too; never take one for a date
        raise ValueError(_EXAMPLES["date"])
    return value


# The checks below repeat a refused value only when it has the shape of what was asked for (a
# three-letter code, a zone-like name, a type name): a borrower's e-mail or phone number put in
# the wrong field never reaches an error body, a dead-letter header or a log.
_CODE_SHAPE = re.compile(r"[A-Za-z]{3}")
_ZONE_SHAPE = re.compile(r"[A-Za-z_]{1,32}(/[A-Za-z0-9_+-]{1,32}){0,3}")
_TYPE_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")


def _quoted(value: str, shape: re.Pattern[str]) -> str:
    return f" {value!r}" if shape.fullmatch(value) else ""


def _known_currency(code: str) -> str:
    if code not in ISO_4217:
        hint = f" (write {code.upper()})" if code.upper() in ISO_4217 else ""
        raise ValueError(f"{_quoted(code, _CODE_SHAPE).strip() or 'this'} is not an active "
                         f"ISO 4217 currency code{hint}")
    return code


def _known_zone(name: str) -> str:
    if name not in TIME_ZONES:
        raise ValueError(f"unknown IANA time zone{_quoted(name, _ZONE_SHAPE)}")
    return name


# At least one letter or digit: "." and ".." would be path segments, not loan ids.
LoanId = Annotated[str, Field(min_length=1, max_length=64,
                              pattern=r"^[A-Za-z0-9._:-]*[A-Za-z0-9][A-Za-z0-9._:-]*$",
                              examples=["L-1"])]
Ident = Annotated[str, Field(min_length=1, max_length=64)]
Code = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
# Text a borrower must be able to act on (how to repay, how to check a message is genuine):
# not blank, not only spaces.
Instruction = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]
Line = Annotated[str, Field(max_length=500)]
Text = Annotated[str, Field(max_length=2000)]
Sha256Hex = Annotated[str, Field(max_length=64, pattern=r"^[0-9a-f]{64}$")]
RuleId = Annotated[str, Field(max_length=3, pattern=r"^C([1-9]|1[0-4])$")]
Money = Annotated[
    Decimal, Field(ge=0, max_digits=18, decimal_places=2),
    BeforeValidator(_text(MONEY_PATTERN, (Decimal,), "money")),
    PlainSerializer(_two_places, return_type=str, when_used="json"),
    _money_schema(MONEY_PATTERN,
                  "A decimal string, at least 0, with at most two places: digits with no sign, "
                  "exponent or leading zeros, optionally a point and one or two digits "
                  '("0", "12.5", "1200.50"). Answers always carry two places.'),
    _money_out_schema(MONEY_OUT_PATTERN)]
PositiveMoney = Annotated[
    Decimal, Field(gt=0, max_digits=18, decimal_places=2),
    BeforeValidator(_text(POSITIVE_MONEY_PATTERN, (Decimal,), "positive money")),
    PlainSerializer(_two_places, return_type=str, when_used="json"),
    _money_schema(POSITIVE_MONEY_PATTERN, "Like money, but above zero."),
    _money_out_schema(POSITIVE_MONEY_OUT_PATTERN)]
Currency = Annotated[str, AfterValidator(_known_currency),
                     WithJsonSchema({"type": "string", "enum": sorted(ISO_4217),
                                     "description": "An active ISO 4217 currency code."})]
TimeZoneName = Annotated[str, AfterValidator(_known_zone),
                         WithJsonSchema({"type": "string", "enum": sorted(TIME_ZONES),
                                         "description": "An IANA time zone name."})]
Time = Annotated[AwareDatetime, BeforeValidator(_text(TIME_PATTERN, (datetime,), "time")),
                 WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 32,
                                 "pattern": TIME_PATTERN})]
Day = Annotated[date, BeforeValidator(_text(DATE_PATTERN, (date,), "date")),
                BeforeValidator(_not_naive_date),
                WithJsonSchema({"type": "string", "format": "date", "maxLength": 10,
                                "pattern": DATE_PATTERN})]
EventUUID = Annotated[UUID, BeforeValidator(_text(UUID_PATTERN, (UUID,), "uuid")),
                      WithJsonSchema({"type": "string", "format": "uuid", "maxLength": 36,
                                      "pattern": UUID_PATTERN})]
Count = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
Version = Annotated[StrictInt, Field(ge=1, le=1_000_000)]


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"
    CALL = "call"


class StopChannel(StrEnum):
    """What a borrower may ask to stop (C3): a channel, or field visits."""

    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"
    CALL = "call"
    VISIT = "visit"


class Via(StrEnum):
    """How a promise to pay was made."""

    CALL = "call"
    VISIT = "visit"
    LENDER = "lender"


class HardshipReason(StrEnum):
    ILLNESS = "illness"
    UNEMPLOYMENT = "unemployment"
    DISASTER = "disaster"
    OTHER = "other"


class AddressKind(StrEnum):
    RESIDENCE = "residence"
    WORKPLACE = "workplace"


class AttemptOutcome(StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    REFUSED = "refused"
    WRONG_NUMBER = "wrong_number"
    PROMISE_TO_PAY = "promise_to_pay"


class Language(StrEnum):
    ZH_CN = "zh-CN"
    EN = "en"


class Jurisdiction(StrEnum):
    """A conduct-rule pack (shared/policy_pack.py)."""

    CN = "cn"
    US = "us"


class Party(StrEnum):
    """Whom a contact reached: the borrower, a pre-agreed contact person (C13), or a number
    that is neither (recorded as the fact it is; the audit flags it)."""

    BORROWER = "borrower"
    CONTACT = "contact"
    OTHER = "other"


class PhoneKind(StrEnum):
    BORROWER = "borrower"
    CONTACT = "contact"


Channels = Annotated[list[Channel], Field(min_length=1, max_length=len(Channel))]
StopChannels = Annotated[list[StopChannel], Field(min_length=1, max_length=len(StopChannel))]
CollectorIds = Annotated[list[Ident], Field(min_length=1, max_length=10)]


class EventData(BaseModel):
    """Base of every event's `data`; subclasses name their CloudEvents `type` and topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    topic: ClassVar[str]
    # Optional fields written as null rather than left out when they have no value: the
    # contract names their absence as a fact (a dial without a permit).
    nulls: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__

    def subject(self) -> str:
        """The CloudEvents subject: the loan id, or the collector id for collector events."""
        return str(getattr(self, "loan_id"))  # noqa: B009 - declared by the subclasses


class Borrower(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    borrower_id: Ident
    name: Name
    phone: Phone
    # No ASCII control or space character, nor a Unicode space, on either side of the @.
    email: Annotated[str, Field(
        max_length=254,
        pattern=r"^[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+"
                r"@[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+$"
    )] | None = None
    residence_address: Text | None = None
    workplace_address: Text | None = None
    timezone: TimeZoneName


Phone = Annotated[str, Field(max_length=33, pattern=r"^\+?[0-9 ()-]{5,32}$")]


class Contact(BaseModel):
    """A pre-agreed contact person (C13): reached only after failed attempts on the borrower,
    and only to re-establish contact."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    contact_id: Ident
    name: Name
    phone: Phone
    relation: Annotated[str, Field(min_length=1, max_length=64, pattern=r"\S")]


Contacts = Annotated[list[Contact], Field(max_length=10)]


class Reason(BaseModel):
    """A machine-readable reason for a decision, with the figures that triggered it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: Code
    value: Annotated[str, Field(max_length=256)] | None = None
    threshold: Annotated[str, Field(max_length=256)] | None = None


Reasons = Annotated[list[Reason], Field(max_length=32)]
PolicyVersion = Annotated[str, Field(min_length=1, max_length=128)]


# --- loans.events: written by the lender's core (directly or through the intake API) ---


class LoanTerms(EventData):
    """What a lender reports of an overdue loan: the fields of LoanOverdue, which CaseOpened and
    CaseUpdated carry on whole (not an event type of its own)."""

    loan_id: LoanId
    lender_id: Ident
    borrower: Borrower
    amount_overdue: Money
    currency: Currency
    due_date: Day
    days_past_due: Annotated[StrictInt, Field(ge=0, le=36500)]
    repayment_channel: Instruction
    verification_channel: Instruction | None = None
    contacts: Contacts | None = None
    language: Language | None = None
    jurisdiction: Jurisdiction | None = None


class LoanOverdue(LoanTerms):
    """An overdue loan, as the lender's core reports it (again, to correct it)."""

    topic = topics.LOANS


class PaymentReceived(EventData):
    topic = topics.LOANS
    loan_id: LoanId
    amount: PositiveMoney
    currency: Currency
    paid_at: Time
    remaining_overdue: Money


class CeaseContactRequested(EventData):
    """C3: the borrower asked to stop contact on these channels (`visit`: no field visits)."""

    topic = topics.LOANS
    loan_id: LoanId
    channels: StopChannels
    requested_at: Time


class DisputeOpened(EventData):
    topic = topics.LOANS
    loan_id: LoanId
    dispute_id: Ident
    reason: Text
    opened_at: Time


class DisputeResolved(EventData):
    topic = topics.LOANS
    loan_id: LoanId
    dispute_id: Ident
    resolution: Text
    resolved_at: Time


PromiseId = Annotated[str, Field(min_length=1, max_length=80)]


class PromiseToPayMade(EventData):
    """An addition to v1: the borrower promised to pay `amount` by the end of `due_date` (in
    the borrower's zone). Made to the lender (the intake route) or in a call (`attempt_id`
    names the ContactAttemptRecorded that carried it)."""

    topic = topics.LOANS
    loan_id: LoanId
    promise_id: PromiseId
    amount: PositiveMoney
    currency: Currency
    due_date: Day
    made_at: Time
    via: Via
    attempt_id: EventUUID | None = None
    visit_id: EventUUID | None = None  # made during this field visit (its VisitRecorded)


class Instalment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    due_date: Day
    amount: PositiveMoney


Instalments = Annotated[list[Instalment], Field(min_length=1, max_length=120)]


class RepaymentPlanAgreed(EventData):
    """An addition to v1: instalments agreed with the borrower, each due by the end of its day."""

    topic = topics.LOANS
    loan_id: LoanId
    plan_id: Ident
    instalments: Instalments
    currency: Currency
    agreed_at: Time
    visit_id: EventUUID | None = None  # agreed during this field visit (its VisitRecorded)


class HardshipGranted(EventData):
    """An addition to v1: no contact, no escalation and no DPD ageing until `ends_at` (or a
    HardshipEnded)."""

    topic = topics.LOANS
    loan_id: LoanId
    hardship_id: Ident
    reason: HardshipReason
    note: Text
    starts_at: Time
    ends_at: Time


class HardshipEnded(EventData):
    """An addition to v1: a hardship pause ended before its `ends_at`."""

    topic = topics.LOANS
    loan_id: LoanId
    hardship_id: Ident
    ended_at: Time
    note: Text | None = None


# --- a lender's escalation strategy (the document of PUT /v1/strategies/{lender_id}) ---

StageName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]
Days = Annotated[StrictInt, Field(ge=0, le=36500)]
Times = Annotated[StrictInt, Field(ge=0, le=1000)]


class CadenceStep(BaseModel):
    """One message or call task, `day` days after the case entered its stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    day: Annotated[StrictInt, Field(ge=0, le=3650)]
    channel: Channel


class Repeat(BaseModel):
    """After the fixed steps: one on `channel` every `every_days` days from `from_day`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    channel: Channel
    from_day: Annotated[StrictInt, Field(ge=0, le=3650)]
    every_days: Annotated[StrictInt, Field(ge=1, le=365)] = 1


class Cadence(BaseModel):
    """A stage's contact cadence; days count from the stage's entry. Steps are in day order
    (escalation checks a strategy's cadences before it publishes one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: Annotated[list[CadenceStep], Field(max_length=50)] = []
    repeat: Repeat | None = None


class StageEntry(BaseModel):
    """What a case must show to enter a stage: every figure at or above its minimum."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_dpd: Days = 0
    min_amount: Money = Decimal("0")
    min_failed_contacts: Times = 0
    min_broken_promises: Times = 0


class StageDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: StageName
    entry: StageEntry = StageEntry()
    cadence: Cadence
    requests_visit: StrictBool = False  # entering it asks for a field visit, when C6 holds


class VisitThresholds(BaseModel):
    """C6: a visit only when DPD, amount and consecutive failed contacts reach these (never
    below the pack's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_dpd: Days
    min_amount: Money
    min_failed_contacts: Times


class PromiseRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_days_ahead: Annotated[StrictInt, Field(ge=1, le=365)] = 31
    max_broken_instalments: Annotated[StrictInt, Field(ge=1, le=120)] = 2


class HardshipRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_days: Annotated[StrictInt, Field(ge=1, le=366)] = 90


class VariantDef(BaseModel):
    """Champion / challenger: a share of the cases (percent) follows these stages and visit
    thresholds (the document's own where left out)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: StageName
    share: Annotated[StrictInt, Field(ge=0, le=100)]
    stages: Annotated[list[StageDef], Field(min_length=1, max_length=20)] | None = None
    visit: VisitThresholds | None = None


class StrategyDocument(BaseModel):
    """A lender's escalation strategy on top of its jurisdiction pack. The first stage has no
    entry criteria (every case starts there); a case moves forward to the furthest stage whose
    entry criteria it meets, never back. What no schema can say (names unique, shares adding
    up to 100, steps in day order) escalation checks before it publishes a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stages: Annotated[list[StageDef], Field(min_length=1, max_length=20)]
    visit: VisitThresholds
    promises: PromiseRules = PromiseRules()
    hardship: HardshipRules = HardshipRules()
    variants: Annotated[list[VariantDef], Field(min_length=2, max_length=4)] | None = None


# --- cases.events: written by escalation ---


class CaseOpened(LoanTerms):
    """Carries what downstream services need to act on the case, so they never ask escalation."""

    topic = topics.CASES
    stage: Code
    opened_at: Time
    cadence: Cadence | None = None  # the stage's cadence (the reminder's default when absent)
    policy_version: PolicyVersion | None = None


class CaseUpdated(LoanTerms):
    """An addition to v1: the terms of an open case changed (a later LoanOverdue, or a partial
    payment that lowered the amount overdue), so what reminds the borrower states them as they
    are now."""

    topic = topics.CASES
    reason: Literal["reported", "paid"]


class CaseEscalated(EventData):
    topic = topics.CASES
    loan_id: LoanId
    from_stage: Code
    to_stage: Code
    reasons: Reasons
    policy_version: PolicyVersion
    cadence: Cadence | None = None  # the new stage's cadence, its days counted from `escalated_at`
    escalated_at: Time | None = None
    days_past_due: Days | None = None


class VisitRequested(EventData):
    topic = topics.CASES
    loan_id: LoanId
    reasons: Reasons
    policy_version: PolicyVersion
    stage: Code | None = None
    requested_at: Time | None = None


class CaseClosed(EventData):
    topic = topics.CASES
    loan_id: LoanId
    reason: Line
    closed_at: Time


HoldId = Annotated[str, Field(min_length=1, max_length=96)]  # a kind, ":", and an id


class ContactHeld(EventData):
    """C3: contact stops on `channels` (every channel when absent) until a ContactResumed with
    the same `hold_id`; a cease-contact request is a hold that is never resumed."""

    topic = topics.CASES
    loan_id: LoanId
    rule: RuleId
    reason: Line
    channels: StopChannels | None = None
    at: Time
    hold_id: HoldId
    permanent: StrictBool = False  # a cease-contact request: no ContactResumed lifts it


class ContactResumed(EventData):
    topic = topics.CASES
    loan_id: LoanId
    rule: RuleId
    reason: Line
    channels: StopChannels | None = None
    at: Time
    hold_id: HoldId


class StrategyPublished(EventData):
    """An addition to v1: a lender's strategy version in force from `published_at` (subject:
    the lender id)."""

    topic = topics.CASES
    lender_id: Ident
    version: Version
    policy_version: PolicyVersion
    published_at: Time
    document: StrategyDocument

    def subject(self) -> str:
        return self.lender_id


class PromiseDecision(EventData):
    """What PromiseKept and PromiseBroken both say (not an event type of its own): by the end
    of its due day (borrower's zone), whether the payments received since the promise reached
    its amount. An instalment of a plan is a promise with its `plan_id`."""

    topic = topics.CASES
    loan_id: LoanId
    promise_id: PromiseId
    paid: Money
    due_date: Day
    decided_at: Time
    amount: Money | None = None
    currency: Currency | None = None
    plan_id: Ident | None = None


class PromiseKept(PromiseDecision):
    """An addition to v1: the promise (or instalment) was kept."""


class PromiseBroken(PromiseDecision):
    """An addition to v1: the promise (or instalment) was broken."""


class Courtesy(BaseModel):
    """One courtesy reminder the paused cadence still sends, the day before `due_date`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    due_date: Day
    amount: PositiveMoney
    currency: Currency


PauseReason = Literal["promise", "plan", "hardship"]


class CadencePaused(EventData):
    """An addition to v1: the case's contact cadence stops (a promise or a plan is current, or
    a hardship pause) until a CadenceResumed with the same `pause_id`. Under a promise or a
    plan, one courtesy reminder still goes before each due date; under hardship, nothing."""

    topic = topics.CASES
    loan_id: LoanId
    pause_id: HoldId
    reason: PauseReason
    at: Time
    until: Time | None = None
    courtesy: Annotated[list[Courtesy], Field(max_length=120)] = []


class CadenceResumed(EventData):
    topic = topics.CASES
    loan_id: LoanId
    pause_id: HoldId
    reason: PauseReason
    at: Time


# --- reminders.events: written by reminder ---


class ReminderScheduled(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: EventUUID
    channel: Channel
    template_id: Code
    template_version: Version
    due_at: Time


class ReminderSent(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: EventUUID
    channel: Channel
    template_id: Code
    template_version: Version
    sent_at: Time
    borrower_local_time: Annotated[str, Field(max_length=64)]
    party: Party | None = None
    visit_id: EventUUID | None = None


class ReminderDelivered(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: EventUUID
    channel: Channel
    delivered_at: Time
    visit_id: EventUUID | None = None  # the receipt of a visit's notice (C8)


class ReminderFailed(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: EventUUID
    channel: Channel
    reason: Text
    failed_at: Time
    visit_id: EventUUID | None = None


class ReminderCancelled(EventData):
    """An addition to the v1 contract: a pending reminder dropped because a rule forbids it."""

    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: EventUUID
    channel: Channel
    rule: Code
    reason: Line
    cancelled_at: Time


class PromiseToPay(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    amount: Money
    currency: Currency
    due_date: Day


class ContactAttemptRecorded(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    attempt_id: EventUUID
    channel: Channel
    outcome: AttemptOutcome
    attempted_at: Time
    collector_id: Ident | None = None
    promise_to_pay: PromiseToPay | None = None
    permit_id: EventUUID | None = None  # null: dialled without a permit (the audit flags it)
    number_sha256: Sha256Hex | None = None
    party: Party | None = None
    task_id: EventUUID | None = None
    nulls = ("permit_id",)


class CallTaskIssued(EventData):
    """A call a collector may make between `due_from` and `due_until` (the borrower's hours)."""

    topic = topics.REMINDERS
    loan_id: LoanId
    task_id: EventUUID
    phone_kind: PhoneKind
    due_from: Time
    due_until: Time
    template_id: Code
    template_version: Version
    contact_id: Ident | None = None


class DialPermitted(EventData):
    """The pre-dial gate let a collector dial this number now (C1, C2, C3, C4, C13 checked)."""

    topic = topics.REMINDERS
    loan_id: LoanId
    permit_id: EventUUID
    task_id: EventUUID
    collector_id: Ident
    number_sha256: Sha256Hex
    permitted_at: Time
    expires_at: Time
    party: Party | None = None


class ContactBlocked(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    channel: Channel
    rule: RuleId
    reason: Line
    deferred_until: Time | None = None
    reminder_id: EventUUID | None = None
    task_id: EventUUID | None = None


# --- visits.events: written by visit ---


def _day_of(value: object) -> object:
    """A review date given as an RFC 3339 time is the day written in it."""
    if isinstance(value, str) and len(value) > 10 and re.fullmatch(TIME_PATTERN, value):
        return value[:10]
    return value


ReviewDay = Annotated[Day, BeforeValidator(_day_of)]
Lenders = Annotated[list[Ident], Field(min_length=1, max_length=1000)]


class AgencyRegistered(EventData):
    """An addition to v1: a collection agency, its licence, the lenders that authorised it and
    its yearly review. Its collectors may visit only while `next_review_due` has not passed
    (a day in the borrower's zone, inclusive). Registering it again records the new review."""

    topic = topics.VISITS
    agency_id: Ident
    name: Name
    licence_number: Ident
    authorised_lenders: Lenders
    reviewed_at: ReviewDay
    next_review_due: ReviewDay
    registered_at: Time | None = None

    def subject(self) -> str:
        return self.agency_id


class Certification(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    number: Ident
    valid_until: Day


class AuthorisationLetter(BaseModel):
    """The lender's authorisation letter (委托书): valid from `valid_from` to `valid_until`,
    both days inclusive and read in the borrower's zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    letter_id: Ident
    lender_id: Ident
    scope: Text
    valid_from: Day
    valid_until: Day


class CollectorRegistered(EventData):
    """A collector, their certification and the lender's letter. Registered again (a new
    letter, a renewed certification), the latest registration is the one in force. The
    letter's verification code is not logged: it is the borrower's key to `GET /v1/verify`."""

    topic = topics.VISITS
    collector_id: Ident
    name: Name
    agency: Name | None = None
    id_number: Ident
    contact: Annotated[str, Field(min_length=1, max_length=256)]
    certification: Certification
    authorisation_letter: AuthorisationLetter
    registered_at: Time
    agency_id: Ident | None = None

    def subject(self) -> str:
        return self.collector_id


class CollectorRevoked(EventData):
    """An addition to v1: the collector may no longer be scheduled nor check in."""

    topic = topics.VISITS
    collector_id: Ident
    reason: Line
    revoked_at: Time

    def subject(self) -> str:
        return self.collector_id


class DebtorVerified(EventData):
    """C7: the back office checked these facts (`name`, `phone`, `amount_overdue`,
    `days_past_due`) against the case and found them to match."""

    topic = topics.VISITS
    loan_id: LoanId
    visit_id: EventUUID | None = None
    checked: Annotated[list[Code], Field(max_length=16)]
    verified_by: Ident
    verified_at: Time


class ScheduledCollector(BaseModel):
    """Who the notice names: the collector, the letter they carry and its verification code."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    collector_id: Ident
    name: Name
    agency: Name | None = None
    letter_id: Ident
    verification_code: Code


class VisitScheduled(EventData):
    topic = topics.VISITS
    loan_id: LoanId
    visit_id: EventUUID
    scheduled_start: Time
    scheduled_end: Time
    address_kind: AddressKind
    collector_ids: CollectorIds
    collectors: Annotated[list[ScheduledCollector], Field(max_length=10)] = []
    scheduled_at: Time | None = None
    # C14: the complaints still open against any of these collectors when it was scheduled.
    open_complaints: Annotated[list[EventUUID], Field(max_length=100)] = []


class VisitNoticeSent(EventData):
    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    channel: Channel
    window_start: Time
    window_end: Time
    address_kind: AddressKind
    sent_at: Time
    reminder_id: EventUUID | None = None


class VisitNoticeDelivered(EventData):
    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    channel: Channel
    window_start: Time
    window_end: Time
    address_kind: AddressKind
    delivered_at: Time
    reminder_id: EventUUID | None = None


class VisitDeclined(EventData):
    """C9: the borrower refused the visit; none goes ahead for the loan until a
    VisitConsented."""

    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    declined_at: Time
    via: Code
    reason: Line | None = None


class VisitConsented(EventData):
    """An addition to v1: after a refusal, the borrower agreed to a visit after all (C9)."""

    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    consented_at: Time
    via: Code


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id_card: StrictBool
    badge: StrictBool
    authorisation_letter: StrictBool


class VisitCheckedIn(EventData):
    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    collector_ids: CollectorIds
    credentials_presented: Credentials
    checked_in_at: Time
    address_kind: AddressKind | None = None


class VisitBlocked(EventData):
    """An addition to v1: a check-in the rules refused (nothing else of it is recorded)."""

    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    action: Code  # check_in
    rule: RuleId
    reason: Line
    at: Time
    collector_ids: Annotated[list[Ident], Field(max_length=10)] = []


class VisitRecordingStored(EventData):
    """An addition to v1: the visit's recording is in the store under its SHA-256."""

    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    recording_sha256: Sha256Hex
    bytes: Annotated[StrictInt, Field(gt=0, le=2**40)]
    media_type: Annotated[str, Field(min_length=3, max_length=127)]
    stored_at: Time


class PlanTerms(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    currency: Currency
    instalments: Instalments


class VisitRecorded(EventData):
    """C12: the visit written up, naming its stored recording. A promise or a plan made in it
    goes to escalation as a PromiseToPayMade / RepaymentPlanAgreed with this visit's id. C11:
    whether the home was entered, and the consent it was entered with."""

    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    outcome: Code
    borrower_attitude: Code
    difficulties: Text
    repayment_plan: PlanTerms | None = None
    recording_sha256: Sha256Hex
    recording_seconds: Annotated[StrictInt, Field(gt=0, le=86_400)]
    ended_at: Time
    promise_to_pay: PromiseToPay | None = None
    home_entered: StrictBool = False
    entry_consent: Code | None = None
    person_met: Code | None = None
    notes: Text | None = None


class VisitCancelled(EventData):
    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    reason: Line
    rule: Code | None = None
    cancelled_at: Time


class VisitWriteUpOverdue(EventData):
    """An addition to v1 (C12): the visit was checked in to and not written up within 24 h,
    noticed at `overdue_at`. Once per visit; the write-up may still follow, late."""

    topic = topics.VISITS
    visit_id: EventUUID
    loan_id: LoanId
    checked_in_at: Time
    overdue_at: Time


class ComplaintFiled(EventData):
    """C14: a complaint about a visit, a collector, a call or a message (`about`), to be
    answered by `answer_by` (the pack's days after `filed_at`)."""

    topic = topics.VISITS
    complaint_id: EventUUID
    loan_id: LoanId
    about: Text
    filed_at: Time
    visit_id: EventUUID | None = None
    collector_id: Ident | None = None
    details: Text | None = None
    answer_by: Time | None = None


class ComplaintResolved(EventData):
    topic = topics.VISITS
    complaint_id: EventUUID
    loan_id: LoanId
    outcome: Text
    resolved_at: Time
    resolved_by: Ident | None = None


class ComplaintOverdue(EventData):
    """An addition to v1 (C14): the complaint's days to answer ran out with no answer, noticed
    at `overdue_at`. Once per complaint; an answer may still follow, late."""

    topic = topics.VISITS
    complaint_id: EventUUID
    loan_id: LoanId
    answer_by: Time
    overdue_at: Time


# --- audit.checkpoints: written by audit ---


class CheckpointSigned(EventData):
    topic = topics.CHECKPOINTS
    origin: Annotated[str, Field(min_length=1, max_length=256)]
    tree_size: Count
    root_hash: Annotated[str, Field(min_length=1, max_length=128)]
    note: Annotated[str, Field(min_length=1, max_length=8192)]
    signed_at: Time

    def subject(self) -> str:
        return self.origin


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.event_type(): cls
    for cls in (
        LoanOverdue, PaymentReceived, CeaseContactRequested, DisputeOpened, DisputeResolved,
        PromiseToPayMade, RepaymentPlanAgreed, HardshipGranted, HardshipEnded,
        CaseOpened, CaseUpdated, CaseEscalated, VisitRequested, CaseClosed, ContactHeld,
        ContactResumed, StrategyPublished, PromiseKept, PromiseBroken, CadencePaused,
        CadenceResumed,
        ReminderScheduled, ReminderSent, ReminderDelivered, ReminderFailed, ReminderCancelled,
        ContactAttemptRecorded, ContactBlocked, CallTaskIssued, DialPermitted,
        AgencyRegistered, CollectorRegistered, CollectorRevoked, DebtorVerified,
        VisitScheduled, VisitNoticeSent, VisitNoticeDelivered, VisitDeclined, VisitConsented,
        VisitCheckedIn, VisitBlocked, VisitRecordingStored, VisitRecorded, VisitCancelled,
        VisitWriteUpOverdue, ComplaintFiled, ComplaintResolved, ComplaintOverdue,
        CheckpointSigned,
    )
}


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode, with our causation extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    specversion: Literal["1.0"]
    id: Annotated[str, Field(min_length=1, max_length=128)]
    source: Annotated[str, Field(min_length=1, max_length=256)]
    type: Annotated[str, Field(min_length=1, max_length=64)]
    time: Time
    subject: Annotated[str, Field(min_length=1, max_length=128)]
    datacontenttype: Literal["application/json"] = "application/json"
    causationid: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    correlationid: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    # The CloudEvents distributed-tracing extension: the W3C trace context the event was made
    # in. Optional, and read leniently: one a consumer cannot parse starts a new trace.
    traceparent: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    data: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            raise ValueError(f"unknown event type{_quoted(value, _TYPE_SHAPE)}")
        return value

    def payload(self) -> EventData:
        """The typed data; raises ValidationError when it does not fit the type's schema."""
        return EVENT_TYPES[self.type].model_validate(self.data)

    def encode(self) -> bytes:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), separators=(",", ":"),
                          ensure_ascii=False).encode()


class DecodeError(ValueError):
    """A message that cannot be a contract event; the reason goes into the DLQ header."""


def decode(value: bytes | None) -> tuple[CloudEvent, EventData]:
    if value is None:
        raise DecodeError("empty message value")
    try:
        raw = json.loads(value, object_pairs_hook=_no_repeated_keys)
    except _RepeatedKey as error:
        raise DecodeError(f"a JSON object repeats the key {error}") from error
    except (ValueError, RecursionError) as error:  # bad JSON, bad UTF-8, absurd nesting or size
        raise DecodeError(f"not JSON: {str(error)[:200]}") from error
    if not isinstance(raw, dict):
        raise DecodeError("not a JSON object")
    try:
        # JSON can only spell U+0000 as the escape (or, in UTF-16 or -32, beside zero bytes):
        # the walk is for the few messages whose bytes could hold one.
        nul = (b"\\u0000" in value or b"\x00" in value) and _holds_nul(raw)
    except RecursionError as error:
        raise DecodeError("not JSON: nested too deeply") from error
    if nul:
        # JSON may escape it, but no store keeps it: PostgreSQL's text and jsonb refuse U+0000,
        # so such an event would fail its every commit there instead of being set aside.
        raise DecodeError("a string holds the NUL character (U+0000)")
    try:
        envelope = CloudEvent.model_validate(raw)
        payload = envelope.payload()
    except ValidationError as error:
        raise DecodeError(_short(error)) from error
    if payload.subject() != envelope.subject:
        raise DecodeError("the subject does not match the data")
    return envelope, payload


class _RepeatedKey(ValueError):
    pass


def _holds_nul(value: object) -> bool:
    """Whether a parsed JSON value has U+0000 in any string, key or value, at any depth."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object that says a field twice could be read two ways: the audit log keeps the bytes,
    and one reader would take the first value, another the last."""
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _RepeatedKey(mask(json.dumps(key[:64])))
        seen.add(key)
    raise AssertionError("unreachable: a shorter dict has a repeated key")


def _short(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
             for e in error.errors(include_input=False, include_url=False)[:5]]
    return mask("; ".join(parts))[:900]


def event_id_for(stream_id: UUID, version: int) -> str:
    """The stable CloudEvents id of the integration event made from a stored domain event."""
    return str(uuid5(EVENT_ID_NAMESPACE, f"{stream_id}/{version}"))


def envelope(
    data: EventData,
    *,
    event_id: str,
    source: str,
    time: datetime,
    causation_id: str | None,
    correlation_id: str | None,
    traceparent: str | None = None,
) -> CloudEvent:
    return CloudEvent(
        specversion="1.0",
        id=event_id,
        source=source,
        type=data.event_type(),
        time=time,
        subject=data.subject(),
        causationid=causation_id,
        correlationid=correlation_id,
        traceparent=traceparent,
        data=_written(data),
    )


def _written(data: EventData) -> dict[str, Any]:
    """The data as JSON: fields without a value left out, but for those the type writes as
    null."""
    written = data.model_dump(mode="json", exclude_none=True)
    return written | {name: None for name in data.nulls if name not in written}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type's data and of the envelope, keyed by name."""
    schemas = {name: cls.model_json_schema() for name, cls in EVENT_TYPES.items()}
    schemas["CloudEvent"] = CloudEvent.model_json_schema()
    return schemas
