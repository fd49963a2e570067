"""The audit's verdicts on the conduct rules (DOMAIN.md, C1-C14), judged from the log alone.

Written apart from the services that enforce the rules, and fed only by the leaves: an auditor
trusts the log and its proofs, not the reminder service's code. Each rule is one small pure
function of one loan's leaves (in log order) and the pack's numbers, answering `pass`, `fail`
(with a finding naming the leaf), `not_applicable` (nothing on this loan to judge) or
`not_evaluated` (a rule that could not be judged on these leaves, or one this module would
not judge: never a silent `pass`).

Judged by event time: the times the data states (`sent_at`, `attempted_at`, ...), not when the
audit happened to consume an event. The borrower's local time is the zone of the loan's latest
LoanOverdue/CaseOpened logged before the act (for C6: of the latest report of its terms at or
before the decision, by time).

One loan's leaves, but for two kinds read beside them: C6 judges a visit request by the
strategy its `policy_version` names, whose StrategyPublished leaf is the lender's (its subject
is the lender id); C10 judges the collectors a visit names by their CollectorRegistered and
CollectorRevoked leaves (subject: the collector) and their agencies' AgencyRegistered (subject:
the agency). The service hands the ones named (`strategies_named`, `collectors_named`,
`agencies_named`) in among the loan's leaves, and an evidence bundle carries them with their
proofs; no other rule reads them, and none counts them as the loan's own (`REFERENCES`).

C12 and C14 have deadlines that pass with no new leaf. They judge by `as_of`, the latest time
the loan's own leaves state: a complaint unanswered past its days fails once a leaf of the
loan later than the deadline is logged (the visit service logs a ComplaintOverdue then), so
a verdict stays a function of the leaves, re-derived offline alike.

A rule that raises on a loan's leaves (leaves no schema allows: `channels: 5`, a year the
clock cannot hold) is `Unjudgeable`, naming the leaf at which judging first fails; never a
silent verdict.

Standard library only (and the two stdlib-only registers it reads, shared/policy_pack.py and
shared/templates.py): `dunwell verify` re-derives an evidence bundle's verdicts offline with
this same module, next to shared/tlog.py, with nothing else installed but `cryptography`.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.policy_pack import PACKS, PolicyPack
from shared.templates import (
    APPROVED,
    DEBT_CONTENT,
    NOTICE_CONTENT,
    REESTABLISH,
    REMINDER,
    REQUIRED_CONTENT,
    VISIT_NOTICE,
    Template,
    approved,
)

Event = Mapping[str, Any]  # one CloudEvent as logged, parsed from the leaf's JSON
Leaves = Sequence[tuple[int, Event]]  # one loan's leaves, in log order

PASS, FAIL, NOT_APPLICABLE, NOT_EVALUATED = "pass", "fail", "not_applicable", "not_evaluated"
VERDICTS = (PASS, FAIL, NOT_APPLICABLE, NOT_EVALUATED)
RULES = tuple(f"C{n}" for n in range(1, 15))

SENT, ATTEMPT = "ReminderSent", "ContactAttemptRecorded"
TASK, PERMIT = "CallTaskIssued", "DialPermitted"
OPENINGS = ("LoanOverdue", "CaseOpened")  # the events that say who the borrower is and where
# C2, as the pre-dial gate counts them (services/reminder ANSWERED_OUTCOMES): a call the
# borrower picked up, even to refuse, is an answered call and a conversation; every other
# outcome (`no_answer`, `wrong_number`, none) is an unanswered dial of its number.
ANSWERED = frozenset({"answered", "promise_to_pay", "refused"})
FAILED = frozenset({"no_answer", "wrong_number"})  # C13: the borrower was not reached
WEEK = timedelta(days=7)

# The data's own time of each event type; any other type is placed at its envelope's time.
TIME_FIELD = {
    SENT: "sent_at", ATTEMPT: "attempted_at", PERMIT: "permitted_at",
    "CaseOpened": "opened_at", "CaseClosed": "closed_at", "PaymentReceived": "paid_at",
    "CeaseContactRequested": "requested_at", "DisputeOpened": "opened_at",
    "DisputeResolved": "resolved_at", "ContactHeld": "at", "ContactResumed": "at",
    "ReminderDelivered": "delivered_at", "ReminderFailed": "failed_at",
    "ReminderCancelled": "cancelled_at", "VisitCheckedIn": "checked_in_at",
    "VisitRecorded": "ended_at", "ComplaintFiled": "filed_at", "ComplaintResolved": "resolved_at",
    "VisitRequested": "requested_at", "CaseEscalated": "escalated_at",
    "PromiseToPayMade": "made_at", "RepaymentPlanAgreed": "agreed_at",
    "PromiseKept": "decided_at", "PromiseBroken": "decided_at", "HardshipEnded": "ended_at",
    "StrategyPublished": "published_at", "DebtorVerified": "verified_at",
    "VisitScheduled": "scheduled_at", "VisitNoticeSent": "sent_at",
    "VisitNoticeDelivered": "delivered_at", "VisitDeclined": "declined_at",
    "VisitConsented": "consented_at", "VisitBlocked": "at", "VisitRecordingStored": "stored_at",
    "VisitCancelled": "cancelled_at", "CollectorRegistered": "registered_at",
    "CollectorRevoked": "revoked_at", "AgencyRegistered": "registered_at",
    "ComplaintOverdue": "overdue_at", "VisitWriteUpOverdue": "overdue_at",
}
# For a pack without these fields (packs before they were added), the numbers as shipped.
THIRD_PARTY_CAP = {"us": 1}
QUIET = {"us": WEEK}


def _rules_digest() -> str:
    """sha256 over the source text of the rules and of the two registers they read, so that
    any change to them (a rule, a pack's number, a template) is a new version of the rules
    without anyone having to remember to bump one."""
    digest = hashlib.sha256()
    for name in (__name__, PolicyPack.__module__, approved.__module__):
        module_file = getattr(sys.modules.get(name), "__file__", None)
        try:
            text = Path(module_file).read_bytes() if module_file else None
        except OSError:
            text = None
        digest.update(name.encode() + b"\0")
        # Without its source (a frozen build), what the module holds stands in for it.
        digest.update(text if text is not None else repr(
            (sorted(PACKS.items()), sorted(APPROVED.items()))).encode())
    return digest.hexdigest()


RULES_DIGEST = _rules_digest()  # computed once, at import


def rules_version(pack: str) -> str:
    """The version of the rules a loan judged under `pack` was judged with: the pack's own
    `version` and the digest of the rules' source. Verdicts stored under another are stale."""
    known = PACKS.get(pack)
    return f"{known.version if known is not None else pack}/{RULES_DIGEST[:16]}"


class Unjudgeable(ValueError):
    """A rule raised on a loan's leaves: `leaf_index` is the leaf at which judging fails (the
    rule raises on the leaves, in log order, up to it, and not on those before it); None when
    the rule raises on no leaves at all."""

    def __init__(self, rule: str, leaf_index: int | None, cause: BaseException) -> None:
        self.rule, self.leaf_index, self.cause = rule, leaf_index, cause
        where = "the loan" if leaf_index is None else f"leaf {leaf_index}"
        said = str(cause)
        said = said if len(said) <= 120 else said[:117] + "..."
        super().__init__(f"{where} cannot be judged: {rule} raised {type(cause).__name__}"
                         + (f" ({said})" if said else "") + ", so it is not an event the "
                         "rules can read")


class Finding(TypedDict):
    leaf_index: int
    message: str


class RuleVerdict(TypedDict):
    rule: str
    verdict: str
    evidence: list[int]
    findings: list[Finding]


# --- reading the leaves ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One leaf, decoded: its index, type, data and its event time (None if unreadable)."""

    index: int
    type: str
    data: Mapping[str, Any]
    time: datetime | None

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    def channel(self) -> str | None:
        return self.text("channel")


def parse_leaf(data: bytes | None) -> Event | None:
    """A leaf's bytes as a CloudEvent mapping; None for bytes that are not one (or erased)."""
    if data is None:
        return None
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) \
            or not isinstance(event.get("data"), dict):
        return None
    return event


def _aware(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def event_time(event: Event) -> datetime | None:
    """When the event says it happened: its data's own time, else its envelope's time."""
    data = event.get("data")
    key = TIME_FIELD.get(str(event.get("type")))
    own = _aware(data.get(key)) if key is not None and isinstance(data, Mapping) else None
    return own or _aware(event.get("time"))


def facts(leaves: Leaves) -> list[Fact]:
    return [Fact(index, str(event["type"]), event["data"], event_time(event))
            for index, event in leaves
            if isinstance(event.get("type"), str) and isinstance(event.get("data"), Mapping)]


def _openings(found: Sequence[Fact]) -> list[Fact]:
    return [fact for fact in found if fact.type in OPENINGS]


def pack_of(leaves: Leaves, default_pack: str) -> str:
    """The loan's `jurisdiction` (its latest LoanOverdue/CaseOpened naming one), else the
    installation's default."""
    named = [fact.text("jurisdiction") for fact in _openings(facts(leaves))]
    known = [name for name in named if name in PACKS]
    return known[-1] if known else default_pack


def lender_of(leaves: Leaves) -> str | None:
    lenders = [fact.text("lender_id") for fact in _openings(facts(leaves))]
    return next((lender for lender in reversed(lenders) if lender), None)


class Zones:
    """The borrower's time zone at each act: the zone of the latest LoanOverdue/CaseOpened
    logged before it (the first one logged, for an act logged before any)."""

    def __init__(self, found: Sequence[Fact]) -> None:
        named = [(fact.index, _zone_name(fact)) for fact in _openings(found)]
        self._known = [(index, name) for index, name in named if name is not None]
        self._indices = [index for index, _ in self._known]

    def at(self, fact: Fact) -> tuple[str, ZoneInfo] | None:
        if not self._known:
            return None
        before = bisect_right(self._indices, fact.index - 1)
        name = self._known[max(before - 1, 0)][1]
        return name, _zone(name)


def _zone_name(fact: Fact) -> str | None:
    borrower = fact.data.get("borrower")
    name = borrower.get("timezone") if isinstance(borrower, Mapping) else None
    if not isinstance(name, str):
        return None
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # not a zone this machine knows
        return None
    return name


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local(fact: Fact, zones: Zones) -> tuple[datetime, str] | None:
    zone = zones.at(fact)
    if fact.time is None or zone is None:
        return None
    return fact.time.astimezone(zone[1]), zone[0]


def _verdict(rule: str, evidence: Iterable[int], findings: Iterable[Finding]) -> RuleVerdict:
    """Nothing judged is not applicable; anything found is a failure."""
    judged = sorted(set(evidence))
    found = sorted(findings, key=lambda finding: finding["leaf_index"])
    if not judged and not found:
        return RuleVerdict(rule=rule, verdict=NOT_APPLICABLE, evidence=[], findings=[])
    return RuleVerdict(rule=rule, verdict=FAIL if found else PASS, evidence=judged,
                       findings=found)


def _finding(fact: Fact, message: str) -> Finding:
    return Finding(leaf_index=fact.index, message=message)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _in_time_order(found: Iterable[Fact]) -> list[tuple[datetime, Fact]]:
    """The facts that have a time, each with it, by time (log order among equal times)."""
    timed = [(fact.time, fact) for fact in found if fact.time is not None]
    return sorted(timed, key=lambda pair: (pair[0], pair[1].index))


# --- C1: contact hours ------------------------------------------------------------------------


def c1_contact_hours(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Every message sent and every call attempt lies inside the pack's hours [start, end) in
    the borrower's local time."""
    found = facts(leaves)
    zones = Zones(found)
    acts = [fact for fact in found if fact.type in (SENT, ATTEMPT)]
    findings = []
    for act in acts:
        local = _local(act, zones)
        if local is None:
            findings.append(_finding(act, f"{act.type} has no readable time or borrower zone"))
        elif not pack.contact_hours.contains(local[0].time()):
            findings.append(_finding(
                act, f"{act.type} at {local[0]:%Y-%m-%d %H:%M} local time ({local[1]}), "
                     f"outside {pack.contact_hours} ({pack.name} pack)"))
    return _verdict("C1", (act.index for act in acts), findings)


# --- C2: contact frequency ----------------------------------------------------------------


def c2_frequency(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Calls are capped by every number the pack has: answered calls a borrower-local day,
    unanswered dials of one number a local day, attempts in any seven days, and the quiet
    after a conversation (us: seven days); and none is dialled without a permit.

    Outcomes are classed as the pre-dial gate classes them (`ANSWERED`; anything else is an
    unanswered dial). The caps are judged over this loan's own calls: the gate counts the
    answered calls and a number's dials across every loan of the debtor, which no one loan's
    leaves show. So `pass` means no cap was broken by this loan's calls alone."""
    found = facts(leaves)
    calls = [fact for fact in found if fact.type == ATTEMPT and fact.channel() == "call"]
    ordered = _in_time_order(calls)
    findings = [_finding(call, "call attempt dialled without a permit") for call in calls
                if call.data.get("permit_id") is None]
    findings += _daily_caps(ordered, pack, Zones(found))
    findings += _weekly_cap(ordered, pack)
    findings += _quiet_after_conversation(ordered, pack)
    return _verdict("C2", (call.index for call in calls), findings)


def _daily_caps(ordered: Sequence[tuple[datetime, Fact]], pack: PolicyPack,
                zones: Zones) -> list[Finding]:
    """At most so many answered calls a borrower-local day, and so many unanswered dials of
    one number a local day; the call past the cap is the finding."""
    answered: Counter[object] = Counter()
    unanswered: Counter[object] = Counter()
    findings = []
    for _, call in ordered:
        local = _local(call, zones)
        if local is None:
            continue
        day, outcome = local[0].date(), call.text("outcome")
        if outcome in ANSWERED:
            answered[day] += 1
            if answered[day] > pack.max_answered_calls_per_day:
                findings.append(_finding(call, f"answered call {answered[day]} on {day} local "
                                               f"(at most {pack.max_answered_calls_per_day})"))
        else:  # no_answer, wrong_number, or an outcome the gate does not know: unanswered
            number = call.text("number_sha256") or "an unknown number"
            unanswered[number, day] += 1
            if unanswered[number, day] > pack.max_unanswered_per_number_per_day:
                findings.append(_finding(
                    call, f"unanswered dial {unanswered[number, day]} of one number on {day} "
                          f"local (at most {pack.max_unanswered_per_number_per_day})"))
    return findings


def _weekly_cap(ordered: Sequence[tuple[datetime, Fact]], pack: PolicyPack) -> list[Finding]:
    """At most so many attempts in any 7 x 24 h; an attempt exactly a week earlier is out of
    the window."""
    findings, start = [], 0
    for at, (moment, call) in enumerate(ordered):
        while ordered[start][0] <= moment - WEEK:
            start += 1
        count = at - start + 1
        if count > pack.max_call_attempts_per_7_days:
            findings.append(_finding(call, f"call attempt {count} within 7 days (at most "
                                           f"{pack.max_call_attempts_per_7_days})"))
    return findings


def _quiet_after_conversation(ordered: Sequence[tuple[datetime, Fact]],
                              pack: PolicyPack) -> list[Finding]:
    """No attempt within the pack's quiet period after a conversation (an answered, promised
    or refused call; us: 7 x 24 h)."""
    quiet = getattr(pack, "quiet_after_conversation", QUIET.get(pack.name, timedelta(0)))
    if not isinstance(quiet, timedelta) or quiet <= timedelta(0):
        return []
    findings = []
    conversation: tuple[datetime, Fact] | None = None
    for moment, call in ordered:
        if conversation is not None and conversation[0] < moment < conversation[0] + quiet:
            findings.append(_finding(call, f"call attempt within {_span(quiet)} after the "
                                           f"conversation at leaf {conversation[1].index}"))
        if call.text("outcome") in ANSWERED:
            conversation = moment, call
    return findings


def _span(period: timedelta) -> str:
    return f"{period.days} days" if period == timedelta(days=period.days) else str(period)


# --- C3: stopped channels, disputes, holds ----------------------------------------------------


@dataclass(frozen=True)
class Stop:
    """A span in which contact is forbidden: on `channels`, or on every channel (None)."""

    index: int
    start: datetime
    end: datetime | None
    channels: frozenset[str] | None
    why: str

    def forbids(self, channel: str | None, moment: datetime) -> bool:
        on_channel = self.channels is None or channel in self.channels
        return on_channel and self.start <= moment and (self.end is None or moment < self.end)


def stops(found: Sequence[Fact]) -> list[Stop]:
    """Cease requests and permanent holds (forever, on their channels), open disputes (every
    channel, until resolved) and holds (their channels or all, until resumed), by their own
    times: taken in time order, so a ContactResumed (DisputeResolved) ends only a span that
    began before it, whatever the order they were logged in. One without a readable time
    ends nothing."""
    result: list[Stop] = []
    opened: dict[tuple[str, str], Stop] = {}
    for moment, fact in _in_time_order(found):
        if fact.type == "CeaseContactRequested":
            channels = frozenset(str(c) for c in fact.data.get("channels") or ())
            result.append(Stop(fact.index, moment, None, channels,
                               f"the borrower asked to stop {', '.join(sorted(channels))}"))
        elif fact.type == "ContactHeld" and fact.data.get("permanent") is True:
            result.append(_opened_stop(fact))  # a cease: no ContactResumed lifts it
        elif fact.type in ("DisputeOpened", "ContactHeld"):
            key = _span_key(fact)
            if key not in opened:
                opened[key] = _opened_stop(fact)
        elif fact.type in ("DisputeResolved", "ContactResumed"):
            key = _span_key(fact)
            stop = opened.get(key)
            if stop is not None and stop.start < moment:
                del opened[key]
                result.append(Stop(stop.index, stop.start, moment, stop.channels, stop.why))
    return result + list(opened.values())


def _span_key(fact: Fact) -> tuple[str, str]:
    if fact.type.startswith("Dispute"):
        return "dispute", str(fact.data.get("dispute_id"))
    return "hold", str(fact.data.get("hold_id"))


def _opened_stop(fact: Fact) -> Stop:
    assert fact.time is not None
    if fact.type == "DisputeOpened":
        return Stop(fact.index, fact.time, None, None, "a dispute is open")
    listed = fact.data.get("channels")
    channels = frozenset(str(c) for c in listed) if isinstance(listed, list) else None
    return Stop(fact.index, fact.time, None, channels, "contact is on hold")


def c3_stopped_contact(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """No message or call on a channel the borrower stopped, none while a dispute is open or
    while contact is held."""
    found = facts(leaves)
    spans = stops(found)
    if not spans:
        return _verdict("C3", (), ())
    acts = [fact for fact in found if fact.type in (SENT, ATTEMPT) and fact.time is not None]
    findings = []
    for act in acts:
        assert act.time is not None
        stop = next((s for s in spans if s.forbids(act.channel(), act.time)), None)
        if stop is not None:
            findings.append(_finding(act, f"{act.type} on {act.channel()} at {_utc(act.time)} "
                                          f"while {stop.why} (leaf {stop.index})"))
    return _verdict("C3", [s.index for s in spans] + [a.index for a in acts], findings)


# --- C4: nothing after the case closed -------------------------------------------------------


def _paid_up(value: object) -> bool:
    """A `remaining_overdue` of nothing left ("0", "0.00"): the payment closes the case."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    try:
        remaining = Decimal(str(value).strip())
    except InvalidOperation:
        return False
    return remaining.is_finite() and remaining <= 0


def closes(fact: Fact) -> bool:
    """A CaseClosed, or a PaymentReceived that leaves nothing overdue (the escalation service
    closes the case on it; the close counts from `paid_at`, not from when CaseClosed came)."""
    return fact.type == "CaseClosed" or (
        fact.type == "PaymentReceived" and _paid_up(fact.data.get("remaining_overdue")))


def closures(found: Sequence[Fact]) -> list[tuple[Fact, datetime | None]]:
    """Each close with the time the case was opened again after it (None: still closed), by
    event time: a CaseOpened reopens only if its time is after the close's, whatever the order
    they were logged in."""
    result: list[tuple[Fact, datetime | None]] = []
    current: Fact | None = None
    for moment, fact in _in_time_order(found):
        if current is None and closes(fact):
            current = fact
        elif current is not None and fact.type == "CaseOpened" \
                and current.time is not None and moment > current.time:
            result.append((current, moment))
            current = None
    return result + ([(current, None)] if current is not None else [])


def c4_nothing_after_closing(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Nothing is sent, dialled, permitted or tasked after the case closed (a CaseClosed, or a
    payment leaving nothing overdue), until it reopens."""
    found = facts(leaves)
    spans = closures(found)
    if not spans:
        return _verdict("C4", (), ())
    acts = [fact for fact in found
            if fact.type in (SENT, ATTEMPT, TASK, PERMIT) and fact.time is not None]
    findings = []
    for act in acts:
        assert act.time is not None
        moment = act.time
        closed = next((c for c, reopened in spans if c.time is not None and c.time < moment
                       and (reopened is None or moment < reopened)), None)
        if closed is not None:
            findings.append(_finding(act, f"{act.type} at {_utc(moment)} after the case closed "
                                          f"(leaf {closed.index})"))
    return _verdict("C4", [c.index for c, _ in spans] + [a.index for a in acts], findings)


# --- C5: approved templates with the required content ---------------------------------------


def _named_template(fact: Fact) -> tuple[str, int] | None:
    template_id, version = fact.data.get("template_id"), fact.data.get("template_version")
    if not isinstance(template_id, str) or not isinstance(version, int) \
            or isinstance(version, bool):
        return None
    return template_id, version


@cache
def template_problems(template_id: str, version: int) -> tuple[str, ...]:
    """What is wrong with a template's text in any of its languages, for its kind."""
    template = approved(template_id, version)
    if template is None:
        return (f"template {template_id} v{version} is not approved",)
    problems = []
    for language in sorted(template.texts):
        shown = template.fields(language)
        if template.kind == REMINDER:
            missing = [item for item in REQUIRED_CONTENT if item not in shown]
            if missing:
                problems.append(f"template {template_id} v{version} ({language}) lacks "
                                f"{', '.join(missing)}")
        elif template.kind == VISIT_NOTICE:
            missing = [item for item in NOTICE_CONTENT if item not in shown]
            if missing:
                problems.append(f"template {template_id} v{version} ({language}) lacks "
                                f"{', '.join(missing)}")
        elif template.kind == REESTABLISH:
            debt = [item for item in DEBT_CONTENT if item in shown]
            if debt:
                problems.append(f"template {template_id} v{version} ({language}) speaks of "
                                f"the debt: {', '.join(debt)}")
        else:
            problems.append(f"template {template_id} v{version} is of kind {template.kind}, "
                            f"which no content rule covers")
    return tuple(problems)


def c5_templates(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Every message and call task names an approved template of its channel, whose every
    language shows what its kind requires; one directed at the borrower (party or phone_kind
    `borrower`, or none) uses a `reminder` template, since a `reestablish` one lacks what the
    borrower must be shown. (A contact's template is judged by C13.)"""
    acts = [fact for fact in facts(leaves) if fact.type in (SENT, TASK)]
    findings = []
    for act in acts:
        named = _named_template(act)
        if named is None:
            findings.append(_finding(act, f"{act.type} names no template id and version"))
            continue
        problems = template_problems(*named)
        findings += [_finding(act, problem) for problem in problems]
        template = approved(*named)
        channel = act.channel() if act.type == SENT else "call"
        if template is not None and template.channel != channel:
            findings.append(_finding(act, f"template {named[0]} v{named[1]} is approved for "
                                          f"{template.channel}, not {channel}"))
        if template is not None and template.kind == REESTABLISH \
                and _whom(act) in (None, "borrower"):
            missing = _not_shown(template)
            findings.append(_finding(act, f"{act.type} to the borrower with {REESTABLISH} "
                                          f"template {named[0]} v{named[1]}, one for a contact "
                                          f"person" + (f" that lacks {', '.join(missing)}"
                                                       if missing else "")))
    return _verdict("C5", (act.index for act in acts), findings)


def _not_shown(template: Template) -> list[str]:
    """The required items some language of the template does not show."""
    return [item for item in REQUIRED_CONTENT
            if any(item not in template.fields(language) for language in template.texts)]


# --- C13: no disclosure to third parties ------------------------------------------------------


def _whom(fact: Fact) -> str | None:
    """Whom an act reached: `borrower`, `contact`, `other`, or None when it does not say."""
    return fact.text("phone_kind") if fact.type == TASK else fact.text("party")


class Streak:
    """Consecutive failed attempts on the borrower up to a moment: those with a `failed`
    outcome (C13: no_answer, wrong_number) add one, any other starts the count again."""

    def __init__(self, found: Sequence[Fact], failed: frozenset[str] = FAILED) -> None:
        attempts = _in_time_order(fact for fact in found if fact.type == ATTEMPT
                                  and _whom(fact) in (None, "borrower"))
        self.times = [moment for moment, _ in attempts]
        self.indices = [fact.index for _, fact in attempts]
        self.counts: list[int] = []
        count = 0
        for _, fact in attempts:
            count = count + 1 if fact.text("outcome") in failed else 0
            self.counts.append(count)

    def at(self, moment: datetime) -> int:
        """The streak counting the attempts at or before `moment`."""
        done = bisect_right(self.times, moment)
        return self.counts[done - 1] if done else 0


def c13_third_parties(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """A pre-agreed contact only after enough failed attempts on the borrower and only to
    re-establish contact (us: at most so many contacts a loan); never anyone else."""
    found = facts(leaves)
    acts = [fact for fact in found if fact.type in (SENT, ATTEMPT, TASK, PERMIT)
            and _whom(fact) in ("contact", "other")]
    if not acts:
        return _verdict("C13", (), ())
    streak = Streak(found)
    findings = [f for act in acts for f in _third_party_findings(act, streak, pack)]
    findings += _third_party_cap(acts, pack)
    return _verdict("C13", [a.index for a in acts] + streak.indices, findings)


def _third_party_findings(act: Fact, streak: Streak, pack: PolicyPack) -> list[Finding]:
    if _whom(act) == "other":
        return [_finding(act, f"{act.type} reached someone who is neither the borrower nor a "
                              f"pre-agreed contact")]
    findings = []
    failed = streak.at(act.time) if act.time is not None else 0
    if failed < pack.third_party_after_failed_attempts:
        findings.append(_finding(act, f"{act.type} to a contact person after {failed} "
                                      f"consecutive failed attempts on the borrower (at least "
                                      f"{pack.third_party_after_failed_attempts})"))
    named = _named_template(act)
    if named is not None:
        template = approved(*named)
        if template is None or template.kind != REESTABLISH:
            findings.append(_finding(act, f"{act.type} to a contact person with template "
                                          f"{named[0]} v{named[1]}, not an approved "
                                          f"{REESTABLISH} one"))
    return findings


def _third_party_cap(acts: Sequence[Fact], pack: PolicyPack) -> list[Finding]:
    cap = getattr(pack, "max_third_party_contacts", THIRD_PARTY_CAP.get(pack.name))
    if not isinstance(cap, int):
        return []
    contacts = _in_time_order(a for a in acts if a.type in (SENT, ATTEMPT)
                              and _whom(a) == "contact")
    return [_finding(act, f"contact {n} with a third party on this loan (at most {cap})")
            for n, (_, act) in enumerate(contacts, start=1) if n > cap]


# --- C6: a field visit only on the escalation criteria; promises decided on the payments ----


VISIT, ESCALATED, STRATEGY = "VisitRequested", "CaseEscalated", "StrategyPublished"
KEPT, BROKEN = "PromiseKept", "PromiseBroken"
PROMISED, PLANNED = "PromiseToPayMade", "RepaymentPlanAgreed"
TERMS = ("LoanOverdue", "CaseOpened", "CaseUpdated")  # the reports of the loan's terms
# C6 counts a refusal as a failed contact too (C13 does not): the borrower was reached but not
# brought to pay. An answered call or a promise starts the count again.
UNREACHED = frozenset({"no_answer", "refused", "wrong_number"})
VISIT_REASONS = ("dpd", "amount", "failed_contacts")
ESCALATION_REASONS = ("dpd", "amount", "failed_contacts", "broken_promises")
WHOLE = frozenset({"dpd", "failed_contacts", "broken_promises"})  # counts, in whole numbers
VISIT_FIELDS = {"dpd": "min_dpd", "amount": "min_amount", "failed_contacts": "min_failed_contacts"}
MAX_BROKEN_INSTALMENTS = 2  # the shipped default strategy's promises.max_broken_instalments
SHIPPED_DEFAULT = "default"  # the lender id of the shipped default strategy's policy_version
_POLICY = re.compile(r"(?P<pack>[^/]+)/(?P<lender>.+)@(?P<version>[1-9][0-9]{0,6})"
                     r"(?:#(?P<variant>[a-z][a-z0-9_]*))?")
_WHOLE = re.compile(r"0|[1-9][0-9]{0,8}")

Figures = dict[str, Decimal]  # a reason code's number: a threshold, a floor, a fact


@dataclass(frozen=True)
class Policy:
    """A `policy_version` read: `<pack-version>/<lender_id>@<N>`, optionally `#<variant>`."""

    pack_version: str
    lender: str
    version: int
    variant: str | None

    def __str__(self) -> str:
        return f"{self.lender}@{self.version}" + (f"#{self.variant}" if self.variant else "")


def policy_of(text: object) -> Policy | None:
    if not isinstance(text, str):
        return None
    named = _POLICY.fullmatch(text)
    if named is None:
        return None
    return Policy(named["pack"], named["lender"], int(named["version"]), named["variant"])


def strategies_named(leaves: Leaves) -> set[tuple[str, int]]:
    """The lenders' strategies (lender id, version) that the loan's visit requests name, but
    for the shipped default: the StrategyPublished leaves C6 reads beside the loan's own
    (their subject is the lender, so they are not among the loan's leaves)."""
    named = set()
    for fact in facts(leaves):
        policy = policy_of(fact.data.get("policy_version")) if fact.type == VISIT else None
        if policy is not None and policy.lender != SHIPPED_DEFAULT:
            named.add((policy.lender, policy.version))
    return named


def _strategies(found: Sequence[Fact]) -> dict[tuple[str, int], Fact]:
    """Each StrategyPublished by lender and version; the first logged where one is repeated."""
    result: dict[tuple[str, int], Fact] = {}
    for fact in found:
        version = fact.data.get("version")
        if fact.type == STRATEGY and isinstance(fact.text("lender_id"), str) \
                and isinstance(version, int) and not isinstance(version, bool):
            result.setdefault((str(fact.text("lender_id")), version), fact)
    return result


def _whole(value: object) -> Decimal | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value) if value >= 0 else None
    return Decimal(value) if isinstance(value, str) and _WHOLE.fullmatch(value) else None


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _figure(value: object, code: str) -> Decimal | None:
    """A number as a reason states it: a whole number for a count, a decimal for an amount."""
    return _whole(value) if code in WHOLE else _decimal(value)


def _day(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _day_end(day: date, zone: ZoneInfo) -> datetime:
    """00:00 of the next day in the borrower's zone: when a day's promise falls due."""
    following = day + timedelta(days=1)
    return datetime(following.year, following.month, following.day, tzinfo=zone)


def _pack_floors(pack: PolicyPack) -> Figures:
    return {"dpd": Decimal(pack.visit_min_dpd), "amount": Decimal(pack.visit_min_amount),
            "failed_contacts": Decimal(pack.visit_min_failed_contacts)}


@dataclass(frozen=True)
class Strategy:
    """What a VisitRequested's policy_version says of the strategy it followed: the visit
    thresholds it must state (None: the log holds no StrategyPublished for it, or it is the
    shipped default, so only the pack's floors bind), how many broken instalments end a
    plan, and what is wrong with it."""

    expected: Figures | None
    max_broken: int
    problems: tuple[str, ...]
    shown: str = ""


def _strategy_of(visit: Fact, pack: PolicyPack,
                 strategies: Mapping[tuple[str, int], Fact]) -> Strategy:
    text = visit.data.get("policy_version")
    policy = policy_of(text)
    if policy is None:
        shown = repr(text)[:80] if isinstance(text, str) else "none"
        problem = (f"visit requested under policy_version {shown}, which names no strategy "
                   f"(<pack-version>/<lender_id>@<N>, optionally #<variant>)")
        return Strategy(None, MAX_BROKEN_INSTALMENTS, (problem,))
    published = strategies.get((policy.lender, policy.version))
    if policy.lender == SHIPPED_DEFAULT or published is None:
        return Strategy(None, MAX_BROKEN_INSTALMENTS, ())
    document = published.data.get("document")
    document = document if isinstance(document, Mapping) else {}
    where = f"strategy {policy.lender}@{policy.version} (leaf {published.index})"
    visit_rules: object = document.get("visit")
    if policy.variant is not None:
        variants = document.get("variants")
        chosen = next((v for v in variants if isinstance(v, Mapping)
                       and v.get("name") == policy.variant), None) \
            if isinstance(variants, list) else None
        if chosen is None:
            problem = f"visit requested under variant {policy.variant}, which {where} lacks"
            return Strategy(None, MAX_BROKEN_INSTALMENTS, (problem,))
        if isinstance(chosen.get("visit"), Mapping):
            visit_rules = chosen["visit"]
    read = {code: _figure(visit_rules.get(key), code) if isinstance(visit_rules, Mapping)
            else None for code, key in VISIT_FIELDS.items()}
    promises = document.get("promises")
    most = _whole(promises.get("max_broken_instalments")) if isinstance(promises, Mapping) \
        else None
    max_broken = int(most) if most is not None and most > 0 else MAX_BROKEN_INSTALMENTS
    floors = _pack_floors(pack)
    if any(number is None for number in read.values()):
        return Strategy(None, max_broken, (f"{where} has no readable visit thresholds",))
    expected = {code: max(floors[code], number) for code, number in read.items()
                if number is not None}
    return Strategy(expected, max_broken, (), f"{where} with the {pack.name} pack")


@dataclass(frozen=True)
class Span:
    """A hardship or a dispute: from `start` until `end` (None: not over)."""

    index: int
    name: str
    start: datetime
    end: datetime | None

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment and (self.end is None or moment < self.end)


def _hardships(found: Sequence[Fact]) -> list[Span]:
    """Each HardshipGranted (the first of its id) from `starts_at` to the earlier of its
    `ends_at` and the `ended_at` of a HardshipEnded of the same id."""
    ended: dict[str, datetime] = {}
    for fact in found:
        at = _aware(fact.data.get("ended_at")) if fact.type == "HardshipEnded" else None
        name = fact.text("hardship_id")
        if at is not None and name is not None:
            ended[name] = min(ended.get(name, at), at)
    spans: dict[str, Span] = {}
    for fact in found:
        name = fact.text("hardship_id")
        if fact.type != "HardshipGranted" or name is None or name in spans:
            continue
        start, end = _aware(fact.data.get("starts_at")), _aware(fact.data.get("ends_at"))
        if start is not None and end is not None:
            spans[name] = Span(fact.index, name, start, min(end, ended.get(name, end)))
    return list(spans.values())


def _disputes(found: Sequence[Fact]) -> list[Span]:
    """Each dispute from its `opened_at` to the `resolved_at` of a later DisputeResolved of
    the same id, taken in time order as C3 takes them."""
    result: list[Span] = []
    opened: dict[str, Span] = {}
    for moment, fact in _in_time_order(found):
        name = str(fact.data.get("dispute_id"))
        if fact.type == "DisputeOpened" and name not in opened:
            opened[name] = Span(fact.index, name, moment, None)
        elif fact.type == "DisputeResolved" and name in opened \
                and opened[name].start <= moment:
            result.append(Span(opened[name].index, name, opened[name].start, moment))
            del opened[name]
    return result + list(opened.values())


def _stops_visits(fact: Fact) -> bool:
    """A cease-contact request naming field visits (a permanent hold on every channel too)."""
    listed = fact.data.get("channels")
    if fact.type == "CeaseContactRequested":
        return isinstance(listed, list) and "visit" in listed
    if fact.type == "ContactHeld" and fact.data.get("permanent") is True:
        return listed is None or (isinstance(listed, list) and "visit" in listed)
    return False


@dataclass(frozen=True)
class Standing:
    """What the log shows of a loan at one moment: the figures a decision is judged by."""

    moment: datetime
    terms: Fact
    zone: ZoneInfo
    zone_name: str
    due: date
    amount: Decimal
    suspended: int
    dpd: int
    failed_contacts: int
    broken_promises: int

    def figure(self, code: str) -> Decimal:
        return {"dpd": Decimal(self.dpd), "amount": self.amount,
                "failed_contacts": Decimal(self.failed_contacts),
                "broken_promises": Decimal(self.broken_promises)}[code]

    def why(self, code: str) -> str:
        """How the log comes to the figure, for a finding."""
        if code == "dpd":
            today = self.moment.astimezone(self.zone).date()
            return (f"due {self.due}, {today} in {self.zone_name}, {self.suspended} days in "
                    f"hardship")
        if code == "amount":
            return f"overdue at {_utc(self.moment)}"
        if code == "failed_contacts":
            return "consecutive failed contacts with the borrower"
        return "promises broken"


class LoanFacts:
    """A loan's facts by their own times, to ask what held at a moment (at or before it)."""

    def __init__(self, found: Sequence[Fact]) -> None:
        self.terms = _in_time_order(fact for fact in found if fact.type in TERMS)
        self._term_times = [moment for moment, _ in self.terms]
        self.amounts: list[tuple[datetime, Decimal]] = []
        for moment, fact in _in_time_order(fact for fact in found
                                           if fact.type in (*TERMS, "PaymentReceived")):
            key = "remaining_overdue" if fact.type == "PaymentReceived" else "amount_overdue"
            amount = _decimal(fact.data.get(key))
            if amount is not None:
                self.amounts.append((moment, amount))
        self._amount_times = [moment for moment, _ in self.amounts]
        self.streak = Streak(found, UNREACHED)
        self.hardships = _hardships(found)
        self.disputes = _disputes(found)
        self.closures = closures(found)
        self.openings = sorted(fact.time for fact in found
                               if fact.type == "CaseOpened" and fact.time is not None)
        self.entries = sorted(fact.time for fact in found if fact.type in (ESCALATED, "CaseOpened")
                              and fact.time is not None)
        self.broken = sorted(fact.time for fact in found
                             if fact.type == BROKEN and fact.time is not None)
        self.decisions = [fact for _, fact in _in_time_order(
            fact for fact in found if fact.type in (KEPT, BROKEN))]
        self.promises = [fact for fact in found if fact.type == PROMISED]
        self.plans = [fact for fact in found if fact.type == PLANNED]
        self.ceases = [fact for fact in found if _stops_visits(fact)]
        self.payments = [fact for fact in found if fact.type == "PaymentReceived"]
        self.closes = [fact for fact in found if (fact.type == "CaseClosed"
                                                  and fact.text("reason") == "paid")
                       or (fact.type == "PaymentReceived" and closes(fact))]

    def zone_at(self, moment: datetime) -> tuple[str, ZoneInfo] | None:
        """The borrower's zone in the latest report of the terms at or before `moment`."""
        for _, fact in reversed(self.terms[:bisect_right(self._term_times, moment)]):
            name = _zone_name(fact)
            if name is not None:
                return name, _zone(name)
        return None

    def standing(self, moment: datetime) -> Standing | str:
        """The loan's figures at `moment`, or what the log lacks to tell them."""
        reported = self.terms[:bisect_right(self._term_times, moment)]
        if not reported:
            return "the log holds no LoanOverdue, CaseOpened or CaseUpdated at or before it"
        zone = self.zone_at(moment)
        due = next((day for _, fact in reversed(reported)
                    if (day := _day(fact.data.get("due_date"))) is not None), None)
        amounts = self.amounts[:bisect_right(self._amount_times, moment)]
        if zone is None or due is None or not amounts:
            lacking = "borrower time zone" if zone is None else "due date" if due is None \
                else "amount overdue"
            return f"the log shows no {lacking} at or before it"
        suspended = sum(
            max(0, (min(moment, span.end or moment).astimezone(zone[1]).date()
                    - span.start.astimezone(zone[1]).date()).days)
            for span in self.hardships if span.start <= moment)
        days = (moment.astimezone(zone[1]).date() - due).days
        return Standing(
            moment, reported[-1][1], zone[1], zone[0], due, amounts[-1][1], suspended,
            max(0, days - suspended), self.streak.at(moment),
            bisect_right(self.broken, moment))

    def closed_at(self, moment: datetime) -> Fact | None:
        return next((close for close, reopened in self.closures
                     if close.time is not None and close.time <= moment
                     and (reopened is None or moment < reopened)), None)

    def decided(self, promise_id: str, moment: datetime) -> Fact | None:
        return next((decision for decision in self.decisions
                     if decision.text("promise_id") == promise_id
                     and decision.time is not None and decision.time <= moment), None)

    def current_promise(self, moment: datetime, zone: ZoneInfo) -> Fact | None:
        """A promise made at or before `moment` whose due day has not ended and that no
        decision has decided by then."""
        for promise in self.promises:
            name, due = promise.text("promise_id"), _day(promise.data.get("due_date"))
            if promise.time is None or name is None or due is None or promise.time > moment:
                continue
            if moment < _day_end(due, zone) and self.decided(name, moment) is None:
                return promise
        return None

    def current_plan(self, moment: datetime, max_broken: int) -> Fact | None:
        """A plan agreed at or before `moment` with an instalment not yet decided and fewer
        than `max_broken` broken ones."""
        for plan in self.plans:
            name, instalments = plan.text("plan_id"), plan.data.get("instalments")
            if plan.time is None or name is None or plan.time > moment \
                    or not isinstance(instalments, list):
                continue
            decided: dict[int, bool] = {}  # instalment number -> broken
            for decision in self.decisions:
                number = _instalment(decision.text("promise_id"), name)
                if number is not None and 1 <= number <= len(instalments) \
                        and decision.time is not None and decision.time <= moment:
                    decided.setdefault(number, decision.type == BROKEN)
            if len(decided) < len(instalments) and sum(decided.values()) < max_broken:
                return plan
        return None

    def paid_between(self, start: datetime, end: datetime) -> Decimal:
        total = Decimal(0)
        for payment in self.payments:
            amount = _decimal(payment.data.get("amount"))
            if amount is not None and payment.time is not None \
                    and start <= payment.time <= end:
                total += amount
        return total

    def closed_as_paid(self, start: datetime, end: datetime) -> Fact | None:
        """A CaseClosed as paid, or a payment that left nothing overdue, in [start, end]."""
        return next((close for close in self.closes
                     if close.time is not None and start <= close.time <= end), None)


def _instalment(promise_id: str | None, plan_id: str) -> int | None:
    """n of an instalment's promise id `<plan_id>/<n>` (n from 1); None for any other id."""
    prefix = f"{plan_id}/"
    if promise_id is None or not promise_id.startswith(prefix):
        return None
    number = _whole(promise_id[len(prefix):])
    return int(number) if number is not None and number >= 1 else None


def _reasons(fact: Fact) -> tuple[dict[str, Mapping[str, Any]], list[str]]:
    """A decision's reasons by code, and the codes it gives more than once."""
    listed = fact.data.get("reasons")
    found: dict[str, Mapping[str, Any]] = {}
    twice: list[str] = []
    for reason in listed if isinstance(listed, list) else ():
        code = reason.get("code") if isinstance(reason, Mapping) else None
        if not isinstance(code, str):
            continue
        if code in found:
            twice.append(code)
        else:
            found[code] = reason
    return found, twice


def _shown_figure(raw: object) -> str:
    return repr(raw)[:40] if raw is not None else "none"


def _reason_problems(what: str, code: str, reason: Mapping[str, Any],
                     standing: Standing | None) -> list[str]:
    """A reason's value is the log's figure, which reaches its threshold."""
    value = _figure(reason.get("value"), code)
    threshold = _figure(reason.get("threshold"), code)
    problems = []
    if value is None:
        problems.append(f"{what} with a {code} reason whose value "
                        f"{_shown_figure(reason.get('value'))} is not a number")
    if threshold is None:
        problems.append(f"{what} with a {code} reason whose threshold "
                        f"{_shown_figure(reason.get('threshold'))} is not a number")
    actual = standing.figure(code) if standing is not None else value
    if standing is not None and value is not None and value != actual:
        problems.append(f"{what} with {code} {reason.get('value')}, but the log shows {actual} "
                        f"({standing.why(code)})")
    if actual is not None and threshold is not None and actual < threshold:
        problems.append(f"{what} with {code} {actual}, below its threshold "
                        f"{reason.get('threshold')}")
    return problems


def _threshold_problems(code: str, reason: Mapping[str, Any], pack: PolicyPack,
                        strategy: Strategy) -> list[str]:
    """A visit's threshold is never below the pack's floor, and is exactly what the strategy
    it followed sets (the higher of the pack's and the strategy's), when the log holds it."""
    threshold = _figure(reason.get("threshold"), code)
    floor = _pack_floors(pack)[code]
    if threshold is None:
        return []
    stated = f"visit requested with a {code} threshold of {reason.get('threshold')}"
    if threshold < floor:
        return [f"{stated}, below the {pack.name} pack's {floor}"]
    if strategy.expected is not None and threshold != strategy.expected[code]:
        return [f"{stated}, not the {strategy.expected[code]} of {strategy.shown}"]
    return []


def _visit_state(standing: Standing, loan: LoanFacts, strategy: Strategy) -> list[str]:
    """No visit on a closed case, in a dispute or hardship, after the borrower stopped visits,
    or while a promise or plan stands."""
    moment, problems = standing.moment, []
    if not loan.openings or loan.openings[0] > moment:
        problems.append("visit requested with no case opened at or before it")
    closed = loan.closed_at(moment)
    if closed is not None:
        problems.append(f"visit requested after the case closed (leaf {closed.index})")
    problems += [f"visit requested while dispute {span.name} is open (leaf {span.index})"
                 for span in loan.disputes if span.holds(moment)]
    problems += [f"visit requested during hardship {span.name} (leaf {span.index}, until "
                 f"{_utc(span.end or moment)})" for span in loan.hardships if span.holds(moment)]
    ceased = next((fact for fact in loan.ceases if fact.time is not None
                   and fact.time <= moment), None)
    if ceased is not None:
        problems.append(f"visit requested after the borrower asked for no field visits "
                        f"(leaf {ceased.index})")
    promise = loan.current_promise(moment, standing.zone)
    if promise is not None:
        problems.append(f"visit requested while promise {promise.text('promise_id')} (leaf "
                        f"{promise.index}, due {promise.data.get('due_date')}) stands")
    plan = loan.current_plan(moment, strategy.max_broken)
    if plan is not None:
        problems.append(f"visit requested while repayment plan {plan.text('plan_id')} (leaf "
                        f"{plan.index}) stands")
    return problems


def _visit_problems(visit: Fact, loan: LoanFacts, pack: PolicyPack,
                    strategies: Mapping[tuple[str, int], Fact]) -> list[str]:
    """A VisitRequested holds against the loan's facts at its time, with its reasons."""
    strategy = _strategy_of(visit, pack, strategies)
    reasons, twice = _reasons(visit)
    problems = list(strategy.problems)
    problems += [f"visit requested with its {code} reason given twice" for code in twice
                 if code in VISIT_REASONS]
    standing = loan.standing(visit.time) if visit.time is not None \
        else "it has no readable time"
    if isinstance(standing, str):
        problems.append(f"visit requested, but {standing}: a visit with no facts behind it")
    known = standing if isinstance(standing, Standing) else None
    for code in VISIT_REASONS:
        reason = reasons.get(code)
        if reason is None:
            problems.append(f"visit requested without a {code} reason (value and threshold)")
            continue
        problems += _reason_problems("visit requested", code, reason, known)
        problems += _threshold_problems(code, reason, pack, strategy)
    if known is not None:
        policy = policy_of(visit.data.get("policy_version"))
        lender = known.terms.text("lender_id")
        if policy is not None and policy.lender not in (SHIPPED_DEFAULT, lender):
            problems.append(f"visit requested under the strategy of lender {policy.lender}, "
                            f"not of the loan's lender {lender}")
        problems += _visit_state(known, loan, strategy)
    return problems


def _repeated_visits(found: Sequence[Fact], loan: LoanFacts) -> list[Finding]:
    """One visit request a stage entry: a second with no CaseEscalated (or CaseOpened) after
    the first, up to its own time, is a finding."""
    findings, previous = [], None
    for moment, visit in _in_time_order(fact for fact in found if fact.type == VISIT):
        if previous is not None and not any(previous[0] < entry <= moment
                                            for entry in loan.entries):
            findings.append(_finding(visit, f"visit requested again in one stage entry (leaf "
                                            f"{previous[1].index} asked already, and the case "
                                            f"entered no stage since)"))
        previous = moment, visit
    return findings


def _escalation_problems(escalation: Fact, loan: LoanFacts) -> list[str]:
    """A CaseEscalated's reasons are the log's figures at its time, each at its threshold."""
    what = f"escalation to {escalation.text('to_stage')}"
    standing = loan.standing(escalation.time) if escalation.time is not None \
        else "it has no readable time"
    problems = []
    if isinstance(standing, str):
        problems.append(f"{what}, but {standing}: an escalation with no facts behind it")
    known = standing if isinstance(standing, Standing) else None
    reasons, twice = _reasons(escalation)
    problems += [f"{what} with its {code} reason given twice" for code in twice
                 if code in ESCALATION_REASONS]
    for code in ESCALATION_REASONS:
        if code in reasons:
            problems += _reason_problems(what, code, reasons[code], known)
    stated = escalation.data.get("days_past_due")
    if known is not None and isinstance(stated, int) and not isinstance(stated, bool) \
            and stated != known.dpd:
        problems.append(f"{what} states days_past_due {stated}, but the log shows {known.dpd} "
                        f"({known.why('dpd')})")
    return problems


@dataclass(frozen=True)
class Promised:
    """What a decision decides: from when payments count, how much they must reach, by when."""

    source: Fact
    since: datetime
    amount: Decimal
    due: date


def _promised(decision: Fact, loan: LoanFacts) -> Promised | str:
    """The promise (or the plan's instalment, cumulated) a PromiseKept/Broken decides."""
    name, plan_id = decision.text("promise_id"), decision.text("plan_id")
    if name is None:
        return "names no promise_id"
    if plan_id is None:
        promise = next((fact for fact in loan.promises if fact.text("promise_id") == name), None)
        if promise is None:
            return f"no PromiseToPayMade {name} is in the log"
        amount, due = _decimal(promise.data.get("amount")), _day(promise.data.get("due_date"))
        if promise.time is None or amount is None or due is None:
            return f"promise {name} (leaf {promise.index}) is not readable"
        return Promised(promise, promise.time, amount, due)
    plan = next((fact for fact in loan.plans if fact.text("plan_id") == plan_id), None)
    if plan is None:
        return f"no RepaymentPlanAgreed {plan_id} is in the log"
    instalments = plan.data.get("instalments")
    number = _instalment(name, plan_id)
    if number is None or not isinstance(instalments, list) or number > len(instalments):
        return f"{name} is no instalment of plan {plan_id} (leaf {plan.index})"
    amounts = [_decimal(item.get("amount")) if isinstance(item, Mapping) else None
               for item in instalments[:number]]
    last = instalments[number - 1]
    due = _day(last.get("due_date")) if isinstance(last, Mapping) else None
    if plan.time is None or due is None or any(amount is None for amount in amounts):
        return f"plan {plan_id} (leaf {plan.index}) is not readable"
    return Promised(plan, plan.time, sum((a for a in amounts if a is not None), Decimal(0)), due)


def _decision_problems(decision: Fact, loan: LoanFacts, earlier: Fact | None) -> list[str]:
    """A PromiseKept when the payments since the promise reached its amount by the end of its
    due day (or the case closed as paid), a PromiseBroken when they did not; never decided
    before that day ended, but for a promise kept by the case closing as paid."""
    kept = decision.type == KEPT
    what = f"{decision.type} {decision.text('promise_id')}"
    if decision.time is None:
        return [f"{what} has no readable decided_at"]
    promised = _promised(decision, loan)
    if isinstance(promised, str):
        return [f"{what} decides a promise the log does not show: {promised}"]
    problems = []
    if earlier is not None:
        problems.append(f"{what} decides a promise decided already (leaf {earlier.index})")
    if _day(decision.data.get("due_date")) != promised.due:
        problems.append(f"{what} states due_date {decision.data.get('due_date')}, but the "
                        f"promise (leaf {promised.source.index}) is due {promised.due}")
    if decision.time < promised.since:
        problems.append(f"{what} decided at {_utc(decision.time)}, before the promise was made "
                        f"(leaf {promised.source.index})")
    paid = loan.paid_between(promised.since, decision.time)
    closed = loan.closed_as_paid(promised.since, decision.time)
    zone = loan.zone_at(decision.time)
    if zone is None:
        problems.append(f"{what}: the log shows no borrower time zone at or before the "
                        f"decision, so not when the due day {promised.due} ended")
    elif decision.time < _day_end(promised.due, zone[1]) and not (kept and closed):
        problems.append(f"{what} decided at {_utc(decision.time)}, before the due day "
                        f"{promised.due} ended in {zone[0]}")
    window = f"payments from {_utc(promised.since)} to {_utc(decision.time)} come to {paid}"
    if kept and paid < promised.amount and closed is None:
        problems.append(f"{what}, but {window}, short of the {promised.amount} promised (leaf "
                        f"{promised.source.index}), and the case did not close as paid")
    if not kept and paid >= promised.amount:
        problems.append(f"{what}, but {window}, reaching the {promised.amount} promised (leaf "
                        f"{promised.source.index})")
    if not kept and closed is not None:
        problems.append(f"{what}, but the case closed as paid (leaf {closed.index}) before it "
                        f"was decided")
    return problems


def c6_visits(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """A field visit only when the escalation criteria hold, with the reasons recorded:
    each VisitRequested against the loan's facts at its time and the strategy it names; each
    CaseEscalated's reasons against the same facts; and each promise decided (which feeds
    the criteria) against the payments."""
    found = facts(leaves)
    judged = [fact for fact in found if fact.type in (VISIT, ESCALATED, KEPT, BROKEN)]
    if not judged:
        return _verdict("C6", (), ())
    loan, strategies = LoanFacts(found), _strategies(found)
    findings = [_finding(fact, problem) for fact in judged if fact.type == VISIT
                for problem in _visit_problems(fact, loan, pack, strategies)]
    findings += _repeated_visits(found, loan)
    findings += [_finding(fact, problem) for fact in judged if fact.type == ESCALATED
                 for problem in _escalation_problems(fact, loan)]
    first: dict[str, Fact] = {}
    for decision in loan.decisions:
        name = str(decision.text("promise_id"))
        findings += [_finding(decision, problem)
                     for problem in _decision_problems(decision, loan, first.get(name))]
        first.setdefault(name, decision)
    findings += [_finding(fact, f"{fact.type} {fact.text('promise_id')} has no readable "
                                f"decided_at") for fact in judged
                 if fact.type in (KEPT, BROKEN) and fact.time is None]
    return _verdict("C6", (fact.index for fact in judged), findings)


# --- C7-C12, C14: field visits and complaints -----------------------------------------------


VERIFIED, SCHEDULED, CHECKED_IN = "DebtorVerified", "VisitScheduled", "VisitCheckedIn"
DELIVERED, DECLINED, CONSENTED = "VisitNoticeDelivered", "VisitDeclined", "VisitConsented"
RECORDED, STORED = "VisitRecorded", "VisitRecordingStored"
FILED, RESOLVED = "ComplaintFiled", "ComplaintResolved"
REGISTERED, REVOKED, AGENCY = "CollectorRegistered", "CollectorRevoked", "AgencyRegistered"
# The registry's leaves: their subject is the collector (the agency) their data names, not a
# loan. C10 reads those of the collectors a loan's visits name, and of those collectors'
# agencies, handed in among the loan's leaves as C6's strategies are.
REGISTRY = {REGISTERED: "collector_id", REVOKED: "collector_id", AGENCY: "agency_id"}
REFERENCES = frozenset({STRATEGY, *REGISTRY})  # leaves that are read with a loan's, not its own
ON_SITE = (SCHEDULED, CHECKED_IN)  # the acts that send collectors to the borrower
CHECKED = ("name", "phone", "amount_overdue", "days_past_due")  # C7: what a verification checks
CREDENTIALS = ("id_card", "badge", "authorisation_letter")  # C10: what each collector shows
WRITE_UP = timedelta(hours=24)  # C12: a check-in with no write-up fails once this has passed


def _own(found: Sequence[Fact]) -> list[Fact]:
    """The loan's own facts: not the strategies and registry entries read beside them."""
    return [fact for fact in found if fact.type not in REFERENCES]


def as_of(found: Sequence[Fact]) -> datetime | None:
    """How far the loan's own leaves show time to have passed: the latest time they state. A
    deadline after it has not passed as far as the log knows (C12, C14 judge by it), so a
    verdict is a function of the leaves alone and `dunwell verify` re-derives it."""
    times = [fact.time for fact in _own(found) if fact.time is not None]
    return max(times) if times else None


def _ids(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def collectors_named(leaves: Leaves) -> set[str]:
    """The collectors the loan's schedules and check-ins name: whose CollectorRegistered and
    CollectorRevoked leaves C10 reads beside the loan's own."""
    return {collector for fact in facts(leaves) if fact.type in ON_SITE
            for collector in _ids(fact.data.get("collector_ids"))}


def agencies_named(leaves: Leaves) -> set[str]:
    """The agencies of those collectors' registrations (among `leaves`): whose
    AgencyRegistered leaves C10 reads too."""
    return {agency for fact in facts(leaves) if fact.type == REGISTERED
            if (agency := fact.text("agency_id")) is not None}


class VisitTrail:
    """Each visit's facts by type, in time order (log order among equal times)."""

    def __init__(self, found: Sequence[Fact]) -> None:
        self._of: dict[tuple[str, str], list[Fact]] = {}
        for _, fact in _in_time_order(_own(found)):
            visit = fact.text("visit_id")
            if visit is not None:
                self._of.setdefault((visit, fact.type), []).append(fact)

    def of(self, visit: str | None, kind: str) -> list[Fact]:
        return self._of.get((visit, kind), []) if visit is not None else []

    def latest(self, visit: str | None, kind: str, moment: datetime | None) -> Fact | None:
        """The visit's last fact of `kind` at or before `moment`."""
        earlier = [fact for fact in self.of(visit, kind)
                   if moment is not None and fact.time is not None and fact.time <= moment]
        return earlier[-1] if earlier else None


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end

    def __str__(self) -> str:
        return f"{_utc(self.start)}..{_utc(self.end)}"


def _window(fact: Fact | None, start: str = "scheduled_start", end: str = "scheduled_end"
            ) -> Window | None:
    if fact is None:
        return None
    first, last = _aware(fact.data.get(start)), _aware(fact.data.get(end))
    return Window(first, last) if first is not None and last is not None else None


def _visit_named(fact: Fact) -> str:
    return f"visit {fact.text('visit_id') or '(none named)'}"


def _hours(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{'-' if minutes < 0 else ''}{abs(minutes) // 60} h {abs(minutes) % 60:02d} min"


# C7


def c7_verified(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Every schedule and check-in of a visit comes after a DebtorVerified of that visit that
    checked the borrower's name, phone, amount overdue and DPD; after the borrower declined
    the visit, after a new one."""
    found = facts(leaves)
    trail = VisitTrail(found)
    acts = [fact for fact in _own(found) if fact.type in ON_SITE]
    findings, read = [], []
    for act in acts:
        visit = act.text("visit_id")
        if act.time is None:
            findings.append(_finding(act, f"{act.type} has no readable time"))
            continue
        declined = trail.latest(visit, DECLINED, act.time)
        checks = [check for check in trail.of(visit, VERIFIED) if check.time is not None
                  and check.time <= act.time
                  and (declined is None or declined.time is None or check.time > declined.time)]
        complete = [check for check in checks
                    if not set(CHECKED) - set(_ids(check.data.get("checked")))]
        read += [check.index for check in checks] + ([declined.index] if declined else [])
        if complete:
            continue
        if checks:
            unchecked = sorted(set(CHECKED) - set(_ids(checks[-1].data.get("checked"))),
                               key=CHECKED.index)
            problem = (f"the verification before it (leaf {checks[-1].index}) did not check "
                       f"{', '.join(unchecked)}")
        elif declined is not None:
            problem = (f"not verified again since the borrower declined it (leaf "
                       f"{declined.index})")
        else:
            problem = "no DebtorVerified of that visit comes before it"
        findings.append(_finding(act, f"{act.type} of {_visit_named(act)} at {_utc(act.time)}: "
                                      f"{problem}"))
    return _verdict("C7", [act.index for act in acts] + read, findings)


# C8


def c8_notice(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Every check-in is inside the window its visit was scheduled for, and a notice of that
    window (its start and end) was delivered to the borrower at least the pack's lead before
    the window opened."""
    found = facts(leaves)
    trail = VisitTrail(found)
    check_ins = [fact for fact in _own(found) if fact.type == CHECKED_IN]
    findings, read = [], []
    for check_in in check_ins:
        visit = check_in.text("visit_id")
        schedule = trail.latest(visit, SCHEDULED, check_in.time)
        window = _window(schedule)
        what = f"check-in of {_visit_named(check_in)}"
        if check_in.time is None or schedule is None or window is None:
            findings.append(_finding(check_in, f"{what} with no readable time or no schedule "
                                               f"before it: no notified window to keep"))
            continue
        read.append(schedule.index)
        notices = [notice for notice in trail.of(visit, DELIVERED)
                   if _window(notice, "window_start", "window_end") == window
                   and notice.time is not None]
        read += [notice.index for notice in notices]
        timely = [notice for notice in notices
                  if notice.time is not None and window.start - notice.time >= pack.notice_lead]
        if not notices:
            findings.append(_finding(check_in, f"{what}: no notice of the window {window} was "
                                               f"delivered to the borrower"))
        elif not timely:
            first = notices[0]
            assert first.time is not None
            findings.append(_finding(check_in, f"{what}: the notice (leaf {first.index}) was "
                                               f"delivered {_hours(window.start - first.time)} "
                                               f"before the window; the {pack.name} pack needs "
                                               f"{_hours(pack.notice_lead)}"))
        if not window.holds(check_in.time):
            findings.append(_finding(check_in, f"{what} at {_utc(check_in.time)}, outside the "
                                               f"notified window {window}"))
    return _verdict("C8", [fact.index for fact in check_ins] + read, findings)


# C9


def c9_refusal(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """After the borrower declined a visit, no visit of the loan is scheduled or checked in
    until the borrower consents (a VisitConsented after the refusal). Judged over every
    schedule and check-in: one with no refusal before it respected none to respect."""
    found = _own(facts(leaves))
    declines = [(moment, fact) for moment, fact in _in_time_order(found) if fact.type == DECLINED]
    consents = [moment for moment, fact in _in_time_order(found) if fact.type == CONSENTED]
    acts = [fact for fact in found if fact.type in ON_SITE and fact.time is not None]
    findings = []
    for act in acts:
        assert act.time is not None
        before = [(moment, fact) for moment, fact in declines if moment <= act.time]
        if not before:
            continue
        refused_at, refusal = before[-1]
        if not any(refused_at < moment <= act.time for moment in consents):
            findings.append(_finding(act, f"{act.type} of {_visit_named(act)} at "
                                          f"{_utc(act.time)}, after the borrower declined a "
                                          f"visit (leaf {refusal.index}) and with no consent "
                                          f"since"))
    judged = [fact.index for _, fact in declines] + [fact.index for fact in acts] \
        + [fact.index for fact in found if fact.type == CONSENTED]
    return _verdict("C9", judged, findings)


# C10


class Registry:
    """The collectors' and agencies' registrations as the log states them, by their times."""

    def __init__(self, found: Sequence[Fact]) -> None:
        self._by: dict[tuple[str, str], list[tuple[datetime, Fact]]] = {}
        for moment, fact in _in_time_order(fact for fact in found if fact.type in REGISTRY):
            subject = fact.text(REGISTRY[fact.type])
            if subject is not None:
                self._by.setdefault((fact.type, subject), []).append((moment, fact))

    def latest(self, kind: str, subject: str, moment: datetime) -> Fact | None:
        earlier = [fact for at, fact in self._by.get((kind, subject), []) if at <= moment]
        return earlier[-1] if earlier else None

    def revoked(self, collector: str, registration: Fact, moment: datetime) -> Fact | None:
        """A revocation after the registration in force (re-registering ends one) and at or
        before `moment`."""
        assert registration.time is not None
        after = (registration.time, registration.index)
        return next((fact for at, fact in self._by.get((REVOKED, collector), [])
                     if (at, fact.index) > after and at <= moment), None)

    def problems(self, collector: str, lender: str, moment: datetime, first: date,
                 last: date) -> tuple[list[str], list[int]]:
        """What kept `collector` from visiting for `lender` at `moment` on the local days
        first..last, and the registry leaves read to tell."""
        registration = self.latest(REGISTERED, collector, moment)
        if registration is None:
            return [f"{collector} was not registered at {_utc(moment)}"], []
        read, problems = [registration.index], []
        revocation = self.revoked(collector, registration, moment)
        if revocation is not None:
            read.append(revocation.index)
            problems.append(f"{collector}'s registration was revoked (leaf {revocation.index})")
        certification = registration.data.get("certification")
        certified = _day(certification.get("valid_until")) \
            if isinstance(certification, Mapping) else None
        if certified is None or certified < last:
            problems.append(f"{collector}'s certification is valid until {certified}, not "
                            f"through {last}")
        letter = registration.data.get("authorisation_letter")
        letter = letter if isinstance(letter, Mapping) else {}
        named = letter.get("letter_id")
        valid_from, valid_until = _day(letter.get("valid_from")), _day(letter.get("valid_until"))
        if letter.get("lender_id") != lender:
            problems.append(f"{collector}'s authorisation letter {named} is not from the "
                            f"loan's lender {lender}")
        elif valid_from is None or valid_until is None or valid_from > first \
                or valid_until < last:
            problems.append(f"{collector}'s authorisation letter {named} is valid "
                            f"{valid_from}..{valid_until}, not {first}..{last}")
        agency_id = registration.text("agency_id")
        named_agency = registration.data.get("agency_id")
        if named_agency is not None and not (agency_id or "").strip():
            problems.append(f"{collector}'s registration names an agency that cannot be read")
        elif agency_id is not None:
            agency = self.latest(AGENCY, agency_id, moment)
            if agency is None:
                problems.append(f"{collector}'s agency {agency_id} was not registered at "
                                f"{_utc(moment)}")
            else:
                read.append(agency.index)
                if lender not in _ids(agency.data.get("authorised_lenders")):
                    problems.append(f"{collector}'s agency {agency_id} is not authorised by "
                                    f"the lender {lender} (leaf {agency.index})")
                review = _day(agency.data.get("next_review_due"))
                if review is None or review < last:
                    problems.append(f"{collector}'s agency {agency_id} was due its review on "
                                    f"{review} (leaf {agency.index})")
        return problems, read


def _days_of(act: Fact, zones: Zones) -> tuple[date, date] | None:
    """The borrower-local days an act must be valid on: a schedule's window, a check-in's
    day."""
    zone = zones.at(act)
    if zone is None or act.time is None:
        return None
    if act.type == CHECKED_IN:
        day = act.time.astimezone(zone[1]).date()
        return day, day
    window = _window(act)
    if window is None:
        return None
    days = sorted((window.start.astimezone(zone[1]).date(), window.end.astimezone(zone[1]).date()))
    return days[0], days[1]


def c10_collectors(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Every schedule and check-in names at least the pack's number of collectors; at a
    check-in they are the ones scheduled and each showed ID card, badge and letter; and each
    was then registered and not revoked, certified and holding this lender's letter for the
    days of the visit, and of an agency (if any) this lender authorised and whose review was
    not overdue: as the registry's leaves state, at that moment."""
    found = facts(leaves)
    trail, zones, registry = VisitTrail(found), Zones(found), Registry(found)
    lender = lender_of(leaves)
    acts = [fact for fact in _own(found) if fact.type in ON_SITE]
    findings: list[Finding] = []
    read: list[int] = []
    for act in acts:
        what = f"{act.type} of {_visit_named(act)}"
        collectors = list(dict.fromkeys(_ids(act.data.get("collector_ids"))))
        if len(collectors) < pack.min_collectors_per_visit:
            findings.append(_finding(act, f"{what} with {len(collectors)} collector(s); the "
                                          f"{pack.name} pack needs at least "
                                          f"{pack.min_collectors_per_visit}"))
        if act.type == CHECKED_IN:
            findings += _check_in_problems(act, collectors, trail, read)
        days = _days_of(act, zones)
        if act.time is None or days is None or lender is None:
            findings.append(_finding(act, f"{what}: the log shows no time, window, borrower "
                                          f"zone or lender to judge its collectors by"))
            continue
        for collector in collectors:
            problems, seen = registry.problems(collector, lender, act.time, *days)
            read += seen
            findings += [_finding(act, f"{what}: {problem}") for problem in problems]
    return _verdict("C10", [act.index for act in acts] + read, findings)


def _check_in_problems(check_in: Fact, collectors: Sequence[str], trail: VisitTrail,
                       read: list[int]) -> list[Finding]:
    what = f"check-in of {_visit_named(check_in)}"
    found = []
    shown = check_in.data.get("credentials_presented")
    shown = shown if isinstance(shown, Mapping) else {}
    missing = [item for item in CREDENTIALS if shown.get(item) is not True]
    if missing:
        found.append(_finding(check_in, f"{what} without {', '.join(missing)} shown"))
    schedule = trail.latest(check_in.text("visit_id"), SCHEDULED, check_in.time)
    if schedule is None:
        found.append(_finding(check_in, f"{what} with no schedule naming its collectors"))
        return found
    read.append(schedule.index)
    unscheduled = [c for c in collectors if c not in _ids(schedule.data.get("collector_ids"))]
    if unscheduled:
        found.append(_finding(check_in, f"{what} by {', '.join(unscheduled)}, not scheduled "
                                        f"for it (leaf {schedule.index})"))
    return found


# C11


def _address_on_record(kind: str, fact: Fact, found: Sequence[Fact]) -> bool:
    """The latest report of the loan's terms logged before `fact` has an address of `kind`."""
    reports = [report for report in found if report.type in TERMS and report.index < fact.index]
    borrower = reports[-1].data.get("borrower") if reports else None
    address = borrower.get(f"{kind}_address") if isinstance(borrower, Mapping) else None
    return isinstance(address, str) and bool(address.strip())


def c11_hours_and_place(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Every visit window lies inside the pack's hours on one borrower-local day, at a kind of
    address the loan has on record; every check-in is inside the hours and at that address;
    no home is entered without a consent recorded."""
    found = facts(leaves)
    zones, trail = Zones(found), VisitTrail(found)
    acts = [fact for fact in _own(found) if fact.type in (*ON_SITE, RECORDED)]
    hours, findings = pack.contact_hours, []
    for act in acts:
        what = f"{act.type} of {_visit_named(act)}"
        zone = zones.at(act)
        if act.type == SCHEDULED:
            window, kind = _window(act), act.text("address_kind")
            if window is None or zone is None:
                findings.append(_finding(act, f"{what} with no readable window or borrower "
                                              f"zone"))
            else:
                start, end = window.start.astimezone(zone[1]), window.end.astimezone(zone[1])
                if start.date() != end.date() or not hours.contains(start.time()) \
                        or end.time() > hours.end or end < start:
                    findings.append(_finding(act, f"{what}: the window {start:%Y-%m-%d %H:%M}.."
                                                  f"{end:%Y-%m-%d %H:%M} local ({zone[0]}) is "
                                                  f"not inside {hours} on one day ({pack.name} "
                                                  f"pack)"))
            if kind is None or not _address_on_record(kind, act, found):
                findings.append(_finding(act, f"{what} at the borrower's {kind} address, which "
                                              f"the loan does not have on record"))
        elif act.type == CHECKED_IN:
            local = _local(act, zones)
            if local is None:
                findings.append(_finding(act, f"{what} with no readable time or borrower zone"))
            elif not hours.contains(local[0].time()):
                findings.append(_finding(act, f"{what} at {local[0]:%Y-%m-%d %H:%M} local "
                                              f"({local[1]}), outside {hours}"))
            schedule = trail.latest(act.text("visit_id"), SCHEDULED, act.time)
            kind = act.text("address_kind")
            if schedule is not None and kind is not None \
                    and kind != schedule.text("address_kind"):
                findings.append(_finding(act, f"{what} at the {kind} address, not the "
                                              f"{schedule.text('address_kind')} one notified "
                                              f"(leaf {schedule.index})"))
        elif act.data.get("home_entered") is True \
                and not (act.text("entry_consent") or "").strip():
            findings.append(_finding(act, f"{what}: the home was entered with no consent "
                                          f"recorded"))
    return _verdict("C11", (act.index for act in acts), findings)


# C12


def c12_recorded(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Every check-in is written up (a VisitRecorded of the visit with its outcome, the
    borrower's attitude, the difficulties and the recording's length) naming a recording a
    VisitRecordingStored of that visit holds; one not written up fails once 24 h have passed
    since the check-in, as far as the loan's leaves show time to have passed (`as_of`).
    (Calls: v1's events carry no recording of a call, so this judges visits.)"""
    found = facts(leaves)
    trail, seen = VisitTrail(found), as_of(found)
    check_ins = [fact for fact in _own(found) if fact.type == CHECKED_IN]
    findings, read = [], []
    for check_in in check_ins:
        visit = check_in.text("visit_id")
        records = [fact for fact in trail.of(visit, RECORDED)
                   if check_in.time is None or fact.time is None or fact.time >= check_in.time]
        stored = {sha: fact for fact in trail.of(visit, STORED)
                  if (sha := fact.text("recording_sha256")) is not None}
        what = f"check-in of {_visit_named(check_in)}"
        if not records:
            if check_in.time is None or (seen is not None and seen >= check_in.time + WRITE_UP):
                findings.append(_finding(check_in, f"{what} not written up: no VisitRecorded "
                                                   f"of it by {_utc(seen) if seen else 'now'}, "
                                                   f"{_hours(WRITE_UP)} after it"))
            continue
        record = records[0]
        read.append(record.index)
        if record.time is not None and check_in.time is not None \
                and record.time > check_in.time + WRITE_UP:
            findings.append(_finding(record, f"{record.type} of {_visit_named(record)} at "
                                             f"{_utc(record.time)}, more than "
                                             f"{_hours(WRITE_UP)} after the check-in"))
        named = record.text("recording_sha256")
        holder = stored.get(named) if named is not None else None
        if holder is None:
            findings.append(_finding(record, f"{record.type} of {_visit_named(record)} names "
                                             f"recording {named}, which no "
                                             f"VisitRecordingStored of that visit holds"))
        else:
            read.append(holder.index)
        blank = [key for key in ("outcome", "borrower_attitude", "difficulties")
                 if not (record.text(key) or "").strip()]
        seconds = record.data.get("recording_seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
            blank.append("recording_seconds")
        if blank:
            findings.append(_finding(record, f"{record.type} of {_visit_named(record)} leaves "
                                             f"out {', '.join(blank)}"))
    return _verdict("C12", [fact.index for fact in check_ins] + read, findings)


# C14


def c14_complaints(leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    """Every complaint is answered (a ComplaintResolved with an outcome) within the pack's
    days of its filing; one unanswered fails once they have passed, as far as the loan's
    leaves show time to have passed (`as_of`); an answer to a complaint the log does not show
    is a finding too."""
    found = _own(facts(leaves))
    filed = [fact for fact in found if fact.type == FILED]
    answers = [fact for _, fact in _in_time_order(found) if fact.type == RESOLVED]
    if not filed and not answers:
        return _verdict("C14", (), ())
    days, seen, findings = pack.complaint_answer_days, as_of(found), []
    known = {fact.text("complaint_id") for fact in filed}
    for complaint in filed:
        name = complaint.text("complaint_id")
        if complaint.time is None:
            findings.append(_finding(complaint, f"complaint {name} has no readable filed_at"))
            continue
        deadline = complaint.time + timedelta(days=days)
        stated = _aware(complaint.data.get("answer_by"))
        if stated is not None and stated > deadline:
            findings.append(_finding(complaint, f"complaint {name} is to be answered by "
                                                f"{_utc(stated)}, later than the {days} days "
                                                f"the {pack.name} pack allows"))
        answer = next((fact for fact in answers if fact.text("complaint_id") == name
                       and (fact.time is None or fact.time >= complaint.time)), None)
        if answer is None:
            if seen is not None and seen >= deadline:
                findings.append(_finding(complaint, f"complaint {name} filed {_utc(complaint.time)}"
                                                    f" is unanswered at {_utc(seen)}, past its "
                                                    f"{days} days ({_utc(deadline)})"))
        elif answer.time is None or answer.time > deadline:
            findings.append(_finding(answer, f"complaint {name} answered at "
                                             f"{_utc(answer.time) if answer.time else 'no time'}"
                                             f", after its {days} days ({_utc(deadline)})"))
        elif not (answer.text("outcome") or "").strip():
            findings.append(_finding(answer, f"complaint {name} answered with no outcome"))
    findings += [_finding(answer, f"answer to complaint {answer.text('complaint_id')}, which "
                                  f"the log does not show filed") for answer in answers
                 if answer.text("complaint_id") not in known]
    return _verdict("C14", [fact.index for fact in filed + answers], findings)


# --- all of them ------------------------------------------------------------------------------


Check = Callable[[Leaves, PolicyPack], RuleVerdict]

CHECKS: Mapping[str, Check] = {
    "C1": c1_contact_hours, "C2": c2_frequency, "C3": c3_stopped_contact,
    "C4": c4_nothing_after_closing, "C5": c5_templates, "C6": c6_visits,
    "C7": c7_verified, "C8": c8_notice, "C9": c9_refusal, "C10": c10_collectors,
    "C11": c11_hours_and_place, "C12": c12_recorded, "C13": c13_third_parties,
    "C14": c14_complaints,
}


def not_evaluated(rule: str) -> RuleVerdict:
    return RuleVerdict(rule=rule, verdict=NOT_EVALUATED, evidence=[], findings=[])


def judge(leaves: Leaves, default_pack: str, *, strict: bool = True) -> list[RuleVerdict]:
    """A verdict for every rule, C1 to C14 in order, under the loan's pack.

    A rule that raises is `Unjudgeable` (naming the leaf); with `strict=False` it answers
    instead `not_evaluated` with one finding, "could not be judged", at that leaf, and the
    other rules are judged all the same."""
    rules = PACKS[pack_of(leaves, default_pack)]
    verdicts = []
    for rule in RULES:
        if rule not in CHECKS:
            verdicts.append(not_evaluated(rule))
            continue
        try:
            verdicts.append(_checked(rule, leaves, rules))
        except Unjudgeable as failure:
            if strict:
                raise
            verdicts.append(_not_judged(failure, leaves))
    return verdicts


def _not_judged(failure: Unjudgeable, leaves: Leaves) -> RuleVerdict:
    """A rule that raised, as a verdict: never `pass`, and the leaf it raised on."""
    where = failure.leaf_index
    if where is None:
        where = leaves[0][0] if leaves else 0
    message = f"could not be judged: the rule raised {type(failure.cause).__name__} on this leaf"
    return RuleVerdict(rule=failure.rule, verdict=NOT_EVALUATED, evidence=[],
                       findings=[Finding(leaf_index=where, message=message)])


def _checked(rule: str, leaves: Leaves, pack: PolicyPack) -> RuleVerdict:
    check = CHECKS[rule]
    try:
        return check(leaves, pack)
    except Exception as cause:  # a leaf the rule cannot read: name it
        raise Unjudgeable(rule, _first_failing(check, leaves, pack), cause) from cause


def _first_failing(check: Check, leaves: Leaves, pack: PolicyPack) -> int | None:
    """A leaf ending a prefix (in log order) on which `check` raises while the prefix before
    it does not, found by halving: `leaves[:low]` is judged and `leaves[:high]` raises
    throughout. When a leaf that breaks a rule breaks every longer prefix too (as a leaf the
    rule cannot read does), this is the first such leaf."""
    def raises(count: int) -> bool:
        try:
            check(leaves[:count], pack)
        except Exception:  # noqa: BLE001 - whatever it raised on the whole, it raises here
            return True
        return False

    if raises(0):
        return None
    low, high = 0, len(leaves)
    while high - low > 1:
        middle = (low + high) // 2
        if raises(middle):
            high = middle
        else:
            low = middle
    return leaves[high - 1][0]


def rederive(leaves: Sequence[tuple[int, bytes]], default_pack: str
             ) -> tuple[str, list[RuleVerdict]]:
    """The pack and verdicts of raw leaf bytes: what `dunwell verify` compares a bundle with.
    Leaves the rules cannot read raise `Unjudgeable` (a ValueError naming the leaf)."""
    if default_pack not in PACKS:
        raise ValueError(f"unknown policy pack {default_pack!r}")
    parsed = [(index, event) for index, data in leaves
              if (event := parse_leaf(data)) is not None]
    return pack_of(parsed, default_pack), judge(parsed, default_pack)
