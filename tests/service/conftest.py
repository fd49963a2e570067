"""The service tier: one service in process over real SQLite under tmp_path, no broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.auth import Role, issue_token, load_or_create_secret, now_utc
from shared.clock import ManualClock

from services.audit import main as audit_main
from services.audit.settings import Settings as AuditSettings
from services.escalation import main as escalation_main
from services.escalation.application import Cases
from services.escalation.settings import Settings as EscalationSettings
from services.reminder import main as reminder_main
from services.reminder.settings import Settings as ReminderSettings
from services.visit import main as visit_main
from services.visit.settings import Settings as VisitSettings

NOW = datetime(2026, 10, 14, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai

SERVICES: dict[str, tuple[ModuleType, type]] = {
    "escalation": (escalation_main, EscalationSettings),
    "reminder": (reminder_main, ReminderSettings),
    "visit": (visit_main, VisitSettings),
    "audit": (audit_main, AuditSettings),
}


@pytest.fixture(autouse=True)
def _only_tmp_path_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's environment decides where state lives or which secret signs."""
    for name in ("PERSISTENCE_MODULE", "SQLITE_DBNAME", "DUNWELL_VAR_DIR", "DUNWELL_JWT_SECRET",
                 "DUNWELL_JWT_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def build(tmp_path: Path, clock: ManualClock) -> Callable[[str], FastAPI]:
    """`build("escalation")` -> that service's app, as its composition root makes it."""

    def make(service: str) -> FastAPI:
        module, settings_class = SERVICES[service]
        settings = settings_class(DUNWELL_VAR_DIR=tmp_path)
        app: FastAPI = module.create(settings, clock, connect=False)
        return app

    return make


@pytest.fixture
def token(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """`token(Role.LENDER, "lender-1")` -> an Authorization header the services accept."""
    secret = load_or_create_secret(tmp_path / "jwt.secret")

    def header(role: Role, subject: str = "lender-1") -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(secret, role, subject, now_utc())}"}

    return header


@pytest.fixture
def escalation(build: Callable[[str], FastAPI]) -> Iterator[TestClient]:
    with TestClient(build("escalation")) as client:
        yield client


@pytest.fixture
def cases(escalation: TestClient) -> Cases:
    service: Cases = escalation.app.state.service  # type: ignore[attr-defined]
    return service
