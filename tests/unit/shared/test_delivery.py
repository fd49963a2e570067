"""What the consumer makes of a record before any handler sees it."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from uuid import UUID

from shared import topics
from shared.consumer import Delivery
from shared.events import Channel, ReminderSent, envelope
from tests.service.records import consumer_record

NOW = datetime(2026, 10, 14, 3, 0, tzinfo=UTC)
SENT = envelope(ReminderSent(loan_id="L-1", reminder_id=UUID(int=1), channel=Channel.SMS,
                             template_id="sms.first_reminder", template_version=1, sent_at=NOW,
                             borrower_local_time="2026-10-14T11:00:00+08:00"),
                event_id="ev-1", source="/dunwell/reminder", time=NOW, causation_id=None,
                correlation_id=None)


def test_an_event_on_its_own_topic_is_delivered() -> None:
    delivery = Delivery.of(consumer_record(SENT, topics.REMINDERS, 0), "p")
    assert delivery.reason is None and delivery.payload is not None


def test_an_event_on_another_contract_topic_is_a_forgery_or_a_mistake() -> None:
    """A lender may write to loans.events; a ReminderSent there is not the reminder's word."""
    delivery = Delivery.of(consumer_record(SENT, topics.LOANS, 0), "p")
    assert delivery.reason == "invalid: a ReminderSent does not belong on loans.events"
    letter = delivery.dead_letter("dunwell-audit")
    assert letter.topic == "loans.events.dlq"


def test_a_reason_is_never_cut_inside_a_character() -> None:
    record = consumer_record(SENT, topics.REMINDERS, 0)
    delivery = Delivery.of(record, "p").dead("rejected: " + "€" * 600, "Rejected")
    reason = dict(delivery.dead_letter("g").headers)[topics.DLQ_REASON_HEADER]
    assert len(reason) <= 1000
    assert reason.decode().startswith("rejected: €")


def test_personal_data_in_a_refused_field_stays_out_of_the_reason() -> None:
    event = json.loads(SENT.encode())
    event["data"]["channel"] = "wang@example.org +8613800000000"
    record = consumer_record(SENT, topics.REMINDERS, 0)
    record = dataclasses.replace(record, value=json.dumps(event).encode())
    delivery = Delivery.of(record, "p")
    assert delivery.reason is not None and delivery.reason.startswith("invalid: ")
    assert "wang@example.org" not in delivery.reason and "13800000000" not in delivery.reason


def test_a_nul_character_anywhere_is_set_aside_not_left_to_fail_every_commit() -> None:
    """PostgreSQL's text and jsonb refuse U+0000: an event holding one would fail each commit
    of its batch there, and stall the partition, unless the consumer sets it aside first."""
    record = consumer_record(SENT, topics.REMINDERS, 0)
    event = json.loads(SENT.encode())
    edits = [("id", "ev\x00-1"), ("subject", None), ("template_id", "sms.first\x00")]
    for field, value in edits:
        edited = json.loads(json.dumps(event))
        if field == "subject":
            edited["data"]["loan_id"] = edited["subject"] = "L-\x001"
        elif field in edited:
            edited[field] = value
        else:
            edited["data"][field] = value
        delivery = Delivery.of(dataclasses.replace(record, value=json.dumps(edited).encode()),
                               "p")
        assert delivery.reason == "invalid: a string holds the NUL character (U+0000)", field
        assert delivery.dead_letter("g").key == "consumer/g/p/0"
    edited = json.loads(json.dumps(event))
    edited["data"]["extra\x00"] = 1
    delivery = Delivery.of(dataclasses.replace(record, value=json.dumps(edited).encode()), "p")
    assert delivery.reason == "invalid: a string holds the NUL character (U+0000)"
    nested = b'{"a": ' * 5000 + b"1" + b"}" * 5000
    assert Delivery.of(dataclasses.replace(record, value=nested), "p").reason is not None
