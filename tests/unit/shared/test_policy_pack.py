"""A lender may tighten a policy pack, never loosen it (DOMAIN.md, "What the rules demand")."""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from shared.policy_pack import (
    CN,
    US,
    DailyWindow,
    PackLoosened,
    PolicyPack,
    Rule,
    Tighter,
    pack,
)

IDENTITY = {"name", "version"}
RULE_FIELDS = [f.name for f in fields(PolicyPack) if f.name not in IDENTITY]


@pytest.mark.parametrize(("base", "changes"), [
    (CN, {"contact_hours": DailyWindow(time(9, 0), time(20, 0))}),
    (CN, {"contact_hours": DailyWindow(time(8, 0), time(22, 0))}),
    (US, {"contact_hours": DailyWindow(time(8, 30), time(21, 0))}),
    (CN, {"max_answered_calls_per_day": 2}),
    (CN, {"max_unanswered_per_number_per_day": 3}),
    (US, {"max_call_attempts_per_7_days": 5}),
    (CN, {"visit_min_dpd": 120}),
    (CN, {"visit_min_amount": Decimal("5000.00")}),
    (US, {"visit_min_failed_contacts": 5}),
    (CN, {"notice_lead": timedelta(hours=48)}),
    (US, {"min_collectors_per_visit": 2}),
    (CN, {"third_party_after_failed_attempts": 5}),
    (CN, {"reminder_deadline_days": 10}),
    (CN, {"max_answered_calls_per_day": 1, "visit_min_dpd": 180,
          "contact_hours": DailyWindow(time(10, 0), time(18, 0))}),
], ids=lambda value: value.name if isinstance(value, PolicyPack) else "-".join(value))
def test_a_stricter_pack_is_accepted_and_marked(base: PolicyPack,
                                                changes: dict[str, object]) -> None:
    tighter = base.tighten(**changes)
    for name, value in changes.items():
        assert getattr(tighter, name) == value
    assert tighter.name == base.name
    assert tighter.version == f"{base.version}+lender"


@pytest.mark.parametrize(("base", "changes"), [
    (CN, {"contact_hours": DailyWindow(time(7, 0), time(22, 0))}),
    (CN, {"contact_hours": DailyWindow(time(8, 0), time(23, 0))}),
    (US, {"contact_hours": DailyWindow(time(8, 0), time(22, 0))}),
    (CN, {"max_answered_calls_per_day": 4}),
    (CN, {"max_unanswered_per_number_per_day": 7}),
    (US, {"max_call_attempts_per_7_days": 8}),
    (CN, {"visit_min_dpd": 60}),
    (CN, {"visit_min_amount": Decimal("2999.99")}),
    (US, {"visit_min_failed_contacts": 2}),
    (CN, {"notice_lead": timedelta(hours=23)}),
    (CN, {"min_collectors_per_visit": 1}),
    # C13: a pre-agreed contact only after 3 consecutive failed attempts
    (CN, {"third_party_after_failed_attempts": 1}),
    # a shorter repayment deadline presses the borrower harder (C5's stated deadline)
    (CN, {"reminder_deadline_days": 5}),
    # one stricter number does not buy a looser one
    (CN, {"max_answered_calls_per_day": 1, "visit_min_dpd": 30}),
], ids=lambda value: value.name if isinstance(value, PolicyPack) else "-".join(value))
def test_a_looser_pack_is_refused(base: PolicyPack, changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="never loosen"):
        base.tighten(**changes)


def test_tightening_leaves_the_shipped_pack_alone() -> None:
    CN.tighten(max_answered_calls_per_day=1)
    assert CN.max_answered_calls_per_day == 3
    assert CN.version == "cn-2026.1"


@pytest.mark.parametrize(("name", "start", "end"), [("cn", time(8), time(22)),
                                                    ("us", time(8), time(21))])
def test_the_shipped_packs_carry_the_catalogue_hours(name: str, start: time, end: time) -> None:
    assert pack(name).contact_hours == DailyWindow(start, end)


def test_an_unknown_pack_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy pack"):
        pack("eu")


def test_every_rule_number_says_which_way_is_tighter() -> None:
    """A field added without a direction would be a number nobody checks on tightening."""
    rules = PolicyPack.rules()
    undirected = [name for name in RULE_FIELDS if not isinstance(rules[name], Rule)]
    assert undirected == [], f"give these fields rule(...) metadata: {undirected}"
    assert {name for name, bound in rules.items() if bound is None} == IDENTITY


@pytest.mark.parametrize("name", RULE_FIELDS)
def test_every_rule_number_names_catalogue_rules(name: str) -> None:
    bound = PolicyPack.rules()[name]
    assert bound is not None and bound.ids
    assert all(re.fullmatch(r"C([1-9]|1[0-4])", rule_id) for rule_id in bound.ids)


def test_caps_are_lower_floors_higher_and_hours_within() -> None:
    rules = PolicyPack.rules()
    directions = {name: bound.tighter for name, bound in rules.items() if bound is not None}
    assert directions["contact_hours"] is Tighter.WITHIN
    assert {name for name, way in directions.items() if way is Tighter.LOWER} == {
        "max_answered_calls_per_day", "max_unanswered_per_number_per_day",
        "max_call_attempts_per_7_days", "max_third_party_contacts", "complaint_answer_days"}
    assert directions["quiet_after_conversation"] is Tighter.HIGHER
    # a shorter stated deadline presses harder, so a longer one is the stricter rule
    assert directions["reminder_deadline_days"] is Tighter.HIGHER


_STEP: dict[type, Any] = {int: 1, Decimal: Decimal("0.01"), timedelta: timedelta(minutes=1)}


def _shifted(value: time, minutes: int) -> time:
    hours, minute = divmod(value.hour * 60 + value.minute + minutes, 60)
    return time(hours, minute)


def nudged(value: object, tighter: Tighter, stricter: bool) -> object:
    """The smallest move of `value` that makes its rule stricter (or, if not, looser)."""
    if tighter is Tighter.WITHIN:
        assert isinstance(value, DailyWindow)
        step = 1 if stricter else -1
        return DailyWindow(_shifted(value.start, step), _shifted(value.end, -step))
    number: Any = value
    step = _STEP[type(number)]
    up = (tighter is Tighter.HIGHER) == stricter
    return number + step if up else number - step


CASES = [(base, name) for base in (CN, US) for name in RULE_FIELDS]
CASE_IDS = [f"{base.name}-{name}" for base, name in CASES]


@pytest.mark.parametrize(("base", "name"), CASES, ids=CASE_IDS)
def test_every_rule_number_can_be_tightened(base: PolicyPack, name: str) -> None:
    bound = PolicyPack.rules()[name]
    assert bound is not None
    value = nudged(getattr(base, name), bound.tighter, stricter=True)
    tighter = base.tighten(**{name: value})
    assert getattr(tighter, name) == value
    assert tighter.version == f"{base.version}+lender"


@pytest.mark.parametrize(("base", "name"), CASES, ids=CASE_IDS)
def test_loosening_any_rule_number_is_refused_naming_it(base: PolicyPack, name: str) -> None:
    bound = PolicyPack.rules()[name]
    assert bound is not None
    value = nudged(getattr(base, name), bound.tighter, stricter=False)
    with pytest.raises(PackLoosened, match="never loosen") as refused:
        base.tighten(**{name: value})
    assert [loose.name for loose in refused.value.loosened] == [name]
    assert refused.value.rules == bound.ids
    assert name in str(refused.value)
    assert all(rule_id in str(refused.value) for rule_id in bound.ids)


def test_a_refusal_names_every_loosened_number_and_its_rule() -> None:
    with pytest.raises(ValueError, match="never loosen") as refused:
        CN.tighten(max_answered_calls_per_day=1, visit_min_dpd=30, notice_lead=timedelta(0))
    assert isinstance(refused.value, PackLoosened)
    assert [loose.name for loose in refused.value.loosened] == ["visit_min_dpd", "notice_lead"]
    assert refused.value.rules == ("C6", "C8")
    assert "C6 visit_min_dpd: 91 -> 30 (higher is tighter)" in str(refused.value)


@pytest.mark.parametrize("name", sorted(IDENTITY))
def test_a_field_without_a_direction_cannot_be_changed(name: str) -> None:
    with pytest.raises(ValueError, match="no direction"):
        CN.tighten(**{name: "lender"})
