"""The reminder application: a contact plan per case, its cadence, every channel, and the
contact rules (C1-C5, C13) asked before anything reaches the borrower.

Handlers (cases.events) start, escalate, hold, pause, resume and close plans; handlers of
visits.events plan a visit's advance notice (C8) and drop it when the visit is called off; the
agenda fires what falls due (a plan's next step, a reminder's send, a call task's issue or
expiry); the collectors' routes ask the pre-dial gate and record what their calls came to; the
providers' receipts say what was delivered.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from shared.application import Conflict, ServiceApplication, Unit
from shared.errors import describe, mask
from shared.events import (
    CadencePaused,
    CadenceResumed,
    CaseClosed,
    CaseEscalated,
    CaseOpened,
    CaseUpdated,
    CloudEvent,
    ContactHeld,
    ContactResumed,
    Courtesy,
    LoanTerms,
    VisitCancelled,
    VisitDeclined,
    VisitScheduled,
)
from shared.policy_pack import Decision, PolicyPack
from shared.templates import (
    COURTESY_TEMPLATE,
    CURRENT,
    DEFAULT_LANGUAGE,
    REESTABLISH_TEMPLATE,
    VISIT_NOTICE_TEMPLATE,
    approved,
)

from services.reminder import policy
from services.reminder.channels import (
    ChannelError,
    ChannelRefused,
    Gateway,
    OutboundMessage,
    SendsBroke,
    send_all,
)
from services.reminder.domain import (
    CANCELLED,
    COURTESY_PAUSES,
    DEFAULT_CADENCE,
    DEFAULT_CADENCE_VERSION,
    PENDING,
    SENDING,
    Cadence,
    CallTask,
    ContactPlan,
    Debtor,
    Reminder,
    RequestKey,
    number_sha256,
)

log = logging.getLogger(__name__)

PERMIT_LIFETIME = timedelta(minutes=10)
PERMIT_SKEW = timedelta(minutes=1)  # a dialer's clock a little off the service's
COURTESY_TERMS = ("amount", "currency", "deadline")  # a courtesy states the promise's own
DEFAULT_VERIFY_URL = "http://127.0.0.1:8003/v1/verify"  # the visit service's check of a letter

# How a visit's notice words its place and lists (the template says the rest).
PLACES = {"zh-CN": {"residence": "住所", "workplace": "工作单位"},
          "en": {"residence": "home", "workplace": "workplace"}}
NAMES_JOINED = {"zh-CN": "、", "en": ", "}
# A link ends at a space: a reader's phone must not take the Chinese after it for its path.
LINKS_JOINED = {"zh-CN": " 、", "en": ", "}
LINKS_END = {"zh-CN": " ", "en": ""}


def notice_content(visit: Mapping[str, Any], lender_name: str, zone: ZoneInfo, language: str,
                   verify_url: str) -> dict[str, str]:
    """What a visit's notice states (C8), in the borrower's language and zone: the window as
    local date and time (the end's date only when it is another day), the kind of place, who
    comes (with their agency), and each one's letter to check at the visit service."""
    words = language if language in PLACES else DEFAULT_LANGUAGE
    start = datetime.fromisoformat(visit["window_start"]).astimezone(zone)
    end = datetime.fromisoformat(visit["window_end"]).astimezone(zone)
    collectors = visit["collectors"]
    names = [c["name"] if not c.get("agency") else
             (f"{c['name']}（{c['agency']}）" if words == "zh-CN"  # noqa: RUF001
              else f"{c['name']} ({c['agency']})") for c in collectors]
    links = [f"{verify_url.rstrip('/')}/{c['verification_code']}" for c in collectors]
    return {
        "lender_name": lender_name,
        "window_start": f"{start:%Y-%m-%d %H:%M}",
        "window_end": f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}",
        "place": PLACES[words][str(visit["address_kind"])],
        "collectors": NAMES_JOINED[words].join(names),
        "verification": (LINKS_JOINED[words].join(links) + LINKS_END[words]) if links else "",
    }


class NotFound(LookupError):
    """No such loan, task or message here (or not one this caller may see)."""


class RuleRefused(Exception):
    """A rule refuses the act; names the rule (a 409 with `rule_refused`)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"{decision.rule}: {decision.reason}")
        self.decision = decision

    def as_error(self) -> dict[str, Any]:
        until = self.decision.until
        return {"code": "rule_refused", "message": str(self),
                "details": {"rule": self.decision.rule, "reason": self.decision.reason,
                            "deferred_until": until.isoformat() if until else None}}


class ContactPaused(Exception):
    """The cadence is paused (a promise, a repayment plan, hardship): a 409 with
    `contact_paused`. A pause is the lender's own decision, not a conduct rule's refusal, so
    it names no rule id."""

    def __init__(self, loan_id: str, pause_id: str, pause: Mapping[str, Any]) -> None:
        reason = str(pause["reason"])
        super().__init__(f"contact with the borrower of loan {loan_id} is paused ({reason}, "
                         f"{pause_id}): no calls until the pause ends")
        self.pause_id = pause_id
        self.pause = pause

    def as_error(self) -> dict[str, Any]:
        until = self.pause.get("until")
        return {"code": "contact_paused", "message": str(self),
                "details": {"pause_id": self.pause_id, "reason": self.pause["reason"],
                            "since": self.pause["at"].isoformat(),
                            "until": until.isoformat() if until else None}}


class NoticeIncomplete(ValueError):
    """A visit's notice could not state everything C8 asks (no collectors named)."""


class KeyReused(Exception):
    """An Idempotency-Key this caller used before for another request (409)."""


class NotOpen(Exception):
    """The task is not open for calls now (not yet issued, expired, or done)."""


@dataclass(frozen=True)
class Permit:
    permit_id: UUID
    expires_at: datetime


@dataclass(frozen=True)
class Attempt:
    loan_id: str
    channel: str
    phone: str
    outcome: str
    attempted_at: datetime
    permit_id: UUID | None = None
    task_id: UUID | None = None
    promise: dict[str, str] | None = None


# A provider's delivery receipt: the reminder id, delivered or not, when, and its words.
Receipt = tuple[UUID, bool, datetime, str | None]


class Reminders(ServiceApplication):
    name = "reminder"

    def __init__(self, pack: PolicyPack, verification_channel: str,
                 env: dict[str, str] | None = None,
                 default_cadence: Cadence = DEFAULT_CADENCE,
                 verify_url: str = DEFAULT_VERIFY_URL) -> None:
        super().__init__(env)
        self.pack = pack
        self.verification_channel = verification_channel
        self.default_cadence = default_cadence  # for a case whose opening names none
        self.verify_url = verify_url  # where a borrower checks a collector's letter by its code

    def pack_of(self, plan: ContactPlan) -> PolicyPack:
        return policy.pack_for(plan.jurisdiction, self.pack)

    # --- handlers: what the cases say ---

    def _terms(self, case: LoanTerms) -> tuple[dict[str, Any],
                                                              list[dict[str, Any]], str,
                                                              str | None, dict[str, str]]:
        """What a plan keeps of a case's terms: whom to reach, in which language and pack,
        and what its messages state."""
        content = {
            "loan_id": case.loan_id, "amount": f"{case.amount_overdue:.2f}",
            "currency": case.currency, "repayment_channel": case.repayment_channel,
            "verification_channel": case.verification_channel or self.verification_channel,
            "name": case.borrower.name, "borrower_name": case.borrower.name,
            "lender_name": case.lender_id,
        }
        return (case.borrower.model_dump(mode="json"),
                [c.model_dump(mode="json") for c in case.contacts or []],
                str(case.language or DEFAULT_LANGUAGE),
                str(case.jurisdiction) if case.jurisdiction else None, content)

    def open_plan(self, unit: Unit, cause: CloudEvent, case: CaseOpened, now: datetime) -> None:
        """A case opened (or opened again): its plan starts its opening stage's cadence (the
        built-in one when the case names none) from the case's day 0."""
        correlation = cause.correlationid or cause.id
        if case.cadence is None:
            cadence, label = self.default_cadence.as_data(), DEFAULT_CADENCE_VERSION
        else:
            cadence, label = case.cadence.model_dump(mode="json"), case.policy_version or "case"
        args = (*self._terms(case), case.opened_at, label, cause.id, correlation, cadence,
                case.stage, case.policy_version)
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(case.loan_id))
        if plan is None:
            plan = ContactPlan(case.loan_id, case.lender_id, *args)
        else:
            plan.reopen(*args)
        unit.save(plan)

    def escalate_plan(self, unit: Unit, cause: CloudEvent, escalated: CaseEscalated,
                      now: datetime) -> None:
        """The case entered another stage: its plan follows the stage's cadence from
        `escalated_at` (the event's time when absent). What is planned already still goes,
        under the rules."""
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(escalated.loan_id))
        if plan is None:
            return
        cadence = escalated.cadence.model_dump(mode="json") if escalated.cadence else None
        plan.escalate(escalated.to_stage, cadence, escalated.policy_version,
                      escalated.escalated_at or cause.time, cause.id)
        unit.save(plan)

    def revise_plan(self, unit: Unit, cause: CloudEvent, updated: CaseUpdated,
                    now: datetime) -> None:
        """The case's terms changed (a new amount, a corrected report): later messages, and
        those still waiting, state them as they are now."""
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(updated.loan_id))
        if plan is not None and plan.open:
            plan.revise(*self._terms(updated))
            unit.save(plan)

    def close_plan(self, unit: Unit, cause: CloudEvent, closed: CaseClosed,
                   now: datetime) -> None:
        """C4: the case closed; every pending reminder (courtesy ones too) and call task is
        cancelled at once."""
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(closed.loan_id))
        if plan is None:
            return
        plan.close()
        unit.save(plan)
        for item in self._pending_of(unit, plan):
            item.cancel("C4", f"case closed ({closed.reason})", now, cause.id)
            unit.save(item)

    def hold(self, unit: Unit, cause: CloudEvent, held: ContactHeld, now: datetime) -> None:
        """C3: a cease-contact request drops what is pending on its channels; a hold (an open
        dispute) keeps it waiting until the hold is lifted."""
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(held.loan_id))
        if plan is None:
            return
        channels = [str(c) for c in held.channels] if held.channels else None
        plan.hold(held.hold_id, channels, held.permanent)
        unit.save(plan)
        for item in self._pending_of(unit, plan):
            if channels is not None and item.channel not in channels:
                continue
            if held.permanent:
                item.cancel("C3", held.reason or "the borrower asked to stop contact", now,
                            cause.id)
                if isinstance(item, Reminder):
                    plan.step_done(item.id, now)
            else:
                item.hold("C3", held.reason or "contact is held", held.hold_id)
            unit.save(item)

    def resume(self, unit: Unit, cause: CloudEvent, resumed: ContactResumed,
               now: datetime) -> None:
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(resumed.loan_id))
        if plan is None:
            return
        plan.resume(resumed.hold_id, resumed.at)
        unit.save(plan)
        for item in self._pending_of(unit, plan):
            if item.held_by == resumed.hold_id:
                # Due when the hold lifts (a resolution may be dated later); a firing asks
                # the rules again then, and another hold may remain.
                item.release(max(now, resumed.at))
                unit.save(item)

    def pause_cadence(self, unit: Unit, cause: CloudEvent, paused: CadencePaused,
                      now: datetime) -> None:
        """The cadence stops (a promise, a plan, hardship): no more steps, and what is pending
        or issued waits. A promise or a plan still sends one courtesy SMS before each due
        date; that pause does not hold it back."""
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(paused.loan_id))
        if plan is None or not plan.open or paused.pause_id in plan.pauses:
            return
        zone = ZoneInfo(plan.timezone)
        courtesy = []
        for n, entry in enumerate(paused.courtesy):
            due = policy.courtesy_due(entry.due_date, zone, now)
            if due is not None:
                courtesy.append(self._courtesy(plan, f"{plan.cause}/{paused.pause_id}/"
                                               f"courtesy/{n}", entry, due, paused.pause_id,
                                               cause.id))
        plan.pause(paused.pause_id, paused.reason, paused.at, paused.until,
                   [r.id for r in courtesy])
        unit.save(plan, *courtesy)
        for item in self._pending_of(unit, plan):
            pause_id = plan.paused_by(max(now, paused.at), item.outside_cadence)
            if pause_id is not None and item.paused_by is None:
                item.pause(pause_id)
                unit.save(item)

    def resume_cadence(self, unit: Unit, cause: CloudEvent, resumed: CadenceResumed,
                       now: datetime) -> None:
        """The pause ends. When it was the last, the cadence resumes where it was (the plan
        moves its day 0 on by the time paused); what it held is due again, the rules asked
        again then. A promise or a plan is over: its courtesy reminders still pending are
        cancelled (`promise_ended`, `plan_ended`)."""
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(resumed.loan_id))
        if plan is None or not plan.lift_pause(resumed.pause_id, resumed.at):
            return
        unit.save(plan)
        pause = plan.pauses[resumed.pause_id]
        courtesy = set(pause["courtesy"]) if pause["reason"] in COURTESY_PAUSES else set()
        lifted = max(now, resumed.at)
        for item in self._pending_of(unit, plan):
            if item.id in courtesy and item.status == PENDING:
                item.cancel(f"{pause['reason']}_ended",
                            f"the {pause['reason']} ended ({resumed.pause_id})", now, cause.id)
            elif item.paused_by == resumed.pause_id:
                other = plan.paused_by(lifted, item.outside_cadence)
                if other is not None:
                    item.pause(other)
                else:
                    item.unpause(lifted)
            else:
                continue
            unit.save(item)

    # --- handlers: what the visits say ---

    def plan_notice(self, unit: Unit, cause: CloudEvent, scheduled: VisitScheduled,
                    now: datetime) -> bool:
        """C8: a scheduled visit's advance notice, an SMS to the borrower that goes at once
        under C4, C3 and C1 like any message (a promise's or a plan's pause does not hold it:
        it is no step of the cadence). False when the loan has no plan here.

        Once per visit and window: the same schedule seen again plans nothing more; a new
        window drops the notice of the old one if it is still pending and plans its own.
        A closed case is sent nothing (C4)."""
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(scheduled.loan_id))
        if plan is None:
            return False
        if not plan.open:
            log.info("visit %s of loan %s: the case is closed, no notice (C4)",
                     scheduled.visit_id, scheduled.loan_id)
            return True
        visit_id = str(scheduled.visit_id)
        visit = {"visit_id": visit_id,
                 "window_start": scheduled.scheduled_start.isoformat(),
                 "window_end": scheduled.scheduled_end.isoformat(),
                 "address_kind": str(scheduled.address_kind),
                 "collectors": [c.model_dump(mode="json", include={
                     "collector_id", "name", "agency", "verification_code"})
                     for c in scheduled.collectors]}
        window = (visit["window_start"], visit["window_end"])
        earlier: list[Reminder] = [unit.get(i) for i in plan.notices.get(visit_id, [])]
        live = [n for n in earlier if n.status != CANCELLED and n.withdrawn is None]
        if any(n.visit and (n.visit["window_start"], n.visit["window_end"]) == window
               for n in live):
            return True
        for notice in live:
            if notice.status == PENDING:
                notice.cancel("rescheduled", "the visit was scheduled again: a new notice "
                              "states its new window", now, cause.id)
                unit.save(notice)
        template_id, version = VISIT_NOTICE_TEMPLATE
        content = notice_content(visit, plan.content["lender_name"], ZoneInfo(plan.timezone),
                                 plan.language, self.verify_url)
        checked = policy.required_content(template_id, version, content, plan.language)
        if not checked.allowed:
            raise NoticeIncomplete(f"visit {visit_id}: {checked.rule}: {checked.reason}")
        notice = Reminder(
            key=f"visit:{visit_id}/notice/{len(earlier)}", loan_id=plan.loan_id, channel="sms",
            template_id=template_id, template_version=version,
            recipient=str(plan.borrower["phone"]), timezone=plan.timezone, content=content,
            due_at=now, cause=cause.id, correlation=cause.correlationid or plan.correlation,
            language=plan.language, party="borrower", visit=visit)
        plan.add_notice(visit_id, notice.id)
        unit.save(plan, notice)
        return True

    def withdraw_notice(self, unit: Unit, cause: CloudEvent,
                        called_off: VisitCancelled | VisitDeclined, now: datetime) -> None:
        """The visit is cancelled (rule C4 when the case closed) or declined (C9): a notice
        still pending is dropped under that rule. A cancel naming no rule (ops, a hardship
        pause) drops it as `visit_cancelled`, not as a rule's refusal. One handed over already
        is not recalled."""
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(called_off.loan_id))
        if plan is None:
            return
        if isinstance(called_off, VisitDeclined):
            rule, reason = "C9", "the borrower declined the visit"
        else:
            rule = called_off.rule or "visit_cancelled"
            reason = f"the visit was cancelled: {called_off.reason}"[:500]
        for notice_id in plan.notices.get(str(called_off.visit_id), []):
            notice: Reminder = unit.get(notice_id)
            notice.withdraw(rule, reason, now, cause.id)
            unit.save(notice)

    def _pending_of(self, unit: Unit, plan: ContactPlan) -> list[Reminder | CallTask]:
        items: list[Reminder | CallTask] = [unit.get(i) for i in plan.reminder_ids]
        items += [unit.get(i) for i in plan.task_ids]
        return [item for item in items if item.status in ("pending", "sending", "issued")]

    # --- the agenda ---

    def fire(self, aggregate_id: UUID, kind: str, gateways: Mapping[str, Gateway],
             now: datetime, retry_after: timedelta, pool: Executor | None = None) -> None:
        """What the agenda calls when something of this service falls due."""
        self.fire_many([aggregate_id], kind, gateways, now, retry_after, pool)

    def fire_many(self, aggregate_ids: list[UUID], kind: str, gateways: Mapping[str, Gateway],
                  now: datetime, retry_after: timedelta, pool: Executor | None = None) -> None:
        """Several due entries of one kind: plans' steps and call tasks in one transaction,
        reminders sent together (`send_many`). Raises when a transaction before any send
        cannot be committed, and nothing of it is recorded: the agenda then fires the entries
        one by one."""
        if kind == "Reminder":
            self.send_many(aggregate_ids, gateways, now, retry_after, pool)
            return
        if kind not in ("ContactPlan", "CallTask"):
            raise ValueError(f"nothing of kind {kind!r} is due in the reminder service")
        unit = self.unit()
        for aggregate_id in aggregate_ids:
            if kind == "ContactPlan":
                self._step(unit, aggregate_id, now)
            else:
                self._issue(unit, aggregate_id, now)
        if unit.changed():
            self.commit(unit)

    def take_step(self, plan_id: UUID, now: datetime) -> None:
        """The plan's next cadence step: a reminder on its channel, or a call task."""
        unit = self.unit()
        self._step(unit, plan_id, now)
        if unit.changed():
            self.commit(unit)

    def _step(self, unit: Unit, plan_id: UUID, now: datetime) -> None:
        plan: ContactPlan = unit.get(plan_id)
        due = plan.next_due()
        cadence = plan.cadence_now
        step = cadence.step(plan.step)
        if due is None or due > now or step is None:
            return
        after = cadence.due(plan.step + 1, plan.day0)
        next_due = None if after is None else max(after, now)
        # The opening stage's keys are those of the plans before stages: `<CaseOpened id>/n/..`
        key = f"{plan.stage_cause}/{plan.step}/{step.channel}"
        if step.channel in plan.ceased:
            plan.take_step(None, next_due)  # the borrower asked to stop this channel (C3)
        elif step.channel == "call":
            task = self._call_task(plan, key, "borrower", None, CURRENT["call"], now)
            plan.add_task(task.id)
            plan.take_step(None, next_due)
            unit.save(task)
        else:
            reminder = self._reminder(plan, key, step.channel, now)
            plan.take_step(reminder.id if reminder else None, next_due)
            if reminder is not None:
                unit.save(reminder)
        unit.save(plan)

    def _reminder(self, plan: ContactPlan, key: str, channel: str,
                  now: datetime) -> Reminder | None:
        recipient = {"sms": plan.borrower.get("phone"), "email": plan.borrower.get("email"),
                     "push": plan.borrower.get("borrower_id")}[channel]
        if not recipient:
            return None  # no address on this channel (an e-mail step for a borrower without)
        template_id, version = CURRENT[channel]
        content = {**plan.content, "deadline": self._deadline(plan, now)}
        checked = policy.required_content(template_id, version, content, plan.language)
        if not checked.allowed:
            raise ValueError(f"{checked.rule}: {checked.reason}")
        template = approved(template_id, version)
        subject = (template.subjects.get(plan.language) if template and template.subjects
                   else None)
        return Reminder(
            key=key, loan_id=plan.loan_id, channel=channel, template_id=template_id,
            template_version=version, recipient=str(recipient), timezone=plan.timezone,
            content=content, due_at=now, cause=plan.stage_cause, correlation=plan.correlation,
            language=plan.language, party="borrower",
            subject=subject.format(**content) if subject else None)

    def _courtesy(self, plan: ContactPlan, key: str, entry: Courtesy, due: datetime,
                  pause_id: str, cause: str) -> Reminder:
        """A courtesy SMS before a promise's (or an instalment's) due date, stating its own
        amount and date (C5: the template shows every required item)."""
        template_id, version = COURTESY_TEMPLATE
        content = {**plan.content, "amount": f"{entry.amount:.2f}", "currency": entry.currency,
                   "deadline": entry.due_date.isoformat()}
        checked = policy.required_content(template_id, version, content, plan.language)
        if not checked.allowed:
            raise ValueError(f"{checked.rule}: {checked.reason}")
        return Reminder(
            key=key, loan_id=plan.loan_id, channel="sms", template_id=template_id,
            template_version=version, recipient=str(plan.borrower["phone"]),
            timezone=plan.timezone, content=content, due_at=due, cause=cause,
            correlation=plan.correlation, language=plan.language, party="borrower",
            courtesy_of=pause_id)

    def _deadline(self, plan: ContactPlan, now: datetime) -> str:
        """The repayment deadline a message states, from the day it is sent (C5): a message
        held or deferred never states a deadline already past."""
        local_day = now.astimezone(ZoneInfo(plan.timezone)).date()
        return (local_day + timedelta(days=self.pack_of(plan).reminder_deadline_days)).isoformat()

    def _call_task(self, plan: ContactPlan, key: str, phone_kind: str, contact_id: str | None,
                   template: tuple[str, int], now: datetime) -> CallTask:
        return CallTask(key=key, loan_id=plan.loan_id, phone_kind=phone_kind,
                        contact_id=contact_id, template_id=template[0],
                        template_version=template[1], due_at=now, cause=plan.stage_cause,
                        correlation=plan.correlation)

    def _rules_before_contact(self, plan: ContactPlan, channel: str, now: datetime
                              ) -> Decision:
        """C4, then C3, then C1, for anything about to reach the borrower."""
        return policy.first_refusal(
            policy.is_open(plan.open),
            policy.not_stopped(channel, plan.stopped_on(channel, now)),
            policy.contact_window(self.pack_of(plan), ZoneInfo(plan.timezone), now))

    def send_due(self, reminder_id: UUID, gateways: Mapping[str, Gateway], now: datetime,
                 retry_after: timedelta) -> None:
        """Send one due reminder if every rule still allows it; record before and after."""
        self.send_many([reminder_id], gateways, now, retry_after)

    def send_many(self, reminder_ids: list[UUID], gateways: Mapping[str, Gateway],
                  now: datetime, retry_after: timedelta, pool: Executor | None = None) -> None:
        """Send due reminders, each only if every rule still allows it.

        Before: every rule asked, and each send that may go recorded as started, one
        transaction for the lot (a conflict raises here, before anything is sent). Then the
        sends, together (`pool`). After: what each provider said, one transaction again, or
        one per reminder when that one meets a conflict. A crash between the two leaves the
        reminders sending: they are due again and go under the same key, which the provider
        knows.
        """
        unit = self.unit()
        outgoing = [message for reminder_id in reminder_ids
                    if (message := self._ready_to_send(unit, reminder_id, now)) is not None]
        if unit.changed():
            self.commit(unit)
        if not outgoing:
            return
        try:
            answers: list[str | ChannelError | None] = list(send_all(gateways, outgoing, pool))
        except SendsBroke as broke:
            # What the providers took is recorded before the fault is raised: the agenda then
            # fires the claim one by one, and only the broken sends are tried again.
            self._record_answers(outgoing, broke.answers, now, retry_after)
            raise broke.error from None
        self._record_answers(outgoing, answers, now, retry_after)

    def _record_answers(self, outgoing: list[OutboundMessage],
                        answers: list[str | ChannelError | None], now: datetime,
                        retry_after: timedelta) -> None:
        """What the providers said, in one transaction, or one per reminder after a conflict;
        a message with no answer (None: its send broke) is left sending."""
        said = [(UUID(message.idempotency_key), answer)
                for message, answer in zip(outgoing, answers, strict=True) if answer is not None]
        settled = self.unit()
        for reminder_id, answer in said:
            self._answered(settled, reminder_id, answer, now, retry_after)
        if not settled.changed():
            return
        try:
            self.commit(settled)
        except Conflict:
            for reminder_id, answer in said:
                self._settle(reminder_id, answer, now, retry_after)

    def _ready_to_send(self, unit: Unit, reminder_id: UUID,
                       now: datetime) -> OutboundMessage | None:
        """The message to send now, the reminder marked sending in `unit`; None when it is not
        to go now (not due, paused, past, or refused by a rule: all of it saved in `unit`)."""
        reminder: Reminder = unit.get(reminder_id)
        if reminder.next_due() is None or reminder.due_at > now:
            return None
        plan: ContactPlan = unit.get(ContactPlan.create_id(reminder.loan_id))
        if self._paused(plan, reminder, now) or self._courtesy_past(plan, reminder, now):
            unit.save(reminder)
            return None
        standing = Decision.allow()
        if reminder.visit is not None:
            # A visit's notice, worded now in the borrower's zone as it is now; it goes only
            # while its visit stands and before its window opens (C8).
            content = notice_content(reminder.visit, plan.content["lender_name"],
                                     ZoneInfo(plan.timezone), reminder.language,
                                     self.verify_url)
            standing = policy.notice_stands(
                reminder.withdrawn, datetime.fromisoformat(reminder.visit["window_start"]), now)
        else:
            # The case's terms as they are now (a payment may have lowered the amount since
            # the step was planned), and a deadline counted from today; a courtesy reminder
            # states its promise's own amount and date.
            content = {**reminder.content, **plan.content,
                       "deadline": self._deadline(plan, now)}
            if reminder.courtesy_of is not None:
                content.update({k: reminder.content[k] for k in COURTESY_TERMS})
        contact = self._rules_before_contact(plan, reminder.channel, now)
        decision = policy.first_refusal(
            standing, contact,
            policy.required_content(reminder.template_id, reminder.template_version,
                                    content, reminder.language))
        if not decision.allowed:
            # A notice a contact rule drops is reported blocked as well (C3: nothing goes).
            barred = reminder.visit is not None and decision is contact
            self._refuse(unit, plan, reminder, decision, now, barred)
            return None
        reminder.start_sending(now)
        unit.save(reminder)
        template = approved(reminder.template_id, reminder.template_version)
        assert template is not None  # C5 above
        return OutboundMessage(str(reminder_id), reminder.channel, reminder.recipient,
                               template.text(reminder.language).format(**content),
                               subject=reminder.subject, language=reminder.language)

    def _answered(self, unit: Unit, reminder_id: UUID, answer: str | ChannelError,
                  now: datetime, retry_after: timedelta) -> None:
        """What the provider said of a send, recorded in `unit`: sent (its id) or refused,
        with the plan's step done; a failure that may pass, tried again `retry_after` on."""
        reminder: Reminder = unit.get(reminder_id)
        if isinstance(answer, ChannelRefused):
            reminder.refused(describe(answer), now)
        elif isinstance(answer, ChannelError):
            reminder.fail(describe(answer), now, now + retry_after)
            unit.save(reminder)
            return
        else:
            local = now.astimezone(ZoneInfo(reminder.timezone)).isoformat(timespec="seconds")
            reminder.mark_sent(now, local, answer)
        plan: ContactPlan = unit.get(ContactPlan.create_id(reminder.loan_id))
        plan.step_done(reminder.id, now)
        unit.save(reminder, plan)

    def _paused(self, plan: ContactPlan, item: Reminder | CallTask, now: datetime) -> bool:
        """Whether a pause holds the item back now (then it waits off the agenda). A closed
        case is not paused: C4 cancels what it planned."""
        pause_id = plan.paused_by(now, item.outside_cadence) if plan.open else None
        if pause_id is None:
            return False
        item.pause(pause_id)
        return True

    @staticmethod
    def _courtesy_past(plan: ContactPlan, reminder: Reminder, now: datetime) -> bool:
        """A courtesy reminder kept waiting (a hardship pause, a C1 deferral) past the end of
        its due date reminds of nothing: it is dropped (`due_date_passed`)."""
        if reminder.courtesy_of is None or reminder.status != PENDING:
            return False
        deadline = date.fromisoformat(reminder.content["deadline"])
        if policy.courtesy_due(deadline, ZoneInfo(plan.timezone), now) is not None:
            return False
        reminder.cancel("due_date_passed", f"its due date {deadline} has ended", now,
                        reminder.cause)
        return True

    def _refuse(self, unit: Unit, plan: ContactPlan, reminder: Reminder, decision: Decision,
                now: datetime, barred: bool = False) -> None:
        rule, reason = decision.rule or "", decision.reason or ""
        if decision.until is not None:
            reminder.defer(rule, reason, decision.until)
        elif decision.held:
            reminder.hold(rule, reason, plan.stopped_on(reminder.channel, now) or "hold")
        else:
            if barred:
                reminder.bar(rule, reason)
            if reminder.status == SENDING:
                reminder.abandon(rule, reason, now)
            else:
                reminder.cancel(rule, reason, now, reminder.cause)
            plan.step_done(reminder.id, now)
            unit.save(plan)
        unit.save(reminder)

    def _settle(self, reminder_id: UUID, answer: str | ChannelError, now: datetime,
                retry_after: timedelta) -> None:
        """The provider has answered: that is a fact, recorded in a transaction of its own
        even if the reminder changed meanwhile (a payment arriving during the hand-over)."""
        for _ in range(5):
            unit = self.unit()
            self._answered(unit, reminder_id, answer, now, retry_after)
            try:
                self.commit(unit)
                return
            except Conflict:
                continue
        raise Conflict(f"could not record what the provider said of {reminder_id}")

    def issue_task(self, task_id: UUID, now: datetime) -> None:
        """A call task falls due: issued for the rest of the borrower's hours that day if the
        rules allow; an issued one expires when its window closes."""
        unit = self.unit()
        self._issue(unit, task_id, now)
        if unit.changed():
            self.commit(unit)

    def _issue(self, unit: Unit, task_id: UUID, now: datetime) -> None:
        task: CallTask = unit.get(task_id)
        due = task.next_due()
        if due is None or due > now:
            return
        if task.status == "issued":
            task.expire(now)
        else:
            plan: ContactPlan = unit.get(ContactPlan.create_id(task.loan_id))
            if not self._paused(plan, task, now):
                self._issue_or_refuse(plan, task, now)
        unit.save(task)

    def _issue_or_refuse(self, plan: ContactPlan, task: CallTask, now: datetime) -> None:
        decision = self._rules_before_contact(plan, "call", now)
        if decision.allowed:
            task.issue(now, policy.window_close(self.pack_of(plan), ZoneInfo(plan.timezone),
                                                now))
        elif decision.until is not None:
            task.defer(decision.rule or "", decision.reason or "", decision.until)
        elif decision.held:
            task.hold(decision.rule or "", decision.reason or "",
                      plan.stopped_on("call", now) or "hold")
        else:
            task.cancel(decision.rule or "", decision.reason or "", now, task.cause)

    # --- the collectors: the pre-dial gate and what a call came to ---

    def permit_dial(self, loan_id: str, task_id: UUID, phone: str, collector_id: str,
                    now: datetime, key: str | None = None) -> Permit:
        """The pre-dial gate: C4, the cadence's pauses, C3, C13, C1 and C2 asked, in that
        order, before a dial.

        A permit lasts ten minutes, never past the borrower's hours or the task's window; it
        counts as a call until it is used or expires. A repeated Idempotency-Key answers the
        same permit while the case is open and calls are neither paused nor stopped.
        """
        number = number_sha256(phone)
        fingerprint = json.dumps([loan_id, str(task_id), number])
        for _ in range(5):
            unit = self.unit()
            plan, task = self._plan_and_task(unit, loan_id, task_id)
            debtor = self._debtor(unit, plan)
            pack = self.pack_of(plan)
            zone = ZoneInfo(plan.timezone)
            self._not_paused(plan, now)
            stopped = policy.first_refusal(
                policy.is_open(plan.open),
                policy.not_stopped("call", plan.stopped_on("call", now)))
            earlier = self._earlier_request(unit, "permit", collector_id, key, fingerprint)
            if earlier is not None:
                if not stopped.allowed:
                    raise RuleRefused(stopped)
                permit = debtor.permit_of(earlier)
                assert permit is not None
                return Permit(earlier, permit["expires_at"])
            party, contact_id = plan.party_of(phone)
            decision = policy.first_refusal(
                stopped,
                policy.third_party(pack, task.phone_kind, party, plan.failed_streak,
                                   plan.third_party_calls, task.template_id,
                                   task.template_version),
                policy.same_contact(task.contact_id, contact_id),
                policy.contact_window(pack, zone, now),
                policy.call_caps(pack, zone, now, debtor.dials(now), loan_id, number))
            if not decision.allowed:
                raise RuleRefused(decision)
            if not task.open_at(now) or task.due_until is None:
                raise NotOpen(f"call task {task_id} is {task.status}, not open for calls now")
            permit_id = uuid.uuid4()
            expires = min(now + PERMIT_LIFETIME, task.due_until,
                          policy.window_close(pack, zone, now))
            debtor.permit(permit_id, loan_id, task.id, collector_id, number, party, now,
                          expires, plan.correlation)
            unit.save(debtor)
            self._remember_request(unit, "permit", collector_id, key, fingerprint, permit_id)
            if party == "contact":
                plan.third_party_called()
                unit.save(plan)
            try:
                self.commit(unit)
            except Conflict:
                continue  # another dial of this debtor meanwhile: count again
            return Permit(permit_id, expires)
        raise Conflict("the debtor's calls kept changing; ask again")

    @staticmethod
    def _not_paused(plan: ContactPlan, now: datetime) -> None:
        """ContactPaused when a pause is in force (after C4: a closed case is refused by it)."""
        pause_id = plan.paused_by(now) if plan.open else None
        if pause_id is not None:
            raise ContactPaused(plan.loan_id, pause_id, plan.pauses[pause_id])

    def _earlier_request(self, unit: Unit, kind: str, caller: str, key: str | None,
                         fingerprint: str) -> UUID | None:
        """What a repeated key answered the first time; KeyReused for another request."""
        if key is None:
            return None
        earlier: RequestKey | None = unit.find(RequestKey.create_id(kind, caller, key))
        if earlier is None:
            return None
        if earlier.fingerprint != fingerprint:
            raise KeyReused(key)
        return earlier.result

    def _remember_request(self, unit: Unit, kind: str, caller: str, key: str | None,
                          fingerprint: str, result: UUID) -> None:
        if key is not None:
            unit.save(RequestKey(kind, caller, key, fingerprint, result))

    def record_attempt(self, attempt: Attempt, collector_id: str, now: datetime,
                       key: str | None = None) -> tuple[UUID, bool]:
        """A call's outcome, always recorded as the fact it is; (attempt id, whether its
        permit was recognised). A permit is recognised once, for the collector it was given
        to, for a dial of its loan and number made while it was valid, on a case still open
        with calls not stopped; any other dial is recorded without one, for the audit to
        flag, and counted against the caps from when it was reported."""
        number = number_sha256(attempt.phone)
        fingerprint = json.dumps([attempt.loan_id, str(attempt.permit_id), str(attempt.task_id),
                                  attempt.channel, number, attempt.outcome,
                                  attempt.attempted_at.isoformat(), attempt.promise],
                                 sort_keys=True)
        for _ in range(5):
            unit = self.unit()
            plan: ContactPlan | None = unit.find(ContactPlan.create_id(attempt.loan_id))
            if plan is None:
                raise NotFound(f"no contact plan for loan {attempt.loan_id}")
            earlier = self._earlier_request(unit, "attempt", collector_id, key, fingerprint)
            if earlier is not None:
                return earlier, plan.attempt_ids.get(earlier, False)
            attempt_id = uuid.uuid4()
            debtor = self._debtor(unit, plan)
            party, _ = plan.party_of(attempt.phone)
            recognised = (plan.open and plan.stopped_on("call", now) is None
                          and plan.paused_by(now) is None
                          and debtor.honours(attempt.permit_id, attempt.loan_id, number,
                                             collector_id, attempt.attempted_at, PERMIT_SKEW))
            permit = debtor.permit_of(attempt.permit_id) if recognised else None
            permit_id = attempt.permit_id if recognised else None
            task_id = attempt.task_id or (UUID(permit["task_id"]) if permit else None)
            plan.record_attempt(attempt_id, attempt.channel, attempt.outcome,
                                attempt.attempted_at, party, permit_id, number, collector_id,
                                task_id, attempt.promise)
            if party == "contact" and not recognised:
                plan.third_party_called()
            debtor.attempt(permit_id, attempt.loan_id, number, attempt.outcome,
                           attempt.attempted_at if recognised else max(now, attempt.attempted_at))
            unit.save(plan, debtor)
            self._remember_request(unit, "attempt", collector_id, key, fingerprint, attempt_id)
            self._after_failures(unit, plan, now)
            try:
                self.commit(unit)
            except Conflict:
                continue
            return attempt_id, recognised
        raise Conflict("the loan's contact changed meanwhile; send it again")

    def _after_failures(self, unit: Unit, plan: ContactPlan, now: datetime) -> None:
        """C13: after the pack's number of failed calls in a row to the borrower, one call
        task for the first pre-agreed contact, to re-establish contact only."""
        pack = self.pack_of(plan)
        if (plan.open and plan.contacts
                and plan.failed_streak == pack.third_party_after_failed_attempts
                and plan.third_party_calls < pack.max_third_party_contacts):
            contact = plan.contacts[0]
            task = self._call_task(plan, f"{plan.cause}/contact/{len(plan.task_ids)}",
                                   "contact", str(contact["contact_id"]),
                                   REESTABLISH_TEMPLATE, now)
            plan.add_task(task.id)
            unit.save(task, plan)

    def _plan_and_task(self, unit: Unit, loan_id: str, task_id: UUID
                       ) -> tuple[ContactPlan, CallTask]:
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(loan_id))
        if plan is None or task_id not in plan.task_ids:
            raise NotFound(f"no call task {task_id} for loan {loan_id}")
        return plan, unit.get(task_id)

    def _debtor(self, unit: Unit, plan: ContactPlan) -> Debtor:
        borrower_id = str(plan.borrower["borrower_id"])
        found: Debtor | None = unit.find(Debtor.create_id(plan.lender_id, borrower_id))
        return found or Debtor(plan.lender_id, borrower_id)

    # --- the providers: delivery receipts ---

    def receipt(self, channel: str, message_id: UUID, delivered: bool, at: datetime,
                reason: str | None) -> None:
        for _ in range(5):
            unit = self.unit()
            self._receipt(unit, channel, message_id, delivered, at, reason)
            try:
                self.commit(unit)
                return
            except Conflict:
                continue
        raise Conflict(f"message {message_id} kept changing; send the receipt again")

    def receipts(self, channel: str, receipts: list[Receipt]) -> list[str | None]:
        """Many receipts of one channel in one transaction: per receipt, in order, None when it
        was taken, or why not (NotFound's words). When that transaction meets a conflict (a
        reminder changed meanwhile), each is recorded on its own."""
        unit = self.unit()
        said: list[str | None] = []
        for message_id, delivered, at, reason in receipts:
            try:
                self._receipt(unit, channel, message_id, delivered, at, reason)
                said.append(None)
            except NotFound as error:
                said.append(str(error))
        try:
            if unit.changed():
                self.commit(unit)
            return said
        except Conflict:
            pass
        said = []
        for message_id, delivered, at, reason in receipts:
            try:
                self.receipt(channel, message_id, delivered, at, reason)
                said.append(None)
            except NotFound as error:
                said.append(str(error))
        return said

    def _receipt(self, unit: Unit, channel: str, message_id: UUID, delivered: bool,
                 at: datetime, reason: str | None) -> None:
        reminder: Reminder | None = unit.find(message_id)
        if not isinstance(reminder, Reminder) or reminder.channel != channel:
            raise NotFound(f"no {channel} message {message_id}")
        said = mask(reason)[:500] if reason else None  # a provider's words go on the log
        if not reminder.receipt(delivered, at, said):
            raise NotFound(f"{channel} message {message_id} is not recorded as sent")
        unit.save(reminder)

    # --- queries ---

    def reminders_of(self, loan_id: str, lender_id: str | None = None) -> list[Reminder] | None:
        """The loan's reminders; None when there is no plan, or when `lender_id` names a lender
        other than the loan's (a lender sees only its own loans)."""
        plan = self.plan_of(loan_id, lender_id)
        if plan is None:
            return None
        return [self.repository.get(rid) for rid in plan.reminder_ids]

    def tasks_of(self, loan_id: str, lender_id: str | None = None) -> list[CallTask] | None:
        plan = self.plan_of(loan_id, lender_id)
        if plan is None:
            return None
        return [self.repository.get(tid) for tid in plan.task_ids]

    def plan_of(self, loan_id: str, lender_id: str | None = None) -> ContactPlan | None:
        plan_id = ContactPlan.create_id(loan_id)
        if plan_id not in self.repository:
            return None
        plan: ContactPlan = self.repository.get(plan_id)
        return plan if plan.seen_by(lender_id) else None

    def open_call_tasks(self, now: datetime, limit: int = 500) -> list[CallTask]:
        """The call tasks that may be called now: issued, inside their window, on an open case
        whose calls are neither paused nor stopped."""
        found = []
        for task_id in self.extras.of_kind("CallTask", 5000):
            task: CallTask = self.repository.get(task_id)
            if not task.open_at(now):
                continue
            plan: ContactPlan = self.repository.get(ContactPlan.create_id(task.loan_id))
            if plan.open and plan.stopped_on("call", now) is None and plan.paused_by(now) is None:
                found.append(task)
                if len(found) >= limit:
                    break
        return found
