"""A relay names the events `@event` generates; a misspelt name fails, it never matches nothing."""

from __future__ import annotations

import pytest

from shared.relay import event_class, is_event

from services.escalation.domain import CollectionCase, Intake
from services.reminder.domain import Reminder


def test_a_named_event_is_the_class_the_decorator_made() -> None:
    assert event_class(Reminder, "Scheduled") is Reminder.Scheduled
    assert event_class(CollectionCase, "Reopened") is CollectionCase.Reopened


def test_an_event_matches_its_own_names_only() -> None:
    reported = Intake(key="k", event_type="LoanOverdue", payload={}).collect_events()[0]
    assert is_event(reported, Intake, "Reported")
    assert not is_event(reported, CollectionCase, "Opened", "Reopened", "Closed")
    assert not is_event(object(), Intake, "Reported")


def test_a_name_the_aggregate_lacks_is_an_error() -> None:
    with pytest.raises(TypeError, match="Reminder defines no event class 'Sheduled'"):
        is_event(object(), Reminder, "Sheduled")
    with pytest.raises(TypeError, match="'create_id'"):
        event_class(Reminder, "create_id")  # an attribute, but not an event class
