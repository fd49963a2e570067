"""Every service's OpenAPI document, fuzzed by schemathesis with all its checks, in process.

Each request carries a token of a role the operation accepts (read from the operation's security
requirement, where shared/auth.require puts its roles), so bodies get past 401/403 and are
judged on their content: a schema-valid request must never be refused with 4xx-for-bad-input,
a schema-invalid one always must be, no answer is a 5xx, and every answer fits the document.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from uuid import uuid4

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import Case
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.schemas import BaseSchema

from shared.auth import Role, issue_token, load_or_create_secret, now_utc
from shared.clock import ManualClock
from shared.consumer import HandlerSink
from shared.events import CaseOpened, EventData, LoanOverdue, VisitRequested, envelope
from tests.helpers import loan_body
from tests.service.records import consumer_record, tracking_of

from services.escalation.handlers import HANDLERS as ESCALATION_HANDLERS
from services.reminder.handlers import HANDLERS as REMINDER_HANDLERS
from services.visit.handlers import HANDLERS as VISIT_HANDLERS

FUZZED = ["escalation", "reminder", "visit", "audit"]
UNFUZZED: list[str] = []  # no /v1 routes: test_every_service_with_routes_is_fuzzed watches
SCHEME = "bearer"
LOAN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Fuzzing examples per operation; the examples and coverage phases add their own, bounded by
# the schema. Enough to find the edges, small enough for two cores.
MAX_EXAMPLES = 100

load_all_checks()


@schemathesis.serializer("audio/mpeg", "audio/mp4", "audio/wav", "audio/ogg", "video/mp4",
                         "video/webm")
def _recording_bytes(ctx: Any, value: Any) -> bytes:
    """A visit's recording is bytes: what the generator made, as bytes."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


# Every check schemathesis has. `max_response_time` is not among them: it needs a limit, and
# an in-process timing on a shared two-core machine would measure the machine, not the service.
ALL_CHECKS = CHECKS.get_all()


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": 20261214,  # the same cases every run, so a failure is reproducible
        # No string may hold U+0000 (docs/contract.md: 422 invalid_request, since no store
        # keeps it); tests/service/test_postgres_input.py sends it on purpose.
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "mode": "all",
                       "allow-x00": False},
        # Stateful testing follows OpenAPI links; these documents declare none.
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
                   "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
        "operations": [{
            # What no JSON Schema can say is a documented 400, on these operations only: a
            # proof's parameters in order (leaf_index < tree_size, first <= second), a cursor
            # this service gave, a strategy that can be followed (names unique, shares adding
            # up to 100), a plan's instalments on distinct days in order, a visit's window
            # that ends after it starts, a recording that is not empty.
            "include-path-regex":
                "^/v1/(proofs/|cases$|strategies/|loans/[^/]+/repayment-plans$"
                "|visits/[^/]+/(schedule|recording)$)",
            "checks": {"positive_data_acceptance": {"expected-statuses": [
                "2xx", "3xx", "401", "403", "404", "409", "429", "5xx",  # the default
                "400"]}},
        }],
    })


def roles_of(case: Case) -> list[str]:
    requirements = case.operation.definition.raw.get("security", [])
    return [role for requirement in requirements for role in requirement.get(SCHEME, [])]


def _subject(case: Case) -> str:
    """Lender tokens speak for the lender the body names, so a report passes the reporter check."""
    body = case.body
    if isinstance(body, dict):
        lender = body.get("lender_id")
        if isinstance(lender, str) and 1 <= len(lender) <= 64:
            return lender
    return "lender-1"


class RoleTokens:
    """A schemathesis auth provider: a fresh token of the first role the operation accepts."""

    secret = ""

    def get(self, case: Case, ctx: Any) -> str:
        return self.secret

    def set(self, case: Case, secret: str, ctx: Any) -> None:
        roles = roles_of(case)
        if not roles:
            return
        token = issue_token(secret, Role(roles[0]), _subject(case), now_utc())
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


SEEDED = "L-1"  # the loan id the documents give as their example


def _deliver(sink: Any, data: EventData, clock: ManualClock, offset: int = 0) -> None:
    event = envelope(data, source="/dunwell/test", time=clock.now(), event_id=f"ev-{uuid4()}",
                     causation_id=None, correlation_id=None)
    record = consumer_record(event, data.topic, offset=offset)
    assert sink.process(tracking_of(record), record, event, event.payload())


def _seed_escalation(app: FastAPI, clock: ManualClock) -> None:
    """A case for the example loan, so look-ups can answer 200."""
    _deliver(HandlerSink(app.state.service, ESCALATION_HANDLERS, clock),
             LoanOverdue.model_validate(loan_body(SEEDED)), clock)


def _seed_reminder(app: FastAPI, clock: ManualClock) -> None:
    opened = CaseOpened.model_validate({**loan_body(SEEDED), "stage": "reminders",
                                        "opened_at": clock.now()})
    _deliver(HandlerSink(app.state.service, REMINDER_HANDLERS, clock), opened, clock)


def _seed_audit(app: FastAPI, clock: ManualClock) -> None:
    """A leaf and a signed checkpoint, so the timeline, evidence and proofs can answer 200."""
    _deliver(app.state.service, LoanOverdue.model_validate(loan_body(SEEDED)), clock)
    assert app.state.service.sign_checkpoint(clock.now()) is not None


def _seed_visit(app: FastAPI, clock: ManualClock) -> None:
    """A case and a visit asked for it, so the visit's steps meet a visit."""
    sink = HandlerSink(app.state.service, VISIT_HANDLERS, clock)
    _deliver(sink, CaseOpened.model_validate({**loan_body(SEEDED), "stage": "field_visit",
                                              "opened_at": clock.now()}), clock)
    _deliver(sink, VisitRequested(loan_id=SEEDED, reasons=[], policy_version="cn-2026.1/x@1",
                                  requested_at=clock.now()), clock, offset=1)


SEED: dict[str, Callable[[FastAPI, ManualClock], None]] = {
    "escalation": _seed_escalation, "reminder": _seed_reminder, "visit": _seed_visit,
    "audit": _seed_audit}


def schema_of(app: FastAPI, secret: str) -> BaseSchema:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=_config())
    schema.auth(refresh_interval=None)(type("ServiceTokens", (RoleTokens,), {"secret": secret}))
    return schema


def _follow_up_loan(case: Case) -> str | None:
    """The path's loan id of a per-loan POST, when it is one a lender could report."""
    loan_id = (case.path_parameters or {}).get("loan_id")
    if case.operation.method.upper() != "POST" or not isinstance(loan_id, str):
        return None
    loan_id = unquote(loan_id)  # schemathesis may hand it over already %-encoded (`:`)
    return loan_id if LOAN_ID.fullmatch(loan_id) else None


def _prepare_escalation(case: Case, app: FastAPI) -> None:
    """What a schema cannot say, arranged so a valid case is valid in fact: a follow-up's body
    repeats the path's loan id (when it carries a well-formed one), and its loan has been
    reported by the lender the token speaks for, so it reaches the report itself."""
    loan_id = _follow_up_loan(case)
    if loan_id is None:
        return
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("loan_id"), str) \
            and LOAN_ID.fullmatch(body["loan_id"]):
        body["loan_id"] = loan_id
    cases = app.state.service
    if cases.lender_of(loan_id) is None:  # else another lender's, and the follow-up a 404
        cases.report(LoanOverdue.model_validate(loan_body(loan_id)), "lender-1", None)


def _prepare_visit(case: Case, app: FastAPI) -> None:
    """A step's body may carry the path's visit id (the contract's rule, which a schema
    cannot say): when it carries one, it is the path's."""
    visit_id = (case.path_parameters or {}).get("visit_id")
    body = case.body
    if isinstance(visit_id, str) and isinstance(body, dict) and "visit_id" in body:
        body["visit_id"] = unquote(visit_id)


PREPARE: dict[str, Callable[[Case, FastAPI], None]] = {"escalation": _prepare_escalation,
                                                       "visit": _prepare_visit}


def integers_as_integers(value: Any) -> Any:
    """JSON Schema counts 30.0 as an integer, so the generator may write one that way; the
    contract wants integers written as integers (the server refuses 30.0, a tested rule) and a
    schema cannot tell the two apart. Send integer-valued numbers as integer literals."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integers_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integers_as_integers(item) for item in value]
    return value


def _check(service: str) -> Callable[[Case], None]:
    prepare = PREPARE.get(service)

    def check(case: Case) -> None:
        if isinstance(case.body, (dict, list)):
            case.body = integers_as_integers(case.body)
        if prepare is not None:
            prepare(case, case.operation.app)
        case.call_and_validate(checks=ALL_CHECKS)

    return check


@pytest.mark.parametrize("service", FUZZED)
def test_the_service_keeps_its_documented_contract(
        service: str, build: Callable[[str], FastAPI], tmp_path: Path, clock: ManualClock,
        subtests: pytest.Subtests) -> None:
    # What `@schema.parametrize()` does, run here: its pytest wrapper renames the test node
    # through an attribute pytest 9 no longer has (`Function._nodeid`).
    app = build(service)
    SEED[service](app, clock)
    schema = schema_of(app, load_or_create_secret(tmp_path / "jwt.secret"))
    tests = list(get_all_tests(schema=schema, test_func=_check(service), settings=None,
                               given_kwargs=None))
    assert tests
    for result in tests:
        operation, run = result.ok()  # an Err is a schema the tool cannot read: fail on it
        with subtests.test(msg=operation.label):
            try:
                run()
            except FailureGroup as failures:
                pytest.fail(str(failures), pytrace=False)


def test_every_service_with_routes_is_fuzzed(build: Callable[[str], FastAPI]) -> None:
    with_routes = {name for name in FUZZED + UNFUZZED if build(name).openapi()["paths"]}
    assert with_routes == set(FUZZED)
