"""The public event contract (CONTRACT.md): every event's data, the CloudEvents envelope, the codec.

Consumers validate every message against these models; a message that does not fit goes to
the topic's dead-letter queue with the reason. Money is a decimal string, times are RFC 3339.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from shared import topics

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
EVENT_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/events")


def _valid_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown IANA time zone {name!r}") from error
    return name


def _upper(code: str) -> str:
    return code.upper()


LoanId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Ident = Annotated[str, Field(min_length=1, max_length=64)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
Currency = Annotated[str, Field(pattern=r"^[A-Za-z]{3}$"), AfterValidator(_upper)]
TimeZoneName = Annotated[str, Field(max_length=64), AfterValidator(_valid_timezone)]
Text = Annotated[str, Field(max_length=2000)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Channel(str, Enum):
    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"
    CALL = "call"


class AddressKind(str, Enum):
    RESIDENCE = "residence"
    WORKPLACE = "workplace"


class AttemptOutcome(str, Enum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    REFUSED = "refused"
    WRONG_NUMBER = "wrong_number"
    PROMISE_TO_PAY = "promise_to_pay"


class EventData(BaseModel):
    """Base of every event's `data`; subclasses name their CloudEvents `type` and topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    topic: ClassVar[str]

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__

    def subject(self) -> str:
        """The CloudEvents subject: the loan id, or the collector id for collector events."""
        return str(getattr(self, "loan_id"))


class Borrower(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    borrower_id: Ident
    name: Annotated[str, Field(min_length=1, max_length=200)]
    phone: Annotated[str, Field(pattern=r"^\+?[0-9 ()-]{5,32}$")]
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)] | None = None
    residence_address: Text | None = None
    workplace_address: Text | None = None
    timezone: TimeZoneName


class Reason(BaseModel):
    """A machine-readable reason for a decision, with the figures that triggered it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: Annotated[str, Field(min_length=1, max_length=64)]
    value: str | None = None
    threshold: str | None = None


# --- loans.events: written by the lender's core (directly or through the intake API) ---


class LoanOverdue(EventData):
    topic = topics.LOANS
    loan_id: LoanId
    lender_id: Ident
    borrower: Borrower
    amount_overdue: Money
    currency: Currency
    due_date: date
    days_past_due: Annotated[int, Field(ge=0, le=36500)]
    repayment_channel: Annotated[str, Field(min_length=1, max_length=500)]
    verification_channel: Annotated[str, Field(min_length=1, max_length=500)] | None = None


class PaymentReceived(EventData):
    topic = topics.LOANS
    loan_id: LoanId
    amount: Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=2)]
    currency: Currency
    paid_at: AwareDatetime
    remaining_overdue: Money


class CeaseContactRequested(EventData):
    topic = topics.LOANS
    loan_id: LoanId
    channels: Annotated[list[Channel], Field(min_length=1)]
    requested_at: AwareDatetime


class DisputeOpened(EventData):
    topic = topics.LOANS
    loan_id: LoanId
    dispute_id: Ident
    reason: Text
    opened_at: AwareDatetime


class DisputeResolved(EventData):
    topic = topics.LOANS
    loan_id: LoanId
    dispute_id: Ident
    resolution: Text
    resolved_at: AwareDatetime


# --- cases.events: written by escalation ---


class CaseOpened(EventData):
    """Carries what downstream services need to act on the case, so they never ask escalation."""

    topic = topics.CASES
    loan_id: LoanId
    lender_id: Ident
    borrower: Borrower
    amount_overdue: Money
    currency: Currency
    due_date: date
    days_past_due: int
    repayment_channel: str
    verification_channel: str | None = None
    stage: str
    opened_at: AwareDatetime


class CaseEscalated(EventData):
    topic = topics.CASES
    loan_id: LoanId
    from_stage: str
    to_stage: str
    reasons: list[Reason]
    policy_version: str


class VisitRequested(EventData):
    topic = topics.CASES
    loan_id: LoanId
    reasons: list[Reason]
    policy_version: str


class CaseClosed(EventData):
    topic = topics.CASES
    loan_id: LoanId
    reason: str
    closed_at: AwareDatetime


# --- reminders.events: written by reminder ---


class ReminderScheduled(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: UUID
    channel: Channel
    template_id: str
    template_version: int
    due_at: AwareDatetime


class ReminderSent(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: UUID
    channel: Channel
    template_id: str
    template_version: int
    sent_at: AwareDatetime
    borrower_local_time: str


class ReminderDelivered(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: UUID
    channel: Channel
    delivered_at: AwareDatetime


class ReminderFailed(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: UUID
    channel: Channel
    reason: str
    failed_at: AwareDatetime


class ReminderCancelled(EventData):
    """An addition to the v1 contract: a pending reminder dropped because a rule forbids it."""

    topic = topics.REMINDERS
    loan_id: LoanId
    reminder_id: UUID
    channel: Channel
    rule: str
    reason: str
    cancelled_at: AwareDatetime


class PromiseToPay(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    amount: Money
    currency: Currency
    due_date: date


class ContactAttemptRecorded(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    attempt_id: UUID
    channel: Channel
    outcome: AttemptOutcome
    attempted_at: AwareDatetime
    collector_id: Ident | None = None
    promise_to_pay: PromiseToPay | None = None


class ContactBlocked(EventData):
    topic = topics.REMINDERS
    loan_id: LoanId
    channel: Channel
    rule: Annotated[str, Field(pattern=r"^C([1-9]|1[0-4])$")]
    reason: str
    deferred_until: AwareDatetime | None = None
    reminder_id: UUID | None = None


# --- visits.events: written by visit ---


class Certification(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    number: Ident
    valid_until: date


class AuthorisationLetter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    letter_id: Ident
    lender_id: Ident
    scope: Text
    valid_from: date
    valid_until: date


class CollectorRegistered(EventData):
    topic = topics.VISITS
    collector_id: Ident
    name: Annotated[str, Field(min_length=1, max_length=200)]
    agency: str | None = None
    id_number: Ident
    contact: str
    certification: Certification
    authorisation_letter: AuthorisationLetter
    registered_at: AwareDatetime

    def subject(self) -> str:
        return self.collector_id


class DebtorVerified(EventData):
    topic = topics.VISITS
    loan_id: LoanId
    visit_id: UUID | None = None
    checked: list[str]
    verified_by: Ident
    verified_at: AwareDatetime


class VisitScheduled(EventData):
    topic = topics.VISITS
    loan_id: LoanId
    visit_id: UUID
    scheduled_start: AwareDatetime
    scheduled_end: AwareDatetime
    address_kind: AddressKind
    collector_ids: Annotated[list[Ident], Field(min_length=1)]


class VisitNoticeSent(EventData):
    topic = topics.VISITS
    visit_id: UUID
    loan_id: LoanId
    channel: Channel
    window_start: AwareDatetime
    window_end: AwareDatetime
    address_kind: AddressKind
    sent_at: AwareDatetime


class VisitNoticeDelivered(EventData):
    topic = topics.VISITS
    visit_id: UUID
    loan_id: LoanId
    channel: Channel
    window_start: AwareDatetime
    window_end: AwareDatetime
    address_kind: AddressKind
    delivered_at: AwareDatetime


class VisitDeclined(EventData):
    topic = topics.VISITS
    visit_id: UUID
    loan_id: LoanId
    declined_at: AwareDatetime
    via: str


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id_card: bool
    badge: bool
    authorisation_letter: bool


class VisitCheckedIn(EventData):
    topic = topics.VISITS
    visit_id: UUID
    loan_id: LoanId
    collector_ids: Annotated[list[Ident], Field(min_length=1)]
    credentials_presented: Credentials
    checked_in_at: AwareDatetime


class VisitRecorded(EventData):
    topic = topics.VISITS
    visit_id: UUID
    loan_id: LoanId
    outcome: str
    borrower_attitude: str
    difficulties: Text
    repayment_plan: Text | None = None
    recording_sha256: Sha256Hex
    recording_seconds: Annotated[int, Field(gt=0)]
    ended_at: AwareDatetime


class VisitCancelled(EventData):
    topic = topics.VISITS
    visit_id: UUID
    loan_id: LoanId
    reason: str
    rule: str | None = None
    cancelled_at: AwareDatetime


class ComplaintFiled(EventData):
    topic = topics.VISITS
    complaint_id: UUID
    loan_id: LoanId
    about: Text
    filed_at: AwareDatetime


class ComplaintResolved(EventData):
    topic = topics.VISITS
    complaint_id: UUID
    loan_id: LoanId
    outcome: Text
    resolved_at: AwareDatetime


# --- audit.checkpoints: written by audit ---


class CheckpointSigned(EventData):
    topic = topics.CHECKPOINTS
    origin: str
    tree_size: Annotated[int, Field(ge=0)]
    root_hash: str
    note: str
    signed_at: AwareDatetime

    def subject(self) -> str:
        return self.origin


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.event_type(): cls
    for cls in (
        LoanOverdue, PaymentReceived, CeaseContactRequested, DisputeOpened, DisputeResolved,
        CaseOpened, CaseEscalated, VisitRequested, CaseClosed,
        ReminderScheduled, ReminderSent, ReminderDelivered, ReminderFailed, ReminderCancelled,
        ContactAttemptRecorded, ContactBlocked,
        CollectorRegistered, DebtorVerified, VisitScheduled, VisitNoticeSent,
        VisitNoticeDelivered, VisitDeclined, VisitCheckedIn, VisitRecorded, VisitCancelled,
        ComplaintFiled, ComplaintResolved,
        CheckpointSigned,
    )
}


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode, with our causation extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, Field(min_length=1, max_length=128)]
    source: Annotated[str, Field(min_length=1, max_length=256)]
    type: str
    time: AwareDatetime
    subject: Annotated[str, Field(min_length=1, max_length=128)]
    datacontenttype: Literal["application/json"] = "application/json"
    causationid: str | None = None
    correlationid: str | None = None
    data: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            raise ValueError(f"unknown event type {value!r}")
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
        raw = json.loads(value)
    except (ValueError, RecursionError) as error:  # bad JSON, bad UTF-8, absurd nesting or size
        raise DecodeError(f"not JSON: {str(error)[:200]}") from error
    if not isinstance(raw, dict):
        raise DecodeError("not a JSON object")
    try:
        envelope = CloudEvent.model_validate(raw)
        payload = envelope.payload()
    except ValidationError as error:
        raise DecodeError(_short(error)) from error
    if payload.subject() != envelope.subject:
        raise DecodeError(f"subject {envelope.subject!r} does not match the data")
    return envelope, payload


def _short(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5]]
    return "; ".join(parts)[:900]


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
) -> CloudEvent:
    return CloudEvent(
        id=event_id,
        source=source,
        type=data.event_type(),
        time=time,
        subject=data.subject(),
        causationid=causation_id,
        correlationid=correlation_id,
        data=data.model_dump(mode="json", exclude_none=True),
    )


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type's data and of the envelope, keyed by name."""
    schemas = {name: cls.model_json_schema() for name, cls in EVENT_TYPES.items()}
    schemas["CloudEvent"] = CloudEvent.model_json_schema()
    return schemas
