"""One trace from the intake to the audit append, over a real broker: the relay puts the trace the
event was stored in on the record (attribute and header), a service's handler continues it and
so does what that handler stores, and the audit's append is a span of it. The consumer's lag
for what it has applied is 0."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from shared import telemetry, topics
from shared.clock import SystemClock
from shared.consumer import ConsumerSettings, EventConsumer, HandlerSink, Sink
from shared.events import CaseClosed, decode
from shared.relay import OutboxRelay, Publication, StoredEvents
from tests.integration.kit import (
    NOW,
    Behaviour,
    Broker,
    Mark,
    eventually,
    marks,
    records,
    started_producer,
)

from services.audit.application import AuditLog
from services.audit.signer import generate_signer, load_signer
from services.audit.store import LogStore

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
INTAKE = f"00-{TRACE_ID}-b7ad6b7169203331-01"
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The process's tracer provider (set once: OpenTelemetry allows no second), in memory."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER


def mapping(event: Any) -> Publication | None:
    if isinstance(event, Mark.Marked):
        return Publication(CaseClosed(loan_id=event.loan_id, reason="paid", closed_at=NOW),
                           causation_id=None, correlation_id=None)
    return None


def audit_log(path: Path) -> AuditLog:
    skey, vkey = generate_signer("dunwell.test/audit")
    _, signer = load_signer(skey)
    return AuditLog(LogStore(path), "dunwell.test/audit", signer, vkey)


def consumer(broker: Broker, group: str, sink: Sink, producer: AIOKafkaProducer
             ) -> EventConsumer:
    return EventConsumer(group=group, subscribe=[topics.CASES], sink=sink,
                         kafka_options=broker.settings().consumer_options(),
                         producer=lambda: producer, incarnation=lambda: broker.incarnation,
                         clock=SystemClock(),
                         settings=ConsumerSettings(backoff_seconds=0.05))


def finished(exporter: InMemorySpanExporter, name: str, event_id: str) -> ReadableSpan | None:
    return next((span for span in exporter.get_finished_spans() if span.name == name
                 and (span.attributes or {}).get("cloudevents.event_id") == event_id), None)


async def test_the_trace_given_at_intake_reaches_the_audit_append(
        broker: Broker, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    loan = f"T-{tmp_path.name[-10:]}"
    for part in ("intake", "downstream"):
        (tmp_path / part).mkdir()
    intake = marks(tmp_path / "intake")
    with telemetry.continued("POST /v1/loans/overdue", INTAKE, kind=trace.SpanKind.SERVER) as span:
        intake.save(Mark(loan_id=loan))
        intake_span = span.get_span_context().span_id
    downstream = marks(tmp_path / "downstream")
    audit = audit_log(tmp_path / "audit.db")
    producer = await started_producer(broker.settings())
    relay = OutboxRelay(outbox=StoredEvents(intake, mapping, "/test"), producer=lambda: producer,
                        incarnation=lambda: "inc-tracing", idle_seconds=0.1)
    group = f"tracing-{loan}"
    loops = [relay.run, consumer(broker, f"{group}-audit", audit, producer).run,
             consumer(broker, f"{group}-service", HandlerSink(
                 downstream, {CaseClosed: Behaviour().handler}, SystemClock()), producer).run]
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(loop(stop)) for loop in loops]
    try:
        record = await eventually(lambda: _published(broker, loan), what="the published event")
        envelope, _ = decode(record.value)
        appended = await eventually(lambda: finished(spans, "audit append", envelope.id),
                                    what="the audit append's span")
        handled = await eventually(lambda: finished(spans, "handle CaseClosed", envelope.id),
                                   what="the service handler's span")
        await eventually(lambda: _lag(f"{group}-audit", record.partition) == 0.0,
                         what="the audit consumer's lag at 0")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        await producer.stop()

    # On the wire: the stored trace context, as attribute and header alike.
    assert envelope.traceparent is not None
    assert envelope.traceparent.split("-")[1:3] == [TRACE_ID, format(intake_span, "016x")]
    assert dict(record.headers)["traceparent"].decode() == envelope.traceparent
    # The audit append continues it: the same trace, its parent the intake's span.
    assert format(appended.context.trace_id, "032x") == TRACE_ID
    assert appended.parent is not None and appended.parent.span_id == intake_span
    assert (appended.attributes or {}).get("dunwell.audit.appended") is True
    # So does a service's handler, and what it stores is published in that trace too.
    assert format(handled.context.trace_id, "032x") == TRACE_ID
    # The broker's cases topic holds other tests' events too: this loan's is the one.
    stored = [n for n in downstream.recorder.select_notifications(1, 1000)
              if loan.encode() in n.state]
    assert len(stored) == 1
    _, kept = downstream.mapper.traced(stored[0])  # type: ignore[attr-defined]
    assert kept is not None and kept.split("-")[1:3] == [
        TRACE_ID, format(handled.context.span_id, "016x")]


async def _published(broker: Broker, loan: str) -> Any:
    for record in await records(broker.settings(), topics.CASES):
        _, data = decode(record.value)
        if data.subject() == loan:
            return record
    return None


def _lag(group: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("dunwell_consumer_lag", {
        "group": group, "topic": topics.CASES, "partition": str(partition)})
