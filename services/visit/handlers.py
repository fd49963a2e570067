"""Integration events the visit service acts on (none yet: its domain is a later issue)."""

from __future__ import annotations

from shared.consumer import Handler
from shared.events import EventData

HANDLERS: dict[type[EventData], Handler] = {}
