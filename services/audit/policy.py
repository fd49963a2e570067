"""The audit's verdicts on the conduct rules, for one loan: the store's leaves in, verdicts out.

The rules themselves live in `compliance.py` (standard library only, so the offline verifier
can run them too); this module turns the store's leaves into what they read, and says when
verdicts judged earlier still answer for a checkpoint. Pure: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.audit.compliance import (
    RULES,
    Leaves,
    event_time,
    judge,
    lender_of,
    pack_of,
    parse_leaf,
)
from services.audit.store import Leaf, Verdicts, Violation

__all__ = ["NOT_ABOUT_A_LOAN", "RULES", "events_of", "judge_loan", "still_holds"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Subjects of these are collectors or agencies, not loans: nothing to judge.
NOT_ABOUT_A_LOAN = frozenset({"CollectorRegistered", "CollectorRevoked", "AgencyRegistered"})


def events_of(leaves: Sequence[Leaf], below: int) -> Leaves:
    """The leaves below `below` that still hold a readable event (erased bytes judge nothing)."""
    return [(leaf.leaf_index, event) for leaf in leaves if leaf.leaf_index < below
            if (event := parse_leaf(leaf.data)) is not None]


def judge_loan(loan_id: str, leaves: Sequence[Leaf], tree_size: int,
               default_pack: str) -> Verdicts:
    """Judge one loan's leaves below `tree_size`: every rule, and each finding as a violation."""
    events = events_of(leaves, tree_size)
    rules = judge(events, default_pack)
    lender = lender_of(events)
    times = {index: event_time(event) for index, event in events}
    violations = [_violation(loan_id, verdict["rule"], finding["leaf_index"],
                             finding["message"], times.get(finding["leaf_index"]), lender)
                  for verdict in rules for finding in verdict["findings"]]
    return Verdicts(loan_id, tree_size, pack_of(events, default_pack), default_pack, rules,
                    tuple(violations))


def _violation(loan_id: str, rule: str, leaf_index: int, message: str,
               moment: datetime | None, lender: str | None) -> Violation:
    moment = moment or EPOCH
    at_us = (moment - EPOCH) // timedelta(microseconds=1)
    return Violation(loan_id, rule, leaf_index, moment.astimezone(UTC).isoformat().replace(
        "+00:00", "Z"), at_us, message, lender)


def still_holds(judged_size: int, judged_pack: str, size: int, default_pack: str,
                indices: Sequence[int]) -> bool:
    """Verdicts judged over the leaves below `judged_size` answer for `size` when the loan has
    the same leaves below both, under the same default pack."""
    low, high = sorted((judged_size, size))
    return judged_pack == default_pack and not any(low <= index < high for index in indices)
