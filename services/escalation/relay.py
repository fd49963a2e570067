"""Stored domain events that other services must see, as integration events."""

from __future__ import annotations

from datetime import date
from typing import Any

from shared.events import (
    EVENT_TYPES,
    CadencePaused,
    CadenceResumed,
    CaseClosed,
    CaseEscalated,
    CaseOpened,
    CaseUpdated,
    ContactHeld,
    ContactResumed,
    Courtesy,
    PromiseBroken,
    PromiseKept,
    PromiseToPayMade,
    RepaymentPlanAgreed,
    StrategyDocument,
    StrategyPublished,
    VisitRequested,
)
from shared.relay import Publication, is_event

from services.escalation.domain import CollectionCase, Intake, StrategyBook


def integration_event(event: Any) -> Publication | None:
    if is_event(event, Intake, "Reported"):
        data = EVENT_TYPES[event.event_type].model_validate(event.payload)
        return Publication(data, causation_id=None, correlation_id=None)
    if is_event(event, StrategyBook, "Published"):
        return Publication(StrategyPublished(
            lender_id=event.lender_id, version=event.version,
            policy_version=event.policy_version, published_at=event.published_at,
            document=StrategyDocument.model_validate(event.document)),
            causation_id=None, correlation_id=None)
    if is_event(event, CollectionCase, "Opened", "Reopened"):
        return Publication(_opened(event), causation_id=event.cause, correlation_id=event.cause)
    data = _case_event(event)
    if data is None:
        return None
    cause = getattr(event, "cause", None)
    return Publication(data, causation_id=None if cause == "evaluation" else cause,
                       correlation_id=event.correlation)


def _case_event(event: Any) -> Any:
    if is_event(event, CollectionCase, "TermsChanged"):
        return CaseUpdated(loan_id=event.loan_id, reason=event.reason, **event.terms)
    if is_event(event, CollectionCase, "Closed"):
        return CaseClosed(loan_id=event.loan_id, reason=event.reason, closed_at=event.closed_at)
    if is_event(event, CollectionCase, "ContactHeld"):
        return ContactHeld(loan_id=event.loan_id, rule="C3", reason=event.reason,
                           channels=event.channels, at=event.at, hold_id=event.hold_id,
                           permanent=event.permanent)
    if is_event(event, CollectionCase, "ContactResumed"):
        return ContactResumed(loan_id=event.loan_id, rule="C3", reason=event.reason,
                              channels=event.channels, at=event.at, hold_id=event.hold_id)
    if is_event(event, CollectionCase, "Escalated"):
        return CaseEscalated(loan_id=event.loan_id, from_stage=event.from_stage,
                             to_stage=event.to_stage, reasons=event.reasons,
                             policy_version=event.policy_version, cadence=event.cadence,
                             escalated_at=event.at, days_past_due=event.days_past_due)
    if is_event(event, CollectionCase, "VisitRequested"):
        return VisitRequested(loan_id=event.loan_id, reasons=event.reasons,
                              policy_version=event.policy_version, stage=event.stage,
                              requested_at=event.at)
    if is_event(event, CollectionCase, "PromiseHeard"):
        return PromiseToPayMade(loan_id=event.loan_id, promise_id=event.promise_id,
                                amount=event.amount, currency=event.currency,
                                due_date=date.fromisoformat(event.due_date),
                                made_at=event.made_at, via=event.via,
                                attempt_id=event.attempt_id,
                                visit_id=getattr(event, "visit_id", None))
    if is_event(event, CollectionCase, "PlanHeard"):
        return RepaymentPlanAgreed.model_validate({
            "loan_id": event.loan_id, "plan_id": event.plan_id,
            "instalments": event.instalments, "currency": event.currency,
            "agreed_at": event.agreed_at, "visit_id": event.visit_id})
    if is_event(event, CollectionCase, "Promised"):
        return CadencePaused(
            loan_id=event.loan_id, pause_id=f"promise:{event.promise_id}", reason="promise",
            at=event.made_at, until=event.deadline,
            courtesy=[Courtesy(due_date=date.fromisoformat(event.due_date),
                               amount=event.amount, currency=event.currency)])
    if is_event(event, CollectionCase, "PlanAgreed"):
        return CadencePaused(
            loan_id=event.loan_id, pause_id=f"plan:{event.plan_id}", reason="plan",
            at=event.agreed_at, until=event.instalments[-1]["deadline"],
            courtesy=[Courtesy(due_date=date.fromisoformat(i["due_date"]), amount=i["amount"],
                               currency=event.currency) for i in event.instalments])
    if is_event(event, CollectionCase, "HardshipGranted"):
        return CadencePaused(loan_id=event.loan_id, pause_id=f"hardship:{event.hardship_id}",
                             reason="hardship", at=event.starts_at, until=event.ends_at)
    if is_event(event, CollectionCase, "PauseLifted"):
        return CadenceResumed(loan_id=event.loan_id, pause_id=event.pause_id,
                              reason=event.reason, at=event.at)
    if is_event(event, CollectionCase, "PromiseDecided"):
        decided = PromiseKept if event.kept else PromiseBroken
        return decided(loan_id=event.loan_id, promise_id=event.promise_id, paid=event.paid,
                       due_date=date.fromisoformat(event.due_date), decided_at=event.decided_at,
                       amount=event.amount, currency=event.currency, plan_id=event.plan_id)
    return None


def _opened(event: Any) -> CaseOpened:
    return CaseOpened(loan_id=event.loan_id, stage=event.stage, opened_at=event.opened_at,
                      cadence=getattr(event, "cadence", None),
                      policy_version=getattr(event, "policy_version", None), **event.terms)
