"""Reminder's read route: a lender sees its own loans' reminders only; ops and auditors see all."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.roles import Role
from tests.service.test_agenda import NOON_SHANGHAI, open_cases

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
