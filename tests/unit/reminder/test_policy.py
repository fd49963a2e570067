"""Reminder's contact rules as the conduct catalogue states them: C1, C5 and C4."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.policy_pack import CN, US, PolicyPack
from shared.templates import APPROVED, COURTESY_TEMPLATE, CURRENT, REESTABLISH, REMINDER

from services.reminder.domain import Dial
from services.reminder.policy import (
    call_caps,
    contact_window,
    courtesy_due,
    is_open,
    not_stopped,
    required_content,
    third_party,
)

ZONES = ["Asia/Shanghai", "Asia/Kolkata", "America/New_York", "Pacific/Auckland"]
AN_ORDINARY_DAY = date(2026, 10, 14)
# America/New_York: clocks go forward on 2026-03-08 02:00 and back on 2026-11-01 02:00.
SPRING_FORWARD = date(2026, 3, 8)
FALL_BACK = date(2026, 11, 1)


def at_local(day: date, hhmm: str, zone: str) -> datetime:
    """The UTC instant (as a clock gives it) at which the borrower's wall clock shows `hhmm`."""
    local = datetime.combine(day, time.fromisoformat(hhmm), tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC)


# --- C1: contact only inside the allowed hours, in the borrower's local time zone ---

CN_EDGES = [("00:00", False), ("07:59", False), ("08:00", True), ("12:00", True),
            ("21:59", True), ("22:00", False), ("23:59", False)]
US_EDGES = [("00:00", False), ("07:59", False), ("08:00", True), ("20:59", True),
            ("21:00", False), ("21:59", False), ("22:00", False)]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(("local", "allowed"), CN_EDGES)
def test_cn_contact_hours_are_0800_to_2200_local(zone: str, local: str, allowed: bool) -> None:
    now = at_local(AN_ORDINARY_DAY, local, zone)
    assert contact_window(CN, ZoneInfo(zone), now).allowed is allowed


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(("local", "allowed"), US_EDGES)
def test_us_contact_hours_are_0800_to_2100_local(zone: str, local: str, allowed: bool) -> None:
    now = at_local(AN_ORDINARY_DAY, local, zone)
    assert contact_window(US, ZoneInfo(zone), now).allowed is allowed


@pytest.mark.parametrize("day", [SPRING_FORWARD, FALL_BACK], ids=["spring-forward", "fall-back"])
@pytest.mark.parametrize(("pack", "local", "allowed"), [
    (CN, "07:59", False), (CN, "08:00", True), (CN, "21:59", True), (CN, "22:00", False),
    (US, "07:59", False), (US, "08:00", True), (US, "20:59", True), (US, "21:00", False),
])
def test_contact_hours_hold_on_the_days_new_york_changes_its_clocks(
        day: date, pack: PolicyPack, local: str, allowed: bool) -> None:
    now = at_local(day, local, "America/New_York")
    assert contact_window(pack, ZoneInfo("America/New_York"), now).allowed is allowed


def test_one_instant_is_inside_hours_for_one_borrower_and_outside_for_another() -> None:
    now = datetime(2026, 10, 14, 14, 30, tzinfo=UTC)  # 22:30 Shanghai, 10:30 New York
    assert contact_window(CN, ZoneInfo("Asia/Shanghai"), now).allowed is False
    assert contact_window(CN, ZoneInfo("America/New_York"), now).allowed is True


@pytest.mark.parametrize(("pack", "zone", "local"), [
    (CN, "Asia/Shanghai", "22:00"), (US, "America/New_York", "21:00"),
    (CN, "Asia/Kolkata", "07:59"),
])
def test_outside_hours_is_a_c1_deferral_with_a_reason(pack: PolicyPack, zone: str,
                                                      local: str) -> None:
    decision = contact_window(pack, ZoneInfo(zone), at_local(AN_ORDINARY_DAY, local, zone))
    assert (decision.allowed, decision.rule) == (False, "C1")
    assert decision.reason and local in decision.reason and pack.name in decision.reason
    assert decision.until is not None


@pytest.mark.parametrize(("pack", "zone", "day", "local", "opens_on"), [
    # before the window opens: the same day's 08:00
    (CN, "Asia/Shanghai", AN_ORDINARY_DAY, "00:00", AN_ORDINARY_DAY),
    (CN, "Asia/Shanghai", AN_ORDINARY_DAY, "07:59", AN_ORDINARY_DAY),
    (US, "Pacific/Auckland", AN_ORDINARY_DAY, "06:15", AN_ORDINARY_DAY),
    (CN, "Asia/Kolkata", AN_ORDINARY_DAY, "03:00", AN_ORDINARY_DAY),
    # at or after the window closes: the next day's 08:00
    (CN, "Asia/Shanghai", AN_ORDINARY_DAY, "22:00", AN_ORDINARY_DAY + timedelta(days=1)),
    (CN, "Asia/Kolkata", AN_ORDINARY_DAY, "23:59", AN_ORDINARY_DAY + timedelta(days=1)),
    (US, "America/New_York", AN_ORDINARY_DAY, "21:00", AN_ORDINARY_DAY + timedelta(days=1)),
    (US, "Pacific/Auckland", AN_ORDINARY_DAY, "21:30", AN_ORDINARY_DAY + timedelta(days=1)),
    # across New York's clock changes
    (US, "America/New_York", SPRING_FORWARD - timedelta(days=1), "22:30", SPRING_FORWARD),
    (CN, "America/New_York", SPRING_FORWARD, "01:30", SPRING_FORWARD),
    (US, "America/New_York", FALL_BACK - timedelta(days=1), "21:30", FALL_BACK),
    (CN, "America/New_York", FALL_BACK, "01:30", FALL_BACK),
])
def test_a_deferral_lasts_until_the_next_0800_local(pack: PolicyPack, zone: str, day: date,
                                                    local: str, opens_on: date) -> None:
    now = at_local(day, local, zone)
    until = contact_window(pack, ZoneInfo(zone), now).until
    assert until == at_local(opens_on, "08:00", zone)
    assert until.astimezone(ZoneInfo(zone)).time() == time(8, 0)
    assert contact_window(pack, ZoneInfo(zone), until).allowed is True
    assert contact_window(pack, ZoneInfo(zone), until - timedelta(minutes=1)).allowed is False


@pytest.mark.parametrize(("day", "local", "utc_until", "wait"), [
    # 22:30 EST -> 08:00 EDT: the wall clock shows 9 h 30 min, an hour of it never happens
    (SPRING_FORWARD - timedelta(days=1), "22:30",
     datetime(2026, 3, 8, 12, 0, tzinfo=UTC), timedelta(hours=8, minutes=30)),
    # 21:30 EDT -> 08:00 EST: the wall clock shows 10 h 30 min, one hour happens twice
    (FALL_BACK - timedelta(days=1), "21:30",
     datetime(2026, 11, 1, 13, 0, tzinfo=UTC), timedelta(hours=11, minutes=30)),
])
def test_a_deferral_across_a_clock_change_is_the_real_elapsed_time(
        day: date, local: str, utc_until: datetime, wait: timedelta) -> None:
    now = at_local(day, local, "America/New_York")
    until = contact_window(US, ZoneInfo("America/New_York"), now).until
    assert until == utc_until
    assert until - now == wait


def test_inside_hours_there_is_nothing_to_defer() -> None:
    decision = contact_window(CN, ZoneInfo("Asia/Shanghai"),
                              at_local(AN_ORDINARY_DAY, "11:00", "Asia/Shanghai"))
    assert decision.allowed is True
    assert (decision.rule, decision.until) == (None, None)


# --- C5: an approved, versioned template carrying every required item ---

REQUIRED = ["amount", "currency", "deadline", "repayment_channel", "verification_channel"]


def full_content() -> dict[str, str]:
    return {"loan_id": "L-1", "amount": "1200.50", "currency": "CNY", "deadline": "2026-10-21",
            "repayment_channel": "transfer to account 6222-0000-1111",
            "verification_channel": "the official hotline 95555"}


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("key", sorted(k for k, t in APPROVED.items() if t.kind == REMINDER))
def test_every_approved_reminder_with_all_content_passes(key: tuple[str, int],
                                                         language: str) -> None:
    assert required_content(*key, full_content(), language).allowed is True


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_the_third_party_template_shows_nothing_of_the_debt(language: str) -> None:
    keys = [k for k, t in APPROVED.items() if t.kind == REESTABLISH]
    assert keys == [("contact.reestablish", 1)]
    assert required_content(*keys[0], {}, language).allowed is True
    assert not APPROVED[keys[0]].fields(language) & {"amount", "currency", "loan_id",
                                                      "deadline", "repayment_channel"}


def test_each_channel_has_a_current_reminder_template_of_its_own() -> None:
    for channel, key in CURRENT.items():
        assert APPROVED[key].channel == channel and APPROVED[key].kind == REMINDER


@pytest.mark.parametrize(("template_id", "version"), [
    ("sms.first_reminder", 2), ("sms.first_reminder", 0), ("sms.final_warning", 1), ("", 1),
])
def test_an_unapproved_template_or_version_is_refused(template_id: str, version: int) -> None:
    decision = required_content(template_id, version, full_content(), "zh-CN")
    assert (decision.allowed, decision.rule) == (False, "C5")
    assert decision.reason and "not approved" in decision.reason


@pytest.mark.parametrize("key", sorted(CURRENT.values()))
@pytest.mark.parametrize("item", REQUIRED)
@pytest.mark.parametrize("blank", ["", "   ", None], ids=["empty", "whitespace", "absent"])
def test_a_required_item_left_blank_is_refused_by_name(item: str, blank: str | None,
                                                       key: tuple[str, int]) -> None:
    content = full_content()
    if blank is None:
        del content[item]
    else:
        content[item] = blank
    decision = required_content(*key, content, "en")
    assert (decision.allowed, decision.rule) == (False, "C5")
    assert decision.reason and item in decision.reason
    others = [other for other in REQUIRED if other != item and other not in item]
    assert not any(other in decision.reason for other in others)


# --- C4: nothing after payment ---

@pytest.mark.parametrize(("plan_open", "allowed", "rule"), [(True, True, None),
                                                            (False, False, "C4")])
def test_a_closed_case_sends_nothing(plan_open: bool, allowed: bool, rule: str | None) -> None:
    decision = is_open(plan_open)
    assert (decision.allowed, decision.rule) == (allowed, rule)


# --- C2: call caps, counted over the borrower's local day and a rolling seven days ---

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
NUMBER = "a" * 64
OTHER_NUMBER = "b" * 64


def at(zone: ZoneInfo, day: date, hhmm: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), tzinfo=zone).astimezone(UTC)


def dials(zone: ZoneInfo, day: date, outcomes: list[str | None], number: str = NUMBER,
          loan_id: str = "L-1", start: str = "09:00") -> list[Dial]:
    first = at(zone, day, start)
    return [Dial(first + timedelta(minutes=10 * i), loan_id, number, outcome)
            for i, outcome in enumerate(outcomes)]


DAY_CN = date(2026, 10, 14)


@pytest.mark.parametrize(("answered", "allowed"), [(2, True), (3, False)])
def test_cn_the_fourth_answered_call_of_a_debtors_day_is_refused(answered: int,
                                                                 allowed: bool) -> None:
    counted = dials(SHANGHAI, DAY_CN, ["answered"] * answered, loan_id="L-2")
    decision = call_caps(CN, SHANGHAI, at(SHANGHAI, DAY_CN, "15:00"), counted, "L-1",
                         OTHER_NUMBER)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rule == "C2" and "answered" in (decision.reason or "")
        assert decision.until == at(SHANGHAI, DAY_CN + timedelta(days=1), "08:00")


@pytest.mark.parametrize(("unanswered", "allowed"), [(5, True), (6, False)])
def test_cn_the_seventh_unanswered_dial_of_a_number_is_refused(unanswered: int,
                                                               allowed: bool) -> None:
    counted = dials(SHANGHAI, DAY_CN, ["no_answer"] * unanswered)
    now = at(SHANGHAI, DAY_CN, "20:00")
    assert call_caps(CN, SHANGHAI, now, counted, "L-1", NUMBER).allowed is allowed
    assert call_caps(CN, SHANGHAI, now, counted, "L-1", OTHER_NUMBER).allowed is True


def test_cn_an_open_permit_counts_as_a_dial() -> None:
    counted = dials(SHANGHAI, DAY_CN, ["answered", "answered", None])
    assert call_caps(CN, SHANGHAI, at(SHANGHAI, DAY_CN, "15:00"), counted, "L-1",
                     OTHER_NUMBER).allowed is False


def test_cn_the_caps_start_again_at_local_midnight_not_utc() -> None:
    # 23:30 local on the 14th is 15:30 UTC; 00:30 local on the 15th is 16:30 UTC, same UTC day
    counted = dials(SHANGHAI, DAY_CN, ["answered"] * 3, start="21:00")
    just_before = at(SHANGHAI, DAY_CN, "23:30")
    just_after = at(SHANGHAI, DAY_CN + timedelta(days=1), "00:30")
    assert call_caps(CN, SHANGHAI, just_before, counted, "L-1", NUMBER).allowed is False
    assert call_caps(CN, SHANGHAI, just_after, counted, "L-1", NUMBER).allowed is True


DAY_US = date(2026, 10, 12)


@pytest.mark.parametrize(("attempts", "allowed"), [(6, True), (7, False)])
def test_us_the_eighth_attempt_in_seven_days_is_refused(attempts: int, allowed: bool) -> None:
    counted = [d for i in range(attempts)
               for d in dials(NEW_YORK, DAY_US + timedelta(days=i), ["no_answer"])]
    now = at(NEW_YORK, DAY_US + timedelta(days=6), "18:00")
    decision = call_caps(US, NEW_YORK, now, counted, "L-1", NUMBER)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rule == "C2" and decision.until == counted[0].at + timedelta(days=7)


def test_us_attempts_older_than_seven_days_are_not_counted() -> None:
    counted = [d for i in range(7)
               for d in dials(NEW_YORK, DAY_US + timedelta(days=i), ["no_answer"])]
    later = counted[0].at + timedelta(days=7)
    assert call_caps(US, NEW_YORK, later, counted, "L-1", NUMBER).allowed is True


@pytest.mark.parametrize(("days_after", "allowed"), [(6, False), (7, True)])
def test_us_no_call_within_seven_days_after_a_conversation(days_after: int,
                                                           allowed: bool) -> None:
    talk = dials(NEW_YORK, DAY_US, ["answered"])
    now = talk[0].at + timedelta(days=days_after)
    decision = call_caps(US, NEW_YORK, now, talk, "L-1", NUMBER)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rule == "C2" and "conversation" in (decision.reason or "")


def test_us_counts_per_loan_and_cn_per_debtor() -> None:
    other_loans = dials(NEW_YORK, DAY_US, ["no_answer"] * 7, loan_id="L-9")
    now = at(NEW_YORK, DAY_US + timedelta(days=1), "10:00")
    assert call_caps(US, NEW_YORK, now, other_loans, "L-1", OTHER_NUMBER).allowed is True


# --- C13: third parties ---

REESTABLISHING = ("contact.reestablish", 1)


@pytest.mark.parametrize(("pack", "streak", "called", "allowed"), [
    (CN, 2, 0, False), (CN, 3, 0, True), (CN, 3, 5, True),
    (US, 2, 0, False), (US, 3, 0, True), (US, 3, 1, False),
])
def test_a_contact_person_only_after_three_failed_calls_and_us_once(
        pack: PolicyPack, streak: int, called: int, allowed: bool) -> None:
    decision = third_party(pack, "contact", "contact", streak, called, *REESTABLISHING)
    assert decision.allowed is allowed
    assert decision.rule == (None if allowed else "C13")


def test_a_contact_person_only_with_the_template_that_says_nothing_of_the_debt() -> None:
    decision = third_party(CN, "contact", "contact", 3, 0, "call.reminder", 1)
    assert (decision.allowed, decision.rule) == (False, "C13")


@pytest.mark.parametrize(("kind", "party", "allowed"), [
    ("borrower", "borrower", True), ("borrower", "contact", False),
    ("borrower", "other", False), ("contact", "other", False), ("contact", "borrower", False),
])
def test_only_the_numbers_the_task_is_for(kind: str, party: str, allowed: bool) -> None:
    decision = third_party(CN, kind, party, 5, 0, *REESTABLISHING)
    assert decision.allowed is allowed
    assert decision.rule == (None if allowed else "C13")


# --- C3: cease and holds ---

def test_a_ceased_channel_is_refused_and_a_hold_waits() -> None:
    assert not_stopped("sms", None).allowed is True
    ceased = not_stopped("sms", "ceased")
    assert (ceased.allowed, ceased.rule, ceased.held) == (False, "C3", False)
    held = not_stopped("email", "dispute:D-1")
    assert (held.allowed, held.rule, held.held, held.until) == (False, "C3", True, None)


# --- courtesy reminders: the day before a promise's due date, 10:00 in the borrower's zone ---

DUE = date(2026, 10, 20)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(("day", "hhmm", "expected"), [
    (date(2026, 10, 14), "09:00", (date(2026, 10, 19), "10:00")),
    (date(2026, 10, 19), "09:59", (date(2026, 10, 19), "10:00")),
    (date(2026, 10, 19), "10:00", (date(2026, 10, 19), "10:00")),
    (date(2026, 10, 19), "16:00", (date(2026, 10, 19), "16:00")),  # past 10:00: at once
    (date(2026, 10, 20), "23:59", (date(2026, 10, 20), "23:59")),  # the due day, not over
    (date(2026, 10, 21), "00:00", None),  # the due day is over
])
def test_a_courtesy_reminder_goes_the_day_before_at_ten_or_at_once_until_the_day_ends(
        zone: str, day: date, hhmm: str, expected: tuple[date, str] | None) -> None:
    due = courtesy_due(DUE, ZoneInfo(zone), at_local(day, hhmm, zone))
    assert due == (None if expected is None else at_local(*expected, zone))


def test_the_courtesy_template_is_an_sms_reminder_showing_what_c5_asks() -> None:
    template = APPROVED[COURTESY_TEMPLATE]
    assert (template.channel, template.kind) == ("sms", REMINDER)
    for language in ("zh-CN", "en"):
        assert set(REQUIRED) <= template.fields(language)
