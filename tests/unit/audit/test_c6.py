"""C6 judged from the log alone: a field visit only when the escalation criteria hold at its
time, with its reasons recorded; escalations' reasons; promises decided on the payments."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from shared.policy_pack import CN, US
from tests.unit.audit.cases import (
    LENDER,
    REQUESTED,
    decided,
    escalated,
    failed_calls,
    hardship,
    hardship_ended,
    honest_case,
    opened,
    overdue,
    payment,
    plan,
    promise,
    reason,
    strategy,
    updated,
    visit,
    visit_reasons,
)
from tests.unit.audit.loans import (
    at_local,
    attempt,
    cease,
    closed,
    dispute_opened,
    dispute_resolved,
    leaves,
)

from services.audit.compliance import (
    RuleVerdict,
    c6_visits,
    judge,
    policy_of,
    rederive,
    strategies_named,
)

Event = dict[str, object]


def judged(*events: Event, pack: object = CN) -> RuleVerdict:
    return c6_visits(leaves(*events), pack)  # type: ignore[arg-type]


def found(verdict: RuleVerdict) -> list[int]:
    return [finding["leaf_index"] for finding in verdict["findings"]]


def said(verdict: RuleVerdict) -> str:
    return " | ".join(finding["message"] for finding in verdict["findings"])


def case(*events: Event) -> list[Event]:
    """The loan opened with three failed calls behind it, then `events`."""
    return [overdue(), opened(), *failed_calls(), *events]


# --- VisitRequested ---------------------------------------------------------------------------


def test_an_honest_visit_request_passes_with_the_leaves_judged() -> None:
    verdict = judged(*honest_case())
    assert (verdict["verdict"], verdict["evidence"], verdict["findings"]) == ("pass", [5, 6], [])


@pytest.mark.parametrize("stated", ["10", "92"])
def test_a_rogue_visit_for_a_loan_ten_days_past_due_fails_at_its_leaf(stated: str) -> None:
    events = [overdue(due=date(2026, 9, 21)), opened(due=date(2026, 9, 21)), *failed_calls(),
              visit(reasons=visit_reasons(dpd=stated))]
    verdict = judged(*events)
    assert verdict["verdict"] == "fail" and set(found(verdict)) == {5}
    assert "dpd 10, below its threshold 91" in said(verdict)
    if stated == "92":
        assert "dpd 92, but the log shows 10 (due 2026-09-21, 2026-10-01 in Asia/Shanghai" \
            in said(verdict)


def test_a_visit_for_500_cny_fails_in_cn_and_passes_in_us() -> None:
    reasons = visit_reasons(amount="500.00", thresholds=("91", "500.00", "3"))
    cn = [overdue(amount="500.00"), opened(amount="500.00"), *failed_calls(),
          visit(reasons=reasons)]
    verdict = judged(*cn)
    assert found(verdict) == [5]
    assert "amount threshold of 500.00, below the cn pack's 3000.00" in said(verdict)
    us = [overdue(amount="500.00", jurisdiction="us"), opened(amount="500.00", jurisdiction="us"),
          *failed_calls(), visit(reasons=reasons)]
    assert judged(*us, pack=US)["verdict"] == "pass"
    assert {v["rule"]: v["verdict"] for v in judge(leaves(*us), "cn")}["C6"] == "pass"


def test_the_amount_is_the_latest_reported_lowered_by_payments() -> None:
    paid_down = payment(at_local("2026-09-20 12:00"), "2500.00", "2500.00")
    verdict = judged(*case(paid_down, visit()))
    assert set(found(verdict)) == {6}
    assert "amount 5000.00, but the log shows 2500.00" in said(verdict)
    assert "amount 2500.00, below its threshold 3000.00" in said(verdict)
    raised = updated(at_local("2026-09-25 12:00"), "4000.00")
    assert judged(*case(paid_down, raised, visit(reasons=visit_reasons(amount="4000.00"))))[
        "verdict"] == "pass"


def test_amounts_compare_as_decimals() -> None:
    assert judged(*case(visit(reasons=visit_reasons(amount="5000")))) ["verdict"] == "pass"


def test_a_visit_during_a_dispute_fails_and_after_its_resolution_passes() -> None:
    during = judged(*case(dispute_opened(at_local("2026-09-30 10:00")), visit()))
    assert found(during) == [6] and "while dispute D-1 is open (leaf 5)" in said(during)
    after = judged(*case(dispute_opened(at_local("2026-09-20 10:00")),
                         dispute_resolved(at_local("2026-09-25 10:00")), visit()))
    assert after["verdict"] == "pass"


def test_a_visit_during_hardship_fails() -> None:
    # A day of it is behind the request: 92 days since due, 91 past due.
    now = hardship(at_local("2026-09-30 00:00"), at_local("2026-10-30 00:00"), "HS-2")
    verdict = judged(*case(now, visit(reasons=visit_reasons(dpd="91"))))
    assert found(verdict) == [6]
    assert "during hardship HS-2 (leaf 5, until 2026-10-29T16:00:00Z)" in said(verdict)


def test_days_in_hardship_do_not_count_as_days_past_due() -> None:
    ten_days = hardship(at_local("2026-08-01 00:00"), at_local("2026-08-11 00:00"))
    verdict = judged(*case(ten_days, visit()))
    assert ("dpd 92, but the log shows 82 (due 2026-07-01, 2026-10-01 in Asia/Shanghai, "
            "10 days in hardship)") in said(verdict)
    earlier = [overdue(due=date(2026, 6, 21)), opened(due=date(2026, 6, 21)), *failed_calls(),
               ten_days, visit()]
    assert judged(*earlier)["verdict"] == "pass"  # 102 days since due, 10 of them suspended


def test_a_hardship_ended_early_suspends_only_its_days() -> None:
    granted = hardship(at_local("2026-08-01 00:00"), at_local("2026-08-31 00:00"))
    ended = hardship_ended(at_local("2026-08-04 00:00"))  # 3 days of hardship, not 30
    verdict = judged(*case(granted, ended, visit(reasons=visit_reasons(dpd="89"))))
    assert said(verdict) == "visit requested with dpd 89, below its threshold 91"


@pytest.mark.parametrize(("thresholds", "message"), [
    (("60", "3000.00", "3"), "dpd threshold of 60, below the cn pack's 91"),
    (("91", "2999.99", "3"), "amount threshold of 2999.99, below the cn pack's 3000.00"),
    (("91", "3000.00", "2"), "failed_contacts threshold of 2, below the cn pack's 3"),
])
def test_a_threshold_below_the_pack_fails(thresholds: tuple[str, str, str], message: str) -> None:
    verdict = judged(*case(visit(reasons=visit_reasons(thresholds=thresholds))))
    assert found(verdict) == [5] and message in said(verdict)


def test_a_threshold_above_the_pack_passes_under_the_shipped_default() -> None:
    thresholds = ("92", "4000.00", "3")
    assert judged(*case(visit(reasons=visit_reasons(thresholds=thresholds))))["verdict"] == \
        "pass"


def test_a_wrong_dpd_value_fails_naming_the_logs() -> None:
    verdict = judged(*case(visit(reasons=visit_reasons(dpd="93"))))
    assert found(verdict) == [5]
    assert said(verdict) == ("visit requested with dpd 93, but the log shows 92 (due 2026-07-01, "
                             "2026-10-01 in Asia/Shanghai, 0 days in hardship)")


def test_dpd_is_counted_in_the_borrowers_zone() -> None:
    # 2026-09-30 23:30 in Shanghai is still day 91; 00:30 the next day is day 92.
    late = visit(at_local("2026-09-30 23:30"), visit_reasons(dpd="91"))
    assert judged(*case(late))["verdict"] == "pass"
    assert "log shows 92" in said(judged(*case(visit(at_local("2026-10-01 00:30"),
                                                     visit_reasons(dpd="91")))))


@pytest.mark.parametrize("missing", ["dpd", "amount", "failed_contacts"])
def test_a_missing_reason_fails_naming_it(missing: str) -> None:
    reasons = [r for r in visit_reasons() if r["code"] != missing]
    verdict = judged(*case(visit(reasons=reasons)))
    assert said(verdict) == f"visit requested without a {missing} reason (value and threshold)"


def test_a_reason_without_a_value_or_threshold_fails() -> None:
    reasons = [reason("dpd", None, "91"), reason("amount", "5000.00", None),
               reason("failed_contacts", "three", "3")]
    messages = said(judged(*case(visit(reasons=reasons))))
    assert "dpd reason whose value none is not a number" in messages
    assert "amount reason whose threshold none is not a number" in messages
    assert "failed_contacts reason whose value 'three' is not a number" in messages


def test_failed_contacts_count_refusals_and_start_again_on_an_answer() -> None:
    refused = [attempt(at_local("2026-09-28 10:00"), "refused"),
               attempt(at_local("2026-09-29 10:00"), "wrong_number"),
               attempt(at_local("2026-09-30 10:00"), "no_answer")]
    assert judged(overdue(), opened(), *refused, visit())["verdict"] == "pass"
    answered = [*refused, attempt(at_local("2026-09-30 11:00"), "answered")]
    verdict = judged(overdue(), opened(), *answered, visit())
    assert "failed_contacts 3, but the log shows 0" in said(verdict)
    to_contact = [attempt(at_local("2026-09-30 12:00"), "no_answer", party="contact")]
    assert judged(overdue(), opened(), *refused, *to_contact, visit())["verdict"] == "pass"


def test_failed_contacts_are_ordered_by_attempted_at_not_by_log_order() -> None:
    answered_first = attempt(at_local("2026-09-27 10:00"), "answered")
    assert judged(overdue(), opened(), *failed_calls(), answered_first, visit())["verdict"] == \
        "pass"


def test_facts_after_the_request_do_not_count() -> None:
    later_call = attempt(at_local("2026-10-01 11:00"), "answered")
    assert judged(*case(visit(), later_call))["verdict"] == "pass"


def test_a_visit_with_no_terms_before_it_fails() -> None:
    verdict = judged(*failed_calls(), visit(), overdue(at=at_local("2026-10-02 10:00")))
    assert found(verdict) == [3]
    assert ("visit requested, but the log holds no LoanOverdue, CaseOpened or CaseUpdated at or "
            "before it: a visit with no facts behind it") in said(verdict)


def test_a_visit_on_a_case_never_opened_or_closed_fails() -> None:
    unopened = judged(overdue(), *failed_calls(), visit())
    assert "visit requested with no case opened at or before it" in said(unopened)
    shut = judged(*case(closed(at_local("2026-09-30 10:00")), visit()))
    assert "visit requested after the case closed (leaf 5)" in said(shut)
    reopened = opened(at_local("2026-09-30 12:00"))
    assert judged(*case(closed(at_local("2026-09-30 10:00")), reopened, visit()))[
        "verdict"] == "pass"


def test_a_visit_after_the_borrower_stopped_visits_fails() -> None:
    stopped = judged(*case(cease(at_local("2026-09-15 10:00"), "sms", "visit"), visit()))
    assert "after the borrower asked for no field visits (leaf 5)" in said(stopped)
    assert judged(*case(cease(at_local("2026-09-15 10:00"), "sms"), visit()))["verdict"] == \
        "pass"


def test_a_visit_while_a_promise_stands_fails_and_after_its_decision_passes() -> None:
    made = promise(at_local("2026-09-29 12:00"), date(2026, 10, 3))
    standing = judged(*case(made, visit()))
    assert "while promise P-1 (leaf 5, due 2026-10-03) stands" in said(standing)
    lapsed = promise(at_local("2026-09-20 12:00"), date(2026, 9, 25))
    broken = decided(False, at_local("2026-09-26 00:00"), "P-1", date(2026, 9, 25))
    assert judged(*case(lapsed, broken, visit()))["verdict"] == "pass"


def test_a_visit_while_a_plan_stands_fails() -> None:
    agreed = plan(at_local("2026-09-20 12:00"), (date(2026, 9, 25), "100.00"),
                  (date(2026, 10, 25), "100.00"))
    kept = decided(True, at_local("2026-09-26 00:00"), "PL-1/1", date(2026, 9, 25), "100.00",
                   "PL-1")
    paid = payment(at_local("2026-09-24 12:00"), "100.00", "5000.00")
    verdict = judged(*case(agreed, paid, kept, visit()))
    assert found(verdict) == [8]
    assert "while repayment plan PL-1 (leaf 5) stands" in said(verdict)


def test_a_plan_ends_after_two_broken_instalments() -> None:
    agreed = plan(at_local("2026-09-01 12:00"), (date(2026, 9, 10), "100.00"),
                  (date(2026, 9, 20), "100.00"), (date(2026, 10, 20), "100.00"))
    broken = [decided(False, at_local("2026-09-11 00:00"), "PL-1/1", date(2026, 9, 10),
                      plan_id="PL-1"),
              decided(False, at_local("2026-09-21 00:00"), "PL-1/2", date(2026, 9, 20),
                      plan_id="PL-1")]
    assert judged(*case(agreed, *broken, visit()))["verdict"] == "pass"
    assert "plan PL-1" in said(judged(*case(agreed, broken[0], visit())))


def test_two_visit_requests_in_one_stage_entry_fail_at_the_second() -> None:
    again = visit(REQUESTED + timedelta(days=1), visit_reasons(dpd="93"))
    verdict = judged(*honest_case(), again)
    assert found(verdict) == [7]
    assert "visit requested again in one stage entry (leaf 6 asked already" in said(verdict)
    re_entered = escalated(REQUESTED + timedelta(hours=12), reasons=visit_reasons())
    assert "again" not in said(judged(*honest_case(), re_entered, again))


# --- the strategy the request names -----------------------------------------------------------


LENDERS = "cn-2026.1/lender-1@3"


def test_the_thresholds_are_the_strategys_over_the_packs() -> None:
    stricter = strategy(3, (100, "4000.00", 5))
    honest = visit(reasons=visit_reasons(thresholds=("100", "4000.00", "5"), failed="5",
                                         dpd="100"), policy=LENDERS)
    events = [overdue(due=date(2026, 6, 23)), opened(due=date(2026, 6, 23)),
              *failed_calls(at_local("2026-09-20 10:00"), count=5), stricter, honest]
    assert judged(*events)["verdict"] == "pass"
    lax = visit(reasons=visit_reasons(dpd="100", failed="5"), policy=LENDERS)
    verdict = judged(*events[:-1], lax)
    assert set(found(verdict)) == {len(events) - 1}
    assert ("dpd threshold of 91, not the 100 of strategy lender-1@3 (leaf 7) with the cn pack"
            in said(verdict))
    # Without the StrategyPublished in the log, only the pack's floors bind.
    assert judged(*events[:-2], lax)["verdict"] == "pass"


def test_a_strategy_below_the_pack_still_needs_the_packs_thresholds() -> None:
    looser = strategy(3, (61, "1000.00", 2))
    assert judged(*case(looser, visit(policy=LENDERS)))["verdict"] == "pass"
    verdict = judged(*case(looser, visit(reasons=visit_reasons(thresholds=("61", "1000.00", "2")),
                                         policy=LENDERS)))
    assert "dpd threshold of 61, below the cn pack's 91" in said(verdict)


def test_a_variant_uses_its_own_visit_thresholds() -> None:
    variants = [{"name": "champion", "share": 50},
                {"name": "challenger", "share": 50,
                 "visit": {"min_dpd": 92, "min_amount": "3000.00", "min_failed_contacts": 3}}]
    published = strategy(3, variants=variants)
    challenger = visit(reasons=visit_reasons(thresholds=("92", "3000.00", "3")),
                       policy=f"{LENDERS}#challenger")
    champion = visit(policy=f"{LENDERS}#champion")
    assert judged(*case(published, challenger))["verdict"] == "pass"
    assert judged(*case(published, champion))["verdict"] == "pass"
    unknown = judged(*case(published, visit(policy=f"{LENDERS}#nobody")))
    assert "under variant nobody, which strategy lender-1@3 (leaf 5) lacks" in said(unknown)


def test_a_policy_version_that_names_no_strategy_or_another_lender_fails() -> None:
    unnamed = judged(*case(visit(policy="whatever")))
    assert "policy_version 'whatever', which names no strategy" in said(unnamed)
    other = judged(*case(visit(policy="cn-2026.1/lender-9@1")))
    assert "under the strategy of lender lender-9, not of the loan's lender lender-1" \
        in said(other)


def test_policy_versions_read() -> None:
    named = policy_of("cn-2026.1/lender@x@3#challenger")
    assert named is not None
    assert (named.pack_version, named.lender, named.version, named.variant) == \
        ("cn-2026.1", "lender@x", 3, "challenger")
    assert policy_of("cn-2026.1/default@1") is not None and policy_of("lender@3") is None


def test_the_strategies_a_loan_names_and_rederive_reads_them_among_its_leaves() -> None:
    events = case(visit(reasons=visit_reasons(thresholds=("92", "3000.00", "3")),
                        policy=LENDERS), visit(REQUESTED, policy=DEFAULT_POLICY))
    assert strategies_named(leaves(*events)) == {(LENDER, 3)}
    published = strategy(3, (95, "3000.00", 3), at=at_local("2026-07-01 00:00"))
    raw = [(index, json.dumps(event).encode())
           for index, event in leaves(*events[:-1], published)]
    _, verdicts = rederive(raw, "cn")
    c6 = next(v for v in verdicts if v["rule"] == "C6")
    assert c6["verdict"] == "fail" and found(c6) == [5]
    assert "not the 95 of strategy lender-1@3 (leaf 6)" in said(c6)


DEFAULT_POLICY = "cn-2026.1/default@1"


# --- CaseEscalated ----------------------------------------------------------------------------


def test_an_escalations_reasons_are_the_logs_figures() -> None:
    calls = escalated(at_local("2026-08-01 10:00"), "calls", [reason("dpd", "31", "31")],
                      days_past_due=31)
    assert judged(overdue(), opened(), calls)["verdict"] == "pass"
    wrong = escalated(at_local("2026-08-01 10:00"), "calls", [reason("dpd", "40", "31")],
                      days_past_due=40)
    verdict = judged(overdue(), opened(), wrong)
    assert found(verdict) == [2, 2]
    assert "escalation to calls with dpd 40, but the log shows 31" in said(verdict)
    assert "escalation to calls states days_past_due 40, but the log shows 31" in said(verdict)
    early = escalated(at_local("2026-07-20 10:00"), "calls", [reason("dpd", "19", "31")])
    assert "escalation to calls with dpd 19, below its threshold 31" in \
        said(judged(overdue(), opened(), early))


def test_an_escalation_counts_the_broken_promises_before_it() -> None:
    made = promise(at_local("2026-07-10 12:00"), date(2026, 7, 15), "100.00")
    broken = decided(False, at_local("2026-07-16 00:00"), "P-1", date(2026, 7, 15))
    up = escalated(at_local("2026-07-20 10:00"), "calls", [reason("broken_promises", "1", "1")])
    assert judged(overdue(), opened(), made, broken, up)["verdict"] == "pass"
    before = escalated(at_local("2026-07-14 10:00"), "calls",
                       [reason("broken_promises", "1", "1")])
    assert "broken_promises 1, but the log shows 0" in \
        said(judged(overdue(), opened(), made, broken, before))


def test_an_escalation_with_no_facts_behind_it_fails() -> None:
    verdict = judged(escalated(at_local("2026-08-01 10:00"), "calls", [reason("dpd", "31", "31")]))
    assert "an escalation with no facts behind it" in said(verdict)


# --- promises decided -------------------------------------------------------------------------


DUE_DAY = date(2026, 7, 15)
MADE = at_local("2026-07-10 12:00")
DAY_END = at_local("2026-07-16 00:00")


def test_a_promise_kept_without_payments_fails() -> None:
    verdict = judged(overdue(), opened(), promise(MADE, DUE_DAY),
                     decided(True, DAY_END, "P-1", DUE_DAY, "1000.00"))
    assert found(verdict) == [3]
    assert ("PromiseKept P-1, but payments from 2026-07-10T04:00:00Z to 2026-07-15T16:00:00Z "
            "come to 0, short of the 1000.00 promised (leaf 2)") in said(verdict)


def test_a_promise_kept_with_payments_passes() -> None:
    paid = [payment(at_local("2026-07-12 10:00"), "600.00", "4400.00"),
            payment(at_local("2026-07-15 23:59"), "400.00", "4000.00")]
    verdict = judged(overdue(), opened(), promise(MADE, DUE_DAY), *paid,
                     decided(True, DAY_END, "P-1", DUE_DAY, "1000.00"))
    assert (verdict["verdict"], verdict["evidence"]) == ("pass", [5])


def test_a_payment_before_the_promise_does_not_keep_it() -> None:
    early = payment(at_local("2026-07-09 10:00"), "1000.00", "4000.00")
    assert judged(overdue(), opened(), early, promise(MADE, DUE_DAY),
                  decided(True, DAY_END, "P-1", DUE_DAY, "1000.00"))["verdict"] == "fail"


def test_a_promise_broken_with_enough_payments_fails() -> None:
    paid = payment(at_local("2026-07-14 10:00"), "1000.00", "4000.00")
    verdict = judged(overdue(), opened(), promise(MADE, DUE_DAY), paid,
                     decided(False, DAY_END, "P-1", DUE_DAY, "1000.00"))
    assert found(verdict) == [4]
    assert "come to 1000.00, reaching the 1000.00 promised (leaf 2)" in said(verdict)
    short = payment(at_local("2026-07-14 10:00"), "999.99", "4000.01")
    assert judged(overdue(), opened(), promise(MADE, DUE_DAY), short,
                  decided(False, DAY_END, "P-1", DUE_DAY, "999.99"))["verdict"] == "pass"


def test_a_decision_before_the_due_day_ends_fails_unless_the_case_closed_as_paid() -> None:
    early = decided(False, at_local("2026-07-15 23:00"), "P-1", DUE_DAY)
    verdict = judged(overdue(), opened(), promise(MADE, DUE_DAY), early)
    assert ("decided at 2026-07-15T15:00:00Z, before the due day 2026-07-15 ended in "
            "Asia/Shanghai") in said(verdict)
    settled = payment(at_local("2026-07-12 10:00"), "5000.00", "0")
    kept = decided(True, at_local("2026-07-12 10:05"), "P-1", DUE_DAY, "5000.00")
    assert judged(overdue(), opened(), promise(MADE, DUE_DAY), settled, kept)["verdict"] == \
        "pass"


def test_a_decision_of_a_promise_the_log_does_not_hold_fails() -> None:
    verdict = judged(overdue(), opened(), decided(False, DAY_END, "P-404", DUE_DAY))
    assert said(verdict) == ("PromiseBroken P-404 decides a promise the log does not show: no "
                             "PromiseToPayMade P-404 is in the log")


def test_a_promise_decided_twice_fails_at_the_second() -> None:
    broken = decided(False, DAY_END, "P-1", DUE_DAY)
    again = decided(False, DAY_END + timedelta(hours=1), "P-1", DUE_DAY)
    verdict = judged(overdue(), opened(), promise(MADE, DUE_DAY), broken, again)
    assert found(verdict) == [4] and "decided already (leaf 3)" in said(verdict)


def test_an_honest_plan_passes() -> None:
    agreed = plan(at_local("2026-07-05 12:00"), (date(2026, 7, 15), "300.00"),
                  (date(2026, 8, 15), "300.00"), (date(2026, 9, 15), "300.00"))
    events = [overdue(), opened(), agreed,
              payment(at_local("2026-07-14 10:00"), "300.00", "4700.00"),
              decided(True, at_local("2026-07-16 00:00"), "PL-1/1", date(2026, 7, 15), "300.00",
                      "PL-1"),
              # 500 by the second due day: 300 + 200 falls short of 600 cumulated
              payment(at_local("2026-08-10 10:00"), "200.00", "4500.00"),
              decided(False, at_local("2026-08-16 00:00"), "PL-1/2", date(2026, 8, 15),
                      "200.00", "PL-1"),
              # 1000 by the third: reaches 900
              payment(at_local("2026-09-10 10:00"), "500.00", "4000.00"),
              decided(True, at_local("2026-09-16 00:00"), "PL-1/3", date(2026, 9, 15),
                      "500.00", "PL-1")]
    verdict = judged(*events)
    assert (verdict["verdict"], verdict["evidence"], verdict["findings"]) == \
        ("pass", [4, 6, 8], [])
    lying = [*events[:6], decided(True, at_local("2026-08-16 00:00"), "PL-1/2",
                                  date(2026, 8, 15), "200.00", "PL-1")]
    assert "short of the 600.00 promised (leaf 2)" in said(judged(*lying))


def test_an_instalment_the_plan_lacks_fails() -> None:
    agreed = plan(at_local("2026-07-05 12:00"), (date(2026, 7, 15), "300.00"))
    verdict = judged(overdue(), opened(), agreed,
                     decided(False, DAY_END, "PL-1/2", DUE_DAY, plan_id="PL-1"))
    assert "PL-1/2 is no instalment of plan PL-1 (leaf 2)" in said(verdict)


def test_a_decision_with_another_due_date_fails() -> None:
    verdict = judged(overdue(), opened(), promise(MADE, DUE_DAY),
                     decided(False, DAY_END + timedelta(days=1), "P-1", date(2026, 7, 16)))
    assert "states due_date 2026-07-16, but the promise (leaf 2) is due 2026-07-15" \
        in said(verdict)


# --- the verdict as a whole -------------------------------------------------------------------


def test_c6_is_not_applicable_without_a_visit_escalation_or_decision() -> None:
    verdict = judged(overdue(), opened(), promise(MADE, DUE_DAY), *failed_calls())
    assert (verdict["verdict"], verdict["evidence"]) == ("not_applicable", [])
    assert {v["rule"]: v["verdict"] for v in judge(leaves(*honest_case()), "cn")}["C6"] == "pass"
