"""C7-C12 and C14, judged from a visit's leaves alone: the honest visit passes each, and each
way of breaking a rule fails it at the leaf that broke it."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from shared.events import ComplaintOverdue
from shared.policy_pack import PACKS
from tests.unit.audit.loans import LOAN, at_local, leaves, logged, sent
from tests.unit.audit.visits import (
    CHECKED_IN_AT,
    COMPLAINT,
    DELIVERED_AT,
    END,
    ENDED_AT,
    SCHEDULED_AT,
    START,
    agency,
    checked_in,
    collector,
    complaint,
    consented,
    declined,
    delivered,
    honest_visit,
    loan,
    recorded,
    registry,
    resolved,
    revoked,
    scheduled,
    verified,
)

from services.audit.compliance import (
    RuleVerdict,
    agencies_named,
    c7_verified,
    c8_notice,
    c9_refusal,
    c10_collectors,
    c11_hours_and_place,
    c12_recorded,
    c14_complaints,
    collectors_named,
    judge,
)

CN, US = PACKS["cn"], PACKS["us"]
Event = dict[str, Any]


def failing(verdict: RuleVerdict) -> list[int]:
    assert verdict["verdict"] == ("fail" if verdict["findings"] else verdict["verdict"])
    return [finding["leaf_index"] for finding in verdict["findings"]]


def messages(verdict: RuleVerdict) -> str:
    return " | ".join(finding["message"] for finding in verdict["findings"])


def swap(events: list[Event], old: Event, new: Event | None) -> list[Event]:
    """The honest visit's leaves with one replaced (or, with None, left out)."""
    index = events.index(old)
    return events[:index] + ([new] if new is not None else []) + events[index + 1:]


def honest() -> list[Event]:
    return honest_visit()


def find(events: list[Event], kind: str) -> Event:
    return next(event for event in events if event["type"] == kind)


def test_the_honest_visit_passes_c7_to_c12() -> None:
    verdicts = {v["rule"]: v for v in judge(leaves(*honest(), complaint(),
                                                   resolved(ENDED_AT + timedelta(days=3))), "cn")}
    assert {rule: verdicts[rule]["verdict"] for rule in
            ("C7", "C8", "C9", "C10", "C11", "C12", "C14")} == {
        "C7": "pass", "C8": "pass", "C9": "pass", "C10": "pass", "C11": "pass",
        "C12": "pass", "C14": "pass"}
    assert all(not verdicts[rule]["findings"] for rule in verdicts)
    # C10 read the registry: both collectors' registrations and the agency's.
    kinds = {honest()[i]["type"] for i in verdicts["C10"]["evidence"]}
    assert {"CollectorRegistered", "AgencyRegistered", "VisitScheduled",
            "VisitCheckedIn"} <= kinds


def test_a_loan_with_no_visit_is_not_applicable_to_the_visit_rules() -> None:
    at = at_local("2026-10-14 10:00")
    verdicts = {v["rule"]: v["verdict"] for v in judge(leaves(loan(), sent(at)), "cn")}
    assert {verdicts[f"C{n}"] for n in (7, 8, 9, 10, 11, 12, 14)} == {"not_applicable"}


def test_the_registry_read_is_named_by_the_visits() -> None:
    events = leaves(*honest())
    assert collectors_named(events) == {"C-1", "C-2"}
    assert agencies_named(events) == {"A-1"}
    assert collectors_named(leaves(loan())) == set()


# --- C7 ---------------------------------------------------------------------------------------


def test_c7_a_schedule_with_no_verification_fails_there() -> None:
    events = honest()
    without = swap(events, find(events, "DebtorVerified"), None)
    verdict = c7_verified(leaves(*without), CN)
    assert failing(verdict) == [4, 6]  # the schedule and the check-in
    assert "no DebtorVerified" in messages(verdict)


def test_c7_a_verification_that_skipped_a_field_does_not_count() -> None:
    events = honest()
    partial = verified(checked=("name", "phone", "amount_overdue"))
    verdict = c7_verified(leaves(*swap(events, find(events, "DebtorVerified"), partial)), CN)
    assert failing(verdict) == [5, 7]
    assert "did not check days_past_due" in messages(verdict)


def test_c7_a_verification_after_the_schedule_is_too_late() -> None:
    events = honest()
    late = verified(SCHEDULED_AT + timedelta(minutes=1))
    verdict = c7_verified(leaves(*swap(events, find(events, "DebtorVerified"), late)), CN)
    assert failing(verdict) == [5]  # the check-in comes after it: only the schedule fails


def test_c7_after_a_decline_the_visit_is_verified_again() -> None:
    events = honest()
    refusal, agreed = declined(SCHEDULED_AT + timedelta(minutes=1)), \
        consented(SCHEDULED_AT + timedelta(minutes=2))
    again = scheduled(SCHEDULED_AT + timedelta(minutes=3))
    before = [*events[:5], refusal, agreed, again]
    assert failing(c7_verified(leaves(*before), CN)) == [7]
    reverified = verified(SCHEDULED_AT + timedelta(minutes=2, seconds=30))
    assert failing(c7_verified(leaves(*events[:5], refusal, agreed, reverified, again),
                               CN)) == []


# --- C8 ---------------------------------------------------------------------------------------


def test_c8_a_check_in_with_no_notice_fails() -> None:
    events = honest()
    verdict = c8_notice(leaves(*swap(events, find(events, "VisitNoticeDelivered"), None)), CN)
    assert failing(verdict) == [6]
    assert "no notice of the window" in messages(verdict)


def test_c8_a_notice_delivered_20_hours_ahead_is_too_short() -> None:
    events = honest()
    short = delivered(START - timedelta(hours=20))
    verdict = c8_notice(leaves(*swap(events, find(events, "VisitNoticeDelivered"), short)), CN)
    assert failing(verdict) == [7]
    assert "20 h 00 min before the window" in messages(verdict)
    exact = delivered(START - timedelta(hours=24))
    assert failing(c8_notice(leaves(*swap(events, find(events, "VisitNoticeDelivered"),
                                          exact)), CN)) == []


def test_c8_a_notice_of_another_window_does_not_count() -> None:
    events = honest()
    other = delivered(start=START + timedelta(hours=1), end=END + timedelta(hours=1))
    verdict = c8_notice(leaves(*swap(events, find(events, "VisitNoticeDelivered"), other)), CN)
    assert failing(verdict) == [7]


@pytest.mark.parametrize("at", [START - timedelta(minutes=1), END + timedelta(minutes=1)],
                         ids=["early", "late"])
def test_c8_a_check_in_outside_the_window_fails(at: Any) -> None:
    events = honest()
    verdict = c8_notice(leaves(*swap(events, find(events, "VisitCheckedIn"), checked_in(at))),
                        CN)
    assert failing(verdict) == [7]
    assert "outside the notified window" in messages(verdict)


def test_c8_a_check_in_of_a_visit_never_scheduled_fails() -> None:
    events = honest()
    verdict = c8_notice(leaves(*swap(events, find(events, "VisitScheduled"), None)), CN)
    assert failing(verdict) == [6]
    assert "no schedule" in messages(verdict)


# --- C9 ---------------------------------------------------------------------------------------


def test_c9_a_visit_after_a_decline_fails_until_the_borrower_consents() -> None:
    events = honest()
    refusal = declined(DELIVERED_AT + timedelta(minutes=5))
    after = [*events[:7], refusal, *events[7:]]
    verdict = c9_refusal(leaves(*after), CN)
    assert failing(verdict) == [8]  # the check-in
    agreed = consented(DELIVERED_AT + timedelta(minutes=10))
    assert failing(c9_refusal(leaves(*events[:7], refusal, agreed, *events[7:]), CN)) == []
    assert (c9_refusal(leaves(*events), CN)["verdict"],
            c9_refusal(leaves(*events), CN)["evidence"]) == ("pass", [5, 7])
    assert c9_refusal(leaves(loan()), CN)["verdict"] == "not_applicable"


def test_c9_a_consent_before_the_decline_does_not_lift_it() -> None:
    events = honest()
    agreed = consented(DELIVERED_AT + timedelta(minutes=1))
    refusal = declined(DELIVERED_AT + timedelta(minutes=5))
    assert failing(c9_refusal(leaves(*events[:7], agreed, refusal, *events[7:]), CN)) == [9]


# --- C10 --------------------------------------------------------------------------------------


def test_c10_one_collector_is_too_few_in_cn_and_enough_in_us() -> None:
    events = honest()
    one = swap(swap(events, find(events, "VisitScheduled"), scheduled(collectors=("C-1",))),
               find(events, "VisitCheckedIn"), checked_in(collectors=("C-1",)))
    verdict = c10_collectors(leaves(*one), CN)
    assert failing(verdict) == [5, 7]
    assert "needs at least 2" in messages(verdict)
    assert failing(c10_collectors(leaves(*one), US)) == []


@pytest.mark.parametrize(("registration", "said"), [
    (collector("C-2", letter_until=date(2026, 10, 14)), "valid 2026-01-01..2026-10-14"),
    (collector("C-2", lender="lender-9"), "not from the loan's lender"),
    (collector("C-2", certified_until=date(2026, 10, 1)), "certification is valid until"),
    (collector("C-2", agency_id="A-9"), "agency A-9 was not registered"),
], ids=["letter-lapsed", "letter-of-another-lender", "certification-lapsed", "no-agency"])
def test_c10_a_collector_not_in_good_standing_fails_every_act(registration: Event,
                                                              said: str) -> None:
    events = honest()
    verdict = c10_collectors(leaves(*swap(events, events[3], registration)), CN)
    assert failing(verdict) == [5, 7]
    assert said in messages(verdict)


def test_c10_the_agency_must_authorise_the_lender_and_be_reviewed() -> None:
    events = honest()
    unauthorised = agency(lenders=("lender-9",))
    assert "not authorised by the lender" in messages(
        c10_collectors(leaves(*swap(events, events[1], unauthorised)), CN))
    overdue = agency(review_due=date(2026, 10, 1))
    assert failing(c10_collectors(leaves(*swap(events, events[1], overdue)), CN)) == \
        [5, 5, 7, 7]  # each act, for each of its two collectors


def test_c10_a_revocation_counts_from_its_time_and_ends_with_a_new_registration() -> None:
    events = honest()
    before = revoked("C-1", DELIVERED_AT)
    verdict = c10_collectors(leaves(*events[:7], before, *events[7:]), CN)
    assert failing(verdict) == [8]  # the check-in, not the schedule before it
    assert "revoked" in messages(verdict)
    after = revoked("C-1", ENDED_AT)
    assert failing(c10_collectors(leaves(*events, after), CN)) == []
    again = collector("C-1", DELIVERED_AT + timedelta(minutes=1))
    assert failing(c10_collectors(leaves(*events[:7], before, again, *events[7:]), CN)) == []


def test_c10_a_check_in_needs_all_three_credentials_and_the_scheduled_collectors() -> None:
    events = honest()
    no_badge = checked_in(badge=False)
    verdict = c10_collectors(leaves(*swap(events, find(events, "VisitCheckedIn"), no_badge)),
                             CN)
    assert failing(verdict) == [7] and "without badge shown" in messages(verdict)
    other = checked_in(collectors=("C-1", "C-3"))
    verdict = c10_collectors(leaves(*registry(), *swap(events, find(events, "VisitCheckedIn"),
                                                       other), collector("C-3")), CN)
    assert "C-3, not scheduled" in messages(verdict)


# --- C11 --------------------------------------------------------------------------------------


def test_c11_a_window_of_21_to_23_fails() -> None:
    events = honest()
    night = scheduled(start=at_local("2026-10-15 21:00"), end=at_local("2026-10-15 23:00"))
    verdict = c11_hours_and_place(leaves(*swap(events, find(events, "VisitScheduled"), night)),
                                  CN)
    assert 5 in failing(verdict) and "not inside 08:00-22:00" in messages(verdict)


def test_c11_a_window_over_two_days_fails() -> None:
    events = honest()
    long = scheduled(end=at_local("2026-10-16 11:00"))
    assert failing(c11_hours_and_place(leaves(*swap(events, find(events, "VisitScheduled"),
                                                    long)), CN)) == [5]


def test_c11_an_address_not_on_record_fails() -> None:
    events = honest()
    assert failing(c11_hours_and_place(leaves(*swap(events, events[0], loan(residence=False))),
                                       CN)) == [5]
    workplace = scheduled(address_kind="workplace")
    assert "workplace address" in messages(c11_hours_and_place(
        leaves(*swap(events, find(events, "VisitScheduled"), workplace)), CN))


def test_c11_a_check_in_at_another_address_or_outside_the_hours_fails() -> None:
    events = honest()
    elsewhere = checked_in(address_kind="workplace")
    assert failing(c11_hours_and_place(leaves(*swap(events, find(events, "VisitCheckedIn"),
                                                    elsewhere)), CN)) == [7]
    early = checked_in(at_local("2026-10-15 07:30"))
    assert failing(c11_hours_and_place(leaves(*swap(events, find(events, "VisitCheckedIn"),
                                                    early)), CN)) == [7]


def test_c11_no_home_entered_without_consent() -> None:
    events = honest()
    entered = recorded(home_entered=True)
    verdict = c11_hours_and_place(leaves(*swap(events, find(events, "VisitRecorded"), entered)),
                                  CN)
    assert failing(verdict) == [9] and "no consent" in messages(verdict)
    agreed = recorded(home_entered=True, consent="borrower_invited")
    assert failing(c11_hours_and_place(leaves(*swap(events, find(events, "VisitRecorded"),
                                                    agreed)), CN)) == []


# --- C12 --------------------------------------------------------------------------------------


def test_c12_a_write_up_naming_a_recording_not_stored_fails_there() -> None:
    events = honest()
    verdict = c12_recorded(leaves(*swap(events, find(events, "VisitRecordingStored"), None)),
                           CN)
    assert failing(verdict) == [8]
    other = recorded(sha="d" * 64)
    assert failing(c12_recorded(leaves(*swap(events, find(events, "VisitRecorded"), other)),
                                CN)) == [9]


def test_c12_a_check_in_not_written_up_fails_once_24_hours_have_passed() -> None:
    events = honest()[:8]  # up to the check-in
    assert c12_recorded(leaves(*events), CN)["verdict"] == "pass"  # not due yet
    day_later = sent(CHECKED_IN_AT + timedelta(hours=23))
    assert failing(c12_recorded(leaves(*events, day_later), CN)) == []
    later = sent(CHECKED_IN_AT + timedelta(hours=24, minutes=1))
    verdict = c12_recorded(leaves(*events, later), CN)
    assert failing(verdict) == [7] and "not written up" in messages(verdict)


def test_c12_time_passes_only_by_the_loans_own_leaves() -> None:
    events = honest()[:8]
    registered_later = collector("C-9", CHECKED_IN_AT + timedelta(days=3))
    assert failing(c12_recorded(leaves(*events, registered_later), CN)) == []


# --- C14 --------------------------------------------------------------------------------------


FILED = ENDED_AT + timedelta(hours=2)


def test_c14_a_complaint_answered_in_time_passes_and_one_answered_late_fails() -> None:
    events = [loan(), complaint(FILED)]
    assert failing(c14_complaints(leaves(*events, resolved(FILED + timedelta(days=15))),
                                  CN)) == []
    late = c14_complaints(leaves(*events, resolved(FILED + timedelta(days=15, minutes=1))), CN)
    assert failing(late) == [2] and "after its 15 days" in messages(late)
    assert failing(c14_complaints(leaves(*events, resolved(FILED + timedelta(days=20))),
                                  US)) == []


def test_c14_an_unanswered_complaint_fails_once_its_days_have_passed() -> None:
    events = [loan(), complaint(FILED)]
    assert c14_complaints(leaves(*events), CN)["verdict"] == "pass"  # its days not over
    later = sent(FILED + timedelta(days=16))
    verdict = c14_complaints(leaves(*events, later), CN)
    assert failing(verdict) == [1] and "unanswered" in messages(verdict)
    assert failing(c14_complaints(leaves(*events, later), US)) == []  # us: 30 days


def test_c14_an_answer_to_no_complaint_and_a_late_deadline_are_findings() -> None:
    assert failing(c14_complaints(leaves(loan(), resolved(FILED)), CN)) == [1]
    stretched = complaint(FILED, answer_by=FILED + timedelta(days=20))
    assert "later than the 15 days" in messages(c14_complaints(leaves(loan(), stretched), CN))
    assert c14_complaints(leaves(loan()), CN)["verdict"] == "not_applicable"


# --- the rogue check-in -------------------------------------------------------------------


def test_a_rogue_check_in_by_one_collector_with_no_notice_fails_c8_and_c10_at_its_leaf() -> None:
    events = [loan(), *registry(), verified(), scheduled()]
    rogue = checked_in(collectors=("C-1",))
    verdicts = {v["rule"]: v for v in judge(leaves(*events, rogue), "cn")}
    assert failing(verdicts["C8"]) == [6]
    assert failing(verdicts["C10"]) == [6]
    assert (verdicts["C8"]["verdict"], verdicts["C10"]["verdict"]) == ("fail", "fail")


def test_c14_the_visit_services_overdue_report_shows_the_days_have_passed() -> None:
    deadline = FILED + timedelta(days=15)
    said = logged(ComplaintOverdue(complaint_id=COMPLAINT, loan_id=LOAN, answer_by=deadline,
                                   overdue_at=deadline), deadline)
    verdict = c14_complaints(leaves(loan(), complaint(FILED), said), CN)
    assert failing(verdict) == [1]
    assert failing(c14_complaints(leaves(loan(), complaint(FILED), resolved(deadline), said),
                                  CN)) == []


def test_c12_the_visit_services_overdue_report_shows_the_day_has_passed() -> None:
    from shared.events import VisitWriteUpOverdue
    from tests.unit.audit.visits import VISIT

    events = honest()[:8]  # up to the check-in
    due = CHECKED_IN_AT + timedelta(hours=24)
    said = logged(VisitWriteUpOverdue(visit_id=VISIT, loan_id=LOAN,
                                      checked_in_at=CHECKED_IN_AT, overdue_at=due), due)
    assert failing(c12_recorded(leaves(*events, said), CN)) == [7]
