"""Log lines name the event and the trace they were written in; stored events keep their trace
beside their state (and replay without it); refusals are counted once, when committed."""

from __future__ import annotations

import json
import logging
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
from eventsourcing.domain import Aggregate, event
from prometheus_client import REGISTRY

from shared import telemetry
from shared.application import ServiceApplication

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Note(Aggregate):
    @event("Written")
    def __init__(self, key: str) -> None:
        self.key = key
        self.blocks: list[str] = []

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"https://dunwell.dev/tests/notes/{key}")

    @event("Blocked")
    def block(self, rule: str) -> None:
        self.blocks.append(rule)


class Notes(ServiceApplication):
    name = "notes"


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("dunwell.test", logging.WARNING, __file__, 1, message, args, None)


def test_a_json_line_names_the_event_its_correlation_and_its_trace() -> None:
    formatter = telemetry.JsonFormatter("reminder")
    with telemetry.handling("ev-2", "ev-1"), telemetry.continued("handle", TRACEPARENT):
        line = json.loads(formatter.format(_record("handled %s", "it")))
    assert line["message"] == "handled it" and line["level"] == "WARNING"
    assert line["service"] == "reminder" and line["logger"] == "dunwell.test"
    assert (line["event_id"], line["correlation_id"]) == ("ev-2", "ev-1")
    assert line["trace_id"] == TRACE_ID
    assert line["time"].endswith("+00:00")


def test_outside_any_event_a_line_names_none_and_a_first_event_is_its_own_correlation() -> None:
    formatter = telemetry.JsonFormatter("audit")
    outside = json.loads(formatter.format(_record("idle")))
    assert not {"event_id", "correlation_id", "trace_id"} & set(outside)
    with telemetry.handling("ev-1", None):
        first = json.loads(formatter.format(_record("first")))
    assert first["correlation_id"] == "ev-1"


def test_the_text_format_ends_with_the_ids() -> None:
    with telemetry.handling("ev-2", "ev-1"):
        text = telemetry.TextFormatter().format(_record("handled"))
    assert text.endswith("handled event_id=ev-2 correlation_id=ev-1")


@pytest.mark.parametrize(("env", "chosen"), [
    ({}, "text"), ({"DUNWELL_ENVIRONMENT": "production"}, "json"),
    ({"DUNWELL_LOG_FORMAT": "json"}, "json"),
    ({"DUNWELL_ENVIRONMENT": "production", "DUNWELL_LOG_FORMAT": "text"}, "text")])
def test_the_log_format(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                        chosen: str) -> None:
    monkeypatch.delenv("DUNWELL_LOG_FORMAT", raising=False)
    monkeypatch.delenv("DUNWELL_ENVIRONMENT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert telemetry.log_format() == chosen


@pytest.mark.parametrize("given", [None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"])
def test_a_missing_or_malformed_traceparent_starts_a_new_trace(given: str | None) -> None:
    assert telemetry.context_of(given) is None


def test_a_stored_event_keeps_its_trace_and_replays_without_it() -> None:
    app = Notes()
    with telemetry.continued("intake", TRACEPARENT):
        app.save(Note("a"))
    app.save(Note("b"))
    traced, untraced = app.recorder.select_notifications(1, 10)
    event, traceparent = app.mapper.traced(traced)  # type: ignore[attr-defined]
    assert traceparent is not None and traceparent.split("-")[1] == TRACE_ID
    assert telemetry.TRACE_STATE_KEY not in vars(event)
    assert telemetry.TRACE_STATE_KEY.encode() not in untraced.state
    assert app.mapper.traced(untraced)[1] is None  # type: ignore[attr-defined]
    assert app.load(Note.create_id("a")).key == "a"  # replays: the event never sees the trace


def _refusals(rule: str) -> float:
    return REGISTRY.get_sample_value("dunwell_rule_refusals_total",
                                     {"service": "notes", "rule": rule}) or 0.0


def test_a_refusal_is_counted_once_when_it_is_committed() -> None:
    app = Notes()
    app.save(Note("c"))
    before = _refusals("C13")
    unit = app.unit()
    note = unit.get(Note.create_id("c"))
    note.block("C13")
    unit.save(note)
    assert _refusals("C13") == before  # decided, not yet recorded
    app.commit(unit)
    assert _refusals("C13") == before + 1
    app.save(app.load(Note.create_id("c")))  # nothing new: nothing counted
    assert _refusals("C13") == before + 1
