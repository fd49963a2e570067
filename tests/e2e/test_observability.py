"""What an operator reads of a running suite, after loans went through it: JSON log lines that
name events, correlations and the intake's trace but never a borrower; each service's metrics
(consumer lag down to 0, a rule's refusal, a sent reminder, the age of the audit's latest
checkpoint)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dunwell import devstack
from shared import topics
from shared.auth import Role
from tests.e2e.conftest import cluster
from tests.e2e.stack import Stack, start_stack
from tests.helpers import loan_body, wait_for, zone_at_local_hour

TRACE_ID = "5d2c9a41e0b7f3a6c8d1e4f7a0b3c6d9"
TRACEPARENT = f"00-{TRACE_ID}-a1b2c3d4e5f60718-01"
# A borrower no test data elsewhere names: any of these in a log line is a leak.
BORROWER = {"name": "Quillfeather Zhaoxiong", "phone": "+8613987654321",
            "email": "quillfeather.zhaoxiong@example.org",
            "residence_address": "88 Lanternfish Alley, Unit 1207",
            "workplace_address": "Obsidian Tower 31F, Kestrel Road 9"}
SUBSCRIBED = {"escalation": [topics.LOANS, topics.REMINDERS, topics.VISITS],
              "reminder": [topics.CASES, topics.VISITS],
              "visit": [topics.CASES, topics.REMINDERS],
              "audit": [topics.LOANS, topics.CASES, topics.REMINDERS, topics.VISITS]}
LOG_KEYS = {"time", "level", "logger", "message", "service"}


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A suite of its own whose services write JSON lines, with the handlers' debug lines."""
    running = start_stack(tmp_path_factory.mktemp("observed"),
                          extra_env={"DUNWELL_LOG_FORMAT": "json", "DUNWELL_LOG_LEVEL": "DEBUG"},
                          postgres=cluster(request))
    try:
        yield running
    finally:
        running.shutdown()


def _borrowed(zone: str) -> dict[str, Any]:
    body = loan_body(timezone_name=zone)
    body["borrower"] = {**body["borrower"], **BORROWER}
    return body


def _types(stack: Stack, loan_id: str) -> list[str]:
    return [event["type"] for event in stack.timeline(loan_id)]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metrics(stack: Stack, service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{stack.url(service)}/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _lags(stack: Stack, service: str) -> dict[tuple[str, str], float]:
    """Each (topic, partition) of the service's group and its lag."""
    found = {}
    for (name, labels), value in _metrics(stack, service).items():
        named = dict(labels)
        if name == "dunwell_consumer_lag" and named["group"] == f"dunwell-{service}":
            found[named["topic"], named["partition"]] = value
    return found


def _value(stack: Stack, at: str, name: str, **labels: str) -> float | None:
    """A sample of `name` with exactly `labels`, as the service `at` exports it."""
    return _metrics(stack, at).get((name, tuple(sorted(labels.items()))))


def test_a_flow_leaves_logs_without_the_borrower_and_metrics_an_operator_can_use(
        observed: Stack) -> None:
    stack = observed
    day = _borrowed(zone_at_local_hour(11))
    with stack.client("escalation", Role.LENDER) as lender:
        posted = lender.post("/v1/loans/overdue", json=day,
                             headers={"traceparent": TRACEPARENT})
        assert posted.status_code == 202, posted.text
        overdue_id = str(posted.json()["event_id"])
        night = _borrowed(zone_at_local_hour(23))  # C1: no contact outside 08:00-22:00
        assert lender.post("/v1/loans/overdue", json=night).status_code == 202
    wait_for(lambda: "ReminderSent" in _types(stack, day["loan_id"]), timeout=60,
             what="the reminder sent and audited")
    wait_for(lambda: "ContactBlocked" in _types(stack, night["loan_id"]), timeout=60,
             what="the night loan's reminder blocked by C1")
    with stack.client("escalation", Role.LENDER) as lender:
        paid = lender.post(f"/v1/loans/{day['loan_id']}/payments", json={
            "amount": "1200.50", "currency": "CNY", "paid_at": "2026-11-23T10:00:00Z",
            "remaining_overdue": "0"})
    assert paid.status_code == 202, paid.text
    wait_for(lambda: "CaseClosed" in _types(stack, day["loan_id"]), timeout=60,
             what="the paid case closed and audited")

    _metrics_tell_the_flow(stack)
    _the_intake_trace_reaches_the_audit_append(stack, overdue_id)
    _no_log_names_the_borrower(stack)


def _metrics_tell_the_flow(stack: Stack) -> None:
    for service, subscribed in SUBSCRIBED.items():
        lags = wait_for(lambda s=service: (found := _lags(stack, s)) and all(
            value == 0 for value in found.values()) and found, timeout=60,
            what=f"{service}'s consumer lag at 0")
        assert {topic for topic, _ in lags} == set(subscribed), (service, lags)
        assert all(value >= 0 for value in lags.values())
    sent = _value(stack, "reminder", "dunwell_channel_sends_total", channel="sms",
                  outcome="sent")
    assert sent is not None and sent >= 1
    refused = _value(stack, "reminder", "dunwell_rule_refusals_total", service="reminder",
                     rule="C1")
    assert refused is not None and refused >= 1
    def signed() -> tuple[float] | None:
        age = _value(stack, "audit", "dunwell_audit_checkpoint_age_seconds")
        return (age,) if age is not None and math.isfinite(age) else None

    (age,) = wait_for(signed, what="a signed checkpoint's age")
    assert 0 <= age < 60
    size = _value(stack, "audit", "dunwell_audit_tree_size")
    assert size is not None and size >= 8  # two loans' reports, cases, reminders, a payment


def _the_intake_trace_reaches_the_audit_append(stack: Stack, overdue_id: str) -> None:
    def appended() -> dict[str, Any] | None:
        return next((line for line in _lines(stack.services["audit"].log_path)
                     if line.get("event_id") == overdue_id
                     and line["message"].startswith("appended LoanOverdue")), None)

    line = wait_for(appended, what="the audit's line for the appended LoanOverdue")
    assert line["trace_id"] == TRACE_ID
    assert line["correlation_id"] == overdue_id and line["service"] == "audit"
    # The case it opened is handled in the same trace, by the same correlation.
    opened = [entry for entry in _lines(stack.services["reminder"].log_path)
              if entry["message"].startswith("handle CaseOpened")
              and entry.get("correlation_id") == overdue_id]
    assert opened and {entry["trace_id"] for entry in opened} == {TRACE_ID}


def _no_log_names_the_borrower(stack: Stack) -> None:
    # The borrower's details went through (the reminder reached their phone), yet no log
    # line names them.
    assert any(entry["to"] == BORROWER["phone"] for entry in stack.outbox("sms"))
    logs = [stack.logs / f"{name}.log" for name in devstack.SERVICES]
    sinks = [path for path in stack.logs.glob("*.log") if "sink" in path.name]
    assert sinks, list(stack.logs.iterdir())
    for path in logs + sinks:
        text = path.read_text(errors="replace")
        for what, value in BORROWER.items():
            assert value not in text, f"{path.name} names the borrower's {what}"
    for path in logs:
        lines = _lines(path)  # every line is one JSON object
        assert lines and all(set(line) >= LOG_KEYS for line in lines), path.name
    handled = [line for path in logs for line in _lines(path) if "event_id" in line]
    assert handled and all(line.get("correlation_id") for line in handled)
