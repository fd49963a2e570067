"""Reminder's contact rules as the conduct catalogue states them: C1, C5 and C4."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.policy_pack import CN, US, PolicyPack

from services.reminder.domain import FIRST_REMINDER
from services.reminder.policy import contact_window, is_open, required_content

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


def test_the_approved_first_reminder_with_all_content_passes() -> None:
    assert required_content(*FIRST_REMINDER, full_content()).allowed is True


@pytest.mark.parametrize(("template_id", "version"), [
    ("sms.first_reminder", 2), ("sms.first_reminder", 0), ("sms.final_warning", 1), ("", 1),
])
def test_an_unapproved_template_or_version_is_refused(template_id: str, version: int) -> None:
    decision = required_content(template_id, version, full_content())
    assert (decision.allowed, decision.rule) == (False, "C5")
    assert decision.reason and "not approved" in decision.reason


@pytest.mark.parametrize("item", REQUIRED)
@pytest.mark.parametrize("blank", ["", "   ", None], ids=["empty", "whitespace", "absent"])
def test_a_required_item_left_blank_is_refused_by_name(item: str, blank: str | None) -> None:
    content = full_content()
    if blank is None:
        del content[item]
    else:
        content[item] = blank
    decision = required_content(*FIRST_REMINDER, content)
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
