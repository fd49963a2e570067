"""The audit's verdicts on the conduct rules (DOMAIN.md, C1–C14), judged from the log alone.

This is where each rule's check lives, written apart from the services that enforce it: a
check reads the loan's leaves (the events exactly as logged) and the pack's numbers, and
answers pass, fail or not applicable with the leaf indices of its evidence. A rule that has
no check yet is `not_evaluated` — never `pass`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.policy_pack import PolicyPack

RULES: Mapping[str, str] = {
    "C1": "contact only inside allowed hours, in the borrower's local time",
    "C2": "contact frequency is capped",
    "C3": "no contact on a stopped channel or during an open dispute",
    "C4": "nothing after payment",
    "C5": "messages carry the required content from an approved template",
    "C6": "a field visit only when the escalation criteria hold, with reasons",
    "C7": "the debtor's data is verified before a visit",
    "C8": "advance notice of time and place reaches the borrower, and the visit keeps to it",
    "C9": "a borrower's refusal of a visit is respected",
    "C10": "only certified, authorised collectors visit, and they show their credentials",
    "C11": "visits within allowed hours, at the registered address, no entry without consent",
    "C12": "every visit and call is recorded and its outcome written down",
    "C13": "no disclosure to third parties",
    "C14": "complaints are recorded and answered",
}


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not_applicable"
    NOT_EVALUATED = "not_evaluated"


@dataclass(frozen=True)
class Finding:
    leaf_index: int
    message: str


@dataclass(frozen=True)
class RuleVerdict:
    rule: str
    verdict: Verdict
    evidence: tuple[int, ...] = ()
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class LoggedEvent:
    """One leaf of a loan's timeline, decoded: what every check reads."""

    leaf_index: int
    type: str
    time: str | None
    data: Mapping[str, Any] = field(default_factory=dict)


Check = Callable[[Sequence[LoggedEvent], PolicyPack], RuleVerdict]

# Each rule's check, by id. Empty until the issues that enforce the rules add their checks.
CHECKS: Mapping[str, Check] = {}


def judge(events: Sequence[LoggedEvent], pack: PolicyPack) -> list[RuleVerdict]:
    """A verdict for every rule, C1 to C14, in order."""
    return [CHECKS[rule](events, pack) if rule in CHECKS
            else RuleVerdict(rule, Verdict.NOT_EVALUATED)
            for rule in RULES]
