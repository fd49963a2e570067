"""Escalation's aggregates: what the lender reported (Intake) and one CollectionCase per loan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.domain import Aggregate, event

from shared.policy_pack import PolicyPack
from shared.store import Listing

from services.escalation import policy

CASE_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/cases")
INTAKE_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/intake")


class Intake(Aggregate):
    """One report received over HTTP, kept until the relay has published it."""

    @event("Reported")
    def __init__(self, key: str, event_type: str, payload: dict[str, Any]) -> None:
        self.key = key
        self.event_type = event_type
        self.payload = payload

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(INTAKE_NAMESPACE, key)


class OtherLendersLoan(Exception):
    """A report about a loan whose case belongs to another lender: refused, never merged."""


class CollectionCase(Aggregate):
    """One overdue loan being collected, from overdue to closed.

    `terms` are the facts the lender last reported (a LoanOverdue's data in JSON form, without
    the loan id): kept as one value, so every event carries them whole. The case ages with
    the clock (DPD from the reported due date, in the borrower's zone), and `evaluate` decides,
    at least once a borrower-local day, what is due: promises kept or broken, a hardship pause
    over, a move to a later stage, a field visit (C6).
    """

    @event("Opened")
    def __init__(self, loan_id: str, terms: dict[str, Any], stage: str, opened_at: datetime,
                 cause: str, cadence: dict[str, Any] | None = None,
                 policy_version: str | None = None, variant: str | None = None) -> None:
        self.loan_id = loan_id
        self.status = "open"
        self.correlation_id = cause
        self._apply(terms)
        self.closed_at: datetime | None = None
        self.close_reason: str | None = None
        self.holds: dict[str, list[str] | None] = {}
        self.held_at: dict[str, datetime] = {}
        # What the loan has seen stays with it when the case opens again (a payment that
        # bounced): its calls, promises, plans, hardship pauses and payments, as the log keeps
        # them, so escalation counts them as the audit does.
        self.attempts: list[list[str]] = []  # [attempted_at, outcome] of calls, time order
        self.broken_promises = 0
        self.promises_kept = 0
        self.promises: dict[str, dict[str, Any]] = {}
        self.plans: dict[str, dict[str, Any]] = {}
        self.hardships: dict[str, dict[str, Any]] = {}
        self.payments: list[list[Any]] = []  # [paid_at, amount]
        self._start(stage, opened_at, policy_version, variant)
        self._next_check: datetime | None = None  # not recorded: the agenda row keeps it

    def _start(self, stage: str, opened_at: datetime, policy_version: str | None,
               variant: str | None) -> None:
        self.stage = stage
        self.opened_at = opened_at
        self.policy_version = policy_version
        self.variant = variant
        self.reasons: list[dict[str, str]] = []
        self.stage_entry = 1  # which entry into a stage this is: a visit is asked once per entry
        self.visit_requested_entry: int | None = None
        self.visit_requests: list[dict[str, Any]] = []

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(CASE_NAMESPACE, loan_id)

    @property
    def lender_id(self) -> str:
        return str(self.terms["lender_id"])

    @property
    def currency(self) -> str:
        return str(self.terms["currency"])

    @property
    def days_past_due(self) -> int:
        """The DPD the lender last reported (the case's own ageing is `dpd_at`)."""
        return int(self.terms["days_past_due"])

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(str(self.terms["borrower"]["timezone"]))

    @property
    def due_date(self) -> date:
        return date.fromisoformat(str(self.terms["due_date"]))

    # --- what the case knows at a moment ---

    def pauses(self) -> list[policy.Pause]:
        return [policy.Pause(h["starts_at"], h["ended_at"] or h["ends_at"])
                for h in self.hardships.values()]

    def dpd_at(self, now: datetime) -> int:
        return policy.days_past_due(self.due_date, self.zone, now, self.pauses())

    def failed_contacts_at(self, now: datetime) -> int:
        streak = 0
        for attempted_at, outcome in self.attempts:
            if datetime.fromisoformat(attempted_at) <= now:
                streak = policy.failed_streak(streak, outcome)
        return streak

    def facts(self, now: datetime) -> policy.Facts:
        return policy.Facts(self.dpd_at(now), self.amount_overdue, self.failed_contacts_at(now),
                            self.broken_promises)

    def hardship_at(self, now: datetime) -> str | None:
        for hardship_id, h in self.hardships.items():
            if h["starts_at"] <= now < (h["ended_at"] or h["ends_at"]):
                return hardship_id
        return None

    def undecided(self) -> dict[str, dict[str, Any]]:
        """Promises and instalments still to be decided (not those of a plan that ended)."""
        return {pid: p for pid, p in self.promises.items() if p["decided"] is None
                and (p["plan_id"] is None or not self.plans[p["plan_id"]]["ended"])}

    def current_promises(self) -> list[str]:
        return [pid for pid, p in self.undecided().items() if p["plan_id"] is None]

    def current_plans(self) -> list[str]:
        return [plan_id for plan_id, plan in self.plans.items() if not plan["ended"]]

    def standing(self, now: datetime) -> policy.Standing:
        return policy.Standing(
            open=self.status == "open",
            in_dispute=any(hold.startswith("dispute:") for hold in self.holds),
            in_hardship=self.hardship_at(now) is not None,
            visits_ceased=any(channels is None or "visit" in channels
                              for hold, channels in self.holds.items()
                              if not hold.startswith("dispute:")),
            promise_current=bool(self.current_promises()),
            plan_current=bool(self.current_plans()))

    def next_due(self) -> datetime | None:
        """The next evaluation (the borrower's next midnight, or sooner when a promise's due
        day or a hardship pause ends); nothing once the case is closed."""
        if self.status != "open":
            return None
        moments = [self._next_check] if self._next_check is not None else []
        moments += [p["deadline"] for p in self.undecided().values()]
        moments += [h["ends_at"] for h in self.hardships.values()
                    if h["ended_at"] is None and not h["lapsed"]]
        return min(moments) if moments else None

    def next_action(self, now: datetime) -> tuple[str, datetime] | None:
        """What escalation will do next for the case, and when (for the case view)."""
        if self.status != "open":
            return None
        steps = [("daily_evaluation", policy.next_local_midnight(now, self.zone))]
        steps += [("promise_due", p["deadline"]) for p in self.undecided().values()]
        steps += [("hardship_ends", h["ends_at"]) for h in self.hardships.values()
                  if h["ended_at"] is None and not h["lapsed"]]
        return min(steps, key=lambda step: step[1])

    def listing(self) -> Listing:
        """The case in its lender's portfolio: what the case list filters on and the
        strategy performance report counts."""
        cured = self.status == "closed" and self.close_reason == "paid"
        days = None
        if cured and self.closed_at is not None:
            days = max(0, (self.closed_at - self.opened_at).days)
        return Listing(kind="case", owner=self.lender_id, key=self.loan_id, facets={
            "status": self.status, "stage": self.stage, "variant": self.variant,
            "cured": cured, "days_to_cure": days, "promises_kept": self.promises_kept})

    # --- what the lender reports ---

    def report_overdue(self, terms: dict[str, Any], stage: str, at: datetime,
                       cause: str, cadence: dict[str, Any] | None = None,
                       policy_version: str | None = None, variant: str | None = None) -> None:
        """A later LoanOverdue updates the case; on a closed case it opens it again."""
        if terms["lender_id"] != self.lender_id:
            raise OtherLendersLoan(self.loan_id)
        if self.status == "closed":
            self._reopened(self.loan_id, terms, stage, at, cause, cadence, policy_version,
                           variant)
        elif terms != self.terms:
            self._changed(self.loan_id, terms, "reported", cause, self.correlation_id)

    def record_payment(self, amount: Decimal, remaining: Decimal, paid_at: datetime,
                       closes: bool, cause: str) -> None:
        self._paid(amount, remaining, paid_at, cause)
        if closes and self.status == "open":
            # Paid in full: every promise and instalment still open is kept by it.
            for promise_id, promise in self.undecided().items():
                self._decide(promise_id, promise, True, self._paid_towards(promise, paid_at),
                             paid_at, cause)
            for plan_id in self.current_plans():
                self._plan_ended(self.loan_id, plan_id, "paid", paid_at, self.correlation_id)
            self._closed(self.loan_id, "paid", paid_at, cause, self.correlation_id)
        elif self.status == "open":
            # What reminds the borrower must state the amount now overdue, not the opening's.
            self._changed(self.loan_id, {**self.terms, "amount_overdue": f"{remaining:.2f}"},
                          "paid", cause, self.correlation_id)

    def hold_contact(self, hold_id: str, channels: list[str] | None, reason: str,
                     at: datetime, permanent: bool, cause: str) -> None:
        """C3: contact stops (a cease request on its channels, for good; a dispute on every
        channel until it is resolved). The reminder service obeys what this publishes."""
        if hold_id not in self.holds:
            self._contact_held(self.loan_id, hold_id, channels, reason, at, permanent, cause,
                               self.correlation_id)

    def resume_contact(self, hold_id: str, reason: str, at: datetime, cause: str) -> bool:
        """False when no such hold is in force (nothing to resume), or when the resolution is
        dated before the hold began (the hold stays: the audit would not see it lifted)."""
        if hold_id not in self.holds or at < self.held_at.get(hold_id, at):
            return False
        self._contact_resumed(self.loan_id, hold_id, self.holds[hold_id], reason, at, cause,
                              self.correlation_id)
        return True

    def record_attempt(self, attempted_at: datetime, outcome: str, party: str | None) -> None:
        """A call's outcome counts towards C6 when it was a call to the borrower."""
        if party in (None, "borrower") and self.status == "open":
            self._attempted(attempted_at.isoformat(), outcome)

    def make_promise(self, promise_id: str, amount: Decimal, currency: str, due_date: date,
                     made_at: datetime, via: str, cause: str,
                     attempt_id: str | None = None, visit_id: str | None = None) -> bool:
        """A promise to pay holds escalation and pauses the cadence (but for one courtesy
        reminder) until the end of its due day. False when it was known already. A promise
        heard in a call or a field visit is also told on loans.events, as a lender's own
        promise is."""
        if promise_id in self.promises or self.status != "open":
            return False
        deadline = policy.end_of_day(due_date, self.zone)
        if attempt_id is not None or visit_id is not None:
            self._heard(self.loan_id, promise_id, amount, currency, due_date.isoformat(),
                        made_at, via, attempt_id, cause, self.correlation_id, visit_id)
        self._promised(self.loan_id, promise_id, amount, currency, due_date.isoformat(),
                       made_at, via, deadline, cause, self.correlation_id)
        return True

    def agree_plan(self, plan_id: str, instalments: list[tuple[date, Decimal]], currency: str,
                   agreed_at: datetime, cause: str, visit_id: str | None = None) -> bool:
        """A repayment plan holds escalation and pauses the cadence until its last instalment
        is decided. False when it was known already. One agreed in a field visit is also told
        on loans.events, as a lender's own plan is."""
        if plan_id in self.plans or self.status != "open":
            return False
        if visit_id is not None:
            self._plan_heard(self.loan_id, plan_id,
                             [{"due_date": d.isoformat(), "amount": f"{a:.2f}"}
                              for d, a in instalments],
                             currency, agreed_at, visit_id, cause, self.correlation_id)
        self._plan_agreed(self.loan_id, plan_id,
                          [{"due_date": d.isoformat(), "amount": f"{a:.2f}",
                            "deadline": policy.end_of_day(d, self.zone).isoformat()}
                           for d, a in instalments],
                          currency, agreed_at, cause, self.correlation_id)
        return True

    def grant_hardship(self, hardship_id: str, reason: str, starts_at: datetime,
                       ends_at: datetime, cause: str) -> bool:
        if hardship_id in self.hardships or self.status != "open" or ends_at <= starts_at:
            return False
        self._hardship_granted(self.loan_id, hardship_id, reason, starts_at, ends_at, cause,
                               self.correlation_id)
        return True

    def end_hardship(self, hardship_id: str, ended_at: datetime, cause: str) -> bool:
        """An early end: ageing, contact and escalation resume from `ended_at`."""
        hardship = self.hardships.get(hardship_id)
        if (hardship is None or hardship["ended_at"] is not None or hardship["lapsed"]
                or self.status != "open"):
            return False
        # Within the pause as granted: never before it began, never past its end.
        at = min(max(ended_at, hardship["starts_at"]), hardship["ends_at"])
        self._hardship_ended(self.loan_id, hardship_id, at, cause, self.correlation_id)
        self._pause_lifted(self.loan_id, f"hardship:{hardship_id}", "hardship", at, cause,
                           self.correlation_id)
        return True

    # --- the daily evaluation ---

    def evaluate(self, now: datetime, context: Context) -> None:
        """Everything due at `now`, in order: promises and instalments whose due day has
        ended, hardship pauses over, a move to a later stage, a field visit (C6). Then the
        next evaluation is set for the borrower's next midnight."""
        if self.status == "open":
            self._decide_promises(now, context)
            for hardship_id, h in list(self.hardships.items()):
                if h["ended_at"] is None and not h["lapsed"] and h["ends_at"] <= now:
                    self._hardship_lapsed(self.loan_id, hardship_id, h["ends_at"],
                                          self.correlation_id)
                    self._pause_lifted(self.loan_id, f"hardship:{hardship_id}", "hardship",
                                       h["ends_at"], "evaluation", self.correlation_id)
            self._escalate(now, context)
            self._request_visit(now, context)
        self._next_check = policy.next_local_midnight(now, self.zone)

    def _decide_promises(self, now: datetime, context: Context) -> None:
        for promise_id, promise in list(self.promises.items()):
            if promise["decided"] is not None or promise["deadline"] > now:
                continue
            plan = self.plans.get(promise["plan_id"]) if promise["plan_id"] else None
            if plan is not None and plan["ended"]:
                continue
            paid = self._paid_towards(promise, promise["deadline"])
            self._decide(promise_id, promise, paid >= promise["owed"], paid,
                         promise["deadline"], "evaluation")
            if plan is None:
                self._pause_lifted(self.loan_id, f"promise:{promise_id}", "promise",
                                   promise["deadline"], "evaluation", self.correlation_id)
            elif (plan["broken"] >= context.max_broken_instalments
                  or plan["decided"] == len(plan["instalments"])):
                plan_id = promise["plan_id"]
                self._plan_ended(self.loan_id, plan_id,
                                 "broken" if plan["broken"] >= context.max_broken_instalments
                                 else "completed", promise["deadline"], self.correlation_id)
                self._pause_lifted(self.loan_id, f"plan:{plan_id}", "plan",
                                   promise["deadline"], "evaluation", self.correlation_id)

    def _decide(self, promise_id: str, promise: dict[str, Any], kept: bool, paid: Decimal,
                at: datetime, cause: str) -> None:
        self._promise_decided(self.loan_id, promise_id, kept, paid, at, cause,
                              self.correlation_id, promise["due_date"], promise["amount"],
                              promise["currency"], promise["plan_id"])

    def _paid_towards(self, promise: dict[str, Any], until: datetime) -> Decimal:
        """What was paid from the promise (the plan's agreement, for an instalment) to `until`."""
        return sum((Decimal(str(amount)) for paid_at, amount in self.payments
                    if promise["since"] <= paid_at <= until), Decimal("0"))

    def _escalate(self, now: datetime, context: Context) -> None:
        standing = self.standing(now)
        if standing.in_hardship or standing.promise_current or standing.plan_current:
            return
        variant = context.variant_of(self)
        stages = context.strategy.stages(variant)
        move = policy.next_stage(stages, self.stage, self.facts(now))
        if move is None:
            return
        self._escalated(self.loan_id, self.stage, move.to_stage.name,
                        [r.as_dict() for r in move.reasons],
                        context.policy_version(variant),
                        policy.cadence_json(move.to_stage.cadence), now,
                        self.dpd_at(now), self.correlation_id)

    def _request_visit(self, now: datetime, context: Context) -> None:
        variant = context.variant_of(self)
        stage = policy.stage_named(context.strategy.stages(variant), self.stage)
        if stage is None or not stage.requests_visit:
            return
        if self.visit_requested_entry == self.stage_entry:
            return  # asked once for this entry into the stage
        decision, reasons = policy.visit_allowed(context.pack, context.strategy.visit(variant),
                                                 self.facts(now), self.standing(now))
        if decision.allowed:
            self._visit_requested(self.loan_id, [r.as_dict() for r in reasons],
                                  context.policy_version(variant), self.stage, now,
                                  self.correlation_id)

    # --- recorded ---

    @event("ContactHeld")
    def _contact_held(self, loan_id: str, hold_id: str, channels: list[str] | None,
                      reason: str, at: datetime, permanent: bool, cause: str,
                      correlation: str) -> None:
        self.holds[hold_id] = channels
        self.held_at[hold_id] = at

    @event("ContactResumed")
    def _contact_resumed(self, loan_id: str, hold_id: str, channels: list[str] | None,
                         reason: str, at: datetime, cause: str, correlation: str) -> None:
        del self.holds[hold_id]

    @event("Updated")
    def _updated(self, terms: dict[str, Any], cause: str) -> None:
        """Recorded by earlier versions (nothing was published for it); kept to replay them."""
        self._apply(terms)

    @event("TermsChanged")
    def _changed(self, loan_id: str, terms: dict[str, Any], reason: str, cause: str,
                 correlation: str) -> None:
        self._apply(terms)

    @event("Reopened")
    def _reopened(self, loan_id: str, terms: dict[str, Any], stage: str, opened_at: datetime,
                  cause: str, cadence: dict[str, Any] | None = None,
                  policy_version: str | None = None, variant: str | None = None) -> None:
        self._apply(terms)
        self.status = "open"
        self.correlation_id = cause
        self.closed_at = None
        self.close_reason = None
        self._start(stage, opened_at, policy_version, variant)

    @event("PaymentRecorded")
    def _paid(self, amount: Decimal, remaining: Decimal, paid_at: datetime, cause: str) -> None:
        self.amount_overdue = remaining
        self.payments.append([paid_at, amount])

    @event("Closed")
    def _closed(self, loan_id: str, reason: str, closed_at: datetime, cause: str,
                correlation: str) -> None:
        self.status = "closed"
        self.closed_at = closed_at
        self.close_reason = reason

    @event("Attempted")
    def _attempted(self, attempted_at: str, outcome: str) -> None:
        self.attempts.append([attempted_at, outcome])
        self.attempts.sort(key=lambda a: datetime.fromisoformat(a[0]))

    @event("PromiseHeard")
    def _heard(self, loan_id: str, promise_id: str, amount: Decimal, currency: str,
               due_date: str, made_at: datetime, via: str, attempt_id: str | None, cause: str,
               correlation: str, visit_id: str | None = None) -> None:
        """A promise made in a call or a visit: told on loans.events (no state of its own)."""

    @event("PlanHeard")
    def _plan_heard(self, loan_id: str, plan_id: str, instalments: list[dict[str, str]],
                    currency: str, agreed_at: datetime, visit_id: str, cause: str,
                    correlation: str) -> None:
        """A plan agreed in a field visit: told on loans.events (no state of its own)."""

    @event("PauseLifted")
    def _pause_lifted(self, loan_id: str, pause_id: str, reason: str, at: datetime,
                      cause: str, correlation: str) -> None:
        """The cadence paused for a promise, a plan or a hardship may go on (told to the
        reminder service; the state that ended it was recorded just before)."""

    @event("Promised")
    def _promised(self, loan_id: str, promise_id: str, amount: Decimal, currency: str,
                  due_date: str, made_at: datetime, via: str, deadline: datetime, cause: str,
                  correlation: str) -> None:
        self.promises[promise_id] = {
            "amount": amount, "owed": amount, "currency": currency, "due_date": due_date,
            "since": made_at, "deadline": deadline, "via": via, "plan_id": None,
            "decided": None}

    @event("PlanAgreed")
    def _plan_agreed(self, loan_id: str, plan_id: str, instalments: list[dict[str, str]],
                     currency: str, agreed_at: datetime, cause: str, correlation: str) -> None:
        self.plans[plan_id] = {"instalments": instalments, "currency": currency,
                               "agreed_at": agreed_at, "broken": 0, "decided": 0,
                               "ended": False}
        owed = Decimal("0")
        for number, instalment in enumerate(instalments, start=1):
            owed += Decimal(instalment["amount"])
            self.promises[f"{plan_id}/{number}"] = {
                "amount": Decimal(instalment["amount"]), "owed": owed, "currency": currency,
                "due_date": instalment["due_date"], "since": agreed_at,
                "deadline": datetime.fromisoformat(instalment["deadline"]), "via": "lender",
                "plan_id": plan_id, "decided": None}

    @event("PromiseDecided")
    def _promise_decided(self, loan_id: str, promise_id: str, kept: bool, paid: Decimal,
                         decided_at: datetime, cause: str, correlation: str, due_date: str,
                         amount: Decimal, currency: str, plan_id: str | None) -> None:
        promise = self.promises[promise_id]
        promise["decided"] = "kept" if kept else "broken"
        promise["paid"] = paid
        promise["decided_at"] = decided_at
        if kept:
            self.promises_kept += 1
        else:
            self.broken_promises += 1
        plan = self.plans.get(promise["plan_id"]) if promise["plan_id"] else None
        if plan is not None:
            plan["decided"] += 1
            plan["broken"] += 0 if kept else 1

    @event("PlanEnded")
    def _plan_ended(self, loan_id: str, plan_id: str, outcome: str, at: datetime,
                    correlation: str) -> None:
        self.plans[plan_id]["ended"] = True
        self.plans[plan_id]["outcome"] = outcome

    @event("HardshipGranted")
    def _hardship_granted(self, loan_id: str, hardship_id: str, reason: str,
                          starts_at: datetime, ends_at: datetime, cause: str,
                          correlation: str) -> None:
        self.hardships[hardship_id] = {"reason": reason, "starts_at": starts_at,
                                       "ends_at": ends_at, "ended_at": None, "lapsed": False}

    @event("HardshipEnded")
    def _hardship_ended(self, loan_id: str, hardship_id: str, ended_at: datetime, cause: str,
                        correlation: str) -> None:
        self.hardships[hardship_id]["ended_at"] = ended_at

    @event("HardshipLapsed")
    def _hardship_lapsed(self, loan_id: str, hardship_id: str, at: datetime,
                         correlation: str) -> None:
        self.hardships[hardship_id]["lapsed"] = True

    @event("Escalated")
    def _escalated(self, loan_id: str, from_stage: str, to_stage: str,
                   reasons: list[dict[str, str]], policy_version: str,
                   cadence: dict[str, Any], at: datetime, days_past_due: int,
                   correlation: str) -> None:
        self.stage = to_stage
        self.reasons = reasons
        self.policy_version = policy_version
        self.stage_entry += 1

    @event("VisitRequested")
    def _visit_requested(self, loan_id: str, reasons: list[dict[str, str]],
                         policy_version: str, stage: str, at: datetime,
                         correlation: str) -> None:
        self.visit_requested_entry = self.stage_entry
        self.visit_requests.append({"stage": stage, "at": at, "reasons": reasons,
                                    "policy_version": policy_version})

    def _apply(self, terms: dict[str, Any]) -> None:
        self.terms = terms
        self.amount_overdue = Decimal(str(terms["amount_overdue"]))


@dataclass(frozen=True)
class Context:
    """What a case's evaluation needs beyond its own state: the pack and the strategy in
    force for its lender."""

    pack: PolicyPack
    strategy: policy.Strategy

    @property
    def max_broken_instalments(self) -> int:
        return self.strategy.document.promises.max_broken_instalments

    def policy_version(self, variant: str | None) -> str:
        return self.strategy.policy_version(self.pack, variant)

    def variant_of(self, case: CollectionCase) -> str | None:
        """The case's variant while the strategy in force has it; a case whose variant a
        later version dropped falls in one of the new version's (or none)."""
        names = [v.name for v in self.strategy.document.variants or []]
        if case.variant in names:
            return case.variant
        return self.strategy.variant_of(case.loan_id)


STRATEGY_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/strategies")


class StrategyBook(Aggregate):
    """A lender's strategies: every version published, kept, the last one in force."""

    @event("Started")
    def __init__(self, lender_id: str) -> None:
        self.lender_id = lender_id
        self.versions: list[dict[str, Any]] = []

    @staticmethod
    def create_id(lender_id: str) -> UUID:
        return uuid5(STRATEGY_NAMESPACE, lender_id)

    def publish(self, document: dict[str, Any], at: datetime, policy_version: str) -> int:
        """A new version, or the version in force when the document is the same (a PUT
        repeated is one version)."""
        if self.versions and self.versions[-1]["document"] == document:
            return int(self.versions[-1]["version"])
        self._published(self.lender_id, len(self.versions) + 1, document, at, policy_version)
        return len(self.versions)

    @event("Published")
    def _published(self, lender_id: str, version: int, document: dict[str, Any],
                   published_at: datetime, policy_version: str) -> None:
        self.versions.append({"version": version, "document": document,
                              "published_at": published_at, "policy_version": policy_version})


REPORTED_LOAN_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/reported-loans")


class ReportedLoan(Aggregate):
    """Whose loan this is, as the intake first heard it: recorded with a lender's first
    LoanOverdue over HTTP, in the same transaction as that report, so the lender's follow-ups
    are known at once, before the report has come back through Kafka and opened the case."""

    @event("Recorded")
    def __init__(self, loan_id: str, lender_id: str) -> None:
        self.loan_id = loan_id
        self.lender_id = lender_id

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(REPORTED_LOAN_NAMESPACE, loan_id)
