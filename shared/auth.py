"""Bearer tokens (HS256 JWTs) with one role each, and the FastAPI dependency that checks them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
from fastapi import HTTPException, Request

from shared.roles import Role

ALGORITHM = "HS256"
ISSUER = "dunwell"


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


def require(*roles: Role) -> Callable[[Request], Principal]:
    """A dependency: 401 without a valid bearer token, 403 when its role is not one of `roles`."""

    def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            principal = read_token(request.app.state.jwt_secret, token.strip())
        except (jwt.PyJWTError, ValueError) as error:
            raise HTTPException(401, f"invalid token: {error}",
                                headers={"WWW-Authenticate": "Bearer"}) from error
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(403, f"role {principal.role.value!r} may not do this ({allowed})")
        return principal

    return dependency


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
