"""Reminder's aggregates: a ContactPlan per loan, a Reminder per outbound message, a CallTask
per call a collector may make, and a Debtor per borrower whose calls are counted (C2).

A reminder is recorded before it is handed to a channel and again after, so a crash between
the two is seen on restart and the send is retried with the same idempotency key. Public
methods decide; the private `@event` methods only assign.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

PLAN_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/contact-plans")
REMINDER_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/reminders")
TASK_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/call-tasks")
DEBTOR_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/debtors")

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
CANCELLED = "cancelled"
ISSUED = "issued"
EXPIRED = "expired"

FAILED_OUTCOMES = frozenset({"no_answer", "wrong_number"})
ANSWERED_OUTCOMES = frozenset({"answered", "promise_to_pay", "refused"})


# --- the cadence ---


@dataclass(frozen=True)
class Step:
    day: int
    channel: str


@dataclass(frozen=True)
class Repeat:
    channel: str
    from_day: int
    every_days: int = 1


@dataclass(frozen=True)
class Cadence:
    """A stage's cadence: fixed steps by day since the stage's day 0, then one step on
    `repeat.channel` every `repeat.every_days` days from `repeat.from_day`. Without a repeat
    the plan simply has no more steps after the fixed ones."""

    steps: tuple[Step, ...]
    repeat: Repeat | None = None

    def step(self, index: int) -> Step | None:
        if index < len(self.steps):
            return self.steps[index]
        if self.repeat is None:
            return None
        every = (index - len(self.steps)) * self.repeat.every_days
        return Step(self.repeat.from_day + every, self.repeat.channel)

    def due(self, index: int, day0: datetime) -> datetime | None:
        step = self.step(index)
        return None if step is None else day0 + timedelta(days=step.day)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Cadence:
        """From the plain JSON a plan keeps (the shape of shared.events.Cadence)."""
        repeat = data.get("repeat")
        return cls(tuple(Step(int(s["day"]), str(s["channel"])) for s in data.get("steps", [])),
                   Repeat(str(repeat["channel"]), int(repeat["from_day"]),
                          int(repeat.get("every_days", 1))) if repeat else None)

    def as_data(self) -> dict[str, Any]:
        return {"steps": [{"day": s.day, "channel": s.channel} for s in self.steps],
                "repeat": None if self.repeat is None else {
                    "channel": self.repeat.channel, "from_day": self.repeat.from_day,
                    "every_days": self.repeat.every_days}}


# The built-in cadence, for a case whose opening names none: sms d0, email d2, push d4, then a
# call task every day from d6.
DEFAULT_CADENCE = Cadence(steps=(Step(0, "sms"), Step(2, "email"), Step(4, "push")),
                          repeat=Repeat("call", 6, 1))
DEFAULT_CADENCE_VERSION = "default@1"

# A courtesy reminder is planned by a promise's or a plan's pause and held back only by a
# pause of another kind (hardship): the borrower's own commitment warrants it.
COURTESY_PAUSES = frozenset({"promise", "plan"})


# --- numbers ---


def normalised_number(phone: str) -> str:
    """A phone number as digits (with its leading +), so "+86 138-0000" is "+861380000"."""
    digits = re.sub(r"[^0-9]", "", phone)
    return ("+" + digits) if phone.strip().startswith("+") else digits


def number_sha256(phone: str) -> str:
    """What the log says of a dialled number: its hash, never the number."""
    return hashlib.sha256(normalised_number(phone).encode()).hexdigest()


# --- the plan ---


class ContactPlan(Aggregate):
    """The contact of one loan: whom to reach and how, its stage's cadence and position, the
    holds and cease requests in force (C3), the cadence's pauses (a promise, a plan, hardship),
    and the run of failed calls to the borrower (C13).

    The cadence is kept as plain JSON (the shape of shared.events.Cadence): day 0 is when the
    stage was entered, moved later by the time the cadence was paused."""

    @event("Started")
    def __init__(self, loan_id: str, lender_id: str, borrower: dict[str, Any],
                 contacts: list[dict[str, Any]], language: str, jurisdiction: str | None,
                 content: dict[str, str], opened_at: datetime, strategy: str, cause: str,
                 correlation: str, cadence: dict[str, Any] | None = None,
                 stage: str | None = None, policy_version: str | None = None) -> None:
        self.loan_id = loan_id
        self.lender_id = lender_id
        self.reminder_ids: list[UUID] = []
        self.task_ids: list[UUID] = []
        self.holds: dict[str, list[str] | None] = {}
        self.lifted_at: dict[str, datetime] = {}  # a hold resumed, from this time on
        self.ceased: set[str] = set()
        self.failed_streak = 0
        self.third_party_calls = 0
        self.attempt_ids: dict[UUID, bool] = {}  # each recorded call: had it a permit?
        self.notices: dict[str, list[UUID]] = {}  # a visit's notices (C8), by visit id
        self._begin(borrower, contacts, language, jurisdiction, content, opened_at, strategy,
                    cause, correlation, cadence, stage, policy_version)

    def _begin(self, borrower: dict[str, Any], contacts: list[dict[str, Any]], language: str,
               jurisdiction: str | None, content: dict[str, str], opened_at: datetime,
               strategy: str, cause: str, correlation: str, cadence: dict[str, Any] | None,
               stage: str | None, policy_version: str | None) -> None:
        self.borrower = borrower
        self.contacts = contacts
        self.language = language
        self.jurisdiction = jurisdiction
        self.content = content
        self.opened_at = opened_at
        self.strategy = strategy
        self.cause = cause
        self.correlation = correlation
        self.open = True
        # A plan recorded before cadences were per case has none: the built-in one.
        self.cadence: dict[str, Any] = cadence or DEFAULT_CADENCE.as_data()
        self.stage = stage
        self.policy_version = policy_version
        self.stage_cause = cause  # the event that began the stage: its steps' keys start so
        self.stage_entered_at = opened_at
        self.day0 = opened_at
        self.switches: list[str] = []  # the stage switches seen (to_stage@escalated_at)
        self.step = 0
        self.step_due: datetime | None = Cadence.from_data(self.cadence).due(0, opened_at)
        self.current: UUID | None = None
        self.pauses: dict[str, dict[str, Any]] = {}
        self.paused_since: datetime | None = None  # the paused span in force began then
        self.resumed_to: datetime | None = None  # the last paused span ended then

    @staticmethod
    def create_id(loan_id: str) -> UUID:
        return uuid5(PLAN_NAMESPACE, loan_id)

    @property
    def timezone(self) -> str:
        return str(self.borrower["timezone"])

    def seen_by(self, lender_id: str | None) -> bool:
        """A lender sees only its own loans' plans; None stands for ops and auditors."""
        return lender_id is None or lender_id == self.lender_id

    @property
    def cadence_now(self) -> Cadence:
        return Cadence.from_data(self.cadence)

    def next_due(self) -> datetime | None:
        """The next cadence step, once the step before it is done (steps keep their order),
        and never while a pause is in force."""
        if not self.open or self.current is not None or self.paused():
            return None
        return self.step_due

    def reopen(self, borrower: dict[str, Any], contacts: list[dict[str, Any]], language: str,
               jurisdiction: str | None, content: dict[str, str], opened_at: datetime,
               strategy: str, cause: str, correlation: str,
               cadence: dict[str, Any] | None = None, stage: str | None = None,
               policy_version: str | None = None) -> None:
        """A case opened again after it closed starts its cadence again (its old pauses ended
        with the case it paused)."""
        if not self.open:
            self._reopened(borrower, contacts, language, jurisdiction, content, opened_at,
                           strategy, cause, correlation, cadence, stage, policy_version)

    def escalate(self, to_stage: str, cadence: dict[str, Any] | None, policy_version: str,
                 at: datetime, cause: str) -> None:
        """The case entered `to_stage` at `at`: its cadence starts from step 0 with day 0 at
        `at`. Without a cadence the stage is recorded and the current cadence goes on where it
        is. The same switch seen again, or one older than the stage in force, changes nothing;
        what is already planned stays as it is."""
        key = f"{to_stage}@{at.astimezone(UTC).isoformat()}"
        if not self.open or key in self.switches or at < self.stage_entered_at:
            return
        first_due = None if cadence is None else Cadence.from_data(cadence).due(0, at)
        self._escalated(to_stage, cadence, policy_version, at, cause, key, first_due)

    # --- pauses: a promise, a plan, hardship ---

    def paused(self) -> bool:
        """A pause is in force: the cadence takes no steps."""
        return any(p["lifted_at"] is None for p in self.pauses.values())

    def paused_by(self, now: datetime, courtesy_of: str | None = None) -> str | None:
        """The pause that holds a reminder or call task back at `now`, or None. A courtesy
        reminder (`courtesy_of` names the pause that planned it) is held back only by a pause
        of another kind than a promise's or a plan's."""
        for pause_id, pause in self.pauses.items():
            lifted = pause["lifted_at"]
            if lifted is not None and lifted <= now:
                continue
            if courtesy_of is not None and pause["reason"] in COURTESY_PAUSES:
                continue
            return pause_id
        return None

    def pause(self, pause_id: str, reason: str, at: datetime, until: datetime | None,
              courtesy: list[UUID]) -> None:
        """The cadence stops from `at` (several pauses may overlap); `courtesy` are the
        reminders the pause still sends. A pause seen before changes nothing."""
        if not self.open or pause_id in self.pauses:
            return
        since = self.paused_since
        if not self.paused():
            since = at if self.resumed_to is None else max(at, self.resumed_to)
        self._paused(pause_id, reason, at, until, courtesy, since)

    def lift_pause(self, pause_id: str, at: datetime) -> bool:
        """The pause ends at `at`; False when it is unknown or already lifted. When it was the
        last in force, the cadence resumes where it was: day 0 moves on by the time paused
        (since the stage began, if it began during the pause), so the step that was next is
        due its remaining time after `at`, never at once with all it missed."""
        pause = self.pauses.get(pause_id)
        if pause is None or pause["lifted_at"] is not None:
            return False
        last = all(p["lifted_at"] is not None for k, p in self.pauses.items() if k != pause_id)
        day0, step_due = self.day0, self.step_due
        if last and self.paused_since is not None:
            shift = max(at - max(self.paused_since, self.day0), timedelta(0))
            day0 = self.day0 + shift
            step_due = None if step_due is None else max(step_due + shift, at)
        self._pause_lifted(pause_id, at, last, day0, step_due)
        return True

    def close(self) -> None:
        if self.open:
            self._closed()

    def revise(self, borrower: dict[str, Any], contacts: list[dict[str, Any]], language: str,
               jurisdiction: str | None, content: dict[str, str]) -> None:
        """The case's terms changed: what goes out from now on states them as they are."""
        if (borrower, contacts, language, jurisdiction, content) != (
                self.borrower, self.contacts, self.language, self.jurisdiction, self.content):
            self._revised(borrower, contacts, language, jurisdiction, content)

    def take_step(self, issued: UUID | None, next_due: datetime | None) -> None:
        """The step now due was issued as `issued` (None: skipped, e.g. no e-mail address);
        the one after falls due at `next_due` (None: the cadence has no more), but not before
        this one is done."""
        self._stepped(issued, next_due)

    def step_done(self, reminder_id: UUID, at: datetime) -> None:
        if self.current == reminder_id:
            self._step_done(reminder_id, at)

    def add_task(self, task_id: UUID) -> None:
        if task_id not in self.task_ids:
            self._task_added(task_id)

    def add_notice(self, visit_id: str, reminder_id: UUID) -> None:
        """A visit's advance notice (C8) is one of the plan's messages, off the cadence: the
        rules that drop or hold its messages (C4, C3) drop or hold it too."""
        if reminder_id not in self.reminder_ids:
            self._notice_added(visit_id, reminder_id)

    def hold(self, hold_id: str, channels: list[str] | None, permanent: bool) -> None:
        if permanent:
            if not set(channels or CHANNELS) <= self.ceased:
                self._ceased(hold_id, channels)
        elif hold_id not in self.holds:
            self._held(hold_id, channels)

    def resume(self, hold_id: str, at: datetime) -> None:
        """The hold is lifted from `at` on (a resolution dated later keeps it until then)."""
        if hold_id in self.holds and hold_id not in self.lifted_at:
            self._resumed(hold_id, at)

    def stopped_on(self, channel: str, now: datetime) -> str | None:
        """Why nothing may go out on `channel` at `now` ("ceased" or a hold id), or None (C3)."""
        if channel in self.ceased:
            return "ceased"
        for hold_id, channels in self.holds.items():
            lifted = self.lifted_at.get(hold_id)
            if (lifted is None or lifted > now) and (channels is None or channel in channels):
                return hold_id
        return None

    def record_attempt(self, attempt_id: UUID, channel: str, outcome: str, at: datetime,
                       party: str, permit_id: UUID | None, number: str,
                       collector_id: str | None, task_id: UUID | None,
                       promise: dict[str, str] | None) -> None:
        self._attempted(self.loan_id, attempt_id, channel, outcome, at, party, permit_id,
                        number, collector_id, task_id, promise, self.correlation)

    def third_party_called(self) -> None:
        self._third_party_called()

    def phone_of(self, kind: str, contact_id: str | None) -> str | None:
        if kind == "borrower":
            return str(self.borrower["phone"])
        contact = next((c for c in self.contacts if c["contact_id"] == contact_id), None)
        return None if contact is None else str(contact["phone"])

    def party_of(self, phone: str) -> tuple[str, str | None]:
        """Whose number this is: the borrower's, a pre-agreed contact's (with its id), other."""
        number = normalised_number(phone)
        if number == normalised_number(str(self.borrower["phone"])):
            return "borrower", None
        for contact in self.contacts:
            if number == normalised_number(str(contact["phone"])):
                return "contact", str(contact["contact_id"])
        return "other", None

    @event("Reopened")
    def _reopened(self, borrower: dict[str, Any], contacts: list[dict[str, Any]], language: str,
                  jurisdiction: str | None, content: dict[str, str], opened_at: datetime,
                  strategy: str, cause: str, correlation: str,
                  cadence: dict[str, Any] | None = None, stage: str | None = None,
                  policy_version: str | None = None) -> None:
        self._begin(borrower, contacts, language, jurisdiction, content, opened_at, strategy,
                    cause, correlation, cadence, stage, policy_version)

    @event("Escalated")
    def _escalated(self, to_stage: str, cadence: dict[str, Any] | None, policy_version: str,
                   at: datetime, cause: str, key: str, first_due: datetime | None) -> None:
        self.stage = to_stage
        self.policy_version = policy_version
        self.switches.append(key)
        if cadence is not None:
            self.cadence = cadence
            self.stage_cause = cause
            self.stage_entered_at = at
            self.day0 = at
            self.step = 0
            self.step_due = first_due
            self.current = None  # the new stage does not wait on the old one's last message

    @event("Paused")
    def _paused(self, pause_id: str, reason: str, at: datetime, until: datetime | None,
                courtesy: list[UUID], since: datetime | None) -> None:
        self.pauses[pause_id] = {"reason": reason, "at": at, "until": until,
                                 "lifted_at": None, "courtesy": list(courtesy)}
        self.reminder_ids.extend(courtesy)
        self.paused_since = since

    @event("PauseLifted")
    def _pause_lifted(self, pause_id: str, at: datetime, last: bool, day0: datetime,
                      step_due: datetime | None) -> None:
        self.pauses[pause_id]["lifted_at"] = at
        if last:
            self.day0 = day0
            self.step_due = step_due
            self.paused_since = None
            self.resumed_to = at

    @event("Closed")
    def _closed(self) -> None:
        self.open = False

    @event("Revised")
    def _revised(self, borrower: dict[str, Any], contacts: list[dict[str, Any]], language: str,
                 jurisdiction: str | None, content: dict[str, str]) -> None:
        self.borrower = borrower
        self.contacts = contacts
        self.language = language
        self.jurisdiction = jurisdiction
        self.content = content

    @event("Stepped")
    def _stepped(self, issued: UUID | None, next_due: datetime | None) -> None:
        self.step += 1
        self.step_due = next_due
        self.current = issued
        if issued is not None:
            self.reminder_ids.append(issued)

    @event("StepDone")
    def _step_done(self, reminder_id: UUID, at: datetime) -> None:
        self.current = None
        if self.step_due is not None and self.step_due < at:
            self.step_due = at

    @event("TaskAdded")
    def _task_added(self, task_id: UUID) -> None:
        self.task_ids.append(task_id)

    @event("NoticeAdded")
    def _notice_added(self, visit_id: str, reminder_id: UUID) -> None:
        self.reminder_ids.append(reminder_id)
        self.notices.setdefault(visit_id, []).append(reminder_id)

    @event("Ceased")
    def _ceased(self, hold_id: str, channels: list[str] | None) -> None:
        self.ceased |= set(channels or CHANNELS)

    @event("Held")
    def _held(self, hold_id: str, channels: list[str] | None) -> None:
        self.holds[hold_id] = channels

    @event("Resumed")
    def _resumed(self, hold_id: str, at: datetime) -> None:
        self.lifted_at[hold_id] = at

    @event("AttemptRecorded")
    def _attempted(self, loan_id: str, attempt_id: UUID, channel: str, outcome: str,
                   at: datetime, party: str, permit_id: UUID | None, number: str,
                   collector_id: str | None, task_id: UUID | None,
                   promise: dict[str, str] | None, correlation: str) -> None:
        self.attempt_ids[attempt_id] = permit_id is not None
        if party == "borrower" and outcome not in FAILED_OUTCOMES:
            self.failed_streak = 0
        elif party == "borrower" and permit_id is not None:
            # Only a dial the gate let through counts towards reaching a contact person (C13):
            # a failure merely reported cannot unlock a third party.
            self.failed_streak += 1

    @event("ThirdPartyCalled")
    def _third_party_called(self) -> None:
        self.third_party_calls += 1


CHANNELS = ("sms", "email", "push", "call")


# --- one message ---


class Reminder(Aggregate):
    """One outbound message on one channel, from planned to sent or cancelled, then delivered
    or failed as the provider's receipt says."""

    @event("Scheduled")
    def __init__(self, key: str, loan_id: str, channel: str, template_id: str,
                 template_version: int, recipient: str, timezone: str,
                 content: dict[str, str], due_at: datetime, cause: str,
                 correlation: str, language: str = "zh-CN", party: str = "borrower",
                 subject: str | None = None, courtesy_of: str | None = None,
                 visit: dict[str, Any] | None = None) -> None:
        self.loan_id = loan_id
        self.channel = channel
        self.template_id = template_id
        self.template_version = template_version
        self.recipient = recipient
        self.timezone = timezone
        self.content = content
        self.due_at = due_at
        self.cause = cause
        self.correlation = correlation
        self.language = language
        self.party = party
        self.subject = subject
        self.courtesy_of = courtesy_of  # a courtesy reminder: the pause that planned it
        # A visit's notice: the visit as scheduled (plain JSON: visit_id, window_start,
        # window_end, address_kind, collectors), rendered when it goes.
        self.visit = visit
        self.withdrawn: dict[str, str] | None = None  # its visit was cancelled or declined
        self.status = PENDING
        self.held_by: str | None = None
        self.paused_by: str | None = None
        self.attempts = 0
        self.sent_at: datetime | None = None
        self.delivery: str | None = None
        self.blocks: list[dict[str, Any]] = []
        self.cancelled: dict[str, Any] | None = None

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(REMINDER_NAMESPACE, key)

    @property
    def pending(self) -> bool:
        return self.status in (PENDING, SENDING)

    @property
    def visit_id(self) -> str | None:
        """The visit whose advance notice this is (C8), or None."""
        return None if self.visit is None else str(self.visit["visit_id"])

    @property
    def outside_cadence(self) -> str | None:
        """What planned it apart from the cadence (a courtesy reminder's pause, a notice's
        visit): a promise's or a plan's pause does not hold it back, a hardship does."""
        return self.courtesy_of or (None if self.visit_id is None else f"visit:{self.visit_id}")

    def next_due(self) -> datetime | None:
        """On the agenda while pending and neither held nor paused; a send cut short by a crash
        is due again (when nothing keeps it waiting: it then goes under the same key once
        released)."""
        if self.held_by is not None or self.paused_by is not None:
            return None
        return self.due_at if self.status in (PENDING, SENDING) else None

    def defer(self, rule: str, reason: str, until: datetime) -> None:
        if self.pending:
            self._blocked(self.loan_id, self.channel, rule, reason, until, self.cause,
                          self.correlation)

    def hold(self, rule: str, reason: str, hold_id: str) -> None:
        """Held (C3, an open dispute) with no time known: off the agenda until released."""
        if self.status in (PENDING, SENDING) and self.held_by is None:
            self._held(self.loan_id, self.channel, rule, reason, hold_id, self.cause,
                       self.correlation)

    def release(self, at: datetime) -> None:
        if self.held_by is not None:
            self._released(at)

    def pause(self, pause_id: str) -> None:
        """Held back while the cadence is paused: off the agenda, and not a rule's refusal
        (nothing says the borrower was blocked)."""
        if self.status in (PENDING, SENDING) and self.paused_by != pause_id:
            self._paused(pause_id)

    def unpause(self, at: datetime) -> None:
        """The pause is over: due again from `at` at the earliest, the rules asked again."""
        if self.paused_by is not None:
            self._unpaused(at)

    def start_sending(self, at: datetime) -> None:
        self._sending(at)

    def mark_sent(self, at: datetime, local_time: str, provider_id: str) -> None:
        if self.status != SENT:
            self._sent(self.loan_id, self.channel, self.template_id, self.template_version, at,
                       local_time, provider_id, self.cause, self.correlation, self.party,
                       self.visit_id)

    def fail(self, reason: str, at: datetime, retry_at: datetime) -> None:
        self._failed(self.loan_id, self.channel, reason, at, retry_at, self.cause,
                     self.correlation, self.visit_id)

    def refused(self, reason: str, at: datetime) -> None:
        """The provider will not take it (a bad number or address): failed for good."""
        if self.pending:
            self._refused(self.loan_id, self.channel, reason, at, self.cause, self.correlation,
                          self.visit_id)

    def bar(self, rule: str, reason: str) -> None:
        """A contact rule forbids a visit's notice outright (C3: the borrower ceased SMS):
        reported as blocked, then dropped by `cancel` or `abandon`."""
        if self.pending:
            self._barred(self.loan_id, self.channel, rule, reason, self.cause, self.correlation)

    def withdraw(self, rule: str, reason: str, at: datetime, cause: str) -> None:
        """Its visit was cancelled or declined: a pending notice is dropped; one already
        handed over is not recalled, only marked, so that a send cut short by a crash is not
        finished and a later schedule of the visit gets a notice of its own."""
        if self.status == PENDING:
            self.cancel(rule, reason, at, cause)
        elif self.withdrawn is None and self.status in (SENDING, SENT):
            self._withdrawn(rule, reason, at)

    def cancel(self, rule: str, reason: str, at: datetime, cause: str) -> None:
        """A rule drops a planned message. One being handed over is left to finish: its send
        is then recorded as it happened (and a failed one is dropped at its next try)."""
        if self.status == PENDING:
            self._cancelled(self.loan_id, self.channel, rule, reason, at, cause,
                            self.correlation)

    def abandon(self, rule: str, reason: str, at: datetime) -> None:
        """A send cut short by a crash, which a rule now forbids to finish: dropped, saying
        that the provider may have had it (the reminder id was its idempotency key)."""
        if self.status == SENDING:
            self._cancelled(self.loan_id, self.channel, rule,
                            f"{reason}; a send was in flight when it stopped, and the provider "
                            f"may have it", at, self.cause, self.correlation)

    def receipt(self, delivered: bool, at: datetime, reason: str | None) -> bool:
        """The provider's delivery receipt; False when this message was never sent. A repeated
        receipt changes nothing."""
        if self.status != SENT:
            return False
        if self.delivery is None:
            if delivered:
                self._delivered(self.loan_id, self.channel, at, self.cause, self.correlation,
                                self.visit_id)
            else:
                self._undelivered(self.loan_id, self.channel, reason or "not delivered", at,
                                  self.cause, self.correlation, self.visit_id)
        return True

    @event("Blocked")
    def _blocked(self, loan_id: str, channel: str, rule: str, reason: str, until: datetime,
                 cause: str, correlation: str) -> None:
        self.status = PENDING
        self.due_at = until
        self.blocks.append({"rule": rule, "reason": reason, "deferred_until": until})

    @event("HeldBack")
    def _held(self, loan_id: str, channel: str, rule: str, reason: str, hold_id: str,
              cause: str, correlation: str) -> None:
        self.held_by = hold_id
        self.blocks.append({"rule": rule, "reason": reason, "deferred_until": None})

    @event("Barred")
    def _barred(self, loan_id: str, channel: str, rule: str, reason: str, cause: str,
                correlation: str) -> None:
        self.blocks.append({"rule": rule, "reason": reason, "deferred_until": None})

    @event("Withdrawn")
    def _withdrawn(self, rule: str, reason: str, at: datetime) -> None:
        self.withdrawn = {"rule": rule, "reason": reason}

    @event("Released")
    def _released(self, at: datetime) -> None:
        self.held_by = None
        self.due_at = max(self.due_at, at)

    @event("Paused")
    def _paused(self, pause_id: str) -> None:
        self.paused_by = pause_id

    @event("Unpaused")
    def _unpaused(self, at: datetime) -> None:
        self.paused_by = None
        self.due_at = max(self.due_at, at)

    @event("SendStarted")
    def _sending(self, at: datetime) -> None:
        self.status = SENDING
        self.attempts += 1

    @event("Sent")
    def _sent(self, loan_id: str, channel: str, template_id: str, template_version: int,
              sent_at: datetime, borrower_local_time: str, provider_id: str, cause: str,
              correlation: str, party: str = "borrower", visit_id: str | None = None) -> None:
        self.status = SENT
        self.sent_at = sent_at

    @event("Failed")
    def _failed(self, loan_id: str, channel: str, reason: str, failed_at: datetime,
                retry_at: datetime, cause: str, correlation: str,
                visit_id: str | None = None) -> None:
        self.status = PENDING
        self.due_at = retry_at

    @event("Refused")
    def _refused(self, loan_id: str, channel: str, reason: str, failed_at: datetime,
                 cause: str, correlation: str, visit_id: str | None = None) -> None:
        self.status = CANCELLED
        self.cancelled = {"rule": None, "reason": reason, "at": failed_at}

    @event("Delivered")
    def _delivered(self, loan_id: str, channel: str, delivered_at: datetime, cause: str,
                   correlation: str, visit_id: str | None = None) -> None:
        self.delivery = "delivered"

    @event("Undelivered")
    def _undelivered(self, loan_id: str, channel: str, reason: str, failed_at: datetime,
                     cause: str, correlation: str, visit_id: str | None = None) -> None:
        self.delivery = "failed"

    @event("Cancelled")
    def _cancelled(self, loan_id: str, channel: str, rule: str, reason: str,
                   cancelled_at: datetime, cause: str, correlation: str) -> None:
        self.status = CANCELLED
        self.cancelled = {"rule": rule, "reason": reason, "at": cancelled_at}


# --- one call a collector may make ---


class CallTask(Aggregate):
    """A call to the borrower (or, C13, to a pre-agreed contact) that a collector may make
    between `due_from` and `due_until`, the end of the borrower's hours that day."""

    @event("Planned")
    def __init__(self, key: str, loan_id: str, phone_kind: str, contact_id: str | None,
                 template_id: str, template_version: int, due_at: datetime, cause: str,
                 correlation: str) -> None:
        self.loan_id = loan_id
        self.phone_kind = phone_kind
        self.contact_id = contact_id
        self.template_id = template_id
        self.template_version = template_version
        self.due_at = due_at
        self.cause = cause
        self.correlation = correlation
        self.status = PENDING
        self.held_by: str | None = None
        self.paused_by: str | None = None
        self.due_from: datetime | None = None
        self.due_until: datetime | None = None
        self.blocks: list[dict[str, Any]] = []

    @staticmethod
    def create_id(key: str) -> UUID:
        return uuid5(TASK_NAMESPACE, key)

    @property
    def channel(self) -> str:
        return "call"

    @property
    def courtesy_of(self) -> str | None:
        return None  # a call task is never a courtesy reminder

    @property
    def outside_cadence(self) -> str | None:
        return None  # a call task is a step of the cadence

    @property
    def pending(self) -> bool:
        return self.status == PENDING

    def next_due(self) -> datetime | None:
        """Due to be issued, then due to expire at the end of its window (a paused task still
        expires: a call task is one day's)."""
        if self.status == PENDING:
            return self.due_at if self.held_by is None and self.paused_by is None else None
        return self.due_until if self.status == ISSUED else None

    def open_at(self, now: datetime) -> bool:
        return (self.status == ISSUED and self.paused_by is None and self.due_from is not None
                and self.due_until is not None and self.due_from <= now < self.due_until)

    def defer(self, rule: str, reason: str, until: datetime) -> None:
        if self.pending:
            self._blocked(self.loan_id, rule, reason, until, self.cause, self.correlation)

    def hold(self, rule: str, reason: str, hold_id: str) -> None:
        if self.pending and self.held_by is None:
            self._held(self.loan_id, rule, reason, hold_id, self.cause, self.correlation)

    def release(self, at: datetime) -> None:
        if self.held_by is not None:
            self._released(at)

    def pause(self, pause_id: str) -> None:
        """Held back while the cadence is paused, issued or not: nobody may call it."""
        if self.status in (PENDING, ISSUED) and self.paused_by != pause_id:
            self._paused(pause_id)

    def unpause(self, at: datetime) -> None:
        if self.paused_by is not None:
            self._unpaused(at)

    def issue(self, due_from: datetime, due_until: datetime) -> None:
        if self.pending:
            self._issued(self.loan_id, self.phone_kind, due_from, due_until, self.template_id,
                         self.template_version, self.contact_id, self.cause, self.correlation)

    def expire(self, at: datetime) -> None:
        if self.status == ISSUED:
            self._expired(at)

    def cancel(self, rule: str, reason: str, at: datetime, cause: str) -> None:
        if self.status in (PENDING, ISSUED):
            self._cancelled(self.loan_id, rule, reason, at, cause, self.correlation)

    @event("Blocked")
    def _blocked(self, loan_id: str, rule: str, reason: str, until: datetime, cause: str,
                 correlation: str) -> None:
        self.due_at = until
        self.blocks.append({"rule": rule, "reason": reason, "deferred_until": until})

    @event("HeldBack")
    def _held(self, loan_id: str, rule: str, reason: str, hold_id: str, cause: str,
              correlation: str) -> None:
        self.held_by = hold_id
        self.blocks.append({"rule": rule, "reason": reason, "deferred_until": None})

    @event("Released")
    def _released(self, at: datetime) -> None:
        self.held_by = None
        self.due_at = max(self.due_at, at)

    @event("Paused")
    def _paused(self, pause_id: str) -> None:
        self.paused_by = pause_id

    @event("Unpaused")
    def _unpaused(self, at: datetime) -> None:
        self.paused_by = None
        self.due_at = max(self.due_at, at)

    @event("Issued")
    def _issued(self, loan_id: str, phone_kind: str, due_from: datetime, due_until: datetime,
                template_id: str, template_version: int, contact_id: str | None, cause: str,
                correlation: str) -> None:
        self.status = ISSUED
        self.due_from = due_from
        self.due_until = due_until

    @event("Expired")
    def _expired(self, at: datetime) -> None:
        self.status = EXPIRED

    @event("Cancelled")
    def _cancelled(self, loan_id: str, rule: str, reason: str, cancelled_at: datetime,
                   cause: str, correlation: str) -> None:
        self.status = CANCELLED


# --- a borrower's calls, counted (C2) ---


@dataclass(frozen=True)
class Dial:
    """One call counted against the caps: a recorded attempt, or a permit not yet used."""

    at: datetime
    loan_id: str
    number: str
    outcome: str | None  # None: a permit still open, which may yet be answered or not


COUNTED_FOR = timedelta(days=8)  # the longest window a cap looks back over, and a day more


class Debtor(Aggregate):
    """One lender's borrower, across its loans: the dials that the caps count (C2 counts per
    debtor and per number, not per loan). Kept for eight days, the longest window."""

    @event("Known")
    def __init__(self, lender_id: str, borrower_id: str) -> None:
        self.lender_id = lender_id
        self.borrower_id = borrower_id
        self.attempts: list[dict[str, Any]] = []
        self.permits: dict[str, dict[str, Any]] = {}

    @staticmethod
    def create_id(lender_id: str, borrower_id: str) -> UUID:
        return uuid5(DEBTOR_NAMESPACE, f"{lender_id}\x1f{borrower_id}")

    def dials(self, now: datetime) -> list[Dial]:
        """What the caps count at `now`: every recorded attempt, and every permit that is
        neither used nor expired (it may turn into an attempt of either kind)."""
        counted = [Dial(a["at"], a["loan_id"], a["number"], a["outcome"]) for a in self.attempts]
        counted += [Dial(p["at"], p["loan_id"], p["number"], None)
                    for p in self.permits.values()
                    if not p["used"] and p["expires_at"] > now]
        return counted

    def permit(self, permit_id: UUID, loan_id: str, task_id: UUID, collector_id: str,
               number: str, party: str, at: datetime, expires_at: datetime,
               correlation: str) -> None:
        self._permitted(loan_id, permit_id, task_id, collector_id, number, party, at,
                        expires_at, correlation)

    def permit_of(self, permit_id: UUID | None) -> dict[str, Any] | None:
        return None if permit_id is None else self.permits.get(str(permit_id))

    def honours(self, permit_id: UUID | None, loan_id: str, number: str, collector_id: str,
                attempted_at: datetime, skew: timedelta) -> bool:
        """Whether a reported dial was the one this permit allowed: unused, for this loan and
        number, by the collector it was given to, and made while it was valid."""
        permit = self.permit_of(permit_id)
        return (permit is not None and not permit["used"] and permit["loan_id"] == loan_id
                and permit["number"] == number
                and permit.get("collector_id", collector_id) == collector_id
                and permit["at"] - skew <= attempted_at <= permit["expires_at"])

    def attempt(self, permit_id: UUID | None, loan_id: str, number: str, outcome: str,
                counted_at: datetime) -> None:
        """A call counted at `counted_at`: its permit's time, or when it was reported (a dial
        reported as earlier than it was reported, without a permit, cannot lower a cap)."""
        self._attempted(str(permit_id) if permit_id else None, loan_id, number, outcome,
                        counted_at)

    @event("Permitted")
    def _permitted(self, loan_id: str, permit_id: UUID, task_id: UUID, collector_id: str,
                   number: str, party: str, permitted_at: datetime, expires_at: datetime,
                   correlation: str) -> None:
        self.permits[str(permit_id)] = {"at": permitted_at, "loan_id": loan_id,
                                        "number": number, "expires_at": expires_at,
                                        "used": False, "task_id": str(task_id),
                                        "collector_id": collector_id}
        self._forget_before(permitted_at - COUNTED_FOR)

    @event("Attempted")
    def _attempted(self, permit_id: str | None, loan_id: str, number: str, outcome: str,
                   at: datetime) -> None:
        if permit_id in self.permits:
            self.permits[permit_id]["used"] = True
        self.attempts.append({"at": at, "loan_id": loan_id, "number": number,
                              "outcome": outcome})
        self._forget_before(at - COUNTED_FOR)

    def _forget_before(self, horizon: datetime) -> None:
        self.attempts = [a for a in self.attempts if a["at"] >= horizon]
        self.permits = {k: p for k, p in self.permits.items() if p["expires_at"] >= horizon}


REQUEST_NAMESPACE = uuid5(NAMESPACE_URL, "https://dunwell.dev/request-keys")


class RequestKey(Aggregate):
    """An Idempotency-Key a collector used, with what it asked: the same key with the same
    request answers as the first time; with another request it is refused."""

    @event("Used")
    def __init__(self, kind: str, caller: str, key: str, fingerprint: str,
                 result: UUID) -> None:
        self.fingerprint = fingerprint
        self.result = result

    @staticmethod
    def create_id(kind: str, caller: str, key: str) -> UUID:
        return uuid5(REQUEST_NAMESPACE, f"{kind}\x1f{caller}\x1f{key}")
