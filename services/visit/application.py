"""The visit application. Collectors, notices and visits arrive with the visit issue; for now
it follows cases.events with the same exactly-once machinery as every service."""

from __future__ import annotations

from shared.application import ServiceApplication


class Visits(ServiceApplication):
    name = "visit"
