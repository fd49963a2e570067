"""The nightly batch route: each loan is judged on its own and recorded whole or not at all;
the answer says, item by item, accepted or why not; under one Idempotency-Key a batch sent
again (in another order, or split) records nothing twice; a body that is not a batch records
nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.auth import Role
from tests.helpers import loan_body
from tests.service.test_escalation_api import recorded

from services.escalation.application import Cases
from services.escalation.domain import ReportedLoan

Headers = Callable[..., dict[str, str]]
BATCH = "/v1/loans/overdue:batch"


def send(client: TestClient, headers: dict[str, str], loans: list[Any],
         key: str | None = None) -> Any:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    response = client.post(BATCH, json={"loans": loans}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_each_loan_is_judged_alone_and_only_the_accepted_are_recorded(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    theirs = escalation.post("/v1/loans/overdue", json=loan_body("B-THEIRS", lender_id="lender-2"),
                             headers=token(Role.LENDER, "lender-2"))
    assert theirs.status_code == 202
    before = recorded(cases)
    missing_amount = loan_body("B-BAD")
    del missing_amount["amount_overdue"]
    loans = [loan_body("B-1"), missing_amount, loan_body("B-OTHER", lender_id="lender-3"),
             loan_body("B-THEIRS"), loan_body("B-2"), loan_body("B-1", amount="5.00"),
             "not an object"]
    answer = send(escalation, token(Role.LENDER, "lender-1"), loans)

    assert (answer["accepted"], answer["rejected"]) == (2, 5)
    items = answer["items"]
    assert [item["index"] for item in items] == list(range(len(loans)))
    assert [item["status"] for item in items] == [
        "accepted", "rejected", "rejected", "rejected", "accepted", "rejected", "rejected"]
    codes = {item["index"]: item["error"]["code"] for item in items if item["error"]}
    assert codes == {1: "invalid_request", 2: "forbidden", 3: "loan_of_another_lender",
                     5: "repeated_in_batch", 6: "invalid_request"}
    assert items[1]["loan_id"] == "B-BAD" and items[6]["loan_id"] is None
    assert items[1]["error"]["details"][0]["loc"] == ["amount_overdue"]
    assert items[0]["event_id"] and items[0]["event_id"] != items[4]["event_id"]
    assert recorded(cases) == before + 2
    assert cases.lender_of("B-1") == cases.lender_of("B-2") == "lender-1"
    assert not cases.exists(ReportedLoan.create_id("B-BAD"))
    assert not cases.exists(ReportedLoan.create_id("B-OTHER"))
    assert cases.lender_of("B-THEIRS") == "lender-2"


def test_a_batch_sent_again_under_its_key_records_nothing_twice(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    lender = token(Role.LENDER, "lender-1")
    loans = [loan_body(f"R-{i}") for i in range(5)]
    first = send(escalation, lender, loans, key="night-2026-12-03")
    after_first = recorded(cases)
    ids = {item["loan_id"]: item["event_id"] for item in first["items"]}

    # Again, in another order and in two parts: the same ids, nothing more recorded.
    again = send(escalation, lender, loans[3:], key="night-2026-12-03")["items"] \
        + send(escalation, lender, loans[2::-1], key="night-2026-12-03")["items"]
    assert {item["loan_id"]: item["event_id"] for item in again} == ids
    assert recorded(cases) == after_first

    # One loan changed under the same key is refused alone; another key is a new report.
    changed = [loan_body("R-0", amount="1.00"), loan_body("R-1")]
    answer = send(escalation, lender, changed, key="night-2026-12-03")
    assert [item["status"] for item in answer["items"]] == ["rejected", "accepted"]
    assert answer["items"][0]["error"]["code"] == "idempotency_key_reused"
    assert answer["items"][1]["event_id"] == ids["R-1"]
    assert recorded(cases) == after_first
    assert send(escalation, lender, changed[:1], key="night-2026-12-04")["accepted"] == 1
    assert recorded(cases) == after_first + 1


def test_the_batch_keys_are_not_the_single_routes_keys(
        escalation: TestClient, cases: Cases, token: Headers) -> None:
    lender = token(Role.LENDER, "lender-1")
    single = escalation.post("/v1/loans/overdue", json=loan_body("K-1"),
                             headers={**lender, "Idempotency-Key": "k"})
    assert single.status_code == 202
    answer = send(escalation, lender, [loan_body("K-1", amount="2.00")], key="k")
    assert answer["accepted"] == 1
    assert answer["items"][0]["event_id"] != single.json()["event_id"]


@pytest.mark.parametrize("body", [
    {"loans": []},
    {"loans": [loan_body(f"N-{i}") for i in range(1001)]},
    {"loans": loan_body("N-1")},
    {"loans": [loan_body("N-1")], "extra": True},
    [loan_body("N-1")],
], ids=["empty", "over-1000", "not-a-list", "extra-field", "bare-list"])
def test_a_body_that_is_not_a_batch_is_a_422_and_records_nothing(
        escalation: TestClient, cases: Cases, token: Headers, body: Any) -> None:
    before = recorded(cases)
    response = escalation.post(BATCH, json=body, headers=token(Role.LENDER, "lender-1"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert recorded(cases) == before


def test_only_a_lender_may_send_a_batch(escalation: TestClient, cases: Cases,
                                        token: Headers) -> None:
    before = recorded(cases)
    body = {"loans": [loan_body("A-1")]}
    assert escalation.post(BATCH, json=body).status_code == 401
    assert escalation.post(BATCH, json=body, headers=token(Role.OPS, "ops-1")).status_code == 403
    assert recorded(cases) == before
