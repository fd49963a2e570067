"""Reminder's pure contact rules: time passed in, decisions out, each naming its rule."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from shared.policy_pack import Decision, PolicyPack

from services.reminder.domain import REQUIRED_CONTENT, TEMPLATES


def contact_window(pack: PolicyPack, borrower_tz: ZoneInfo, now: datetime) -> Decision:
    """C1: contact only inside the pack's hours, in the borrower's own time zone."""
    local = now.astimezone(borrower_tz)
    if pack.contact_hours.contains(local.time()):
        return Decision.allow()
    window = f"{pack.contact_hours.start:%H:%M}-{pack.contact_hours.end:%H:%M}"
    return Decision.defer(
        "C1", f"borrower's local time {local:%H:%M} is outside {window} ({pack.name})",
        pack.contact_hours.next_opening(local))


def required_content(template_id: str, version: int, content: dict[str, str]) -> Decision:
    """C5: an approved template that shows every required item, each one filled in."""
    template = TEMPLATES.get((template_id, version))
    if template is None:
        return Decision.refuse("C5", f"template {template_id} v{version} is not approved")
    missing = [item for item in REQUIRED_CONTENT
               if "{" + item + "}" not in template or not content.get(item, "").strip()]
    if missing:
        return Decision.refuse("C5", f"required content missing: {', '.join(missing)}")
    return Decision.allow()


def is_open(plan_open: bool) -> Decision:
    """C4: nothing after payment; a closed case sends nothing."""
    return Decision.allow() if plan_open else Decision.refuse("C4", "the case is closed")
