"""The audit's verdicts on the conduct rules (DOMAIN.md, C1-C14), judged from the log alone.

Written apart from the services that enforce the rules, and fed only by the leaves: an auditor
trusts the log and its proofs, not the reminder service's code. Each rule is one small pure
function of one loan's leaves (in log order) and the pack's numbers, answering `pass`, `fail`
(with a finding naming the leaf), `not_applicable` (nothing on this loan to judge) or
`not_evaluated` (a rule this module does not judge yet: never a silent `pass`).

Judged by event time: the times the data states (`sent_at`, `attempted_at`, ...), not when the
audit happened to consume an event. The borrower's local time is the zone of the loan's latest
LoanOverdue/CaseOpened logged before the act.

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
import sys
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.policy_pack import PACKS, PolicyPack
from shared.templates import (
    APPROVED,
    DEBT_CONTENT,
    REESTABLISH,
    REMINDER,
    REQUIRED_CONTENT,
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
    """Consecutive failed attempts on the borrower up to a moment (an answered, refused or
    promised attempt starts the count again)."""

    def __init__(self, found: Sequence[Fact]) -> None:
        attempts = _in_time_order(fact for fact in found if fact.type == ATTEMPT
                                  and _whom(fact) in (None, "borrower"))
        self.times = [moment for moment, _ in attempts]
        self.indices = [fact.index for _, fact in attempts]
        self.counts: list[int] = []
        count = 0
        for _, fact in attempts:
            count = count + 1 if fact.text("outcome") in FAILED else 0
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


# --- all of them ------------------------------------------------------------------------------


Check = Callable[[Leaves, PolicyPack], RuleVerdict]

CHECKS: Mapping[str, Check] = {
    "C1": c1_contact_hours, "C2": c2_frequency, "C3": c3_stopped_contact,
    "C4": c4_nothing_after_closing, "C5": c5_templates, "C13": c13_third_parties,
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
