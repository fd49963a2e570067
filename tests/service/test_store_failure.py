"""A store that cannot take writes: requests get a JSON 503 (never a bare 500 page), readiness
says `store: false` while it lasts, and both recover once the store takes writes again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.roles import Role
from tests.helpers import loan_body

from services.escalation.application import Cases


def test_a_store_that_refuses_writes_is_a_503_and_unready_until_it_recovers(
        build: Callable[[str], FastAPI], token: Callable[..., dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = build("escalation")
    cases: Cases = app.state.service
    # As a real client sees it: the answer, not the server's traceback.
    escalation = TestClient(app, raise_server_exceptions=False)
    real = type(cases.recorder).insert_events
    broken = {"yes": True}

    def insert_events(recorder: Any, *args: Any, **kwargs: Any) -> Any:
        if broken["yes"]:
            raise OperationalError("database or disk is full")
        return real(recorder, *args, **kwargs)

    def insert_tracking(recorder: Any, *args: Any, **kwargs: Any) -> Any:
        if broken["yes"]:
            raise OperationalError("database or disk is full")
        return real_tracking(recorder, *args, **kwargs)

    real_tracking = type(cases.recorder).insert_tracking
    monkeypatch.setattr(type(cases.recorder), "insert_events", insert_events)
    monkeypatch.setattr(type(cases.recorder), "insert_tracking", insert_tracking)
    lender = token(Role.LENDER, "lender-1")

    refused = escalation.post("/v1/loans/overdue", json=loan_body("L-1"), headers=lender)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "store_unavailable"
    assert refused.headers["retry-after"] == "5"
    ready = escalation.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["store"] is False

    broken["yes"] = False
    assert escalation.get("/readyz").json()["checks"]["store"] is True
    assert escalation.post("/v1/loans/overdue", json=loan_body("L-1"),
                           headers=lender).status_code == 202
