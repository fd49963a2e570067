"""The audit's verdicts, rule by rule, at the edges the rules draw (DOMAIN.md C1-C5, C13;
C6 in test_c6.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.policy_pack import CN, US
from tests.unit.audit.loans import (
    NEW_YORK,
    NUMBER,
    OTHER_NUMBER,
    SHANGHAI,
    at_local,
    attempt,
    cease,
    closed,
    dispute_opened,
    dispute_resolved,
    held,
    leaves,
    opened,
    overdue,
    paid,
    permit,
    resumed,
    sent,
    task,
)

from services.audit.compliance import (
    RULES,
    RuleVerdict,
    c1_contact_hours,
    c2_frequency,
    c3_stopped_contact,
    c4_nothing_after_closing,
    c5_templates,
    c13_third_parties,
    judge,
    pack_of,
    rederive,
)

Event = dict[str, Any]


def failing(verdict: RuleVerdict) -> list[int]:
    """The leaf indices the rule found against."""
    return [finding["leaf_index"] for finding in verdict["findings"]]


def in_zone(zone: str, *acts: Event) -> list[tuple[int, Event]]:
    return leaves(overdue(zone), *acts)


# --- C1 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("local", "verdict"), [
    ("2026-10-14 07:59", "fail"), ("2026-10-14 08:00", "pass"),
    ("2026-10-14 21:59", "pass"), ("2026-10-14 22:00", "fail")])
def test_c1_cn_hours_in_the_borrowers_zone(local: str, verdict: str) -> None:
    result = c1_contact_hours(in_zone(SHANGHAI, sent(at_local(local))), CN)
    assert (result["verdict"], result["evidence"]) == (verdict, [1])
    assert failing(result) == ([1] if verdict == "fail" else [])


@pytest.mark.parametrize(("local", "verdict"), [
    ("2026-10-14 20:59", "pass"), ("2026-10-14 21:00", "fail")])
def test_c1_us_hours_end_at_nine(local: str, verdict: str) -> None:
    act = attempt(at_local(local, NEW_YORK), "answered")
    assert c1_contact_hours(in_zone(NEW_YORK, act), US)["verdict"] == verdict


@pytest.mark.parametrize(("utc", "verdict"), [
    ("2026-03-07T12:30:00+00:00", "fail"),  # 07:30 EST, the day before clocks go forward
    ("2026-03-08T12:30:00+00:00", "pass"),  # 08:30 EDT: the same UTC time, an hour later
    ("2026-10-31T12:30:00+00:00", "pass"),  # 08:30 EDT
    ("2026-11-01T12:30:00+00:00", "fail"),  # 07:30 EST, clocks went back
])
def test_c1_follows_the_zones_daylight_saving(utc: str, verdict: str) -> None:
    act = sent(datetime.fromisoformat(utc))
    assert c1_contact_hours(in_zone(NEW_YORK, act), US)["verdict"] == verdict


def test_c1_finding_names_the_local_time() -> None:
    result = c1_contact_hours(in_zone(SHANGHAI, sent(at_local("2026-10-14 23:00"))), CN)
    assert "23:00 local time (Asia/Shanghai)" in result["findings"][0]["message"]


def test_c1_uses_the_zone_logged_before_the_act() -> None:
    moved = at_local("2026-10-14 10:00", SHANGHAI)  # 22:00 the evening before in New York
    history = leaves(overdue(SHANGHAI), sent(moved), overdue(NEW_YORK), sent(moved))
    assert failing(c1_contact_hours(history, CN)) == [3]


def test_c1_not_applicable_without_contact() -> None:
    assert c1_contact_hours(in_zone(SHANGHAI), CN)["verdict"] == "not_applicable"


# --- C2 ---------------------------------------------------------------------------------------


def calls(outcome: str, *local: str, zone: str = SHANGHAI, number: str = NUMBER
          ) -> list[Event]:
    return [attempt(at_local(text, zone), outcome, number=number) for text in local]


def test_c2_cn_the_fourth_answered_call_of_a_day_fails() -> None:
    three = calls("answered", "2026-10-14 09:00", "2026-10-14 10:00", "2026-10-14 11:00")
    assert c2_frequency(in_zone(SHANGHAI, *three), CN)["verdict"] == "pass"
    fourth = calls("promise_to_pay", "2026-10-14 12:00")
    assert failing(c2_frequency(in_zone(SHANGHAI, *three, *fourth), CN)) == [4]


def test_c2_cn_the_seventh_unanswered_dial_of_one_number_fails() -> None:
    six = calls("no_answer", *(f"2026-10-14 {h:02d}:00" for h in range(9, 15)))
    assert c2_frequency(in_zone(SHANGHAI, *six), CN)["verdict"] == "pass"
    seventh = calls("no_answer", "2026-10-14 15:00")
    assert failing(c2_frequency(in_zone(SHANGHAI, *six, *seventh), CN)) == [7]
    other = calls("no_answer", "2026-10-14 15:00", number=OTHER_NUMBER)
    assert c2_frequency(in_zone(SHANGHAI, *six, *other), CN)["verdict"] == "pass"


def test_c2_cn_days_are_the_borrowers_local_days() -> None:
    # Four answered calls in one UTC day (the 15th), two on each of two New York days.
    spread = calls("answered", "2026-10-14 20:10", "2026-10-14 20:20", "2026-10-15 09:00",
                   "2026-10-15 10:00", zone=NEW_YORK)
    assert c2_frequency(in_zone(NEW_YORK, *spread), CN)["verdict"] == "pass"
    # Four in one New York day spread over two UTC days.
    one_day = calls("answered", "2026-10-14 09:00", "2026-10-14 12:00", "2026-10-14 19:00",
                    "2026-10-14 21:30", zone=NEW_YORK)
    assert failing(c2_frequency(in_zone(NEW_YORK, *one_day), CN)) == [4]


def test_c2_counts_by_event_time_not_log_order() -> None:
    late = calls("answered", "2026-10-14 12:00", "2026-10-14 09:00", "2026-10-14 10:00",
                 "2026-10-14 11:00")
    assert failing(c2_frequency(in_zone(SHANGHAI, *late), CN)) == [1]


def us_calls(*days: float, outcome: str = "no_answer") -> list[Event]:
    start = at_local("2026-10-05 09:00", NEW_YORK)
    return [attempt(start + timedelta(days=day), outcome) for day in days]


def test_c2_us_the_eighth_attempt_in_seven_days_fails() -> None:
    assert c2_frequency(in_zone(NEW_YORK, *us_calls(*range(7))), US)["verdict"] == "pass"
    eight = us_calls(0, 1, 2, 3, 4, 5, 6, 6.5)
    assert failing(c2_frequency(in_zone(NEW_YORK, *eight), US)) == [8]


def test_c2_us_the_window_rolls() -> None:
    # The eighth attempt is exactly seven days after the first: the first is out of its week.
    assert c2_frequency(in_zone(NEW_YORK, *us_calls(*range(8))), US)["verdict"] == "pass"


def test_c2_us_nothing_within_seven_days_after_a_conversation() -> None:
    talk = us_calls(0, outcome="answered")
    assert failing(c2_frequency(in_zone(NEW_YORK, *talk, *us_calls(6.9)), US)) == [2]
    assert c2_frequency(in_zone(NEW_YORK, *talk, *us_calls(7)), US)["verdict"] == "pass"


def test_c2_cn_has_no_quiet_after_a_conversation_but_a_weekly_cap() -> None:
    talk = calls("answered", "2026-10-14 09:00", "2026-10-15 09:00")
    assert c2_frequency(in_zone(SHANGHAI, *talk), CN)["verdict"] == "pass"
    week = [attempt(at_local("2026-10-12 09:00") + timedelta(hours=7 * n))
            for n in range(CN.max_call_attempts_per_7_days + 1)]
    assert failing(c2_frequency(in_zone(SHANGHAI, *week), CN)) == [len(week)]


def test_c2_a_refused_call_is_an_answered_call_as_the_gate_counts_it() -> None:
    three = calls("answered", "2026-10-14 09:00", "2026-10-14 10:00", "2026-10-14 11:00")
    refused = calls("refused", "2026-10-14 12:00")
    assert failing(c2_frequency(in_zone(SHANGHAI, *three, *refused), CN)) == [4]
    # ... and not an unanswered dial of its number.
    six = calls("no_answer", *(f"2026-10-14 {h:02d}:00" for h in range(9, 15)))
    assert c2_frequency(in_zone(SHANGHAI, *six, *refused), CN)["verdict"] == "pass"


def test_c2_a_wrong_number_is_an_unanswered_dial_of_that_number() -> None:
    six = calls("no_answer", *(f"2026-10-14 {h:02d}:00" for h in range(9, 15)))
    wrong = calls("wrong_number", "2026-10-14 16:00")
    assert failing(c2_frequency(in_zone(SHANGHAI, *six, *wrong), CN)) == [7]
    seven_wrong = calls("wrong_number", *(f"2026-10-14 {h:02d}:00" for h in range(9, 16)))
    assert failing(c2_frequency(in_zone(SHANGHAI, *seven_wrong), CN)) == [7]


def test_c2_us_a_refused_call_is_a_conversation() -> None:
    refused = us_calls(0, outcome="refused")
    assert failing(c2_frequency(in_zone(NEW_YORK, *refused, *us_calls(2)), US)) == [2]


def test_c2_a_dial_without_a_permit_is_a_finding() -> None:
    rogue = attempt(at_local("2026-10-14 10:00"), "answered", permit=False)
    result = c2_frequency(in_zone(SHANGHAI, rogue), CN)
    assert failing(result) == [1]
    assert result["findings"][0]["message"] == "call attempt dialled without a permit"


def test_c2_not_applicable_without_calls() -> None:
    assert c2_frequency(in_zone(SHANGHAI, sent(at_local("2026-10-14 10:00"))),
                        CN)["verdict"] == "not_applicable"


# --- C3 ---------------------------------------------------------------------------------------


def test_c3_a_ceased_channel_stays_quiet_while_another_goes_on() -> None:
    history = in_zone(SHANGHAI, cease(at_local("2026-10-14 09:00"), "sms"),
                      sent(at_local("2026-10-14 10:00"), "email"),
                      sent(at_local("2026-10-14 10:00"), "sms"))
    result = c3_stopped_contact(history, CN)
    assert failing(result) == [3]
    assert result["evidence"] == [1, 2, 3]


def test_c3_a_cease_stops_at_once() -> None:
    at = at_local("2026-10-14 09:00")
    assert failing(c3_stopped_contact(in_zone(SHANGHAI, cease(at, "sms"), sent(at)), CN)) == [2]
    before = at - timedelta(seconds=1)
    assert c3_stopped_contact(in_zone(SHANGHAI, cease(at, "sms"), sent(before)),
                              CN)["verdict"] == "pass"


def test_c3_nothing_while_a_dispute_is_open() -> None:
    history = in_zone(SHANGHAI, dispute_opened(at_local("2026-10-14 09:00")),
                      sent(at_local("2026-10-14 10:00"), "email"),
                      dispute_resolved(at_local("2026-10-15 09:00")),
                      sent(at_local("2026-10-15 09:00"), "email"))
    assert failing(c3_stopped_contact(history, CN)) == [2]


def test_c3_a_dispute_never_resolved_stays_open() -> None:
    history = in_zone(SHANGHAI, dispute_opened(at_local("2026-10-14 09:00")),
                      dispute_resolved(at_local("2026-10-15 09:00"), dispute_id="D-other"),
                      attempt(at_local("2026-10-20 10:00")))
    assert failing(c3_stopped_contact(history, CN)) == [3]


def test_c3_holds_on_some_channels_until_resumed() -> None:
    history = in_zone(SHANGHAI, held(at_local("2026-10-14 09:00"), channels=["call"]),
                      sent(at_local("2026-10-14 10:00"), "sms"),
                      attempt(at_local("2026-10-14 10:00")),
                      resumed(at_local("2026-10-14 12:00")),
                      attempt(at_local("2026-10-14 13:00")))
    assert failing(c3_stopped_contact(history, CN)) == [3]


def test_c3_a_hold_without_channels_holds_them_all() -> None:
    history = in_zone(SHANGHAI, held(at_local("2026-10-14 09:00")),
                      sent(at_local("2026-10-14 10:00"), "push"))
    assert failing(c3_stopped_contact(history, CN)) == [2]


def test_c3_a_permanent_hold_is_not_lifted_by_a_resume() -> None:
    hold = held(at_local("2026-10-14 09:00"), channels=["sms"])
    hold["data"]["permanent"] = True
    history = in_zone(SHANGHAI, hold, resumed(at_local("2026-10-14 10:00")),
                      sent(at_local("2026-10-14 11:00"), "sms"))
    assert failing(c3_stopped_contact(history, CN)) == [3]


def test_c3_a_resume_dated_before_its_hold_lifts_nothing() -> None:
    hold, before = at_local("2026-10-14 10:00"), at_local("2026-10-01 10:00")
    history = in_zone(SHANGHAI, held(hold), resumed(before), sent(hold + timedelta(hours=2)))
    assert failing(c3_stopped_contact(history, CN)) == [3]
    # Logged before the hold but dated after it, a resume lifts it from its own time.
    history = in_zone(SHANGHAI, resumed(hold + timedelta(hours=1)), held(hold),
                      sent(hold + timedelta(minutes=30)), sent(hold + timedelta(hours=2)))
    assert failing(c3_stopped_contact(history, CN)) == [3]


def test_c3_not_applicable_without_cease_dispute_or_hold() -> None:
    assert c3_stopped_contact(in_zone(SHANGHAI, sent(at_local("2026-10-14 10:00"))),
                              CN)["verdict"] == "not_applicable"


# --- C4 ---------------------------------------------------------------------------------------


def test_c4_nothing_after_the_case_closed() -> None:
    close = at_local("2026-10-14 10:00")
    history = in_zone(SHANGHAI, sent(close - timedelta(minutes=1)), closed(close),
                      sent(close + timedelta(seconds=1)), task(close + timedelta(hours=1)),
                      permit(close + timedelta(hours=1)))
    result = c4_nothing_after_closing(history, CN)
    assert failing(result) == [3, 4, 5]


def test_c4_a_reopened_case_may_be_contacted_again() -> None:
    close, again = at_local("2026-10-14 10:00"), at_local("2026-10-20 10:00")
    history = in_zone(SHANGHAI, closed(close), opened(again),
                      sent(again + timedelta(hours=1)))
    assert c4_nothing_after_closing(history, CN)["verdict"] == "pass"


@pytest.mark.parametrize("remaining", ["0", "0.00"])
def test_c4_a_payment_leaving_nothing_overdue_closes_the_case(remaining: str) -> None:
    pay = at_local("2026-10-14 10:00")
    history = in_zone(SHANGHAI, paid(pay, remaining), sent(pay + timedelta(hours=1)))
    result = c4_nothing_after_closing(history, CN)
    assert failing(result) == [2] and "leaf 1" in result["findings"][0]["message"]
    # From the payment's own time, not from a CaseClosed logged later.
    history = in_zone(SHANGHAI, paid(pay, remaining), sent(pay + timedelta(hours=1)),
                      closed(pay + timedelta(hours=2)))
    assert failing(c4_nothing_after_closing(history, CN)) == [2]


def test_c4_a_partial_payment_closes_nothing() -> None:
    pay = at_local("2026-10-14 10:00")
    history = in_zone(SHANGHAI, paid(pay, "50.00"), sent(pay + timedelta(hours=1)))
    assert c4_nothing_after_closing(history, CN)["verdict"] == "not_applicable"


def test_c4_a_case_opened_dated_before_the_close_does_not_reopen_it() -> None:
    close = at_local("2026-10-14 10:00")
    history = in_zone(SHANGHAI, closed(close), opened(at_local("2026-10-01 10:00")),
                      sent(close + timedelta(days=1)))
    assert failing(c4_nothing_after_closing(history, CN)) == [3]


def test_c4_not_applicable_when_never_closed() -> None:
    assert c4_nothing_after_closing(in_zone(SHANGHAI, sent(at_local("2026-10-14 10:00"))),
                                    CN)["verdict"] == "not_applicable"


# --- C5 ---------------------------------------------------------------------------------------


def test_c5_approved_templates_pass() -> None:
    at = at_local("2026-10-14 10:00")
    history = in_zone(SHANGHAI, sent(at, "sms"), sent(at, "email"), task(at))
    assert c5_templates(history, CN)["verdict"] == "pass"


def test_c5_an_unapproved_template_fails() -> None:
    history = in_zone(SHANGHAI, sent(at_local("2026-10-14 10:00"), template=("sms.scary", 1)))
    result = c5_templates(history, CN)
    assert failing(result) == [1]
    assert "sms.scary v1 is not approved" in result["findings"][0]["message"]


def test_c5_an_unapproved_version_fails() -> None:
    history = in_zone(SHANGHAI, sent(at_local("2026-10-14 10:00"), template=("sms.reminder", 9)))
    assert failing(c5_templates(history, CN)) == [1]


def test_c5_a_template_of_another_channel_fails() -> None:
    history = in_zone(SHANGHAI, sent(at_local("2026-10-14 10:00"), "push",
                                     template=("sms.reminder", 1)))
    assert "approved for sms, not push" in c5_templates(history, CN)["findings"][0]["message"]


def test_c5_a_call_task_names_an_approved_call_template() -> None:
    history = in_zone(SHANGHAI, task(at_local("2026-10-14 10:00"), template=("sms.reminder", 1)))
    assert failing(c5_templates(history, CN)) == [1]


def test_c5_a_borrower_is_never_sent_a_reestablish_template() -> None:
    at = at_local("2026-10-14 10:00")
    reestablish = ("contact.reestablish", 1)
    history = in_zone(SHANGHAI, task(at, template=reestablish),
                      task(at, phone_kind="contact", template=reestablish))
    result = c5_templates(history, CN)
    assert failing(result) == [1]
    assert "to the borrower with reestablish template contact.reestablish v1" in \
        result["findings"][0]["message"]
    assert "lacks amount" in result["findings"][0]["message"]
    # A message that names no party is the borrower's too.
    message = sent(at, "call", template=reestablish)
    assert failing(c5_templates(in_zone(SHANGHAI, message), CN)) == [1]
    assert failing(c5_templates(in_zone(SHANGHAI, sent(at, "call", template=reestablish,
                                                       party="contact")), CN)) == []


def test_c5_content_rules_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import MappingProxyType

    from shared.templates import REMINDER, Template

    from services.audit import compliance

    thin = Template("sms.thin", 1, "sms", REMINDER, MappingProxyType({
        "zh-CN": "{amount} {currency} {deadline} {repayment_channel} {verification_channel}",
        "en": "Pay {amount} {currency} by {deadline}."}))
    monkeypatch.setattr(compliance, "approved",
                        lambda i, v: thin if (i, v) == ("sms.thin", 1) else None)
    compliance.template_problems.cache_clear()
    try:
        result = c5_templates(in_zone(SHANGHAI, sent(at_local("2026-10-14 10:00"),
                                                     template=("sms.thin", 1))), CN)
    finally:
        compliance.template_problems.cache_clear()
    assert [f["message"] for f in result["findings"]] == [
        "template sms.thin v1 (en) lacks repayment_channel, verification_channel"]


def test_c5_the_shipped_register_meets_its_own_rules() -> None:
    from shared.templates import APPROVED

    from services.audit.compliance import template_problems

    assert {key: template_problems(*key) for key in APPROVED} == dict.fromkeys(APPROVED, ())


# --- C13 --------------------------------------------------------------------------------------


def failures(count: int, start: str = "2026-10-14 09:00") -> list[Event]:
    first = at_local(start)
    return [attempt(first + timedelta(minutes=10 * n), "no_answer", party="borrower")
            for n in range(count)]


def to_contact(at: str = "2026-10-14 12:00") -> list[Event]:
    moment = at_local(at)
    return [task(moment, "contact", ("contact.reestablish", 1)), permit(moment, "contact"),
            attempt(moment, "answered", party="contact", number=OTHER_NUMBER)]


def test_c13_a_contact_only_after_three_failed_attempts() -> None:
    assert failing(c13_third_parties(in_zone(SHANGHAI, *failures(2), *to_contact()), CN)) \
        == [3, 4, 5]
    assert c13_third_parties(in_zone(SHANGHAI, *failures(3), *to_contact()),
                             CN)["verdict"] == "pass"


def test_c13_an_answered_attempt_starts_the_count_again() -> None:
    reached = attempt(at_local("2026-10-14 09:25"), "refused", party="borrower")
    history = in_zone(SHANGHAI, *failures(3), reached, *to_contact())
    assert failing(c13_third_parties(history, CN)) == [5, 6, 7]


def test_c13_a_contact_only_with_the_reestablish_template() -> None:
    history = in_zone(SHANGHAI, *failures(3),
                      task(at_local("2026-10-14 12:00"), "contact", ("call.reminder", 1)))
    result = c13_third_parties(history, CN)
    assert failing(result) == [4]
    assert "not an approved reestablish one" in result["findings"][0]["message"]


def test_c13_a_party_that_is_neither_is_a_finding() -> None:
    history = in_zone(SHANGHAI, attempt(at_local("2026-10-14 10:00"), "answered",
                                        party="other"))
    assert failing(c13_third_parties(history, CN)) == [1]


def test_c13_us_a_third_party_at_most_once() -> None:
    enough = failures(US.third_party_after_failed_attempts)
    first = len(enough) + 1
    once = [attempt(at_local("2026-10-14 12:00"), "answered", party="contact")]
    assert c13_third_parties(in_zone(SHANGHAI, *enough, *once), US)["verdict"] == "pass"
    twice = [*once, attempt(at_local("2026-10-14 12:30"), "answered", party="contact")]
    assert failing(c13_third_parties(in_zone(SHANGHAI, *enough, *twice), US)) == [first + 1]


def test_c13_not_applicable_without_a_third_party() -> None:
    assert c13_third_parties(in_zone(SHANGHAI, *failures(3)), CN)["verdict"] == \
        "not_applicable"


# --- all of them ------------------------------------------------------------------------------


def test_an_honest_loan_passes_or_is_not_applicable() -> None:
    at = at_local("2026-10-14 10:00")
    verdicts = judge(leaves(overdue(), opened(at), sent(at)), "cn")
    assert [v["rule"] for v in verdicts] == list(RULES)
    assert {v["rule"]: v["verdict"] for v in verdicts} == {
        "C1": "pass", "C2": "not_applicable", "C3": "not_applicable", "C4": "not_applicable",
        "C5": "pass", "C6": "not_applicable", "C13": "not_applicable",
        **{f"C{n}": "not_applicable" for n in (7, 8, 9, 10, 11, 12, 14)}}


def test_the_loans_jurisdiction_chooses_the_pack() -> None:
    at = at_local("2026-10-14 21:30", NEW_YORK)
    assert pack_of(leaves(overdue(NEW_YORK)), "cn") == "cn"
    assert pack_of(leaves(overdue(NEW_YORK, jurisdiction="us")), "cn") == "us"
    us_loan = leaves(overdue(NEW_YORK, jurisdiction="us"), sent(at))
    cn_loan = leaves(overdue(NEW_YORK), sent(at))
    assert judge(us_loan, "cn")[0]["verdict"] == "fail"
    assert judge(cn_loan, "cn")[0]["verdict"] == "pass"
    assert judge(cn_loan, "us")[0]["verdict"] == "fail"


def test_rederive_reads_raw_leaf_bytes_and_skips_what_is_not_an_event() -> None:
    import json

    at = at_local("2026-10-14 23:00")
    raw = [(0, json.dumps(overdue()).encode()), (1, b"not json"),
           (2, json.dumps(sent(at)).encode())]
    pack, verdicts = rederive(raw, "cn")
    assert pack == "cn" and failing(verdicts[0]) == [2]
    with pytest.raises(ValueError, match="unknown policy pack"):
        rederive(raw, "xx")


# --- what the rules cannot read ---------------------------------------------------------------


def raw(*events: dict[str, Any]) -> list[tuple[int, bytes]]:
    import json

    return [(index, json.dumps(event).encode()) for index, event in enumerate(events)]


SHANGHAI_LOAN = {"type": "LoanOverdue", "time": "2026-10-14T00:00:00Z",
                 "data": {"borrower": {"timezone": SHANGHAI}}}
ODD_LEAVES = {
    "channels-int": {"type": "CeaseContactRequested", "time": "2026-10-14T00:00:00Z",
                     "data": {"channels": 5, "requested_at": "2026-10-14T00:00:00Z"}},
    "year-9999": {"type": "ReminderSent", "time": "9999-12-31T23:59:59-05:00",
                  "data": {"channel": "sms", "sent_at": "9999-12-31T23:59:59-05:00"}},
    "year-1": {"type": "ContactAttemptRecorded", "time": "0001-01-01T00:00:00+05:00",
               "data": {"channel": "call", "outcome": "answered", "permit_id": "p",
                        "attempted_at": "0001-01-01T00:00:00+05:00"}},
}


@pytest.mark.parametrize("odd", list(ODD_LEAVES.values()), ids=list(ODD_LEAVES))
def test_a_leaf_the_rules_cannot_read_is_named(odd: dict[str, Any]) -> None:
    later = sent(at_local("2026-10-14 10:00"))
    # A ValueError with a `leaf_index`: what tlog.main reports as a failure naming the leaf.
    with pytest.raises(ValueError, match=r"^leaf 1 cannot be judged") as info:
        rederive(raw(SHANGHAI_LOAN, odd, later), "cn")
    assert getattr(info.value, "leaf_index", None) == 1


def test_judged_leniently_a_rule_that_raises_is_never_a_pass() -> None:
    at = at_local("2026-10-14 10:00")
    events = leaves(overdue(), ODD_LEAVES["channels-int"], sent(at))
    verdicts = {v["rule"]: v for v in judge(events, "cn", strict=False)}
    assert verdicts["C3"]["verdict"] == "not_evaluated"
    assert failing(verdicts["C3"]) == [1]
    assert verdicts["C3"]["findings"][0]["message"].startswith("could not be judged")
    assert (verdicts["C1"]["verdict"], verdicts["C5"]["verdict"]) == ("pass", "pass")


def test_the_rules_version_follows_the_packs_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from shared.policy_pack import PACKS

    from services.audit.compliance import rules_version

    before = rules_version("cn")
    assert before.startswith(f"{CN.version}/") and before != rules_version("us")
    monkeypatch.setitem(PACKS, "cn", replace(CN, version="cn-2099.1"))
    assert rules_version("cn") != before


def test_the_rules_version_follows_the_rules_source(tmp_path: Path) -> None:
    """A changed number in a copy of the pack register is another version of the rules, with
    no version to bump by hand."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    for name in ("services/audit/compliance.py", "shared/policy_pack.py",
                 "shared/templates.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, tmp_path / name)
    for package in ("shared", "services", "services/audit"):
        (tmp_path / package / "__init__.py").touch()

    def digest() -> str:
        code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
                "from services.audit.compliance import RULES_DIGEST; print(RULES_DIGEST)")
        return subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    shipped = digest()
    assert len(shipped) == 64 and shipped == digest()
    register = tmp_path / "shared/policy_pack.py"
    register.write_text(register.read_text() + "\n# one more line\n")
    assert digest() != shipped
