"""Escalation's pure rules: where a case starts and when a payment closes it (C4)."""

from __future__ import annotations

from decimal import Decimal

from shared.policy_pack import PolicyPack

SOFT_REMINDERS = "soft_reminders"


def opening_stage(pack: PolicyPack, days_past_due: int, amount: Decimal) -> str:
    """Every case starts with the gentlest means; later stages are decided by escalation (C6)."""
    return SOFT_REMINDERS


def payment_closes_case(remaining_overdue: Decimal) -> bool:
    """C4: nothing after payment. Zero remaining closes the case and cancels what is pending."""
    return remaining_overdue <= 0
