"""A collection case's leaves as the audit logs them, for C6: the terms, visit requests,
escalations, promises, plans, hardship and strategies, built from the contract's own models.

The honest case: due 2026-07-01, 5000.00 CNY overdue, three failed calls, and a visit asked
for at 10:00 on 2026-10-01 in Shanghai, 92 days past due (cn: at least 91, 3000.00, 3)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.events import (
    Borrower,
    CaseEscalated,
    CaseOpened,
    CaseUpdated,
    HardshipEnded,
    HardshipGranted,
    LoanOverdue,
    PaymentReceived,
    PromiseBroken,
    PromiseKept,
    PromiseToPayMade,
    RepaymentPlanAgreed,
    StrategyPublished,
    VisitRequested,
)
from tests.unit.audit.loans import LOAN, SHANGHAI, at_local, attempt, logged

Event = dict[str, Any]
LENDER = "lender-1"
DUE = date(2026, 7, 1)
REQUESTED = at_local("2026-10-01 10:00")  # 92 days past DUE in Shanghai
OPENED = at_local("2026-07-02 09:00")
DEFAULT = "cn-2026.1/default@1"
PACK_FLOORS = ("91", "3000.00", "3")


def _terms(amount: str, due: date, zone: str, jurisdiction: str | None) -> dict[str, Any]:
    return {"loan_id": LOAN, "lender_id": LENDER,
            "borrower": Borrower(borrower_id="B-1", name="Wang Fang", phone="+8613800000000",
                                 timezone=zone),
            "amount_overdue": Decimal(amount), "currency": "CNY", "due_date": due,
            "days_past_due": 1, "repayment_channel": "transfer to account 6222",
            "jurisdiction": jurisdiction}


def overdue(at: datetime = OPENED, amount: str = "5000.00", due: date = DUE,
            zone: str = SHANGHAI, jurisdiction: str | None = None) -> Event:
    return logged(LoanOverdue.model_validate(_terms(amount, due, zone, jurisdiction)), at)


def opened(at: datetime = OPENED, amount: str = "5000.00", due: date = DUE,
           zone: str = SHANGHAI, jurisdiction: str | None = None) -> Event:
    return logged(CaseOpened.model_validate({
        **_terms(amount, due, zone, jurisdiction), "stage": "soft_reminders",
        "opened_at": at, "policy_version": DEFAULT}), at)


def updated(at: datetime, amount: str, due: date = DUE, zone: str = SHANGHAI) -> Event:
    return logged(CaseUpdated.model_validate({**_terms(amount, due, zone, None),
                                              "reason": "reported"}), at)


FIRST_CALL = at_local("2026-09-28 10:00")


def failed_calls(first: datetime = FIRST_CALL, count: int = 3,
                 outcome: str = "no_answer") -> list[Event]:
    """`count` failed calls a day apart, the last of them (by default) the day before the
    request."""
    return [attempt(first + timedelta(days=n), outcome) for n in range(count)]


def reason(code: str, value: str | None, threshold: str | None) -> dict[str, str]:
    return {"code": code, **({"value": value} if value is not None else {}),
            **({"threshold": threshold} if threshold is not None else {})}


def visit_reasons(dpd: str = "92", amount: str = "5000.00", failed: str = "3",
                  thresholds: tuple[str, str, str] = PACK_FLOORS) -> list[dict[str, str]]:
    return [reason("dpd", dpd, thresholds[0]), reason("amount", amount, thresholds[1]),
            reason("failed_contacts", failed, thresholds[2])]


def visit(at: datetime = REQUESTED, reasons: list[dict[str, str]] | None = None,
          policy: str = DEFAULT, stage: str = "field_visit") -> Event:
    return logged(VisitRequested.model_validate({
        "loan_id": LOAN, "reasons": visit_reasons() if reasons is None else reasons,
        "policy_version": policy, "stage": stage, "requested_at": at}), at)


def escalated(at: datetime = REQUESTED, to_stage: str = "field_visit",
              reasons: list[dict[str, str]] | None = None, policy: str = DEFAULT,
              days_past_due: int | None = None) -> Event:
    return logged(CaseEscalated.model_validate({
        "loan_id": LOAN, "from_stage": "calls", "to_stage": to_stage,
        "reasons": visit_reasons() if reasons is None else reasons, "policy_version": policy,
        "escalated_at": at, "days_past_due": days_past_due}), at)


def hardship(starts: datetime, ends: datetime, hardship_id: str = "HS-1") -> Event:
    return logged(HardshipGranted.model_validate({
        "loan_id": LOAN, "hardship_id": hardship_id, "reason": "illness", "note": "in hospital",
        "starts_at": starts, "ends_at": ends}), starts)


def hardship_ended(at: datetime, hardship_id: str = "HS-1") -> Event:
    return logged(HardshipEnded.model_validate({
        "loan_id": LOAN, "hardship_id": hardship_id, "ended_at": at}), at)


def promise(made: datetime, due: date, amount: str = "1000.00",
            promise_id: str = "P-1") -> Event:
    return logged(PromiseToPayMade.model_validate({
        "loan_id": LOAN, "promise_id": promise_id, "amount": amount, "currency": "CNY",
        "due_date": due, "made_at": made, "via": "lender"}), made)


def plan(agreed: datetime, *instalments: tuple[date, str], plan_id: str = "PL-1") -> Event:
    return logged(RepaymentPlanAgreed.model_validate({
        "loan_id": LOAN, "plan_id": plan_id, "currency": "CNY", "agreed_at": agreed,
        "instalments": [{"due_date": due, "amount": amount} for due, amount in instalments]}),
        agreed)


def decided(kept: bool, at: datetime, promise_id: str, due: date, paid: str = "0",
            plan_id: str | None = None) -> Event:
    kind = PromiseKept if kept else PromiseBroken
    return logged(kind.model_validate({
        "loan_id": LOAN, "promise_id": promise_id, "paid": paid, "due_date": due,
        "decided_at": at, "plan_id": plan_id}), at)


def payment(at: datetime, amount: str, remaining: str) -> Event:
    return logged(PaymentReceived.model_validate({
        "loan_id": LOAN, "amount": amount, "currency": "CNY", "paid_at": at,
        "remaining_overdue": remaining}), at)


def stage(name: str, **entry: object) -> dict[str, Any]:
    return {"name": name, "entry": entry,
            "cadence": {"steps": [{"day": 0, "channel": "sms"}],
                        "repeat": {"channel": "call", "from_day": 1}},
            **({"requests_visit": True} if name == "field_visit" else {})}


def strategy(version: int = 3, visit_rules: tuple[int, str, int] = (91, "3000.00", 3),
             variants: list[dict[str, Any]] | None = None, lender: str = LENDER,
             at: datetime = OPENED) -> Event:
    min_dpd, min_amount, min_failed = visit_rules
    document = {
        "stages": [stage("soft_reminders"), stage("calls", min_dpd=31),
                   stage("field_visit", min_dpd=min_dpd, min_amount=min_amount,
                         min_failed_contacts=min_failed)],
        "visit": {"min_dpd": min_dpd, "min_amount": min_amount,
                  "min_failed_contacts": min_failed},
        "variants": variants}
    return logged(StrategyPublished.model_validate({
        "lender_id": lender, "version": version, "published_at": at,
        "policy_version": f"cn-2026.1/{lender}@{version}",
        "document": {key: value for key, value in document.items() if value is not None}}), at)


def honest_case() -> list[Event]:
    """Opened, three failed calls, escalated to field_visit and a visit asked for."""
    return [overdue(), opened(), *failed_calls(), escalated(), visit()]
