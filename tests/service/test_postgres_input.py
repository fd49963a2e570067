"""A service on PostgreSQL: a value PostgreSQL cannot keep (U+0000) is the caller's error, a
4xx that changes nothing, never a 503 that says the store is down."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.auth import Role
from tests.helpers import loan_body
from tests.pg import Cluster


@pytest.fixture
def on_postgres(monkeypatch: pytest.MonkeyPatch, postgres: Cluster, pg_database: str) -> None:
    for name, value in postgres.env(pg_database).items():
        monkeypatch.setenv(name, value)


def test_a_nul_character_in_a_report_is_refused_and_the_store_stays_ready(
        on_postgres: None, build: Callable[[str], FastAPI],
        token: Callable[..., dict[str, str]]) -> None:
    lender = token(Role.LENDER, "lender-1")
    with TestClient(build("escalation")) as escalation:
        store = escalation.app.state.service  # type: ignore[attr-defined]
        before = store.recorder.max_notification_id()
        body = loan_body("L-NUL")
        body["borrower"]["name"] = "Wang\u0000Fang"
        refused = escalation.post("/v1/loans/overdue", json=body, headers=lender)
        assert refused.status_code == 422, refused.text
        assert "U+0000" in refused.json()["error"]["message"]
        assert store.recorder.max_notification_id() == before  # nothing recorded
        assert escalation.get("/readyz").json()["checks"]["store"] is True

        accepted = escalation.post("/v1/loans/overdue", json=loan_body("L-NUL"), headers=lender)
        assert accepted.status_code == 202, accepted.text
        assert store.recorder.max_notification_id() != before


@pytest.mark.parametrize(("text", "refused"), [
    ('"Wang\\u0000Fang"', True),      # the escape
    ('"Wang\\\\\\u0000Fang"', True),  # an escaped backslash, then the escape
    ('"Wang\\\\u0000Fang"', False),   # a backslash, then the letters u0000: a legal name
])
def test_only_a_real_nul_escape_is_refused(
        on_postgres: None, build: Callable[[str], FastAPI],
        token: Callable[..., dict[str, str]], text: str, refused: bool) -> None:
    body = loan_body("L-ESC")
    raw = json.dumps(body).replace('"Wang Fang"', text)
    with TestClient(build("escalation")) as escalation:
        answer = escalation.post("/v1/loans/overdue", content=raw.encode(),
                                 headers={**token(Role.LENDER, "lender-1"),
                                          "content-type": "application/json"})
    assert answer.status_code == (422 if refused else 202), answer.text
