"""Reminder's read route: a lender sees its own loans' reminders only; ops and auditors see all."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.clock import ManualClock
from shared.events import CadencePaused, CaseEscalated, Reason
from shared.roles import Role
from tests.service.test_agenda import NOON_SHANGHAI, open_cases
from tests.service.test_contact_routes import deliver

from services.reminder.application import Reminders


def test_a_lender_reads_only_its_own_loans_reminders(build: Callable[[str], FastAPI],
                                                     token: Callable[..., dict[str, str]]
                                                     ) -> None:
    app = build("reminder")
    reminders: Reminders = app.state.service
    open_cases(reminders, 1, NOON_SHANGHAI)  # L-0, reported by lender-1
    with TestClient(app) as client:
        def status(role: Role, subject: str) -> int:
            return client.get("/v1/loans/L-0/reminders",
                              headers=token(role, subject)).status_code

        assert status(Role.LENDER, "lender-1") == 200
        assert status(Role.LENDER, "lender-2") == 404
        assert status(Role.OPS, "ops-1") == 200
        assert status(Role.AUDITOR, "auditor-1") == 200
        mine = client.get("/v1/loans/L-0/reminders", headers=token(Role.LENDER, "lender-1"))
        assert [r["channel"] for r in mine.json()["pending"] + mine.json()["sent"]] == ["sms"]


def test_the_view_shows_the_plans_stage_policy_version_and_pauses(
        build: Callable[[str], FastAPI], token: Callable[..., dict[str, str]]) -> None:
    app = build("reminder")
    reminders: Reminders = app.state.service
    clock = ManualClock(NOON_SHANGHAI)
    open_cases(reminders, 1, NOON_SHANGHAI)
    with TestClient(app) as client:
        def view() -> dict[str, Any]:
            answer = client.get("/v1/loans/L-0/reminders", headers=token(Role.OPS, "ops-1"))
            assert answer.status_code == 200
            found: dict[str, Any] = answer.json()
            return found

        opening = view()
        assert (opening["stage"], opening["policy_version"], opening["pauses"]) == (
            "soft_reminders", None, [])
        assert [r["channel"] for r in opening["pending"] + opening["sent"]] == ["sms"]
        clock.advance(timedelta(days=1))
        deliver(reminders, clock, CaseEscalated(
            loan_id="L-0", from_stage="soft_reminders", to_stage="calls",
            reasons=[Reason(code="dpd", value="31", threshold="31")],
            policy_version="cn-2026.1/default@1", escalated_at=clock.now()), "ev-esc", 100)
        deliver(reminders, clock, CadencePaused.model_validate({
            "loan_id": "L-0", "pause_id": "promise:P-1", "reason": "promise",
            "at": clock.now().isoformat(),
            "courtesy": [{"due_date": date(2026, 10, 25).isoformat(), "amount": "300.00",
                          "currency": "CNY"}]}), "ev-pause", 101)
        later = view()
        assert (later["stage"], later["policy_version"]) == ("calls", "cn-2026.1/default@1")
        (pause,) = later["pauses"]
        assert (pause["pause_id"], pause["reason"], pause["lifted_at"]) == (
            "promise:P-1", "promise", None)
        (courtesy,) = [r for r in later["pending"] if r["courtesy_of"]]
        assert courtesy["template_id"] == "sms.promise_courtesy"
        assert pause["courtesy"] == [courtesy["reminder_id"]]
