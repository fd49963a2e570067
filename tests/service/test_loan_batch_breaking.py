"""The nightly batch route under attack: items that cannot be written back, NUL characters,
look-alike loan ids, a concurrent writer between the batch's plan and its save, two batches
at once, the relay's view of a batch, and a batch of 1 000 realistic loans against the body
limit."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.auth import Role
from shared.events import LoanOverdue
from shared.http import MAX_BODY_BYTES
from shared.relay import StoredEvents
from tests.helpers import loan_body
from tests.service.test_escalation_api import intakes, recorded
from tests.service.test_loan_batch import BATCH, send

from services.escalation.api import MAX_BATCH_BODY_BYTES
from services.escalation.application import Cases
from services.escalation.domain import ReportedLoan
from services.escalation.relay import integration_event

Headers = Callable[..., dict[str, str]]


def post_raw(client: TestClient, headers: dict[str, str], body: bytes) -> Any:
    """A body as bytes, for JSON that a client library would not write (lone surrogates)."""
    return client.post(BATCH, content=body,
                       headers={**headers, "content-type": "application/json"})


def rich_loan(loan_id: str) -> dict[str, Any]:
    """A loan as a lender's core sends one: Chinese addresses, contacts, every optional field."""
    body = loan_body(loan_id)
    body["borrower"].update(name="王芳", residence_address="上海市浦东新区世纪大道100号环球"
                                                           "金融中心12楼1203室",
                            workplace_address="上海市黄浦区南京东路200号东方大厦8楼")
    body.update(repayment_channel="transfer to 中国工商银行上海市分行浦东支行, account "
                                  "6222 0000 1111 2222 333, account name 上海某某消费金融有限公司, "
                                  "quoting the loan number in the remark; or pay in the app "
                                  "under 我的借款 > 立即还款",
                verification_channel="call the number on the back of your card, 95588",
                contacts=[{"contact_id": "C-1", "name": "李强", "phone": "+8613900000001",
                           "relation": "spouse"},
                          {"contact_id": "C-2", "name": "张伟", "phone": "+8613900000002",
                           "relation": "colleague"}],
                language="zh-CN", jurisdiction="cn")
    return body


def before_the_batch_saves(monkeypatch: pytest.MonkeyPatch, cases: Cases,
                           *competitors: Callable[[], Any]) -> None:
    """Runs each competitor, a real write to the store, before one of the service's next
    saves: after the batch has planned what it records and before it commits, as a
    concurrent request would commit in between."""
    save = cases.save
    pending = list(reversed(competitors))
    competing: list[bool] = []  # a competitor's own save is not another's turn

    def competing_save(*aggregates: Any, **kwargs: Any) -> Any:
        if pending and not competing:
            competing.append(True)
            try:
                pending.pop()()
            finally:
                competing.clear()
        return save(*aggregates, **kwargs)

    monkeypatch.setattr(cases, "save", competing_save)


# --- items the answer cannot carry back ---

def test_an_item_whose_loan_id_cannot_be_written_back_does_not_fail_the_batch(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    """A lone surrogate (valid JSON, not UTF-8) or a huge string as an invalid item's
    loan_id: the item is rejected without its id; the batch answers 200, once."""
    good = json.dumps(loan_body("U-1"))
    huge = json.dumps({"loan_id": "x" * 200_000})
    response = post_raw(escalation, token(Role.LENDER, "lender-1"),
                        f'{{"loans": [{good}, {{"loan_id": "\\ud800"}}, {huge}]}}'.encode())
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["accepted", "rejected", "rejected"]
    assert [item["loan_id"] for item in items] == ["U-1", None, None]
    assert len(response.content) < 10_000
    assert recorded(cases) == 1


def test_a_lone_surrogate_inside_an_item_rejects_that_item_only(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    bad = json.dumps(loan_body("S-1")).replace("Wang Fang", "\\ud800")
    response = post_raw(escalation, token(Role.LENDER, "lender-1"),
                        f'{{"loans": [{bad}, {json.dumps(loan_body("S-2"))}]}}'.encode())
    assert response.status_code == 200, response.text
    first, second = response.json()["items"]
    assert (first["loan_id"], first["error"]["code"]) == ("S-1", "invalid_request")
    assert first["error"]["details"][0]["loc"] == ["borrower", "name"]
    assert second["status"] == "accepted"
    assert not cases.exists(ReportedLoan.create_id("S-1"))
    assert recorded(cases) == 1


@pytest.mark.parametrize("where", ["loan_id", "name", "escaped-backslash-then-nul"])
def test_a_nul_character_in_any_item_refuses_the_whole_body_and_records_nothing(
        escalation: TestClient, cases: Cases, token: Headers, where: str) -> None:
    loans = [loan_body("Z-1"), loan_body("Z-2")]
    text = json.dumps({"loans": loans})
    text = {"loan_id": text.replace('"Z-2"', '"Z-2\\u0000"'),
            "name": text.replace("Wang Fang", "Wang\\u0000Fang", 1),
            "escaped-backslash-then-nul": text.replace("Wang Fang", "Wang\\\\\\u0000", 1)}[where]
    response = post_raw(escalation, token(Role.LENDER, "lender-1"), text.encode())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["type"] == "nul_character"
    assert recorded(cases) == 0
    assert cases.recorder.max_notification_id() in (None, 0)


# --- look-alike and repeated loans ---

def test_loan_ids_that_differ_only_by_case_are_two_loans(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    """As on the single route, loan ids are compared exactly: "C-1" and "c-1" are two loans,
    and a look-alike in another script is not a loan id at all."""
    answer = send(escalation, token(Role.LENDER, "lender-1"),
                  [loan_body("C-1"), loan_body("c-1"), {**loan_body("x"), "loan_id": "\u0421-1"}])
    assert [item["status"] for item in answer["items"]] == ["accepted", "accepted", "rejected"]
    assert answer["items"][2]["error"]["details"][0]["loc"] == ["loan_id"]
    assert cases.lender_of("C-1") == cases.lender_of("c-1") == "lender-1"
    assert recorded(cases) == 2


@pytest.mark.parametrize("loan_id", [5, ["L-1"], {"id": "L-1"}, None, "", " L-1", "x" * 65])
def test_a_loan_id_that_is_not_one_rejects_its_item_without_echoing_it(
        escalation: TestClient, cases: Cases, token: Headers, loan_id: Any) -> None:
    answer = send(escalation, token(Role.LENDER, "lender-1"),
                  [{**loan_body("x"), "loan_id": loan_id}, loan_body("OK-1")])
    first, second = answer["items"]
    assert (first["status"], first["loan_id"], first["error"]["code"]) == (
        "rejected", None, "invalid_request")
    assert second["status"] == "accepted"
    assert recorded(cases) == 1


def test_a_loan_refused_for_its_lender_does_not_block_the_same_loan_later_in_the_batch(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    answer = send(escalation, token(Role.LENDER, "lender-1"),
                  [loan_body("D-1", lender_id="lender-2"), loan_body("D-1"), loan_body("D-1")])
    assert [item["error"]["code"] if item["error"] else item["status"]
            for item in answer["items"]] == ["forbidden", "accepted", "repeated_in_batch"]
    assert cases.lender_of("D-1") == "lender-1"
    assert recorded(cases) == 1


@pytest.mark.parametrize("loans", [
    [None, 1, "loan", [], {}],
    [loan_body("F-1", lender_id="lender-2"), loan_body("F-2", lender_id="lender-3")],
], ids=["all-invalid", "all-another-lenders"])
def test_a_batch_with_nothing_to_take_saves_nothing(
        escalation: TestClient, cases: Cases, token: Headers, monkeypatch: pytest.MonkeyPatch,
        loans: list[Any]) -> None:
    saves: list[int] = []
    save = cases.save
    monkeypatch.setattr(cases, "save", lambda *a, **k: saves.append(len(a)) or save(*a, **k))
    answer = send(escalation, token(Role.LENDER, "lender-1"), loans)
    assert (answer["accepted"], answer["rejected"]) == (0, len(loans))
    assert saves == []
    assert cases.recorder.max_notification_id() in (None, 0)


# --- a concurrent writer between the batch's plan and its save ---

def test_another_lenders_report_committed_meanwhile_refuses_that_loan_only(
        escalation: TestClient, cases: Cases, token: Headers,
        monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = LoanOverdue.model_validate(loan_body("M-2", lender_id="lender-2"))
    before_the_batch_saves(monkeypatch, cases, lambda: cases.report(theirs, "lender-2", None))
    answer = send(escalation, token(Role.LENDER, "lender-1"),
                  [loan_body(f"M-{i}") for i in range(1, 4)], key="night")
    assert [item["error"]["code"] if item["error"] else item["status"]
            for item in answer["items"]] == ["accepted", "loan_of_another_lender", "accepted"]
    assert cases.lender_of("M-2") == "lender-2"
    assert [i.payload["loan_id"] for i in intakes(cases)] == ["M-2", "M-1", "M-3"]


def test_the_same_batch_committed_meanwhile_is_answered_with_its_ids_and_not_recorded_twice(
        escalation: TestClient, cases: Cases, token: Headers,
        monkeypatch: pytest.MonkeyPatch) -> None:
    loans = [loan_body(f"P-{i}") for i in range(4)]
    earlier: list[str | Exception] = []
    before_the_batch_saves(monkeypatch, cases, lambda: earlier.extend(cases.report_batch(
        [LoanOverdue.model_validate(loan) for loan in loans[1:3]], "lender-1", "night")))
    answer = send(escalation, token(Role.LENDER, "lender-1"), loans, key="night")
    assert answer["accepted"] == 4
    ids = [item["event_id"] for item in answer["items"]]
    assert ids[1:3] == earlier
    assert sorted(i.payload["loan_id"] for i in intakes(cases)) == [f"P-{i}" for i in range(4)]


def test_after_a_conflict_the_batch_is_still_one_transaction_and_judged_as_before(
        escalation: TestClient, cases: Cases, token: Headers,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch is planned again against what was committed meanwhile and saved at once;
    its items are judged in the same order of checks as without the conflict."""
    theirs = LoanOverdue.model_validate(loan_body("T-2", lender_id="lender-2"))
    before_the_batch_saves(monkeypatch, cases, lambda: cases.report(theirs, "lender-2", None))
    commits: list[int] = []
    cases.on_commit(lambda: commits.append(1))
    answer = send(escalation, token(Role.LENDER, "lender-1"),
                  [loan_body("T-1"), loan_body("T-1", lender_id="lender-3"), loan_body("T-2"),
                   loan_body("T-3"), loan_body("T-1", amount="1.00")], key="night")
    assert [item["error"]["code"] if item["error"] else item["status"]
            for item in answer["items"]] == [
        "accepted", "forbidden", "loan_of_another_lender", "accepted", "repeated_in_batch"]
    assert commits == [1, 1]  # the competitor's, then the batch's whole
    assert recorded(cases) == 3


def test_a_batch_that_keeps_conflicting_is_taken_loan_by_loan_and_judged_as_before(
        escalation: TestClient, cases: Cases, token: Headers,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two conflicts in a row (a lender reporting the batch's loans one after another as it
    is planned): each loan is then taken in a transaction of its own, with the same answers
    a single transaction would give."""
    def theirs(loan_id: str) -> Callable[[], Any]:
        loan = LoanOverdue.model_validate(loan_body(loan_id, lender_id="lender-2"))
        return lambda: cases.report(loan, "lender-2", None)

    before_the_batch_saves(monkeypatch, cases, theirs("W-2"), theirs("W-3"))
    commits: list[int] = []
    cases.on_commit(lambda: commits.append(1))
    loans = [loan_body("W-1"), loan_body("W-1", lender_id="lender-3"), loan_body("W-2"),
             loan_body("W-3"), loan_body("W-4"), loan_body("W-1", amount="1.00")]
    answer = send(escalation, token(Role.LENDER, "lender-1"), loans, key="night")
    assert [item["error"]["code"] if item["error"] else item["status"]
            for item in answer["items"]] == [
        "accepted", "forbidden", "loan_of_another_lender", "loan_of_another_lender",
        "accepted", "repeated_in_batch"]
    assert len(commits) == 2 + 2  # the two competitors', then W-1 and W-4 each alone
    assert [i.payload["loan_id"] for i in intakes(cases)] == ["W-2", "W-3", "W-1", "W-4"]
    again = send(escalation, token(Role.LENDER, "lender-1"), loans[::-1], key="night")
    assert {i["loan_id"]: i["event_id"] for i in again["items"] if i["event_id"]} == {
        i["loan_id"]: i["event_id"] for i in answer["items"] if i["event_id"]}
    assert recorded(cases) == 4


# --- two batches at once ---

def test_two_batches_at_once_with_one_key_record_each_loan_once(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    lender = {**token(Role.LENDER, "lender-1"), "Idempotency-Key": "night-2026-12-03"}
    loans = [loan_body(f"O-{i:03d}") for i in range(60)]
    parts = [loans[:40], loans[20:][::-1]]  # 20 loans in both, in another order
    answers: list[Any] = [None, None]
    start = threading.Barrier(2)

    def sending(n: int) -> None:
        start.wait()
        answers[n] = escalation.post(BATCH, json={"loans": parts[n]}, headers=lender)

    threads = [threading.Thread(target=sending, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [answer.status_code for answer in answers] == [200, 200], [a.text for a in answers]
    ids: dict[str, set[str]] = {}
    for answer in answers:
        assert answer.json()["rejected"] == 0
        for item in answer.json()["items"]:
            ids.setdefault(item["loan_id"], set()).add(item["event_id"])
    assert len(ids) == 60 and all(len(found) == 1 for found in ids.values())
    assert sorted(i.payload["loan_id"] for i in intakes(cases)) == sorted(ids)


# --- what the relay publishes ---

def test_each_accepted_loan_of_a_batch_is_published_once_under_its_answered_id(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    lender = token(Role.LENDER, "lender-1")
    loans = [loan_body(f"V-{i:04d}") for i in range(1000)]
    answer = send(escalation, lender, loans, key="night")
    send(escalation, lender, loans[::-1], key="night")  # a retry publishes nothing more
    outbox = StoredEvents(cases, integration_event, "/dunwell/escalation")
    published, position = [], 0
    while entries := outbox.after(position, 500):  # as the relay pages it
        assert all(entry.failure is None for entry in entries)
        published += [entry.event for entry in entries if entry.event is not None]
        position = entries[-1].position
    assert [event.type for event in published] == ["LoanOverdue"] * 1000
    assert [event.id for event in published] == [item["event_id"] for item in answer["items"]]
    assert [event.subject for event in published] == [loan["loan_id"] for loan in loans]
    assert published[7].payload() == LoanOverdue.model_validate(loans[7])


# --- the body limit against 1 000 loans ---

def test_a_batch_of_1000_realistic_loans_is_taken_though_over_the_default_limit(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    """1 000 of tests.helpers.loan_body are 390 KB; with contacts, Chinese addresses and a
    bank's full repayment instruction a loan is about 1.1 KB, so 1 000 of them pass the
    1 MiB every other route takes. This route takes 4 MiB."""
    loans = [rich_loan(f"LN-2026-{i:09d}") for i in range(1000)]
    body = json.dumps({"loans": loans}).encode()  # ASCII-escaped: the longer spelling
    assert MAX_BODY_BYTES < len(body) < MAX_BATCH_BODY_BYTES
    response = post_raw(escalation, token(Role.LENDER, "lender-1"), body)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["accepted"] == 1000
    assert recorded(cases) == 1000


def test_a_batch_over_its_limit_is_a_413_and_the_other_routes_keep_theirs(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    lender = token(Role.LENDER, "lender-1")
    over = {"loans": [{**loan_body("B-1"), "repayment_channel": "x" * MAX_BATCH_BODY_BYTES}]}
    response = escalation.post(BATCH, json=over, headers=lender)
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["code"] == "payload_too_large"
    single = {**loan_body("B-1"), "repayment_channel": "x" * MAX_BODY_BYTES}
    assert escalation.post("/v1/loans/overdue", json=single, headers=lender).status_code == 413
    assert recorded(cases) == 0
