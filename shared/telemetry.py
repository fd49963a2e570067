"""What an operator reads of a running service: its log lines, its traces, the shared counters.

Log lines may be JSON objects, one a line (`DUNWELL_LOG_FORMAT=json`, the default under
`DUNWELL_ENVIRONMENT=production`) or plain text (`text`, the default otherwise). Either way a
line written while an event is being handled names the event's id and its correlation id,
and a line written inside a trace names the trace: the consumer and the HTTP middleware set
them for the work they run. Lines carry ids, never personal data.

Traces follow the W3C trace context. An intake request starts or continues a trace; the
events stored meanwhile keep its `traceparent` (see `TracedMapper`), the relay writes it on the
CloudEvent (the distributed-tracing extension attribute) and on the Kafka record's headers,
and each consumer continues it. Spans are exported as the standard `OTEL_` variables say:
`OTEL_TRACES_EXPORTER=console` writes them to standard output, one JSON object a line;
`otlp` needs the OTLP exporter package installed; nothing is exported otherwise, though
trace ids are still made and passed on.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACE_STATE_KEY = "_traceparent"  # where a stored domain event keeps its trace context

REFUSALS = Counter("dunwell_rule_refusals_total",
                   "Acts a conduct rule refused (blocked, held back, barred, or answered 409)",
                   ["service", "rule"])

_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None)
_propagator = TraceContextTextMapPropagator()


def tracer() -> trace.Tracer:
    return trace.get_tracer("dunwell")


# --- the event being handled ---


@contextlib.contextmanager
def handling(event_id: str, correlation_id: str | None) -> Iterator[None]:
    """Log lines written inside name the event and its correlation (the first event of a
    chain is its own correlation)."""
    tokens = (_event_id.set(event_id), _correlation_id.set(correlation_id or event_id))
    try:
        yield
    finally:
        _correlation_id.reset(tokens[1])
        _event_id.reset(tokens[0])


def current_ids() -> dict[str, str]:
    """The event id, correlation id, trace id and span id of the work going on, those known."""
    found = {}
    if (event_id := _event_id.get()) is not None:
        found["event_id"] = event_id
    if (correlation_id := _correlation_id.get()) is not None:
        found["correlation_id"] = correlation_id
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        found["trace_id"] = format(span.trace_id, "032x")
        found["span_id"] = format(span.span_id, "016x")
    return found


# --- trace context ---


def traceparent_now() -> str | None:
    """The W3C `traceparent` of the current span, or None outside any trace."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The trace context a `traceparent` names; None (a new trace) when absent or malformed."""
    if not traceparent:
        return None
    found = _propagator.extract({TRACEPARENT: traceparent})
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def traceparent_in(headers: Any) -> str | None:
    """The `traceparent` among Kafka record headers (name, bytes) pairs, if any."""
    for name, value in headers or ():
        if name == TRACEPARENT and value:
            return bytes(value).decode("ascii", "replace")
    return None


@contextlib.contextmanager
def continued(name: str, traceparent: str | None, kind: trace.SpanKind = trace.SpanKind.CONSUMER,
              attributes: Mapping[str, str] | None = None) -> Iterator[trace.Span]:
    """A span, current inside, that continues the trace `traceparent` names (or starts one)."""
    with tracer().start_as_current_span(name, context=context_of(traceparent), kind=kind,
                                        attributes=dict(attributes or {})) as span:
        yield span


# --- stored events keep the trace they were made in ---

# The events of a commit whose trace is known, by id(event), while the commit writes them.
_stamps: contextvars.ContextVar[Mapping[int, str] | None] = contextvars.ContextVar(
    "stamps", default=None)


@contextlib.contextmanager
def stamping(traces: Mapping[int, str]) -> Iterator[None]:
    """While a commit writes events: `traces[id(event)]` is kept with the event's state."""
    token = _stamps.set(traces)
    try:
        yield
    finally:
        _stamps.reset(token)


class TracedMapper(Mapper[Any]):
    """eventsourcing's mapper, which also keeps the `traceparent` an event was made under
    beside the event's own state: the relay publishes the event later, and its record must
    continue the trace of the request or event that caused it. The event itself never sees
    it (an aggregate replays from the state without it)."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        stamps = _stamps.get()
        traceparent = stamps.get(id(domain_event)) if stamps else None
        if traceparent is None:
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        state[TRACE_STATE_KEY] = traceparent
        proxy = object.__new__(type(domain_event))
        object.__setattr__(proxy, "__dict__", state)
        return super().to_stored_event(proxy)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        return self.traced(stored_event)[0]

    def traced(self, stored_event: StoredEvent) -> tuple[Any, str | None]:
        """The domain event, and the `traceparent` it was stored with (None if none)."""
        domain_event = super().to_domain_event(stored_event)
        traceparent = vars(domain_event).pop(TRACE_STATE_KEY, None)
        return domain_event, traceparent


# --- setting a process up ---


def configure(service: str) -> None:
    """Logs and traces of one service process, as the environment says."""
    configure_logging(service)
    configure_tracing(service)


def log_format() -> str:
    chosen = os.environ.get("DUNWELL_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    production = os.environ.get("DUNWELL_ENVIRONMENT", "") == "production"
    return "json" if production else "text"


def configure_logging(service: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(service) if log_format() == "json" else TextFormatter())
    logging.basicConfig(level=os.environ.get("DUNWELL_LOG_LEVEL", "INFO"), handlers=[handler])


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, service, and the ids of the work
    going on (event_id, correlation_id, trace_id, span_id) where there is one."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "service": self.service, **current_ids()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The plain lines of before, with the ids of the work going on at the end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = current_ids()
        ids.pop("span_id", None)
        return text + "".join(f" {name}={value}" for name, value in ids.items())


def configure_tracing(service: str) -> None:
    """A tracer provider for `dunwell-<service>`, exporting as OTEL_TRACES_EXPORTER says."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or f"dunwell-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for named in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(","):
        exporter = named.strip().lower()
        if exporter == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(
                out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")))
        elif exporter == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                    OTLPSpanExporter,
                )
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp, but opentelemetry-exporter-otlp-proto-http "
                            "is not installed: spans are not exported")
                continue
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif exporter not in ("", "none"):
            log.warning("unknown OTEL_TRACES_EXPORTER %r: spans are not exported", exporter[:32])
    trace.set_tracer_provider(provider)
