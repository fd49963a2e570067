"""Reminder's pure contact rules: state and time passed in, decisions out, each naming its rule.

C1 contact hours, C2 call caps, C3 cease and holds, C4 nothing after payment, C5 content,
C8 a visit's notice goes before its window, C13 third parties. The audit service checks the
same rules again from the log, with its own code (services/audit/compliance.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.policy_pack import Decision, PolicyPack, pack
from shared.templates import (
    DEBT_CONTENT,
    NOTICE_CONTENT,
    REESTABLISH,
    REQUIRED_CONTENT,
    VISIT_NOTICE,
    approved,
)

from services.reminder.domain import ANSWERED_OUTCOMES, Dial


def pack_for(jurisdiction: str | None, installation: PolicyPack) -> PolicyPack:
    """The loan's own jurisdiction's pack when it names one, else the installation's."""
    return pack(jurisdiction) if jurisdiction else installation


def contact_window(pack: PolicyPack, borrower_tz: ZoneInfo, now: datetime) -> Decision:
    """C1: contact only inside the pack's hours, in the borrower's own time zone."""
    local = now.astimezone(borrower_tz)
    if pack.contact_hours.contains(local.time()):
        return Decision.allow()
    return Decision.defer(
        "C1", f"borrower's local time {local:%H:%M} is outside {pack.contact_hours} "
              f"({pack.name})", pack.contact_hours.next_opening(local))


def window_close(pack: PolicyPack, borrower_tz: ZoneInfo, now: datetime) -> datetime:
    """When the borrower's hours that include `now` end (the close of a call task's day)."""
    local = now.astimezone(borrower_tz)
    return datetime.combine(local.date(), pack.contact_hours.end, tzinfo=borrower_tz)


def is_open(plan_open: bool) -> Decision:
    """C4: nothing after payment; a closed case sends nothing."""
    return Decision.allow() if plan_open else Decision.refuse("C4", "the case is closed")


def not_stopped(channel: str, stopped_by: str | None) -> Decision:
    """C3: a channel the borrower asked to stop is dropped; during a hold (an open dispute)
    everything waits until the hold is lifted."""
    if stopped_by is None:
        return Decision.allow()
    if stopped_by == "ceased":
        return Decision.refuse("C3", f"the borrower asked to stop contact by {channel}")
    return Decision.hold("C3", f"contact is held ({stopped_by})")


def required_content(template_id: str, version: int, content: dict[str, str],
                     language: str) -> Decision:
    """C5: an approved template whose text in this language shows every required item, each
    filled in; a re-establishing template for a third party shows nothing of the debt; a
    visit's notice shows its window, place, collectors and how to check them (C8)."""
    template = approved(template_id, version)
    if template is None:
        return Decision.refuse("C5", f"template {template_id} v{version} is not approved")
    shown = template.fields(language if language in template.texts else "zh-CN")
    if template.kind == REESTABLISH:
        leaked = sorted(shown & set(DEBT_CONTENT))
        if leaked:
            return Decision.refuse("C5", f"a third-party template shows {', '.join(leaked)}")
        return Decision.allow()
    required = NOTICE_CONTENT if template.kind == VISIT_NOTICE else REQUIRED_CONTENT
    missing = [item for item in required
               if item not in shown or not content.get(item, "").strip()]
    if missing:
        return Decision.refuse("C5", f"required content missing: {', '.join(missing)}")
    return Decision.allow()


def _local_day(moment: datetime, zone: ZoneInfo) -> object:
    return moment.astimezone(zone).date()


def call_caps(pack: PolicyPack, borrower_tz: ZoneInfo, now: datetime, dials: Sequence[Dial],
              loan_id: str, number: str) -> Decision:
    """C2 before a dial: the debtor's answered calls today, this number's unanswered dials
    today (days in the borrower's zone), the loan's attempts in the last seven days, and the
    quiet time after a conversation. An open permit counts as a dial of either kind."""
    today = _local_day(now, borrower_tz)
    tomorrow = pack.contact_hours.next_opening(
        datetime.combine(today, pack.contact_hours.end, tzinfo=borrower_tz))  # type: ignore[arg-type]
    todays = [d for d in dials if _local_day(d.at, borrower_tz) == today]
    answered = sum(1 for d in todays if d.outcome is None or d.outcome in ANSWERED_OUTCOMES)
    if answered >= pack.max_answered_calls_per_day:
        return Decision.defer("C2", f"{answered} answered calls today reach the cap of "
                                    f"{pack.max_answered_calls_per_day} ({pack.name})", tomorrow)
    unanswered = sum(1 for d in todays if d.number == number
                     and (d.outcome is None or d.outcome not in ANSWERED_OUTCOMES))
    if unanswered >= pack.max_unanswered_per_number_per_day:
        return Decision.defer("C2", f"{unanswered} unanswered dials of this number today reach "
                                    f"the cap of {pack.max_unanswered_per_number_per_day} "
                                    f"({pack.name})", tomorrow)
    week = [d for d in dials if d.loan_id == loan_id and now - d.at < timedelta(days=7)]
    if len(week) >= pack.max_call_attempts_per_7_days:
        oldest = min(d.at for d in week)
        return Decision.defer("C2", f"{len(week)} call attempts in 7 days reach the cap of "
                                    f"{pack.max_call_attempts_per_7_days} ({pack.name})",
                              oldest + timedelta(days=7))
    talks = [d.at for d in dials if d.loan_id == loan_id and d.outcome in ANSWERED_OUTCOMES]
    if talks and pack.quiet_after_conversation and now - max(talks) < pack.quiet_after_conversation:
        return Decision.defer("C2", f"a conversation on {max(talks):%Y-%m-%d %H:%M} UTC: no "
                                    f"call for {pack.quiet_after_conversation.days} days after "
                                    f"it ({pack.name})",
                              max(talks) + pack.quiet_after_conversation)
    return Decision.allow()


def third_party(pack: PolicyPack, phone_kind: str, party: str, failed_streak: int,
                third_party_calls: int, template_id: str, template_version: int) -> Decision:
    """C13: only the borrower's own numbers; a pre-agreed contact only after enough failed
    calls in a row to the borrower, only with the re-establishing template, and (us) at most
    the pack's number of times."""
    if party == "other":
        return Decision.refuse("C13", "the number is neither the borrower's nor a pre-agreed "
                                      "contact's")
    if party != phone_kind:
        return Decision.refuse("C13", f"the number is the {party}'s, not the task's "
                                      f"{phone_kind}'s")
    if party == "borrower":
        return Decision.allow()
    if failed_streak < pack.third_party_after_failed_attempts:
        return Decision.refuse("C13", f"{failed_streak} failed calls in a row to the borrower; "
                                      f"a contact person only after "
                                      f"{pack.third_party_after_failed_attempts} ({pack.name})")
    if third_party_calls >= pack.max_third_party_contacts:
        return Decision.refuse("C13", f"a contact person was called {third_party_calls} times; "
                                      f"at most {pack.max_third_party_contacts} ({pack.name})")
    template = approved(template_id, template_version)
    if template is None or template.kind != REESTABLISH:
        return Decision.refuse("C13", "a contact person only with the re-establishing "
                                      "template, which says nothing of the debt")
    return Decision.allow()


def same_contact(task_contact: str | None, dialled_contact: str | None) -> Decision:
    """C13: a contact person's task reaches that person, not another pre-agreed contact."""
    if task_contact is not None and dialled_contact is not None and task_contact != dialled_contact:
        return Decision.refuse("C13", "the number is another contact person's than the task's")
    return Decision.allow()


COURTESY_AT = time(10, 0)  # the day before a promise's due date, in the borrower's zone


def courtesy_due(due_date: date, borrower_tz: ZoneInfo, now: datetime) -> datetime | None:
    """When a courtesy reminder of a promise (or an instalment) due on `due_date` goes: the
    day before at 10:00 local; at once if that has passed but the due date has not ended;
    never once it has (a reminder of a date gone by reminds of nothing)."""
    planned = datetime.combine(due_date - timedelta(days=1), COURTESY_AT, tzinfo=borrower_tz)
    ended = datetime.combine(due_date + timedelta(days=1), time(0), tzinfo=borrower_tz)
    if now >= ended:
        return None
    return max(planned, now).astimezone(UTC)


def notice_stands(withdrawn: Mapping[str, str] | None, window_start: datetime,
                  now: datetime) -> Decision:
    """C8: a visit's notice goes only while its visit stands (neither cancelled nor declined)
    and before the window opens: once it has, no notice is an advance notice."""
    if withdrawn is not None:
        return Decision.refuse(withdrawn["rule"], withdrawn["reason"])
    if now >= window_start:
        return Decision.refuse("C8", f"the visit's window opened at "
                                     f"{window_start.astimezone(UTC):%Y-%m-%d %H:%M} UTC, "
                                     f"before the notice could go")
    return Decision.allow()


def first_refusal(*decisions: Decision) -> Decision:
    """The first decision that does not allow, in the order the rules were asked."""
    return next((d for d in decisions if not d.allowed), Decision.allow())
