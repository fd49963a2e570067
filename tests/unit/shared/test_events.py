"""The public event contract: schemas for every type, a lossless envelope, a strict decoder."""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import TypeAdapter, ValidationError

from shared import events
from shared.currencies import ISO_4217
from shared.events import (
    EVENT_TYPES,
    TIME_ZONES,
    AttemptOutcome,
    Borrower,
    Channel,
    CloudEvent,
    ContactAttemptRecorded,
    DecodeError,
    EventData,
    LoanOverdue,
    ReminderSent,
    decode,
    envelope,
    json_schemas,
)
from tests.helpers import loan_body

NOW = datetime(2026, 10, 14, 3, 0, tzinfo=UTC)

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


# --- strict input: what the schemas say is exactly what the models take ---


def _nodes(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from _nodes(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _nodes(value)


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_every_string_and_every_list_is_bounded(name: str) -> None:
    for mode in ("validation", "serialization"):
        cls = EVENT_TYPES.get(name, CloudEvent)
        for node in _nodes(cls.model_json_schema(mode=mode)):  # type: ignore[arg-type]
            if node.get("type") == "string":
                assert "maxLength" in node or "enum" in node or "const" in node, (name, node)
            if node.get("type") == "array":
                assert "maxItems" in node, (name, node)


def overdue_data(**change: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(wrapped(OVERDUE).encode())["data"]
    return {**data, **change}


@pytest.mark.parametrize("change", [
    {"days_past_due": True}, {"days_past_due": "30"}, {"days_past_due": 30.0},
    {"amount_overdue": "1E+6"}, {"amount_overdue": "1e6"}, {"amount_overdue": 1200.5},
    {"amount_overdue": 1200}, {"amount_overdue": "01200.50"}, {"amount_overdue": "1200.505"},
    {"amount_overdue": "+1200.50"}, {"amount_overdue": " 1200.50"},
    {"currency": "XXX"}, {"currency": "XTS"}, {"currency": "XAU"}, {"currency": "XDR"},
    {"currency": "ABC"}, {"currency": "cny"}, {"currency": "CNH"},
    {"due_date": "2026-10-01T00:00:00"}, {"due_date": "20261001"}, {"due_date": 0},
    {"borrower": {**overdue_data()["borrower"], "timezone": "posixrules"}},
    {"borrower": {**overdue_data()["borrower"], "timezone": "Factory"}},
    {"borrower": {**overdue_data()["borrower"], "timezone": "localtime"}},
    {"borrower": {**overdue_data()["borrower"], "timezone": "asia/shanghai"}},
    {"repayment_channel": "x" * 501},
], ids=repr)
def test_a_loose_value_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LoanOverdue.model_validate(overdue_data(**change))


@pytest.mark.parametrize("time", ["1700000000", 1700000000, "2026-10-14 03:00:00Z",
                                  "2026-10-14t03:00:00z", "2026-10-14T03:00Z",
                                  "2026-10-14T03:00:00", "2026-10-14T03:00:00.1234567Z",
                                  "2026-10-14T03:00:00,5Z", "0999-10-14T03:00:00Z"])
def test_a_time_is_rfc_3339_with_seconds_and_an_offset(time: Any) -> None:
    wire = json.loads(wrapped(OVERDUE).encode())
    wire["time"] = time
    with pytest.raises(DecodeError):
        decode(json.dumps(wire).encode())


def test_money_is_written_with_two_places_never_an_exponent() -> None:
    data = overdue_data(amount_overdue="12.5")
    assert LoanOverdue.model_validate(data).model_dump(mode="json")["amount_overdue"] == "12.50"
    big = OVERDUE.model_copy(update={"amount_overdue": Decimal("1E+6")})
    assert json.loads(wrapped(big).encode())["data"]["amount_overdue"] == "1000000.00"
    assert big.model_dump()["amount_overdue"] == Decimal("1E+6")  # Python keeps the value


# (type, value, accepted) — checked against the model and against its JSON Schema. Values
# whose refusal only a `format` assertion says (2026-02-30) are left out: Python's jsonschema
# checks date-time formats only with an extra package.
SAMPLES: list[tuple[str, Any, bool]] = [
    ("Money", "0", True), ("Money", "12.5", True), ("Money", "1200.50", True),
    ("Money", "9999999999999999.99", True), ("Money", "10000000000000000", False),
    ("Money", "1E+6", False), ("Money", "-1.00", False), ("Money", "01.00", False),
    ("Money", "1.", False), ("Money", ".5", False),
    ("Money", "1.001", False), ("Money", 100, False), ("Money", "\uff11", False),
    ("PositiveMoney", "0.01", True), ("PositiveMoney", "0.1", True), ("PositiveMoney", "1", True),
    ("PositiveMoney", "0", False), ("PositiveMoney", "0.00", False),
    ("PositiveMoney", "0.0", False),
    ("Time", "2026-10-14T03:00:00Z", True), ("Time", "2026-10-14T11:00:00.5+08:00", True),
    ("Time", "2026-10-14T03:00:00.123456-23:59", True), ("Time", "2026-10-14T03:00:00", False),
    ("Time", "2026-10-14T24:00:00Z", False), ("Time", "2026-10-14T23:59:60Z", False),
    ("Time", "2026-10-14T03:00:00+24:00", False), ("Time", 17, False),
    ("Day", "2026-10-01", True), ("Day", "2026-13-01", False), ("Day", "3000-01-01", False),
    ("Currency", "CNY", True), ("Currency", "XAF", True), ("Currency", "XXX", False),
    ("Currency", "cny", False), ("Currency", "ABC", False),
    ("TimeZoneName", "Asia/Shanghai", True), ("TimeZoneName", "Etc/GMT-3", True),
    ("TimeZoneName", "posixrules", False), ("TimeZoneName", "CST", False),
    ("EventUUID", "2f1c7d2e-9d0b-4a43-8b7e-0d5b8f5b9c11", True),
    ("EventUUID", "2f1c7d2e9d0b4a438b7e0d5b8f5b9c11", False),
    ("LoanId", "L-1", True), ("LoanId", "L 1", False), ("LoanId", "L" * 65, False),
]


@pytest.mark.parametrize(("kind", "value", "accepted"), SAMPLES, ids=repr)
def test_the_schema_says_what_the_model_takes(kind: str, value: Any, accepted: bool) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(getattr(events, kind))
    try:
        adapter.validate_python(value)
        taken = True
    except ValidationError:
        taken = False
    assert taken is accepted
    assert Draft202012Validator(adapter.json_schema(),
                                format_checker=FormatChecker()).is_valid(value) is accepted


def test_the_currencies_are_active_iso_4217_codes_only() -> None:
    assert all(len(code) == 3 and code.isascii() and code.isupper() for code in ISO_4217)
    assert {"CNY", "USD", "EUR", "XAF", "XCD", "XCG", "XOF", "XPF"} <= ISO_4217
    not_money = {"XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XBA", "XBB", "XBC", "XBD", "XDR",
                 "XSU", "XUA", "BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW"}
    withdrawn = {"HRK", "BGN", "ANG", "CUC", "SLL", "ZWL", "VEF", "MRO", "STD", "BYR", "LTL"}
    assert not (not_money | withdrawn) & ISO_4217
    assert 140 <= len(ISO_4217) <= 170


def test_the_time_zones_are_real_iana_zones_that_load() -> None:
    assert not {"Factory", "posixrules", "localtime"} & TIME_ZONES
    assert {"Asia/Shanghai", "America/New_York", "UTC", "Etc/GMT-3"} <= TIME_ZONES
    assert not any(name.startswith(("posix/", "right/")) for name in TIME_ZONES)
    assert zoneinfo.available_timezones() >= TIME_ZONES
    for name in TIME_ZONES:
        zoneinfo.ZoneInfo(name)


def _raw(**changes: object) -> dict[str, object]:
    event = json.loads(envelope(LoanOverdue.model_validate(loan_body("L-9")), event_id="e-1",
                                source="/lender-1/core", time=datetime(2026, 10, 14, 3, tzinfo=UTC),
                                causation_id=None, correlation_id=None).encode())
    event.update(changes)
    return event


def test_an_event_that_repeats_a_key_could_be_read_two_ways_and_is_refused() -> None:
    text = json.dumps(_raw(), separators=(",", ":"))
    twice = text.replace('"lender_id":"lender-1"', '"lender_id":"lender-2","lender_id":"lender-1"')
    assert twice != text
    with pytest.raises(DecodeError, match="repeats the key"):
        decode(twice.encode())


def test_an_event_without_specversion_is_not_a_cloudevent() -> None:
    event = _raw()
    del event["specversion"]
    with pytest.raises(DecodeError, match="specversion"):
        decode(json.dumps(event).encode())


@pytest.mark.parametrize("value", ["wang.fang@example.org", "+86 138 0000 0000"])
def test_a_decode_error_never_repeats_personal_data(value: str) -> None:
    for event in (_raw(subject=value), _raw(type=value),
                  _raw(data={**_raw()["data"], "currency": value})):  # type: ignore[dict-item]
        with pytest.raises(DecodeError) as refused:
            decode(json.dumps(event).encode())
        assert value not in str(refused.value) and "13800000000" not in str(refused.value)


def test_a_dial_without_a_permit_says_so_with_a_null_permit() -> None:
    """CONTRACT.md: `permit_id` is null when the dial had none, not left out."""
    attempt = ContactAttemptRecorded(loan_id="L-1", attempt_id=UUID(int=5), channel=Channel.CALL,
                                     outcome=AttemptOutcome.NO_ANSWER,
                                     attempted_at=datetime(2026, 10, 14, 3, 0, tzinfo=UTC))
    event = envelope(attempt, event_id="e-1", source="/dunwell/reminder", time=attempt.attempted_at,
                     causation_id=None, correlation_id=None)
    raw = json.loads(event.encode())
    assert "permit_id" in raw["data"] and raw["data"]["permit_id"] is None
    assert "collector_id" not in raw["data"]  # other optional fields stay left out
    assert decode(event.encode())[1] == attempt
