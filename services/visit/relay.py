"""Visit domain events as integration events on visits.events (none recorded yet)."""

from __future__ import annotations

from typing import Any

from shared.relay import Publication


def integration_event(event: Any) -> Publication | None:
    return None
