"""Bearer tokens with one role each, and the FastAPI dependency that checks them: the
installation's own (HS256, signed with its secret) and, when one is set, those of the operator's
OpenID Connect provider (shared/oidc.py)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.oidc import KeysUnavailable, Provider
from shared.roles import Role
from shared.settings import AuthSettings

ALGORITHM = "HS256"
ISSUER = "dunwell"
# Declares the scheme in every service's OpenAPI document; `require` does the checking itself,
# so a missing or malformed header is our JSON 401 rather than the framework's.
BEARER = HTTPBearer(scheme_name="bearer", bearerFormat="JWT", auto_error=False,
                    description="An HS256 JWT with `sub` (the caller, e.g. the lender id), "
                                "`role` and `exp`; `dunwell token --role ROLE --subject ID` "
                                "issues one. Where the operator's OpenID Connect provider is "
                                "set, one of its signed tokens instead (docs/oidc.md). An "
                                "operation's security requirement lists the roles it accepts.")


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role


def load_or_create_secret(path: Path) -> str:
    """The embedded default keeps one secret under var/, made the first time it is needed."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def issue_token(secret: str, role: Role, subject: str, now: datetime,
                ttl: timedelta = timedelta(hours=12)) -> str:
    claims = {"sub": subject, "role": role.value, "iss": ISSUER,
              "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp())}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(secret: str, token: str) -> Principal:
    claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                        options={"require": ["exp", "sub", "role"]})
    return Principal(subject=str(claims["sub"]), role=Role(claims["role"]))


class Tokens:
    """Which bearer tokens a service accepts: the installation's own unless `secret` is None
    (DUNWELL_OIDC_ONLY), and the provider's when there is one, told apart by their issuer."""

    def __init__(self, secret: str | None, provider: Provider | None = None) -> None:
        self.secret = secret
        self.provider = provider

    def read(self, token: str) -> Principal:
        if self.provider is not None:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            if issuer == self.provider.issuer:
                subject, role = self.provider.read(token)
                return Principal(subject=subject, role=role)
            if self.secret is None:
                raise jwt.InvalidIssuerError(f"only tokens of {self.provider.issuer} are "
                                             "accepted")
        assert self.secret is not None, "a service without a provider keeps its own secret"
        return read_token(self.secret, token)


def accepted_tokens(settings: AuthSettings, secret_file: Path) -> Tokens:
    """The tokens a service takes, as its settings say; the secret is made only if needed."""
    oidc = settings.oidc
    provider = Provider(oidc) if oidc.issuer is not None else None
    if oidc.only:
        return Tokens(None, provider)
    return Tokens(settings.secret or load_or_create_secret(secret_file), provider)


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency: 401 without a valid bearer token, 403 when its role is not one of `roles`.

    The roles are the operation's security requirement in OpenAPI (3.1 lets a non-OAuth scheme
    list role names there), so a client can tell from the document which token it needs.
    """

    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(
            BEARER, scopes=[role.value for role in roles])) -> Principal:
        token = credentials.credentials.strip() if credentials is not None else ""
        if not token:
            raise HTTPException(401, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        tokens: Tokens = request.app.state.tokens
        try:
            principal = tokens.read(token)
        except (jwt.PyJWTError, ValueError) as error:
            raise HTTPException(401, f"invalid token: {error}",
                                headers={"WWW-Authenticate": "Bearer"}) from error
        except KeysUnavailable as error:
            raise HTTPException(503, f"{error}; send it again shortly",
                                headers={"Retry-After": "5"}) from error
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(403, f"role {principal.role.value!r} may not do this ({allowed})")
        return principal

    return dependency


def now_utc() -> datetime:
    return datetime.now(UTC)
