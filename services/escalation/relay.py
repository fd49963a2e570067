"""Stored domain events that other services must see, as integration events."""

from __future__ import annotations

from typing import Any

from shared.events import (
    EVENT_TYPES,
    CaseClosed,
    CaseOpened,
    CaseUpdated,
    ContactHeld,
    ContactResumed,
)
from shared.relay import Publication, is_event

from services.escalation.domain import CollectionCase, Intake


def integration_event(event: Any) -> Publication | None:
    if is_event(event, Intake, "Reported"):
        data = EVENT_TYPES[event.event_type].model_validate(event.payload)
        return Publication(data, causation_id=None, correlation_id=None)
    if is_event(event, CollectionCase, "Opened", "Reopened"):
        return Publication(_opened(event), causation_id=event.cause, correlation_id=event.cause)
    if is_event(event, CollectionCase, "TermsChanged"):
        return Publication(CaseUpdated(loan_id=event.loan_id, reason=event.reason, **event.terms),
                           causation_id=event.cause, correlation_id=event.correlation)
    if is_event(event, CollectionCase, "Closed"):
        return Publication(
            CaseClosed(loan_id=event.loan_id, reason=event.reason, closed_at=event.closed_at),
            causation_id=event.cause, correlation_id=event.correlation)
    if is_event(event, CollectionCase, "ContactHeld"):
        return Publication(
            ContactHeld(loan_id=event.loan_id, rule="C3", reason=event.reason,
                        channels=event.channels, at=event.at, hold_id=event.hold_id,
                        permanent=event.permanent),
            causation_id=event.cause, correlation_id=event.correlation)
    if is_event(event, CollectionCase, "ContactResumed"):
        return Publication(
            ContactResumed(loan_id=event.loan_id, rule="C3", reason=event.reason,
                           channels=event.channels, at=event.at, hold_id=event.hold_id),
            causation_id=event.cause, correlation_id=event.correlation)
    return None


def _opened(event: Any) -> CaseOpened:
    return CaseOpened(loan_id=event.loan_id, stage=event.stage, opened_at=event.opened_at,
                      **event.terms)
