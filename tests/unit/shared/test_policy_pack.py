"""A lender may tighten a policy pack, never loosen it (DOMAIN.md, "What the rules demand")."""

from __future__ import annotations

from datetime import time, timedelta
from decimal import Decimal

import pytest

from shared.policy_pack import CN, US, DailyWindow, PolicyPack, pack


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
