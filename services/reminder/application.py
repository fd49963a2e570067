"""The reminder application: plans reminders from cases, sends them when the rules allow."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from shared.application import Conflict, ServiceApplication, Unit
from shared.errors import describe
from shared.events import CaseClosed, CaseOpened, CloudEvent
from shared.policy_pack import PolicyPack

from services.reminder import policy
from services.reminder.channels import ChannelError, OutboundMessage, SmsGateway
from services.reminder.domain import FIRST_REMINDER, SENDING, ContactPlan, Reminder, render

log = logging.getLogger(__name__)


class Reminders(ServiceApplication):
    name = "reminder"

    def __init__(self, pack: PolicyPack, verification_channel: str,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.pack = pack
        self.verification_channel = verification_channel

    # --- commands ---

    def plan_first_reminder(self, unit: Unit, cause: CloudEvent, case: CaseOpened,
                            now: datetime) -> None:
        plan: ContactPlan = unit.find(ContactPlan.create_id(case.loan_id)) or ContactPlan(
            loan_id=case.loan_id, lender_id=case.lender_id)
        deadline = now.astimezone(ZoneInfo(case.borrower.timezone)).date() + timedelta(
            days=self.pack.reminder_deadline_days)
        content = {
            "loan_id": case.loan_id, "amount": f"{case.amount_overdue:.2f}",
            "currency": case.currency, "deadline": deadline.isoformat(),
            "repayment_channel": case.repayment_channel,
            "verification_channel": case.verification_channel or self.verification_channel,
        }
        template_id, version = FIRST_REMINDER
        checked = policy.required_content(template_id, version, content)
        if not checked.allowed:
            raise ValueError(f"{checked.rule}: {checked.reason}")
        reminder = Reminder(
            key=f"{cause.id}/sms/first", loan_id=case.loan_id, channel="sms",
            template_id=template_id, template_version=version, recipient=case.borrower.phone,
            timezone=case.borrower.timezone, content=content, due_at=now, cause=cause.id,
            correlation=cause.correlationid or cause.id)
        window = policy.contact_window(self.pack, ZoneInfo(case.borrower.timezone), now)
        if not window.allowed and window.until is not None:
            reminder.defer(window.rule or "C1", window.reason or "", window.until)
        plan.add(reminder.id)
        unit.save(plan, reminder)

    def close_plan(self, unit: Unit, cause: CloudEvent, closed: CaseClosed,
                   now: datetime) -> None:
        plan: ContactPlan | None = unit.find(ContactPlan.create_id(closed.loan_id))
        if plan is None:
            return
        plan.close()
        unit.save(plan)
        for reminder_id in plan.reminder_ids:
            reminder: Reminder = unit.get(reminder_id)
            if reminder.pending:
                reminder.cancel("C4", f"case closed ({closed.reason})", now, cause.id)
                unit.save(reminder)

    def fire(self, aggregate_id: UUID, kind: str, gateway: SmsGateway, now: datetime,
             retry_after: timedelta) -> None:
        """What the agenda calls when something of this service falls due."""
        if kind != "Reminder":
            raise ValueError(f"nothing of kind {kind!r} is due in the reminder service")
        self.send_due(aggregate_id, gateway, now, retry_after)

    def send_due(self, reminder_id: UUID, gateway: SmsGateway, now: datetime,
                 retry_after: timedelta) -> None:
        """Send one due reminder if every rule still allows it; record before and after."""
        reminder: Reminder = self.repository.get(reminder_id)
        if not reminder.pending or reminder.due_at > now:
            return
        plan: ContactPlan = self.repository.get(ContactPlan.create_id(reminder.loan_id))
        zone = ZoneInfo(reminder.timezone)
        for decision in (policy.is_open(plan.open), policy.contact_window(self.pack, zone, now)):
            if not decision.allowed:
                rule, reason = decision.rule or "", decision.reason or ""
                if decision.until is not None:
                    reminder.defer(rule, reason, decision.until)
                elif reminder.status == SENDING:
                    reminder.abandon(rule, reason, now)
                else:
                    reminder.cancel(rule, reason, now, reminder.cause)
                self.save(reminder)
                return
        reminder.start_sending(now)
        self.save(reminder)
        message = OutboundMessage(str(reminder_id), reminder.recipient,
                                  render(reminder.template_id, reminder.template_version,
                                         reminder.content))
        try:
            provider_id = gateway.send(message)
        except ChannelError as error:
            reminder.fail(describe(error), now, now + retry_after)
            self.save(reminder)
            return
        self._record_sent(reminder, now, now.astimezone(zone).isoformat(timespec="seconds"),
                          provider_id)

    def _record_sent(self, reminder: Reminder, at: datetime, local_time: str,
                     provider_id: str) -> None:
        """The provider has the message: that is a fact, recorded even if the reminder changed
        meanwhile (a payment arriving during the hand-over)."""
        for _ in range(5):
            reminder.mark_sent(at, local_time, provider_id)
            try:
                self.save(reminder)
                return
            except Conflict:
                reminder = self.repository.get(reminder.id)
        raise Conflict(f"could not record the send of {reminder.id}")

    # --- queries ---

    def reminders_of(self, loan_id: str, lender_id: str | None = None) -> list[Reminder] | None:
        """The loan's reminders; None when there are none, or when `lender_id` names a lender
        other than the loan's (a lender sees only its own loans)."""
        plan_id = ContactPlan.create_id(loan_id)
        if plan_id not in self.repository:
            return None
        plan: ContactPlan = self.repository.get(plan_id)
        if not plan.seen_by(lender_id):
            return None
        return [self.repository.get(rid) for rid in plan.reminder_ids]
