"""Visit's stored domain events that other services and the audit must see, as integration
events on visits.events. A promise or a plan made in a visit travels in its VisitRecorded;
escalation takes it from there, and tells it on loans.events as it does a call's.

A visit's event says only what changed; what it is published as is read from the visit as
that event left it (`at_version`), so every integration event carries the loan, the window
and the collectors as they then were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from shared.events import (
    AgencyRegistered,
    CollectorRegistered,
    CollectorRevoked,
    ComplaintFiled,
    ComplaintOverdue,
    ComplaintResolved,
    DebtorVerified,
    EventData,
    ScheduledCollector,
    VisitBlocked,
    VisitCancelled,
    VisitCheckedIn,
    VisitConsented,
    VisitDeclined,
    VisitNoticeDelivered,
    VisitNoticeSent,
    VisitRecorded,
    VisitRecordingStored,
    VisitScheduled,
    VisitWriteUpOverdue,
)
from shared.relay import Publication, is_event

from services.visit.domain import Agency, Collector, Complaint, Visit

AtVersion = Callable[[UUID, int], Any]

# Collector details the log keeps (the verification code is the borrower's key: not logged).
_REGISTRATION = ("name", "agency", "agency_id", "id_number", "contact", "certification",
                 "authorisation_letter")
_VISIT_EVENTS = ("Verified", "Scheduled", "NoticeSent", "NoticeDelivered", "Declined",
                 "Consented", "CheckedIn", "Blocked", "RecordingStored", "Recorded",
                 "Cancelled", "WriteUpOverdue")


def publisher(at_version: AtVersion) -> Callable[[Any], Publication | None]:
    def integration_event(event: Any) -> Publication | None:
        data = _registry_event(event)
        if data is None and is_event(event, Collector, "Revoked"):
            collector = at_version(event.originator_id, event.originator_version)
            data = CollectorRevoked(collector_id=collector.collector_id, reason=event.reason,
                                    revoked_at=event.revoked_at)
        if data is None and is_event(event, Complaint, "Filed", "Resolved", "Overdue"):
            data = _complaint_event(event, at_version(event.originator_id,
                                                      event.originator_version))
        if data is None and is_event(event, Visit, *_VISIT_EVENTS):
            visit = at_version(event.originator_id, event.originator_version)
            data = _visit_event(event, visit)
            if data is not None:
                return Publication(data, causation_id=visit.cause, correlation_id=visit.cause)
        if data is None:
            return None
        return Publication(data, causation_id=None, correlation_id=None)
    return integration_event


def _registry_event(event: Any) -> EventData | None:
    if is_event(event, Agency, "Registered", "Reviewed"):
        return AgencyRegistered.model_validate(
            {**event.details, "registered_at": event.registered_at})
    if is_event(event, Collector, "Registered", "Reregistered"):
        details = {k: event.details[k] for k in _REGISTRATION
                   if event.details.get(k) is not None}
        return CollectorRegistered.model_validate(
            {**details, "collector_id": event.details["collector_id"],
             "registered_at": event.registered_at})
    return None


def _complaint_event(event: Any, complaint: Complaint) -> EventData | None:
    if is_event(event, Complaint, "Filed"):
        return ComplaintFiled(complaint_id=event.originator_id, loan_id=event.loan_id,
                              about=event.about, filed_at=event.filed_at,
                              visit_id=event.visit_id, collector_id=event.collector_id,
                              details=event.details, answer_by=event.answer_by)
    if is_event(event, Complaint, "Resolved"):
        return ComplaintResolved(complaint_id=event.originator_id, loan_id=complaint.loan_id,
                                 outcome=event.outcome, resolved_at=event.resolved_at,
                                 resolved_by=event.resolved_by)
    if is_event(event, Complaint, "Overdue"):
        return ComplaintOverdue(complaint_id=event.originator_id, loan_id=complaint.loan_id,
                                answer_by=complaint.answer_by, overdue_at=event.at)
    return None


def _visit_event(event: Any, visit: Visit) -> EventData | None:
    ids: dict[str, Any] = {"visit_id": visit.id, "loan_id": visit.loan_id}
    if is_event(event, Visit, "Verified"):
        return DebtorVerified(**ids, checked=event.checked, verified_by=event.verified_by,
                              verified_at=event.verified_at)
    schedule = visit.schedule or {}
    window: dict[str, Any] = {"window_start": schedule.get("scheduled_start"),
              "window_end": schedule.get("scheduled_end"),
              "address_kind": schedule.get("address_kind")}
    if is_event(event, Visit, "Scheduled"):
        return VisitScheduled(
            **ids, scheduled_start=event.scheduled_start, scheduled_end=event.scheduled_end,
            address_kind=event.address_kind, collector_ids=event.collector_ids,
            collectors=[ScheduledCollector(**c) for c in event.collectors],
            scheduled_at=event.scheduled_at, open_complaints=event.open_complaints)
    if is_event(event, Visit, "NoticeSent"):
        return VisitNoticeSent(**ids, **window, channel=event.channel, sent_at=event.sent_at,
                               reminder_id=event.reminder_id)
    if is_event(event, Visit, "NoticeDelivered"):
        return VisitNoticeDelivered(**ids, **window, channel=event.channel,
                                    delivered_at=event.delivered_at,
                                    reminder_id=event.reminder_id)
    if is_event(event, Visit, "Declined"):
        return VisitDeclined(**ids, declined_at=event.declined_at, via=event.via,
                             reason=event.reason)
    if is_event(event, Visit, "Consented"):
        return VisitConsented(**ids, consented_at=event.consented_at, via=event.via)
    if is_event(event, Visit, "CheckedIn"):
        return VisitCheckedIn(**ids, collector_ids=event.collector_ids,
                              credentials_presented=event.credentials,
                              checked_in_at=event.checked_in_at,
                              address_kind=event.address_kind)
    if is_event(event, Visit, "Blocked"):
        return VisitBlocked(**ids, action=event.action, rule=event.rule, reason=event.reason,
                            at=event.at, collector_ids=event.collector_ids)
    if is_event(event, Visit, "RecordingStored"):
        return VisitRecordingStored(**ids, recording_sha256=event.recording_sha256,
                                    bytes=event.size, media_type=event.media_type,
                                    stored_at=event.stored_at)
    if is_event(event, Visit, "Recorded"):
        return VisitRecorded.model_validate({**event.record, **ids})
    if is_event(event, Visit, "Cancelled"):
        return VisitCancelled(**ids, reason=event.reason, rule=event.rule,
                              cancelled_at=event.cancelled_at)
    if is_event(event, Visit, "WriteUpOverdue"):
        checked_in = visit.checked_in or {}
        return VisitWriteUpOverdue(**ids, checked_in_at=checked_in["checked_in_at"],
                                   overdue_at=event.at)
    return None
