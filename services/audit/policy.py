"""The audit's verdicts on the conduct rules, for one loan: the store's leaves in, verdicts out.

The rules themselves live in `compliance.py` (standard library only, so the offline verifier
can run them too); this module turns the store's leaves into what they read (the loan's own,
the lenders' StrategyPublished leaves its visit requests name, and the registry leaves of the
collectors its visits name and of their agencies), and says when verdicts
judged earlier still answer for a checkpoint: over the same leaves, under the same default
pack and the same version of the rules. Pure: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from shared.policy_pack import PACKS

from services.audit.compliance import (
    AGENCY,
    FAIL,
    REFERENCES,
    REGISTERED,
    REVOKED,
    RULES,
    RULES_DIGEST,
    STRATEGY,
    Leaves,
    Unjudgeable,
    agencies_named,
    collectors_named,
    event_time,
    judge,
    lender_of,
    pack_of,
    parse_leaf,
    rules_version,
    strategies_named,
)
from services.audit.store import Leaf, Verdicts, Violation

__all__ = ["AGENCY", "COLLECTOR_ENTRIES", "NOT_ABOUT_A_LOAN", "RULES", "STRATEGY",
           "Unjudgeable", "events_of", "judge_loan", "judging_version", "named_agencies",
           "named_collectors", "named_lenders", "named_strategies", "still_holds"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Subjects of these are collectors, agencies or lenders, not loans: nothing to judge (each is
# read with the loans whose visits name it).
NOT_ABOUT_A_LOAN = REFERENCES
COLLECTOR_ENTRIES = (REGISTERED, REVOKED)  # a collector's leaves, as C10 reads them


def events_of(leaves: Sequence[Leaf], below: int | None = None) -> Leaves:
    """The leaves (below `below`, if given) that still hold a readable event (erased bytes
    judge nothing)."""
    return [(leaf.leaf_index, event) for leaf in leaves
            if below is None or leaf.leaf_index < below
            if (event := parse_leaf(leaf.data)) is not None]


def named_lenders(leaves: Sequence[Leaf]) -> list[str]:
    """The lenders whose StrategyPublished leaves the loan's verdicts read: those of the
    strategies its visit requests name (its leaves, in log order)."""
    return sorted({lender for lender, _ in strategies_named(events_of(leaves))})


def named_strategies(leaves: Sequence[Leaf], candidates: Sequence[Leaf]) -> list[Leaf]:
    """Of `candidates` (the named lenders' StrategyPublished leaves), those of a lender and
    version the loan's visit requests name."""
    named = strategies_named(events_of(leaves))
    found = []
    for leaf in candidates:
        event = parse_leaf(leaf.data) if leaf.event_type == STRATEGY else None
        data = event["data"] if event is not None else {}
        lender, version = data.get("lender_id"), data.get("version")
        if isinstance(lender, str) and isinstance(version, int) and (lender, version) in named:
            found.append(leaf)
    return found


def named_collectors(leaves: Sequence[Leaf]) -> list[str]:
    """The collectors whose CollectorRegistered / CollectorRevoked leaves the loan's verdicts
    read: those its schedules and check-ins name."""
    return sorted(collectors_named(events_of(leaves)))


def named_agencies(registry: Sequence[Leaf]) -> list[str]:
    """The agencies whose AgencyRegistered leaves the loan's verdicts read: those of the
    collectors' registrations (`registry`, the collectors' leaves)."""
    return sorted(agencies_named(events_of(registry)))


def judge_loan(loan_id: str, leaves: Sequence[Leaf], tree_size: int,
               default_pack: str, *, strict: bool = True) -> Verdicts:
    """Judge one loan's leaves below `tree_size` (with the StrategyPublished and registry
    leaves they name, in log order): every rule, and each finding of a failed rule as a
    violation. A rule that raises is `Unjudgeable`; with `strict=False` it is instead
    `not_evaluated` with a finding "could not be judged" (which is not a violation)."""
    events = events_of(leaves, tree_size)
    rules = judge(events, default_pack, strict=strict)
    lender = lender_of(events)
    times = {index: event_time(event) for index, event in events}
    violations = [_violation(loan_id, verdict["rule"], finding["leaf_index"],
                             finding["message"], times.get(finding["leaf_index"]), lender)
                  for verdict in rules if verdict["verdict"] == FAIL
                  for finding in verdict["findings"]]
    pack = pack_of(events, default_pack)
    reads = sorted({lender for lender, _ in strategies_named(events)}
                   | collectors_named(events) | agencies_named(events))
    return Verdicts(loan_id, tree_size, pack, default_pack, rules, tuple(violations),
                    rules_version=rules_version(pack), reads=tuple(reads))


def _violation(loan_id: str, rule: str, leaf_index: int, message: str,
               moment: datetime | None, lender: str | None) -> Violation:
    try:
        utc = (moment or EPOCH).astimezone(UTC)
    except (OverflowError, ValueError):  # a time the clock cannot place in UTC
        utc = EPOCH
    at_us = (utc - EPOCH) // timedelta(microseconds=1)
    return Violation(loan_id, rule, leaf_index, utc.isoformat().replace("+00:00", "Z"), at_us,
                     message, lender)


def judging_version(default_pack: str) -> str:
    """What the catch-up over the whole log is judged under: the default pack and the version
    of every pack and of the rules. A change of any (an upgrade, another AUDIT_PACK) judges
    the log again from its first leaf."""
    packs = ",".join(f"{name}={PACKS[name].version}" for name in sorted(PACKS))
    return f"{default_pack}/{packs}/{RULES_DIGEST[:16]}"


def still_holds(stored: Verdicts, size: int, default_pack: str, indices: Sequence[int]) -> bool:
    """Verdicts judged over the leaves below `stored.tree_size` answer for `size` when the loan
    has the same leaves below both, under the same default pack and the same version of the
    rules (the rules' source and the loan's pack's `version`)."""
    low, high = sorted((stored.tree_size, size))
    return stored.default_pack == default_pack \
        and stored.rules_version == rules_version(stored.pack) \
        and not any(low <= index < high for index in indices)
