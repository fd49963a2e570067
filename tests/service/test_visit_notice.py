"""A visit's advance notice through the reminder service as its composition root builds it:
visits.events into its sink, the SMS handed to the embedded provider sink (var/outbox/), the
provider's receipt posted to `POST /v1/receipts/sms`, and the visit named on what it reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import FastAPI
from fastapi.testclient import TestClient

from dunwell.sinks import Outbox, ProviderSink
from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import (
    ReminderDelivered,
    ReminderSent,
    ScheduledCollector,
    VisitScheduled,
    envelope,
)
from shared.roles import Role
from tests.service.records import consumer_record, tracking_of
from tests.service.test_agenda import open_cases

from services.reminder.application import Reminders
from services.reminder.channels import HttpGateway
from services.reminder.domain import ContactPlan
from services.reminder.handlers import HANDLERS
from services.reminder.relay import integration_event

VISIT = UUID("6f1c2a4e-0000-4000-8000-00000000000b")


def published(app: Reminders) -> list[Any]:
    found = [integration_event(app.mapper.to_domain_event(n))
             for n in app.recorder.select_notifications(1, 1000)]
    return [p.data for p in found if p is not None]


def test_the_notice_reaches_the_outbox_and_its_receipt_names_the_visit(
        build: Callable[[str], FastAPI], clock: ManualClock, tmp_path: Path,
        token: Callable[..., dict[str, str]]) -> None:
    app = build("reminder")
    reminders: Reminders = app.state.service
    open_cases(reminders, 1, clock.now())  # L-0, at 11:00 in Shanghai
    visit = VisitScheduled(
        loan_id="L-0", visit_id=VISIT, address_kind="residence",  # type: ignore[arg-type]
        scheduled_start=datetime(2026, 10, 17, 2, 0, tzinfo=UTC),  # 10:00 in Shanghai
        scheduled_end=datetime(2026, 10, 17, 4, 0, tzinfo=UTC),
        collector_ids=["C-7", "C-8"],
        collectors=[ScheduledCollector(collector_id=c, name=n, letter_id=f"LTR-{c}",
                                       verification_code=code)
                    for c, n, code in (("C-7", "Zhang Wei", "VC7K2M9Q"),
                                       ("C-8", "Liu Yang", "VC8P4R6T"))])
    event = envelope(visit, event_id="ev-visit-scheduled", source="/dunwell/visit",
                     time=clock.now(), causation_id=None, correlation_id=None)
    record = consumer_record(event, "visits.events", 0)
    assert HandlerSink(reminders, HANDLERS, clock).process(tracking_of(record), record, event,
                                                          event.payload())
    (notice_id,) = reminders.plan_of("L-0").notices[str(VISIT)]  # type: ignore[union-attr]
    assert notice_id in reminders.due(clock.now())

    outbox = tmp_path / "var" / "outbox"
    sink = ProviderSink(Outbox(outbox)).start()
    try:
        gateway = HttpGateway(sink.url)
        for due in reminders.due(clock.now()):
            reminders.fire(due, "Reminder", {"sms": gateway}, clock.now(), timedelta(minutes=1))
        gateway.close()
    finally:
        sink.stop()
    lines = [json.loads(line) for line in (outbox / "sms.jsonl").read_text().splitlines()]
    (line,) = [entry for entry in lines if entry["idempotency_key"] == str(notice_id)]
    assert "2026-10-17 10:00至12:00" in line["text"] and "住所" in line["text"]
    assert "http://127.0.0.1:8003/v1/verify/VC7K2M9Q" in line["text"]
    assert "http://127.0.0.1:8003/v1/verify/VC8P4R6T" in line["text"]

    with TestClient(app) as client:
        answer = client.post("/v1/receipts/sms", headers=token(Role.PROVIDER, "provider"),
                             json={"message_id": str(notice_id), "status": "delivered",
                                   "at": (clock.now() + timedelta(seconds=3)).isoformat()})
        assert answer.status_code == 202
        view = client.get("/v1/loans/L-0/reminders", headers=token(Role.OPS, "ops-1")).json()
    (shown,) = [r for r in view["sent"] if r["reminder_id"] == str(notice_id)]
    assert (shown["visit_id"], shown["template_id"], shown["delivery"]) == (
        str(VISIT), "visit.notice", "delivered")
    events = published(reminders)
    (sent,) = [e for e in events if isinstance(e, ReminderSent) and e.reminder_id == notice_id]
    (delivered,) = [e for e in events if isinstance(e, ReminderDelivered)
                    and e.reminder_id == notice_id]
    assert sent.visit_id == delivered.visit_id == VISIT
    assert ContactPlan.create_id("L-0") in reminders.repository
