"""The audit's compliance routes in process: leaves appended through the audit application,
verdicts read from /compliance and /violations, pinned to signed checkpoints, and the evidence
bundle's verdicts re-derived offline by `dunwell verify`."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.auth import Role
from shared.events import CloudEvent
from tests.service.records import consumer_record, tracking_of
from tests.unit.audit import cases, visits
from tests.unit.audit.loans import LOAN, at_local, attempt, opened, overdue, sent

from services.audit.application import AuditLog
from services.audit.store import ViolationQuery

Headers = Callable[..., dict[str, str]]
OFFSETS = itertools.count()


@pytest.fixture
def audit(build: Callable[[str], FastAPI]) -> Iterator[TestClient]:
    with TestClient(build("audit")) as client:
        yield client


def log_of(client: TestClient) -> AuditLog:
    service: AuditLog = client.app.state.service  # type: ignore[attr-defined]
    return service


def append(client: TestClient, *events: dict[str, Any]) -> list[int]:
    """Each event consumed as the audit consumes it; returns their leaf indices."""
    log = log_of(client)
    indices = []
    for event in events:
        envelope = CloudEvent.model_validate(event)
        record = consumer_record(envelope, "audit.test", offset=next(OFFSETS))
        indices.append(log.store.size)
        assert log.process(tracking_of(record), record, envelope, envelope.payload())
    return indices


def sign(client: TestClient) -> int:
    log = log_of(client)
    log.sign_checkpoint(at_local("2026-10-14 12:00"))
    latest = log.latest()
    assert latest is not None
    return latest[0]


def honest() -> list[dict[str, Any]]:
    at = at_local("2026-10-14 10:00")
    return [overdue(), opened(at), sent(at)]


def rogue() -> dict[str, Any]:
    return sent(at_local("2026-10-14 23:00"))


def compliance(client: TestClient, auditor: dict[str, str], loan: str = LOAN) -> Any:
    response = client.get(f"/v1/loans/{loan}/compliance", headers=auditor)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def auditor(token: Headers) -> dict[str, str]:
    return token(Role.AUDITOR, "auditor-1")


def verdicts(answer: Any) -> dict[str, str]:
    return {rule["rule"]: rule["verdict"] for rule in answer["rules"]}


def test_an_honest_loan_only_passes(audit: TestClient, auditor: dict[str, str]) -> None:
    append(audit, *honest())
    size = sign(audit)
    answer = compliance(audit, auditor)
    assert (answer["loan_id"], answer["tree_size"], answer["pack"]) == (LOAN, size, "cn")
    assert [rule["rule"] for rule in answer["rules"]] == [f"C{n}" for n in range(1, 15)]
    assert set(verdicts(answer).values()) <= {"pass", "not_applicable"}
    assert verdicts(answer)["C1"] == "pass" and answer["rules"][0]["evidence"] == [2]
    listed = audit.get("/v1/violations", headers=auditor).json()
    assert listed == {"violations": [], "next": None}


def test_a_rogue_reminder_fails_c1_and_is_listed(audit: TestClient,
                                                 auditor: dict[str, str]) -> None:
    append(audit, *honest())
    [index] = append(audit, rogue())
    sign(audit)
    c1 = compliance(audit, auditor)["rules"][0]
    assert c1["verdict"] == "fail"
    assert [finding["leaf_index"] for finding in c1["findings"]] == [index]
    assert "23:00 local time" in c1["findings"][0]["message"]
    [violation] = audit.get("/v1/violations", headers=auditor).json()["violations"]
    assert violation == {"loan_id": LOAN, "rule": "C1", "leaf_index": index,
                         "time": "2026-10-14T15:00:00Z",
                         "message": c1["findings"][0]["message"]}


def test_violations_filter_by_rule_lender_and_time(audit: TestClient,
                                                   auditor: dict[str, str]) -> None:
    append(audit, *honest(), rogue())

    def listed(**query: str) -> int:
        response = audit.get("/v1/violations", params=query, headers=auditor)
        assert response.status_code == 200, response.text
        return len(response.json()["violations"])

    assert listed(rule="C1") == 1 and listed(rule="C2") == 0
    assert listed(lender_id="lender-1") == 1 and listed(lender_id="lender-2") == 0
    assert listed(since="2026-10-14T15:00:00Z") == 1
    assert listed(since="2026-10-14T23:00:01+08:00") == 0


def test_violations_page_by_an_opaque_cursor(audit: TestClient, auditor: dict[str, str]) -> None:
    late = [sent(at_local(f"2026-10-{day} 23:00")) for day in range(14, 19)]
    append(audit, *honest(), *late)
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = audit.get("/v1/violations", params=params, headers=auditor).json()
        seen += [violation["leaf_index"] for violation in page["violations"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("query", [
    {"rule": "C15"}, {"rule": "c1"}, {"rule": "C0"}, {"limit": "0"}, {"limit": "501"},
    {"since": "yesterday"}, {"since": "2026-10-14T15:00:00"}, {"cursor": "abc"},
    {"cursor": "1" * 19}])
def test_bad_violation_queries_are_422(audit: TestClient, auditor: dict[str, str],
                                       query: dict[str, str]) -> None:
    response = audit.get("/v1/violations", params=query, headers=auditor)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_verdicts_are_pinned_to_the_signed_checkpoint(audit: TestClient,
                                                      auditor: dict[str, str]) -> None:
    append(audit, *honest())
    size = sign(audit)
    [index] = append(audit, rogue())
    stored = log_of(audit).store.verdicts_of(LOAN)
    assert stored is not None and stored.tree_size == index + 1  # judged as it arrived
    before = compliance(audit, auditor)
    assert (before["tree_size"], verdicts(before)["C1"]) == (size, "pass")
    after = sign(audit)
    assert (compliance(audit, auditor)["tree_size"], verdicts(compliance(audit, auditor))["C1"]) \
        == (after, "fail")


def test_compliance_is_404_without_signed_leaves(audit: TestClient,
                                                 auditor: dict[str, str]) -> None:
    assert audit.get(f"/v1/loans/{LOAN}/compliance", headers=auditor).status_code == 404
    append(audit, *honest())
    assert audit.get(f"/v1/loans/{LOAN}/compliance", headers=auditor).status_code == 404
    sign(audit)
    assert audit.get("/v1/loans/L-none/compliance", headers=auditor).status_code == 404


def test_only_auditors_read_compliance(audit: TestClient, token: Headers) -> None:
    append(audit, *honest())
    sign(audit)
    lender = token(Role.LENDER, "lender-1")
    assert audit.get(f"/v1/loans/{LOAN}/compliance", headers=lender).status_code == 403
    assert audit.get("/v1/violations", headers=lender).status_code == 403
    assert audit.get("/v1/violations").status_code == 401


def test_a_store_without_verdicts_catches_up(audit: TestClient, auditor: dict[str, str]) -> None:
    append(audit, *honest(), rogue())
    log = log_of(audit)
    with log.store._transaction() as db:  # a store from before verdicts were kept
        db.execute("DELETE FROM verdicts")
        db.execute("DELETE FROM violations")
        db.execute("DELETE FROM verdicts_judged")
    assert audit.get("/v1/violations", headers=auditor).json()["violations"] == []
    assert log.judge_pending() == 1
    assert len(audit.get("/v1/violations", headers=auditor).json()["violations"]) == 1
    assert log.judge_pending() == 0


def test_a_loans_violation_keeps_its_place_when_judged_again(
        audit: TestClient, auditor: dict[str, str]) -> None:
    append(audit, *honest(), rogue())
    store = log_of(audit).store
    [(row_id, violation)] = store.violations(ViolationQuery())
    append(audit, sent(at_local("2026-10-15 10:00")))  # the loan is judged again
    assert store.violations(ViolationQuery()) == [(row_id, violation)]
    page = audit.get("/v1/violations", params={"cursor": str(row_id)}, headers=auditor).json()
    assert page == {"violations": [], "next": None}


def as_loan(loan: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """The events, made another loan's."""
    moved = []
    for event in events:
        copy = json.loads(json.dumps(event))
        copy["subject"] = copy["data"]["loan_id"] = loan
        copy["id"] = f"{loan}-{event['id']}"
        moved.append(copy)
    return moved


def listed(client: TestClient, auditor: dict[str, str], **query: str) -> list[Any]:
    response = client.get("/v1/violations", params=query, headers=auditor)
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["violations"]
    return found


def test_a_loan_that_cannot_be_judged_holds_up_no_other(
        audit: TestClient, auditor: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import prometheus_client

    from services.audit import compliance as rules

    real = rules.CHECKS["C5"]

    def faulty(leaves: Any, pack: Any) -> Any:
        if any(event.get("subject") == "L-poison" for _, event in leaves):
            raise TypeError("a fault in a rule, on one loan")
        return real(leaves, pack)

    def failures() -> float:
        return prometheus_client.REGISTRY.get_sample_value(
            "dunwell_audit_loans_not_judged_total") or 0.0

    monkeypatch.setitem(rules.CHECKS, "C5", faulty)
    before = failures()
    append(audit, *as_loan("L-poison", *honest(), rogue()))
    append(audit, *as_loan("L-other", *honest(), rogue()))
    log = log_of(audit)
    assert failures() > before
    assert [(v["loan_id"], v["rule"]) for v in listed(audit, auditor)] == [("L-other", "C1")]
    assert log.judge_pending() == 0  # the log is judged to its end: nothing held up
    sign(audit)
    answer = verdicts(compliance(audit, auditor, "L-poison"))
    assert (answer["C1"], answer["C5"]) == ("fail", "not_evaluated")
    c5 = compliance(audit, auditor, "L-poison")["rules"][4]
    assert [f["leaf_index"] for f in c5["findings"]] == [0]
    assert c5["findings"][0]["message"].startswith("could not be judged")


def test_stored_verdicts_are_judged_again_under_new_rules(
        build: Callable[[str], FastAPI], auditor: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace
    from datetime import time

    from shared import policy_pack

    late = sent(at_local("2026-10-14 21:30"))  # in the cn hours as shipped, [08:00, 22:00)
    with TestClient(build("audit")) as client:
        append(client, *honest(), late)
        sign(client)
        assert verdicts(compliance(client, auditor))["C1"] == "pass"
    tighter = replace(policy_pack.CN, version="cn-2099.1",
                      contact_hours=policy_pack.DailyWindow(time(8), time(21)))
    monkeypatch.setitem(policy_pack.PACKS, "cn", tighter)  # a release with a tighter cn pack
    with TestClient(build("audit")) as client:
        assert verdicts(compliance(client, auditor))["C1"] == "fail"  # judged on request
        assert listed(client, auditor) == []
        log = log_of(client)
        assert log.judge_pending() == 1  # the catch-up judges every loan again, once
        assert [v["rule"] for v in listed(client, auditor)] == ["C1"]
        assert log.judge_pending() == 0


def test_a_violation_takes_the_lender_once_known(audit: TestClient,
                                                 auditor: dict[str, str]) -> None:
    append(audit, attempt(at_local("2026-10-14 10:00"), "no_answer", permit=False))
    assert len(listed(audit, auditor, rule="C2")) == 1  # a dial without a permit
    assert listed(audit, auditor, rule="C2", lender_id="lender-1") == []
    append(audit, overdue(lender="lender-1"))
    assert len(listed(audit, auditor, rule="C2", lender_id="lender-1")) == 1
    append(audit, overdue(lender="lender-2"))  # the loan's latest says another lender
    assert listed(audit, auditor, rule="C2", lender_id="lender-1") == []
    assert len(listed(audit, auditor, rule="C2", lender_id="lender-2")) == 1


def test_after_a_pack_switch_violations_agree_with_compliance(
        build: Callable[[str], FastAPI], auditor: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    late = sent(at_local("2026-10-14 21:30"))  # outside the us hours, inside the cn ones
    with TestClient(build("audit")) as client:
        append(client, *honest(), late)
        sign(client)
        assert listed(client, auditor) == []
    monkeypatch.setenv("AUDIT_PACK", "us")
    with TestClient(build("audit")) as client:
        log_of(client).judge_pending()
        assert verdicts(compliance(client, auditor))["C1"] == "fail"
        assert [v["rule"] for v in listed(client, auditor)] == ["C1"]
    monkeypatch.setenv("AUDIT_PACK", "cn")
    with TestClient(build("audit")) as client:
        log_of(client).judge_pending()
        assert verdicts(compliance(client, auditor))["C1"] == "pass"
        assert listed(client, auditor) == []


# --- the evidence bundle carries the verdicts; `dunwell verify` re-derives them ------------


def bundle_of(client: TestClient, auditor: dict[str, str], path: Path) -> dict[str, Any]:
    response = client.get(f"/v1/loans/{LOAN}/evidence", headers=auditor)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    path.write_text(json.dumps(bundle))
    return bundle


def verify(path: Path, vkey: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dunwell.cli", "verify", str(path),
                           "--key", vkey], capture_output=True, text=True, timeout=120)


def test_the_bundle_verdicts_verify_and_an_edit_names_the_rule(
        audit: TestClient, auditor: dict[str, str], tmp_path: Path) -> None:
    append(audit, *honest(), rogue())
    sign(audit)
    bundle = bundle_of(audit, auditor, tmp_path / "bundle.json")
    assert bundle["pack"] == "cn"
    assert bundle["verdicts"] == compliance(audit, auditor)["rules"]
    vkey = log_of(audit).vkey
    good = verify(tmp_path / "bundle.json", vkey)
    assert good.returncode == 0, good.stderr
    assert "every verdict re-derived from the leaves" in good.stdout
    bundle["verdicts"][0].update(verdict="pass", findings=[])
    (tmp_path / "edited.json").write_text(json.dumps(bundle))
    edited = verify(tmp_path / "edited.json", vkey)
    assert edited.returncode == 1
    assert "C1: bundle says pass, leaves say fail" in edited.stderr


def test_an_older_bundle_without_verdicts_still_verifies(
        audit: TestClient, auditor: dict[str, str], tmp_path: Path) -> None:
    append(audit, *honest())
    sign(audit)
    bundle = bundle_of(audit, auditor, tmp_path / "bundle.json")
    del bundle["verdicts"], bundle["pack"]
    (tmp_path / "old.json").write_text(json.dumps(bundle))
    result = verify(tmp_path / "old.json", log_of(audit).vkey)
    assert result.returncode == 0, result.stderr
    assert "no verdicts: none were checked" in result.stdout



def test_a_bundle_of_another_loan_does_not_verify(audit: TestClient, auditor: dict[str, str],
                                                   tmp_path: Path) -> None:
    append(audit, *as_loan("L-bad", *honest(), rogue()))
    [good_first, *_] = append(audit, *as_loan("L-good", *honest()))
    sign(audit)
    response = audit.get("/v1/loans/L-good/evidence", headers=auditor)
    assert response.status_code == 200, response.text
    relabelled = dict(response.json(), loan_id="L-bad")
    (tmp_path / "relabelled.json").write_text(json.dumps(relabelled))
    result = verify(tmp_path / "relabelled.json", log_of(audit).vkey)
    assert result.returncode == 1
    expected = (f"FAILED (first failing leaf index {good_first}): leaf {good_first} is an "
                f"event of L-good, not of the bundle's loan L-bad")
    assert expected in result.stderr


# --- C6: visit requests, escalations and promises, judged from the log ----------------------


def c6_of(answer: Any) -> Any:
    return next(rule for rule in answer["rules"] if rule["rule"] == "C6")


def test_a_rogue_visit_request_fails_c6_and_is_listed(audit: TestClient,
                                                      auditor: dict[str, str]) -> None:
    due = date(2026, 9, 21)  # ten days past due when the visit is asked for
    append(audit, cases.overdue(due=due), cases.opened(due=due), *cases.failed_calls())
    [index] = append(audit, cases.visit())
    sign(audit)
    c6 = c6_of(compliance(audit, auditor))
    assert (c6["verdict"], c6["evidence"]) == ("fail", [index])
    assert {finding["leaf_index"] for finding in c6["findings"]} == {index}
    listed = audit.get("/v1/violations", params={"rule": "C6"}, headers=auditor).json()
    messages = [v["message"] for v in listed["violations"]]
    assert {v["leaf_index"] for v in listed["violations"]} == {index}
    assert {v["time"] for v in listed["violations"]} == {"2026-10-01T02:00:00Z"}
    assert ("visit requested with dpd 92, but the log shows 10 (due 2026-09-21, 2026-10-01 in "
            "Asia/Shanghai, 0 days in hardship)") in messages
    assert messages == [f["message"] for f in c6["findings"]]


def test_an_honest_visit_request_passes_c6(audit: TestClient, auditor: dict[str, str]) -> None:
    indices = append(audit, *cases.honest_case())
    sign(audit)
    c6 = c6_of(compliance(audit, auditor))
    assert (c6["verdict"], c6["evidence"], c6["findings"]) == ("pass", indices[-2:], [])
    assert listed(audit, auditor, rule="C6") == []


STRICTER = "cn-2026.1/lender-1@3"


def strict_case() -> list[dict[str, Any]]:
    """A visit under lender-1's strategy 3, stating the pack's thresholds: right only while
    the log holds no StrategyPublished raising them."""
    return [cases.overdue(), cases.opened(), *cases.failed_calls(),
            cases.visit(policy=STRICTER)]


def test_a_strategy_logged_after_the_visit_judges_its_loan_again(
        audit: TestClient, auditor: dict[str, str]) -> None:
    *_, visit_index = append(audit, *strict_case())
    assert listed(audit, auditor, rule="C6") == []
    append(audit, cases.strategy(3, (92, "3000.00", 3)))  # its subject is the lender
    found = listed(audit, auditor, rule="C6")
    assert [(v["loan_id"], v["leaf_index"]) for v in found] == [(LOAN, visit_index)]
    assert "dpd threshold of 91, not the 92 of strategy lender-1@3" in found[0]["message"]
    assert log_of(audit).store.verdicts_of(cases.LENDER) is None  # a lender is no loan
    sign(audit)
    assert c6_of(compliance(audit, auditor))["verdict"] == "fail"


def test_the_bundle_carries_the_strategy_and_verifies_offline(
        audit: TestClient, auditor: dict[str, str], tmp_path: Path) -> None:
    [strategy_index] = append(audit, cases.strategy(3, (92, "3000.00", 3)))
    append(audit, cases.strategy(4, (95, "3000.00", 3)))  # named by no request: not carried
    append(audit, *strict_case())
    sign(audit)
    bundle = bundle_of(audit, auditor, tmp_path / "bundle.json")
    assert [leaf["leaf_index"] for leaf in bundle["strategies"]] == [strategy_index]
    assert next(v for v in bundle["verdicts"] if v["rule"] == "C6")["verdict"] == "fail"
    assert bundle["verdicts"] == compliance(audit, auditor)["rules"]
    vkey = log_of(audit).vkey
    good = verify(tmp_path / "bundle.json", vkey)
    assert good.returncode == 0, good.stderr
    without = dict(bundle, strategies=[])
    (tmp_path / "without.json").write_text(json.dumps(without))
    result = verify(tmp_path / "without.json", vkey)
    assert result.returncode == 1 and "C6: bundle says fail, leaves say pass" in result.stderr
    smuggled = dict(bundle, leaves=bundle["leaves"][1:], strategies=sorted(
        [bundle["leaves"][0], *bundle["strategies"]], key=lambda leaf: leaf["leaf_index"]))
    (tmp_path / "smuggled.json").write_text(json.dumps(smuggled))
    result = verify(tmp_path / "smuggled.json", vkey)
    assert result.returncode == 1
    moved = bundle["leaves"][0]["leaf_index"]
    assert f"strategy leaf {moved} is a LoanOverdue, not a StrategyPublished" in result.stderr


def test_promises_decided_against_the_payments_through_the_routes(
        audit: TestClient, auditor: dict[str, str]) -> None:
    made = cases.promise(at_local("2026-07-10 12:00"), date(2026, 7, 15))
    [kept] = append(audit, cases.overdue(), cases.opened(), made,
                    cases.decided(True, at_local("2026-07-16 00:00"), "P-1", date(2026, 7, 15),
                                  "1000.00"))[-1:]
    sign(audit)
    c6 = c6_of(compliance(audit, auditor))
    assert (c6["verdict"], [f["leaf_index"] for f in c6["findings"]]) == ("fail", [kept])
    assert "short of the 1000.00 promised" in listed(audit, auditor, rule="C6")[0]["message"]


# --- C7-C12, C14: a visit, with the registry read beside the loan --------------------------


def test_an_honest_visit_passes_c7_to_c12_and_its_bundle_carries_the_registry(
        audit: TestClient, auditor: dict[str, str], tmp_path: Path) -> None:
    events = visits.honest_visit()
    indices = append(audit, *events, visits.collector("C-7"))  # a collector no visit names
    sign(audit)
    answer = verdicts(compliance(audit, auditor))
    visit_rules = ("C7", "C8", "C9", "C10", "C11", "C12")
    assert {rule: answer[rule] for rule in visit_rules} == dict.fromkeys(visit_rules, "pass")
    assert answer["C14"] == "not_applicable"
    bundle = bundle_of(audit, auditor, tmp_path / "bundle.json")
    assert [leaf["leaf_index"] for leaf in bundle["registry"]] == indices[1:4]
    assert indices[1] not in [leaf["leaf_index"] for leaf in bundle["leaves"]]
    vkey = log_of(audit).vkey
    good = verify(tmp_path / "bundle.json", vkey)
    assert good.returncode == 0, good.stderr
    without = dict(bundle, registry=[])
    (tmp_path / "without.json").write_text(json.dumps(without))
    result = verify(tmp_path / "without.json", vkey)
    assert result.returncode == 1 and "C10: bundle says pass, leaves say fail" in result.stderr
    smuggled = dict(bundle, registry=[*bundle["registry"], bundle["leaves"][-1]])
    (tmp_path / "smuggled.json").write_text(json.dumps(smuggled))
    result = verify(tmp_path / "smuggled.json", vkey)
    assert result.returncode == 1
    assert f"leaf {bundle['leaves'][-1]['leaf_index']} is in both" in result.stderr
    moved = dict(bundle, leaves=bundle["leaves"][:-1],
                 registry=[*bundle["registry"], bundle["leaves"][-1]])
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    result = verify(tmp_path / "moved.json", vkey)
    assert result.returncode == 1
    assert (f"registry leaf {bundle['leaves'][-1]['leaf_index']} is a VisitRecorded, not one "
            f"of AgencyRegistered, CollectorRegistered, CollectorRevoked") in result.stderr


def test_a_revocation_logged_late_judges_the_visits_loan_again(
        audit: TestClient, auditor: dict[str, str]) -> None:
    events = visits.honest_visit()
    indices = append(audit, *events)
    sign(audit)
    assert verdicts(compliance(audit, auditor))["C10"] == "pass"
    # Dated before the check-in, logged after it: the loan reads C-1's leaves, so it is judged
    # again, and the check-in by a revoked collector is a violation.
    [late] = append(audit, visits.revoked("C-1", visits.DELIVERED_AT))
    sign(audit)
    c10 = next(rule for rule in compliance(audit, auditor)["rules"] if rule["rule"] == "C10")
    check_in = next(i for i, e in zip(indices, events, strict=True)
                    if e["type"] == "VisitCheckedIn")
    assert (c10["verdict"], [f["leaf_index"] for f in c10["findings"]]) == ("fail", [check_in])
    assert late in c10["evidence"]
    listed = audit.get("/v1/violations", params={"rule": "C10"}, headers=auditor).json()
    assert [v["leaf_index"] for v in listed["violations"]] == [check_in]
