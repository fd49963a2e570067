"""The escalation application: intake of the lender's reports, the cases they open, the
lenders' strategies, and each case's evaluation (promises, hardship, stages, C6 visits)."""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from statistics import median
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from shared.application import Conflict, ServiceApplication, Unit
from shared.events import (
    CeaseContactRequested,
    CloudEvent,
    ContactAttemptRecorded,
    DisputeOpened,
    DisputeResolved,
    EventData,
    HardshipEnded,
    HardshipGranted,
    LoanOverdue,
    PaymentReceived,
    PromiseToPayMade,
    RepaymentPlanAgreed,
    StrategyDocument,
    VisitRecorded,
    event_id_for,
)
from shared.policy_pack import Loosening, PolicyPack
from shared.policy_pack import pack as pack_named

from services.escalation import policy
from services.escalation.domain import (
    CollectionCase,
    Context,
    Intake,
    OtherLendersLoan,
    ReportedLoan,
    StrategyBook,
)

log = logging.getLogger(__name__)

CEASE_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/cease-requests")
FOLLOW_UP_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/follow-ups")
STRATEGY_CACHE_SECONDS = 1.0  # how soon another replica's new strategy version is used


class DifferentReport(Exception):
    """An idempotency key reused for a different report."""


class RepeatedInBatch(Exception):
    """A loan given twice in one batch: the first is taken, the repeat is not."""


class NotTheReporter(Exception):
    """A LoanOverdue naming a lender other than the one reporting it."""


class UnknownLoan(Exception):
    """A follow-up (payment, dispute, cease-contact) on a loan nobody has reported overdue."""


class Unacceptable(ValueError):
    """A follow-up that cannot be taken as asked (a promise past its date, a hardship longer
    than the strategy allows); says which field and why (a 409 `not_acceptable` over HTTP,
    a dead letter on Kafka)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class CaseClosed(Exception):
    """A promise, plan or hardship on a case that is closed (a 409)."""


class Incoherent(ValueError):
    """A strategy that fits the schema but cannot be followed (a 400 naming each problem)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class Loosens(Exception):
    """A strategy that would loosen the pack; names every field and its rule (a 409)."""

    def __init__(self, loosened: list[Loosening]) -> None:
        self.loosened = loosened
        super().__init__("; ".join(map(str, loosened)))

    @property
    def rules(self) -> list[str]:
        return list(dict.fromkeys(i for loose in self.loosened for i in loose.rule.ids))


@dataclass(frozen=True)
class Page:
    cases: list[CollectionCase]
    next: str | None


class Cases(ServiceApplication):
    name = "escalation"

    def __init__(self, pack: PolicyPack, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.pack = pack
        self._strategies: dict[str, tuple[float, policy.Strategy]] = {}
        self._strategies_lock = threading.Lock()

    # --- the intake ---

    def report(self, data: EventData, reporter: str, idempotency_key: str | None,
               stamped: tuple[str, ...] = (), collector: str | None = None) -> str:
        """Record a report durably (the relay publishes it); returns its CloudEvents id.

        The same idempotency key from the same reporter returns the first report's id. A
        lender reports only for itself, only on loans that are not another lender's, and
        follows up (payments, disputes, cease-contact) only on loans it has reported.
        `stamped` names fields this service filled in from its clock (a promise's `made_at`):
        a retry is the same report whatever they say.
        """
        if getattr(data, "lender_id", reporter) != reporter:
            raise NotTheReporter(reporter)
        key = self._intake_key(reporter, idempotency_key, collector)
        try:
            return self._record_report(data, reporter, key, idempotency_key, stamped)
        except Conflict:  # a concurrent first report of the same loan or key: decide again
            return self._record_report(data, reporter, key, idempotency_key, stamped)

    def _record_report(self, data: EventData, reporter: str, key: str,
                       idempotency_key: str | None, stamped: tuple[str, ...] = ()) -> str:
        event_id, recorded = self._plan_report(data, reporter, key, idempotency_key, stamped)
        if recorded:
            self.save(*recorded)
        return event_id

    def _plan_report(self, data: EventData, reporter: str, key: str,
                     idempotency_key: str | None, stamped: tuple[str, ...] = (),
                     reported: dict[str, str] | None = None) -> tuple[str, list[Any]]:
        """The report's event id and what recording it saves (nothing for a retry).
        `reported` holds loans planned but not saved yet (a batch), with their lenders."""
        loan_id = data.subject()
        lender = (reported or {}).get(loan_id) or self.lender_of(loan_id)
        if lender is not None and lender != reporter:
            raise OtherLendersLoan(loan_id)
        if lender is None and not isinstance(data, LoanOverdue):
            raise UnknownLoan(loan_id)
        intake_id = Intake.create_id(key)
        payload = data.model_dump(mode="json", exclude_none=True)
        if self.exists(intake_id):
            earlier: Intake = self.load(intake_id)
            said = {k: v for k, v in earlier.payload.items() if k not in stamped}
            if earlier.event_type != data.event_type() or said != {
                    k: v for k, v in payload.items() if k not in stamped}:
                raise DifferentReport(idempotency_key)
            return event_id_for(intake_id, 1), []
        recorded: list[Any] = [Intake(key=key, event_type=data.event_type(), payload=payload)]
        if lender is None:
            recorded.append(ReportedLoan(loan_id=loan_id, lender_id=reporter))
        return event_id_for(intake_id, 1), recorded

    def report_batch(self, loans: list[LoanOverdue], reporter: str,
                     idempotency_key: str | None) -> list[str | Exception]:
        """Record many LoanOverdue at once (the nightly batch): for each, its event id, or why
        it was not taken. One transaction for all that are taken; a loan is recorded whole or
        not at all. Under one Idempotency-Key each loan has a key of its own, so a retried
        batch, in any order or split otherwise, records nothing twice."""
        for _ in range(2):  # a concurrent report of one of them: planned again, still at once
            with suppress(Conflict):
                return self._record_batch(loans, reporter, idempotency_key)
        # Still racing another writer: each loan on its own, decided again.
        taken: set[str] = set()
        results: list[str | Exception] = []
        for loan in loans:
            result = self._one_of_batch(loan, reporter, idempotency_key, taken)
            if isinstance(result, str):
                taken.add(loan.loan_id)
            results.append(result)
        return results

    def _record_batch(self, loans: list[LoanOverdue], reporter: str,
                      idempotency_key: str | None) -> list[str | Exception]:
        results: list[str | Exception] = []
        recorded: list[Any] = []
        planned: dict[str, str] = {}
        for loan in loans:
            if loan.lender_id != reporter:
                results.append(NotTheReporter(reporter))
                continue
            if loan.loan_id in planned:
                results.append(RepeatedInBatch(loan.loan_id))
                continue
            try:
                event_id, saves = self._plan_report(
                    loan, reporter, self._batch_key(reporter, idempotency_key, loan.loan_id),
                    idempotency_key, reported=planned)
            except (OtherLendersLoan, DifferentReport) as error:
                results.append(error)
                continue
            planned[loan.loan_id] = reporter
            recorded.extend(saves)
            results.append(event_id)
        if recorded:
            self.save(*recorded)
        return results

    def _one_of_batch(self, loan: LoanOverdue, reporter: str, idempotency_key: str | None,
                      taken: set[str]) -> str | Exception:
        """One loan of a batch in a transaction of its own, checked in the order the whole
        batch is (the lender, then a repeat of a loan taken earlier in it)."""
        if loan.lender_id != reporter:
            return NotTheReporter(reporter)
        if loan.loan_id in taken:
            return RepeatedInBatch(loan.loan_id)
        key = self._batch_key(reporter, idempotency_key, loan.loan_id)
        try:
            try:
                return self._record_report(loan, reporter, key, idempotency_key)
            except Conflict:
                return self._record_report(loan, reporter, key, idempotency_key)
        except (OtherLendersLoan, DifferentReport) as error:
            return error

    @staticmethod
    def _batch_key(reporter: str, idempotency_key: str | None, loan_id: str) -> str:
        # Four items beginning "batch": never a lender's single report (two), a collector's
        # ("collector") or an anonymous one.
        if idempotency_key is None:
            return json.dumps(["anonymous", str(uuid4())])
        return json.dumps(["batch", reporter, idempotency_key, loan_id])

    @staticmethod
    def _intake_key(reporter: str, idempotency_key: str | None,
                    collector: str | None = None) -> str:
        # A list, not a joined string: lender "a/b" with key "c" is not lender "a" with "b/c";
        # and a collector's keys (four items) are never a lender's (two).
        if idempotency_key is None:
            return json.dumps(["anonymous", str(uuid4())])
        if collector is not None:
            return json.dumps(["collector", collector, reporter, idempotency_key])
        return json.dumps([reporter, idempotency_key])

    def known_report(self, reporter: str, idempotency_key: str | None,
                     collector: str | None = None) -> bool:
        """Whether this key was used before: a retry answers as the first time, before any
        check that the moment may no longer pass (the case closed since, say)."""
        return idempotency_key is not None and self.exists(
            Intake.create_id(self._intake_key(reporter, idempotency_key, collector)))

    def earlier_report(self, reporter: str, idempotency_key: str | None,
                       collector: str | None = None) -> dict[str, Any] | None:
        """What the first report under this key said (its event's data), or None."""
        if idempotency_key is None:
            return None
        intake_id = Intake.create_id(self._intake_key(reporter, idempotency_key, collector))
        if not self.exists(intake_id):
            return None
        earlier: Intake = self.load(intake_id)
        return dict(earlier.payload)

    def follow_up_id(self, kind: str, reporter: str, idempotency_key: str | None,
                     collector: str | None = None) -> str:
        """The id a follow-up names (a promise, a plan, a hardship): the same for a repeated
        Idempotency-Key, so a retry is the same report."""
        if idempotency_key is None:
            return str(uuid4())
        return str(uuid5(FOLLOW_UP_NAMESPACE, json.dumps(
            [kind, self._intake_key(reporter, idempotency_key, collector)])))

    def lender_of(self, loan_id: str) -> str | None:
        """Whose loan it is: its case's lender, else the lender whose LoanOverdue the intake
        recorded first (its case not opened yet); None for a loan nobody has reported."""
        case = self.case(loan_id)
        if case is not None:
            return case.lender_id
        reported_id = ReportedLoan.create_id(loan_id)
        if reported_id not in self.repository:
            return None
        reported: ReportedLoan = self.repository.get(reported_id)
        return reported.lender_id

    def check_promise(self, loan_id: str, reporter: str, currency: str, due_date: date,
                      now: datetime) -> None:
        """A promise is for the case's currency, due from today to the strategy's horizon."""
        case = self._open_case_of(loan_id, reporter)
        if case is None:
            return  # reported, not opened yet: the case judges it when the report arrives
        if currency != case.currency:
            raise Unacceptable("currency", f"the case is in {case.currency}, not {currency}")
        why = policy.promise_due_ok(due_date, now, case.zone,
                                    self.strategy_for(case.lender_id).document.promises
                                    .max_days_ahead)
        if why is not None:
            raise Unacceptable("due_date", why)

    def check_plan(self, loan_id: str, reporter: str, currency: str, due_dates: list[date],
                   now: datetime) -> None:
        if due_dates != sorted(due_dates) or len(set(due_dates)) != len(due_dates):
            raise Unacceptable("instalments", "instalments must fall on distinct days, in order")
        case = self._open_case_of(loan_id, reporter)
        if case is None:
            return
        if currency != case.currency:
            raise Unacceptable("currency", f"the case is in {case.currency}, not {currency}")
        why = policy.plan_days_ok(due_dates, now, case.zone)
        if why is not None:
            raise Unacceptable("instalments", why)

    def check_hardship(self, loan_id: str, reporter: str, ends_at: datetime,
                       now: datetime) -> None:
        if ends_at <= now:
            raise Unacceptable("ends_at", "ends_at must be in the future")
        lender = self.lender_of(loan_id) or reporter
        longest = self.strategy_for(lender).document.hardship.max_days
        if ends_at - now > timedelta(days=longest):
            raise Unacceptable("ends_at", f"a hardship pause may last at most {longest} days "
                                          f"(the strategy's hardship.max_days)")
        case = self._open_case_of(loan_id, reporter)
        if case is not None and case.hardship_at(now) is not None:
            raise Unacceptable("ends_at", "a hardship pause is in force already: end it first "
                                          "(one pause at a time)")

    def _open_case_of(self, loan_id: str, reporter: str) -> CollectionCase | None:
        case = self.case(loan_id)
        if case is not None and case.status != "open":
            raise CaseClosed(loan_id)
        return case

    # --- strategies ---

    def strategy_for(self, lender_id: str) -> policy.Strategy:
        """The lender's strategy in force (the shipped default until one is published),
        cached for a second so a portfolio's evaluation reads it once."""
        with self._strategies_lock:
            cached = self._strategies.get(lender_id)
        if cached is not None and time.monotonic() - cached[0] < STRATEGY_CACHE_SECONDS:
            return cached[1]
        strategy = self.strategy_version(lender_id, None) or policy.DEFAULT_STRATEGY
        with self._strategies_lock:
            self._strategies[lender_id] = (time.monotonic(), strategy)
        return strategy

    def strategy_version(self, lender_id: str, version: int | None) -> policy.Strategy | None:
        book = self._book(lender_id)
        if book is None or not book.versions:
            return None
        chosen = book.versions[-1] if version is None else next(
            (v for v in book.versions if v["version"] == version), None)
        if chosen is None:
            return None
        return policy.Strategy(lender_id, int(chosen["version"]),
                               StrategyDocument.model_validate(chosen["document"]),
                               chosen["published_at"])

    def strategy_versions(self, lender_id: str) -> list[dict[str, Any]]:
        book = self._book(lender_id)
        return [] if book is None else [
            {"version": v["version"], "published_at": v["published_at"],
             "policy_version": v["policy_version"]} for v in book.versions]

    def _book(self, lender_id: str) -> StrategyBook | None:
        book_id = StrategyBook.create_id(lender_id)
        return self.repository.get(book_id) if book_id in self.repository else None

    def publish_strategy(self, lender_id: str, document: StrategyDocument,
                         now: datetime) -> tuple[int, bool]:
        """Validate against the pack (anything that loosens C6 is refused, naming it) and
        record a new version; (version, whether it is new). The relay publishes it as
        StrategyPublished."""
        problems = policy.incoherence(document)
        if lender_id == policy.DEFAULT_NAME:
            problems.insert(0, f"{policy.DEFAULT_NAME!r} names the shipped default strategy, "
                               f"not a lender")
        if problems:
            raise Incoherent(problems)
        loosened = policy.loosenings(document, self.pack)
        if loosened:
            raise Loosens(loosened)
        body = document.model_dump(mode="json", exclude_none=True)
        for _ in range(5):
            book = self._book(lender_id) or StrategyBook(lender_id)
            before = len(book.versions)
            name = policy.Strategy(lender_id, before + 1, document).name
            version = book.publish(body, now, f"{self.pack.version}/{name}")
            if version <= before:
                return version, False
            try:
                self.save(book)
            except Conflict:
                continue
            with self._strategies_lock:
                self._strategies.pop(lender_id, None)
            return version, True
        raise Conflict(f"the strategy of {lender_id} kept changing; send it again")

    def context_for(self, case: CollectionCase) -> Context:
        return Context(self.pack_of(case.terms), self.strategy_for(case.lender_id))

    def pack_of(self, terms: dict[str, Any]) -> PolicyPack:
        """The loan's own jurisdiction pack, else the installation's."""
        jurisdiction = terms.get("jurisdiction")
        return pack_named(str(jurisdiction)) if jurisdiction else self.pack

    # --- what the log says: cases open, age and move ---

    def _evaluated(self, unit: Unit, case: CollectionCase, now: datetime) -> None:
        case.evaluate(now, self.context_for(case))
        unit.save(case)

    def open_or_update(self, unit: Unit, cause: CloudEvent, overdue: LoanOverdue,
                       now: datetime) -> None:
        terms = overdue.model_dump(mode="json", exclude={"loan_id"}, exclude_none=True)
        strategy = self.strategy_for(overdue.lender_id)
        variant = strategy.variant_of(overdue.loan_id)
        stage = policy.opening_stage(strategy.stages(variant))
        pack = self.pack_of(terms)
        opening: dict[str, Any] = {
            "stage": stage.name, "cadence": policy.cadence_json(stage.cadence),
            "policy_version": strategy.policy_version(pack, variant), "variant": variant}
        case: CollectionCase | None = unit.find(CollectionCase.create_id(overdue.loan_id))
        if case is not None:
            case.report_overdue(terms, at=now, cause=cause.id, **opening)
        else:
            case = CollectionCase(loan_id=overdue.loan_id, terms=terms, opened_at=now,
                                  cause=cause.id, **opening)
        self._evaluated(unit, case, now)

    def apply_payment(self, unit: Unit, cause: CloudEvent, payment: PaymentReceived,
                      now: datetime) -> bool:
        """False when there is no case for the loan (the caller dead-letters it)."""
        case: CollectionCase | None = unit.find(CollectionCase.create_id(payment.loan_id))
        if case is None:
            return False
        case.record_payment(payment.amount, payment.remaining_overdue, payment.paid_at,
                            policy.payment_closes_case(payment.remaining_overdue), cause.id)
        self._evaluated(unit, case, now)
        return True

    def hold_contact(self, unit: Unit, cause: CloudEvent,
                     data: CeaseContactRequested | DisputeOpened, now: datetime) -> bool:
        """C3 at once: a cease request holds its channels for good, a dispute every channel
        until resolved. False when there is no case for the loan."""
        case: CollectionCase | None = unit.find(CollectionCase.create_id(data.loan_id))
        if case is None:
            return False
        if isinstance(data, CeaseContactRequested):
            channels = sorted(str(c) for c in data.channels)
            # Bounded whatever the lender's event id: a CloudEvents id may be 128 characters.
            hold_id = f"cease:{uuid5(CEASE_NAMESPACE, cause.id)}"
            case.hold_contact(hold_id, channels,
                              f"the borrower asked to stop contact by {', '.join(channels)}",
                              data.requested_at, True, cause.id)
        else:
            case.hold_contact(f"dispute:{data.dispute_id}", None,
                              f"dispute {data.dispute_id} is open", data.opened_at, False,
                              cause.id)
        self._evaluated(unit, case, now)
        return True

    def resolve_dispute(self, unit: Unit, cause: CloudEvent, data: DisputeResolved,
                        now: datetime) -> bool:
        case: CollectionCase | None = unit.find(CollectionCase.create_id(data.loan_id))
        if case is None:
            return False
        case.resume_contact(f"dispute:{data.dispute_id}",
                            f"dispute {data.dispute_id} is resolved", data.resolved_at,
                            cause.id)
        self._evaluated(unit, case, now)
        return True

    def record_attempt(self, unit: Unit, cause: CloudEvent, attempt: ContactAttemptRecorded,
                       now: datetime) -> None:
        """A call's outcome: consecutive failures count towards C6; a promise made in it
        holds escalation as any promise does. A loan with no case here is not escalation's
        (the reminder recorded it; nothing to do)."""
        case: CollectionCase | None = unit.find(CollectionCase.create_id(attempt.loan_id))
        if case is None:
            return
        party = str(attempt.party) if attempt.party else None
        case.record_attempt(attempt.attempted_at, str(attempt.outcome), party)
        promise = attempt.promise_to_pay
        if promise is not None and case.status == "open" and party in (None, "borrower"):
            why = self._promise_refusal(case, promise.currency, promise.due_date,
                                        attempt.attempted_at)
            if why is None and promise.amount > 0:
                case.make_promise(str(attempt.attempt_id), promise.amount, promise.currency,
                                  promise.due_date, attempt.attempted_at, "call", cause.id,
                                  attempt_id=str(attempt.attempt_id))
            else:
                log.warning("a promise in attempt %s on loan %s is not taken: %s",
                            attempt.attempt_id, attempt.loan_id, why or "amount is zero")
        self._evaluated(unit, case, now)

    def record_visit(self, unit: Unit, cause: CloudEvent, visit: VisitRecorded,
                     now: datetime) -> None:
        """A field visit's write-up: a promise or a repayment plan made in it holds
        escalation as one made to the lender does. One the case or strategy cannot take is
        logged and left (the visit is a fact either way)."""
        case: CollectionCase | None = unit.find(CollectionCase.create_id(visit.loan_id))
        if case is None or case.status != "open":
            return
        made_id = f"visit:{visit.visit_id}"
        promise = visit.promise_to_pay
        if promise is not None:
            why = self._promise_refusal(case, promise.currency, promise.due_date,
                                        visit.ended_at)
            if why is None:
                case.make_promise(made_id, promise.amount, promise.currency, promise.due_date,
                                  visit.ended_at, "visit", cause.id,
                                  visit_id=str(visit.visit_id))
            else:
                log.warning("the promise of visit %s on loan %s is not taken: %s",
                            visit.visit_id, visit.loan_id, why)
        plan = visit.repayment_plan
        if plan is not None:
            refused = self._plan_refusal(case, made_id, plan.currency,
                                         [i.due_date for i in plan.instalments], visit.ended_at)
            if refused is None:
                case.agree_plan(made_id, [(i.due_date, i.amount) for i in plan.instalments],
                                plan.currency, visit.ended_at, cause.id,
                                visit_id=str(visit.visit_id))
            else:
                log.warning("the plan of visit %s on loan %s is not taken: %s",
                            visit.visit_id, visit.loan_id, refused[1])
        self._evaluated(unit, case, now)

    @staticmethod
    def _plan_refusal(case: CollectionCase, plan_id: str, currency: str, days: list[date],
                      agreed_at: datetime) -> tuple[str, str] | None:
        """Why a new plan cannot be taken (the field and the reason), or None."""
        if currency != case.currency:
            return "currency", f"the case is in {case.currency}, not {currency}"
        why = policy.plan_days_ok(days, agreed_at, case.zone)
        if why is not None:
            return "instalments", why
        if any(f"{plan_id}/{n}" in case.promises for n in range(1, len(days) + 1)):
            return "plan_id", "its instalments' ids are a promise's already"
        return None

    def _promise_refusal(self, case: CollectionCase, currency: str, due_date: date,
                         made_at: datetime) -> str | None:
        if currency != case.currency:
            return f"the case is in {case.currency}, not {currency}"
        return policy.promise_due_ok(due_date, made_at, case.zone,
                                     self.strategy_for(case.lender_id).document.promises
                                     .max_days_ahead)

    def make_promise(self, unit: Unit, cause: CloudEvent, data: PromiseToPayMade,
                     now: datetime) -> bool:
        case: CollectionCase | None = unit.find(CollectionCase.create_id(data.loan_id))
        if case is None:
            return False
        if data.promise_id not in case.promises:  # one heard in a call is known already
            why = self._promise_refusal(case, data.currency, data.due_date, data.made_at)
            if why is not None:
                raise Unacceptable("promise", why)
            if "/" in data.promise_id and data.promise_id.rsplit("/", 1)[0] in case.plans:
                raise Unacceptable("promise_id", "it is the id of a plan's instalment")
            case.make_promise(data.promise_id, data.amount, data.currency, data.due_date,
                              data.made_at, str(data.via), cause.id)
        self._evaluated(unit, case, now)
        return True

    def agree_plan(self, unit: Unit, cause: CloudEvent, data: RepaymentPlanAgreed,
                   now: datetime) -> bool:
        case: CollectionCase | None = unit.find(CollectionCase.create_id(data.loan_id))
        if case is None:
            return False
        if data.plan_id not in case.plans:
            refused = self._plan_refusal(case, data.plan_id, data.currency,
                                         [i.due_date for i in data.instalments], data.agreed_at)
            if refused is not None:
                raise Unacceptable(*refused)
        case.agree_plan(data.plan_id, [(i.due_date, i.amount) for i in data.instalments],
                        data.currency, data.agreed_at, cause.id)
        self._evaluated(unit, case, now)
        return True

    def grant_hardship(self, unit: Unit, cause: CloudEvent, data: HardshipGranted,
                       now: datetime) -> bool:
        case: CollectionCase | None = unit.find(CollectionCase.create_id(data.loan_id))
        if case is None:
            return False
        longest = self.strategy_for(case.lender_id).document.hardship.max_days
        if data.hardship_id not in case.hardships:
            if (data.ends_at <= data.starts_at
                    or data.ends_at - data.starts_at > timedelta(days=longest)):
                raise Unacceptable("ends_at", f"a hardship pause ends after it starts, at most "
                                              f"{longest} days later (hardship.max_days)")
            if any(data.starts_at < (h["ended_at"] or h["ends_at"])
                   and h["starts_at"] < data.ends_at for h in case.hardships.values()):
                raise Unacceptable("starts_at", "it overlaps a hardship pause the case has "
                                                "(one pause at a time)")
        case.grant_hardship(data.hardship_id, str(data.reason), data.starts_at, data.ends_at,
                            cause.id)
        self._evaluated(unit, case, now)
        return True

    def end_hardship(self, unit: Unit, cause: CloudEvent, data: HardshipEnded,
                     now: datetime) -> bool:
        case: CollectionCase | None = unit.find(CollectionCase.create_id(data.loan_id))
        if case is None:
            return False
        case.end_hardship(data.hardship_id, data.ended_at, cause.id)
        self._evaluated(unit, case, now)
        return True

    # --- the agenda: each open case, once a borrower-local day at least ---

    def fire(self, aggregate_id: UUID, kind: str, now: datetime) -> None:
        if kind != "CollectionCase":
            raise ValueError(f"nothing of kind {kind!r} is due in the escalation service")
        unit = self.unit()
        case: CollectionCase = unit.get(aggregate_id)
        # The agenda row says it is due (its time is not part of the case's state): evaluate;
        # what it decides is recorded once (a second firing finds it decided), and the row
        # moves to the next evaluation.
        self._evaluated(unit, case, now)
        self.commit(unit)

    def fire_many(self, aggregate_ids: list[UUID], kind: str, now: datetime) -> None:
        """The daily evaluation of many cases in one unit of work: one commit for a claim.
        A conflict (a case changed meanwhile) raises, and the agenda fires them one by one."""
        if kind != "CollectionCase":
            raise ValueError(f"nothing of kind {kind!r} is due in the escalation service")
        unit = self.unit()
        for aggregate_id in aggregate_ids:
            self._evaluated(unit, unit.get(aggregate_id), now)
        self.commit(unit)

    # --- queries ---

    def case(self, loan_id: str) -> CollectionCase | None:
        case_id = CollectionCase.create_id(loan_id)
        return self.repository.get(case_id) if case_id in self.repository else None

    def page(self, lender_id: str | None, stage: str | None, status: str | None,
             cursor: str | None, limit: int) -> Page:
        """A lender's cases (every lender's for None), in loan-id order, `limit` at a time."""
        where: dict[str, str | int | bool] = {}
        if stage is not None:
            where["stage"] = stage
        if status is not None:
            where["status"] = status
        after = decode_cursor(cursor)
        rows = self.extras.listed("case", lender_id, where, after, limit + 1)
        found: list[CollectionCase] = [self.repository.get(row[0]) for row in rows[:limit]]
        more = len(rows) > limit
        last = rows[limit - 1] if more else None
        return Page(found, encode_cursor(last[1], last[2]) if last else None)

    def performance(self, lender_id: str) -> list[dict[str, Any]]:
        """Per variant: cases, cured (closed paid), promises kept, median days to cure."""
        counts: dict[str | None, dict[str, Any]] = {}
        for facets in self.extras.facets_of("case", lender_id):
            row = counts.setdefault(facets.get("variant"), {"cases": 0, "cured": 0,
                                                           "promises_kept": 0, "days": []})
            row["cases"] += 1
            row["promises_kept"] += int(facets.get("promises_kept") or 0)
            if facets.get("cured"):
                row["cured"] += 1
                if facets.get("days_to_cure") is not None:
                    row["days"].append(int(facets["days_to_cure"]))
        strategy = self.strategy_for(lender_id)
        names: list[str | None] = [v.name for v in strategy.document.variants or []] or [None]
        names += [name for name in counts if name not in names]
        empty = {"cases": 0, "cured": 0, "promises_kept": 0, "days": []}
        return [{"variant": name, "cases": counts.get(name, empty)["cases"],
                 "cured": counts.get(name, empty)["cured"],
                 "promises_kept": counts.get(name, empty)["promises_kept"],
                 "median_days_to_cure": (median(counts[name]["days"])
                                         if name in counts and counts[name]["days"] else None)}
                for name in names]


def encode_cursor(owner: str, key: str) -> str:
    return json.dumps([owner, key], separators=(",", ":")).encode().hex()


def decode_cursor(cursor: str | None) -> tuple[str, str] | None:
    """An opaque cursor back to (owner, key); a malformed one is a ValueError (a 400)."""
    if cursor is None:
        return None
    try:
        owner, key = json.loads(bytes.fromhex(cursor).decode())
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        raise ValueError("the cursor is not one this service gave") from error
    if not isinstance(owner, str) or not isinstance(key, str):
        raise ValueError("the cursor is not one this service gave")
    return owner, key


def as_decimal(value: Any) -> Decimal:
    return Decimal(str(value))
