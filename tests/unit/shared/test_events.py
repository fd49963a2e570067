"""The public event contract: schemas for every type, a lossless envelope, a strict decoder."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from shared.events import (
    EVENT_TYPES,
    Borrower,
    Channel,
    CloudEvent,
    DecodeError,
    EventData,
    LoanOverdue,
    ReminderSent,
    decode,
    envelope,
    json_schemas,
)

NOW = datetime(2026, 10, 14, 3, 0, tzinfo=timezone.utc)

OVERDUE = LoanOverdue(
    loan_id="L-1", lender_id="lender-1",
    borrower=Borrower(borrower_id="B-1", name="Wang Fang", phone="+8613800000000",
                      email="wang@example.org", timezone="Asia/Shanghai"),
    amount_overdue=Decimal("1200.50"), currency="CNY", due_date=date(2026, 10, 1),
    days_past_due=13, repayment_channel="transfer to account 6222-0000-1111")
SENT = ReminderSent(
    loan_id="L-1", reminder_id=UUID("2f1c7d2e-9d0b-4a43-8b7e-0d5b8f5b9c11"), channel=Channel.SMS,
    template_id="sms.first_reminder", template_version=1, sent_at=NOW,
    borrower_local_time="2026-10-14T11:00:00+08:00")


def wrapped(data: EventData, event_id: str = "ev-1") -> CloudEvent:
    return envelope(data, event_id=event_id, source="/dunwell/test", time=NOW,
                    causation_id="ev-cause", correlation_id="ev-first")


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_has_a_json_schema(event_type: str) -> None:
    schema = json_schemas()[event_type]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == set(EVENT_TYPES[event_type].model_fields)


def test_the_envelope_has_a_json_schema_too() -> None:
    assert {"specversion", "id", "source", "type", "time", "subject", "data"} <= set(
        json_schemas()["CloudEvent"]["properties"])


@pytest.mark.parametrize("data", [OVERDUE, SENT], ids=lambda d: d.event_type())
def test_an_event_survives_the_wire_unchanged(data: EventData) -> None:
    sent = wrapped(data)
    received, payload = decode(sent.encode())
    assert received == sent
    assert (received.id, received.causationid, received.correlationid) == (
        "ev-1", "ev-cause", "ev-first")
    assert (received.type, received.subject) == (data.event_type(), "L-1")
    assert received.data == sent.data
    assert payload == data


def test_the_wire_form_is_structured_cloudevents_json() -> None:
    wire = json.loads(wrapped(OVERDUE).encode())
    assert wire["specversion"] == "1.0"
    assert wire["datacontenttype"] == "application/json"
    assert wire["time"] == "2026-10-14T03:00:00Z"
    assert wire["data"]["amount_overdue"] == "1200.50"


def overdue_wire() -> dict[str, Any]:
    wire: dict[str, Any] = json.loads(wrapped(OVERDUE).encode())
    return wire


def without_currency(wire: dict[str, Any]) -> None:
    del wire["data"]["currency"]


def negative_amount(wire: dict[str, Any]) -> None:
    wire["data"]["amount_overdue"] = "-0.01"


def unknown_zone(wire: dict[str, Any]) -> None:
    wire["data"]["borrower"]["timezone"] = "Mars/Olympus_Mons"


def other_subject(wire: dict[str, Any]) -> None:
    wire["subject"] = "L-2"


def unknown_type(wire: dict[str, Any]) -> None:
    wire["type"] = "LoanForgiven"


def null_field(wire: dict[str, Any]) -> None:
    wire["data"]["lender_id"] = None


def extra_field(wire: dict[str, Any]) -> None:
    wire["data"]["note"] = "call the neighbours"


def without_id(wire: dict[str, Any]) -> None:
    del wire["id"]


def naive_time(wire: dict[str, Any]) -> None:
    wire["time"] = "2026-10-14T03:00:00"


@pytest.mark.parametrize("spoil", [
    without_currency, negative_amount, unknown_zone, other_subject, unknown_type, null_field,
    extra_field, without_id, naive_time,
], ids=lambda f: f.__name__)
def test_an_event_that_breaks_the_contract_is_refused(spoil: Any) -> None:
    wire = overdue_wire()
    spoil(wire)
    with pytest.raises(DecodeError):
        decode(json.dumps(wire).encode())


@pytest.mark.parametrize(("value", "why"), [
    (None, "empty"),
    (b"\xff\xfe not utf-8", "not JSON"),
    (b"{\"specversion\": \"1.0\",", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b"\"LoanOverdue\"", "not a JSON object"),
    (b"[" * 100_000, "not JSON"),
    (b"{\"n\": " + b"9" * 5000 + b"}", "not JSON"),
])
def test_a_value_that_is_not_an_event_object_is_refused(value: bytes | None, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode(value)


@pytest.mark.parametrize(("spoil", "names"), [
    (without_currency, "currency"),
    (negative_amount, "amount_overdue"),
    (unknown_zone, "timezone"),
    (other_subject, "subject"),
    (unknown_type, "LoanForgiven"),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_the_refusal_names_what_is_wrong(spoil: Any, names: str) -> None:
    wire = overdue_wire()
    spoil(wire)
    with pytest.raises(DecodeError, match=names):
        decode(json.dumps(wire).encode())
