"""Who a caller is (CONTRACT.md, "HTTP routes and roles"); kept apart so the command line can
name roles without loading the web stack."""

from enum import StrEnum


class Role(StrEnum):
    LENDER = "lender"
    COLLECTOR = "collector"
    OPS = "ops"
    AUDITOR = "auditor"
    PROVIDER = "provider"
