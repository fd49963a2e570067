"""The broker is killed -9 while the services run and an empty one takes its port: without a
restart of any service, every loan posted before, during and after ends with exactly one
LoanOverdue, CaseOpened and ReminderSent in the audit log and one SMS; then SIGTERM stops
every service within 10 s. A cluster restored from a backup is given a new incarnation by the
operator, with the same outcome."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import httpx

from dunwell import devstack
from shared.auth import Role
from tests.e2e.stack import Stack, sms_per_loan
from tests.helpers import loan_body, wait_for, zone_at_local_hour

PER_PHASE = 40



def post(stack: Stack, bodies: list[dict]) -> None:
    with stack.client("escalation", Role.LENDER) as lender:
        for body in bodies:
            assert lender.post("/v1/loans/overdue", json=body).status_code == 202


def ready(stack: Stack, service: str) -> bool:
    try:
        return httpx.get(f"{stack.url(service)}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def types_per_loan(stack: Stack, loan_id: str) -> Counter[str]:
    return Counter(event["type"] for event in stack.timeline(loan_id))


def test_an_empty_broker_in_place_of_the_old_one_is_refilled_without_restarts(
        own_stack: Stack) -> None:
    stack = own_stack
    zone = zone_at_local_hour(11)
    phases = {phase: [loan_body(f"LOSS-{phase}-{i:03d}", timezone_name=zone)
                      for i in range(PER_PHASE)] for phase in ("before", "during", "after")}
    post(stack, phases["before"])
    wait_for(lambda: len(sms_per_loan(stack)) >= PER_PHASE // 2, timeout=60,
             what="reminders of the first loans")
    pids = {name: process.pid for name, process in stack.services.items()}

    stack.broker.kill()
    wait_for(lambda: not any(ready(stack, name) for name in devstack.SERVICES), timeout=30,
             what="every service to say it is not ready")
    post(stack, phases["during"])  # stored by the intake; nothing can flow yet
    stack.broker = devstack.start_broker(stack.broker_port, stack.logs)
    post(stack, phases["after"])

    loans = [body["loan_id"] for bodies in phases.values() for body in bodies]
    # On the new broker a group's first SyncGroup may time out and aiokafka then cancels
    # futures the consumer awaits; the runtime restarts the consumer on that (it once ended
    # it for good: see tests/integration/test_runtime.py).
    wait_for(lambda: all(ready(stack, name) for name in devstack.SERVICES), timeout=60,
             what="every service ready on the new broker")

    def complete() -> bool:
        return all(types_per_loan(stack, loan)["ReminderSent"] >= 1 for loan in loans)

    wait_for(complete, timeout=180, every=2.0, what="every loan reminded and audited")
    assert {name: process.pid for name, process in stack.services.items()} == pids
    for loan in loans:
        counts = types_per_loan(stack, loan)
        assert (counts["LoanOverdue"], counts["CaseOpened"], counts["ReminderSent"]) == \
            (1, 1, 1), (loan, counts)
    assert sms_per_loan(stack) == Counter(dict.fromkeys(loans, 1))

    # uvicorn re-raises the signal once it has shut down: -15 is a clean stop, -9 a kill.
    assert set(stack.stop_within(10.0).values()) <= {0, -15}


def test_a_cluster_restored_from_a_backup_is_given_a_new_incarnation_and_refilled(
        own_stack: Stack) -> None:
    """A restored cluster holds records the services have read and lacks some they published;
    `dunwell broker reincarnate` makes each service republish its store and re-read every
    topic from the beginning, and nothing is done twice."""
    stack = own_stack
    zone = zone_at_local_hour(11)
    before = [loan_body(f"RESTORED-before-{i:03d}", timezone_name=zone) for i in range(20)]
    after = [loan_body(f"RESTORED-after-{i:03d}", timezone_name=zone) for i in range(20)]
    post(stack, before)
    wait_for(lambda: all(types_per_loan(stack, b["loan_id"])["ReminderSent"] for b in before),
             timeout=120, every=1.0, what="the first loans reminded and audited")

    env = {**os.environ, "KAFKA_BOOTSTRAP": stack.bootstrap}
    done = subprocess.run([sys.executable, "-m", "dunwell.cli", "broker", "reincarnate", "--yes"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: all("lost its data" in (stack.logs / f"{name}.log").read_text()
                         for name in devstack.SERVICES), timeout=60,
             what="every service to take the broker for a new incarnation")
    wait_for(lambda: all(ready(stack, name) for name in devstack.SERVICES), timeout=120,
             what="every service refilled and ready")
    post(stack, after)

    loans = [body["loan_id"] for body in before + after]
    wait_for(lambda: all(types_per_loan(stack, loan)["ReminderSent"] for loan in loans),
             timeout=180, every=2.0, what="every loan reminded and audited")
    for loan in loans:
        counts = types_per_loan(stack, loan)
        assert (counts["LoanOverdue"], counts["CaseOpened"], counts["ReminderSent"]) == \
            (1, 1, 1), (loan, counts)
    assert sms_per_loan(stack) == Counter(dict.fromkeys(loans, 1))

    with stack.client("audit", Role.AUDITOR) as audit:
        key = audit.get("/v1/checkpoint").json()["public_key"]
    verified = subprocess.run([sys.executable, "-m", "dunwell.cli", "audit", "verify-store",
                               "--store", stack.audit_store, "--key", key],
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stderr
