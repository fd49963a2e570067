"""The listing side table: an aggregate's row is written with its events or not at all, and a
service pages its aggregates by owner and facets without reading the log — in memory and in
SQLite alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest
from eventsourcing.domain import Aggregate, event

from shared.application import Conflict, HasListing, ServiceApplication
from shared.store import (
    Listing,
    MemoryServiceRecorder,
    PostgresServiceRecorder,
    SQLiteServiceRecorder,
)

KIND = "Loan"


class Loan(Aggregate):
    """A tiny aggregate found by its lender, sorted by its loan id."""

    @event("Opened")
    def __init__(self, lender: str, loan_id: str, stage: str, dpd: int) -> None:
        self.lender = lender
        self.loan_id = loan_id
        self.stage = stage
        self.dpd = dpd
        self.cured = False
        self.closed = False

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"test-listing/{loan_id}")

    @event("Moved")
    def move(self, stage: str, dpd: int, cured: bool) -> None:
        self.stage = stage
        self.dpd = dpd
        self.cured = cured

    @event("Closed")
    def close(self) -> None:
        self.closed = True

    def listing(self) -> Listing | None:
        if self.closed:
            return None
        return Listing(KIND, self.lender, self.loan_id,
                       {"stage": self.stage, "dpd": self.dpd, "cured": self.cured,
                        "variant": None})


class Floating(Loan):
    """A loan whose listing carries a float: not a facet one can filter on exactly."""

    def listing(self) -> Listing | None:
        return Listing(KIND, self.lender, self.loan_id, {"amount": 1.5})  # type: ignore[dict-item]


def open_loan(app: ServiceApplication, lender: str, loan_id: str, stage: str = "soft",
              dpd: int = 1) -> Loan:
    loan = Loan(lender, loan_id, stage, dpd)
    app.save(loan)
    return loan


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceApplication]:
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    expected: type = MemoryServiceRecorder
    if request.param == "sqlite":
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
               "SQLITE_DBNAME": str(tmp_path / "listing.db")}
        expected = SQLiteServiceRecorder
    elif request.param == "postgres":
        cluster = request.getfixturevalue("postgres")
        env = cluster.env(request.getfixturevalue("pg_database"))
        expected = PostgresServiceRecorder
    service = ServiceApplication(env=env)
    assert isinstance(service.recorder, expected)
    yield service
    service.close()


def rows(app: ServiceApplication, owner: str | None = None,
         **where: str | int | bool) -> list[tuple[str, str]]:
    return [(row_owner, key) for _, row_owner, key, _ in
            app.extras.listed(KIND, owner, where, None, 100)]


def test_the_test_aggregate_is_what_the_unit_looks_for() -> None:
    assert isinstance(Loan("lender-a", "L-1", "soft", 1), HasListing)


def test_a_save_writes_the_row_a_later_save_replaces_it_and_none_removes_it(
        app: ServiceApplication) -> None:
    loan = open_loan(app, "lender-a", "L-1", dpd=3)
    assert app.extras.listed(KIND, "lender-a", {}, None, 10) == [
        (loan.id, "lender-a", "L-1",
         {"stage": "soft", "dpd": 3, "cured": False, "variant": None})]

    loan.move("calls", 31, cured=False)
    app.save(loan)
    ((_, _, _, facets),) = app.extras.listed(KIND, "lender-a", {}, None, 10)
    assert (facets["stage"], facets["dpd"]) == ("calls", 31)
    assert app.extras.listing_count(KIND, None) == 1

    loan.close()
    app.save(loan)
    assert app.extras.listed(KIND, "lender-a", {}, None, 10) == []
    assert app.extras.listing_count(KIND, "lender-a") == 0
    assert app.repository.get(loan.id).closed  # the events went with it


def test_a_unit_writes_the_rows_of_every_aggregate_it_saved(app: ServiceApplication) -> None:
    unit = app.unit()
    unit.save(*(Loan("lender-a", f"L-{i}", "soft", i)
                for i in range(3)))
    assert [key for _, key in rows(app)] == []  # nothing before the commit
    app.commit(unit)
    assert rows(app) == [("lender-a", "L-0"), ("lender-a", "L-1"), ("lender-a", "L-2")]


def test_a_conflicting_commit_writes_no_row(app: ServiceApplication) -> None:
    loan = open_loan(app, "lender-a", "L-1", dpd=3)
    mine, theirs = app.unit(), app.unit()
    ours = mine.get(loan.id)
    other = theirs.get(loan.id)
    ours.move("calls", 31, cured=False)
    mine.save(ours)
    other.move("field_visit", 95, cured=True)
    theirs.save(other)
    app.commit(mine)
    with pytest.raises(Conflict):
        app.commit(theirs)
    ((_, _, _, facets),) = app.extras.listed(KIND, "lender-a", {}, None, 10)
    assert (facets["stage"], facets["dpd"], facets["cured"]) == ("calls", 31, False)

    # A second opening of the same loan (same id) for another lender conflicts: no row for it.
    with pytest.raises(Conflict):
        open_loan(app, "lender-b", "L-1")
    assert app.extras.listing_count(KIND, "lender-b") == 0
    assert app.extras.listing_count(KIND, None) == 1


def test_the_rows_outlive_the_process(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
           "SQLITE_DBNAME": str(tmp_path / "listing.db")}
    first = ServiceApplication(env=env)
    open_loan(first, "lender-a", "L-1")
    first.close()
    restarted = ServiceApplication(env=env)
    assert rows(restarted) == [("lender-a", "L-1")]
    restarted.close()


def fill(app: ServiceApplication) -> None:
    """Six loans of two lenders, saved out of order."""
    for lender, loan_id, stage, dpd, cured in [
            ("lender-b", "L-05", "calls", 40, False), ("lender-a", "L-03", "calls", 31, True),
            ("lender-a", "L-01", "soft", 1, False), ("lender-b", "L-04", "soft", 1, True),
            ("lender-a", "L-02", "field_visit", 95, False),
            ("lender-b", "L-06", "soft", 10, False)]:
        loan = Loan(lender, loan_id, stage, dpd)
        if cured:
            loan.move(stage, dpd, cured=True)
        app.save(loan)


def test_filters_compare_strings_integers_and_booleans(app: ServiceApplication) -> None:
    fill(app)
    assert rows(app, None, stage="soft") == [("lender-a", "L-01"), ("lender-b", "L-04"),
                                             ("lender-b", "L-06")]
    assert rows(app, "lender-b", stage="soft") == [("lender-b", "L-04"), ("lender-b", "L-06")]
    assert rows(app, None, dpd=1) == [("lender-a", "L-01"), ("lender-b", "L-04")]
    assert rows(app, None, cured=True) == [("lender-a", "L-03"), ("lender-b", "L-04")]
    assert rows(app, None, cured=False) == [("lender-a", "L-01"), ("lender-a", "L-02"),
                                            ("lender-b", "L-05"), ("lender-b", "L-06")]
    assert rows(app, None, stage="soft", cured=True) == [("lender-b", "L-04")]
    assert rows(app, "lender-a", stage="soft", dpd=40) == []


def test_a_filter_matches_the_type_as_well_as_the_value(app: ServiceApplication) -> None:
    """json_extract gives 1 for true: the filter must still tell true from 1, and "1" from 1."""
    fill(app)
    assert rows(app, None, cured=1) == []
    assert rows(app, None, dpd=True) == []
    assert rows(app, None, dpd="1") == []
    assert rows(app, None, stage=0) == []
    assert rows(app, None, missing="x") == []
    assert rows(app, None, variant="") == []


def test_pages_run_across_owners_by_owner_then_key(app: ServiceApplication) -> None:
    fill(app)
    seen: list[tuple[str, str]] = []
    after: tuple[str, str] | None = None
    pages = 0
    while True:
        page = app.extras.listed(KIND, None, {}, after, 4)
        assert len(page) <= 4
        if not page:
            break
        pages += 1
        seen += [(owner, key) for _, owner, key, _ in page]
        after = (page[-1][1], page[-1][2])
    assert pages == 2
    assert seen == [("lender-a", "L-01"), ("lender-a", "L-02"), ("lender-a", "L-03"),
                    ("lender-b", "L-04"), ("lender-b", "L-05"), ("lender-b", "L-06")]
    # The cursor sits between two owners: the next page begins with the next owner's first.
    assert rows_after(app, None, ("lender-a", "L-03"), 2) == [("lender-b", "L-04"),
                                                              ("lender-b", "L-05")]
    # A filtered page: the cursor skips what came before, the filter what does not match.
    filtered = app.extras.listed(KIND, None, {"cured": False}, ("lender-a", "L-02"), 2)
    assert [(owner, key) for _, owner, key, _ in filtered] == [("lender-b", "L-05"),
                                                               ("lender-b", "L-06")]


def rows_after(app: ServiceApplication, owner: str | None, after: tuple[str, str],
               limit: int) -> list[tuple[str, str]]:
    return [(row_owner, key) for _, row_owner, key, _ in
            app.extras.listed(KIND, owner, {}, after, limit)]


def test_pages_within_an_owner_run_by_key(app: ServiceApplication) -> None:
    fill(app)
    assert rows_after(app, "lender-b", ("lender-b", "L-04"), 1) == [("lender-b", "L-05")]
    assert rows_after(app, "lender-b", ("lender-b", "L-05"), 5) == [("lender-b", "L-06")]
    assert rows_after(app, "lender-b", ("lender-b", "L-06"), 5) == []
    first = app.extras.listed(KIND, "lender-a", {}, None, 2)
    assert [key for _, _, key, _ in first] == ["L-01", "L-02"]
    assert [aggregate_id for aggregate_id, _, _, _ in first] == [Loan.create_id("L-01"),
                                                                  Loan.create_id("L-02")]


def test_counts_per_owner_and_kind(app: ServiceApplication) -> None:
    fill(app)
    assert app.extras.listing_count(KIND, None) == 6
    assert app.extras.listing_count(KIND, "lender-a") == 3
    assert app.extras.listing_count(KIND, "lender-z") == 0
    assert app.extras.listing_count("Other", None) == 0
    assert app.extras.listed("Other", None, {}, None, 10) == []


def test_facets_of_streams_every_row_of_an_owner_in_batches(app: ServiceApplication) -> None:
    unit = app.unit()
    unit.save(*(Loan("lender-a", f"L-{i:04}", "soft", i)
                for i in range(250)))
    unit.save(Loan("lender-b", "L-9999", "soft", 7))
    app.commit(unit)
    streamed = app.extras.facets_of(KIND, "lender-a", batch=100)
    assert isinstance(streamed, Iterator)
    first = next(streamed)
    assert first == {"stage": "soft", "dpd": 0, "cured": False, "variant": None}
    dpds = [first["dpd"], *(facets["dpd"] for facets in streamed)]
    assert dpds == list(range(250))
    assert [facets["dpd"] for facets in app.extras.facets_of(KIND, "lender-a", batch=50)] \
        == list(range(250))  # an exact multiple of the batch ends too
    assert [facets["dpd"] for facets in app.extras.facets_of(KIND, "lender-b")] == [7]
    assert list(app.extras.facets_of(KIND, "lender-z")) == []


@pytest.mark.parametrize("name", ["stage') OR 1=1 --", "$.stage", "a.b", "", "1st", "stage "])
def test_a_facet_name_that_is_not_an_identifier_is_refused(app: ServiceApplication,
                                                           name: str) -> None:
    fill(app)
    with pytest.raises(ValueError, match="identifier"):
        app.extras.listed(KIND, None, {name: "soft"}, None, 10)
    with pytest.raises(ValueError, match="identifier"):
        Listing(KIND, "lender-a", "L-1", {name: "soft"})


def test_a_listing_that_could_not_be_filtered_on_fails_before_anything_is_written(
        app: ServiceApplication) -> None:
    with pytest.raises(ValueError, match="amount"):
        app.save(Floating("lender-a", "L-1", "soft", 1))
    assert Loan.create_id("L-1") not in app.repository
    assert app.extras.listing_count(KIND, None) == 0


def test_an_empty_page_is_a_mistake(app: ServiceApplication) -> None:
    with pytest.raises(ValueError, match="page"):
        app.extras.listed(KIND, None, {}, None, 0)
    with pytest.raises(ValueError, match="page"):
        list(app.extras.facets_of(KIND, "lender-a", batch=0))
