"""The OpenID provider's settings refuse what would weaken sign-in, and its claims map to a
dunwell subject and role as docs/oidc.md says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from shared.oidc import role_of, subject_of
from shared.roles import Role
from shared.settings import AuthSettings, OidcSettings

ISSUER = "https://sso.lender.example/realms/dunwell"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ISSUER", "AUDIENCE", "JWKS_URL", "ALGORITHMS", "ONLY", "CA_FILE"):
        monkeypatch.delenv(f"DUNWELL_OIDC_{name}", raising=False)
    monkeypatch.delenv("DUNWELL_ENVIRONMENT", raising=False)


def test_unset_no_provider_is_used() -> None:
    assert AuthSettings().oidc.issuer is None


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"ISSUER": ISSUER, "AUDIENCE": "dunwell-api",
                        "ALGORITHMS": "RS256, PS256", "ROLE_CLAIM": "realm_access.roles",
                        "SUBJECT_CLAIM": "lender_id", "ONLY": "true"}.items():
        monkeypatch.setenv(f"DUNWELL_OIDC_{name}", value)
    monkeypatch.setenv("DUNWELL_ENVIRONMENT", "production")
    oidc = AuthSettings().oidc
    assert (oidc.issuer, oidc.audience, oidc.algorithms, oidc.role_claim, oidc.subject_claim,
            oidc.only) == (ISSUER, "dunwell-api", ["RS256", "PS256"], "realm_access.roles",
                           "lender_id", True)
    assert oidc.discovery_url() == f"{ISSUER}/.well-known/openid-configuration"


@pytest.mark.parametrize(("values", "message"), [
    ({"algorithms": ["HS256"]}, "refused: HS256"),
    ({"algorithms": ["RS256", "none"]}, "refused: none"),
    ({"algorithms": []}, "an empty list"),
    ({"audience": None}, "needs DUNWELL_OIDC_AUDIENCE"),
    ({"issuer": None, "only": True}, "need DUNWELL_OIDC_ISSUER"),
    ({"issuer": "dunwell"}, "must be an https or http URL"),
    ({"jwks_url": "ftp://sso.lender.example/certs"}, "DUNWELL_OIDC_JWKS_URL"),
    ({"role_claim": " "}, "cannot be empty"),
    ({"ca_file": Path("/nonexistent/ca.crt")}, "does not exist"),
    ({"leeway_seconds": 600}, "less than or equal to 120"),
])
def test_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OidcSettings(**{"issuer": ISSUER, "audience": "dunwell-api", **values})


def test_production_wants_https(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback = "http://127.0.0.1:8080/realms/dunwell"
    assert OidcSettings(issuer=loopback, audience="a").issuer == loopback  # development
    monkeypatch.setenv("DUNWELL_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="https URL in production"):
        OidcSettings(issuer=loopback, audience="a")
    with pytest.raises(ValidationError, match="DUNWELL_OIDC_JWKS_URL must be an https URL"):
        OidcSettings(issuer=ISSUER, audience="a", jwks_url="http://sso.lender.example/certs")
    assert OidcSettings(issuer=ISSUER, audience="a").environment == "production"


@pytest.mark.parametrize(("claims", "path", "role"), [
    ({"role": "lender"}, "role", Role.LENDER),
    ({"realm_access": {"roles": ["offline_access", "collector", "ops"]}},
     "realm_access.roles", Role.COLLECTOR),
    ({"resource_access": {"dunwell": {"roles": ["auditor"]}}},
     "resource_access.dunwell.roles", Role.AUDITOR),
    ({"roles": ["Dunwell.Admin", "provider"]}, "roles", Role.PROVIDER),
    ({"https://dunwell.example/role": "ops"}, "https://dunwell.example/role", Role.OPS),
])
def test_role_mapping(claims: dict[str, Any], path: str, role: Role) -> None:
    assert role_of(claims, path) is role


@pytest.mark.parametrize(("claims", "message"), [
    ({}, "has no 'realm_access.roles' claim"),
    ({"realm_access": "collector"}, "has no 'realm_access.roles' claim"),
    ({"realm_access": {"roles": []}}, "names no dunwell role"),
    ({"realm_access": {"roles": ["Collector", 7]}}, "names no dunwell role"),
])
def test_role_refused(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(jwt.InvalidTokenError, match=message):
        role_of(claims, "realm_access.roles")


def test_subject_mapping() -> None:
    assert subject_of({"sub": "u-1", "lender_id": "lender-7"}, "lender_id") == "lender-7"
    assert subject_of({"ext": {"collector": 1042}}, "ext.collector") == "1042"
    for claims in ({"sub": "u-1"}, {"lender_id": ""}, {"lender_id": True}, {"lender_id": [1]}):
        with pytest.raises(jwt.InvalidTokenError, match="'lender_id' claim"):
            subject_of(claims, "lender_id")
