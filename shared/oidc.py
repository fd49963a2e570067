"""Bearer tokens from the operator's OpenID Connect provider, checked against the keys it
publishes (its JWKS) and mapped to a dunwell subject and role (docs/oidc.md)."""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt

from shared.errors import describe
from shared.roles import Role
from shared.settings import OidcSettings

log = logging.getLogger(__name__)

KEY_TYPES = ("RSA", "EC", "OKP")
# A provider's key set or discovery document is a few kilobytes; one much larger is not one,
# and reading it whole would let the endpoint (or whoever answers for it) fill our memory.
MAX_DOCUMENT_BYTES = 1 << 20
# Events and the audit log hold the subject as an id (shared/events.py's Ident).
MAX_SUBJECT_CHARS = 64
MAX_KID_CHARS = 256


class KeysUnavailable(Exception):
    """The provider's keys could not be fetched, so a token it signed cannot be checked now."""


class ProviderKeys:
    """The provider's signing keys by `kid`: fetched when first needed, again once older than
    `jwks_cache_seconds`, and again when a token names a key the set does not hold (a rotation),
    but never twice within `jwks_refetch_seconds`.

    `require` is a synchronous dependency, so FastAPI runs it in its thread pool: a fetch,
    bounded by `fetch_timeout_seconds`, holds one worker thread and never the event loop, and
    the lock lets one thread fetch while those that need the fetch wait for it.
    """

    def __init__(self, settings: OidcSettings,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._url = settings.jwks_url
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._failed = False

    def key(self, kid: str) -> dict[str, Any]:
        """The JWK named `kid`; InvalidTokenError when the provider does not hold it."""
        keys, fetched_at = self._keys, self._fetched_at
        if kid in keys and not self._stale(fetched_at):
            return keys[kid]  # the common case waits for no fetch another request has begun
        if not self._lock.acquire(blocking=False):
            if kid in keys:
                return keys[kid]  # another request is refreshing a stale set: this key serves
            self._lock.acquire()
        try:
            now = self._monotonic()
            stale = self._stale(self._fetched_at)
            may_fetch = self._tried_at is None \
                or now - self._tried_at >= self.settings.jwks_refetch_seconds
            if (stale or kid not in self._keys) and may_fetch:
                self._refresh(now)
            if kid in self._keys:
                return self._keys[kid]  # a stale set still serves while the provider is away
            if self._failed:
                raise KeysUnavailable("the sign-in provider's keys cannot be fetched now")
        finally:
            self._lock.release()
        raise jwt.InvalidTokenError(f"the token's key {kid!r} is not one the provider holds")

    def _stale(self, fetched_at: float | None) -> bool:
        return fetched_at is None \
            or self._monotonic() - fetched_at >= self.settings.jwks_cache_seconds

    def _refresh(self, now: float) -> None:
        self._tried_at = now
        try:
            keys = self._fetch()
        except (httpx.HTTPError, ValueError) as error:
            self._failed = True
            log.warning("the OpenID provider's keys could not be fetched from %s (%s); %s",
                        self._url or self.settings.discovery_url(), describe(error),
                        "the keys fetched before still serve" if self._keys
                        else "its tokens are refused until they can be")
            return
        if keys.keys() != self._keys.keys():
            log.info("the OpenID provider's signing keys are now %s", ", ".join(sorted(keys)))
        self._keys, self._fetched_at, self._failed = keys, now, False

    def _fetch(self) -> dict[str, dict[str, Any]]:
        verify: ssl.SSLContext | bool = True
        if self.settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.settings.ca_file))
        deadline = time.monotonic() + self.settings.fetch_timeout_seconds
        with httpx.Client(timeout=self.settings.fetch_timeout_seconds, verify=verify) as client:
            if self._url is None:
                self._url = self._discover(client, deadline)
            document = _get_json(client, self._url, deadline)
        keys = {jwk["kid"]: jwk for jwk in _listed(document) if self._usable(jwk)}
        if not keys:
            raise ValueError(f"the key set at {self._url} holds no usable signing key")
        return keys

    def _discover(self, client: httpx.Client, deadline: float) -> str:
        """The key set's URL from the provider's discovery document, which must name the same
        issuer (OpenID Connect Discovery 1.0, section 4.3)."""
        url = self.settings.discovery_url()
        document = _get_json(client, url, deadline)
        if not isinstance(document, dict) or document.get("issuer") != self.settings.issuer:
            raise ValueError(f"{url} does not describe the issuer {self.settings.issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError(f"{url} names no jwks_uri")
        self.settings.check_url("the discovered jwks_uri", jwks_uri)
        return jwks_uri

    def _usable(self, jwk: Mapping[str, Any]) -> bool:
        """A public signing key with an id, of an algorithm we accept if it names one."""
        return isinstance(jwk.get("kid"), str) and bool(jwk["kid"]) \
            and jwk.get("kty") in KEY_TYPES and jwk.get("use", "sig") == "sig" \
            and "d" not in jwk \
            and ("alg" not in jwk or jwk["alg"] in self.settings.algorithms)


def _get_json(client: httpx.Client, url: str, deadline: float) -> Any:
    """The JSON document at `url`, read within `deadline` and `MAX_DOCUMENT_BYTES`: httpx's
    timeout bounds each read, not the whole, so an endpoint that trickles would hold us."""
    with client.stream("GET", url) as response:
        response.raise_for_status()
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url} answered {declared} bytes, more than a key set holds")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
            if time.monotonic() > deadline:
                raise ValueError(f"{url} did not answer within the fetch's time limit")
    return json.loads(body)


def _listed(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the key set is not a JWKS document ({\"keys\": [...]})")
    return [jwk for jwk in document["keys"] if isinstance(jwk, dict)]


class Provider:
    """Checks a token the provider signed: its algorithm, key, issuer, audience and expiry."""

    def __init__(self, settings: OidcSettings, keys: ProviderKeys | None = None) -> None:
        assert settings.issuer is not None and settings.audience is not None
        self.settings = settings
        self.issuer = settings.issuer
        self.keys = keys or ProviderKeys(settings)

    def read(self, token: str) -> tuple[str, Role]:
        """The caller's subject and role; a jwt.InvalidTokenError says why the token is refused."""
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm not in self.settings.algorithms:
            raise jwt.InvalidAlgorithmError(
                f"the provider's tokens are signed with {', '.join(self.settings.algorithms)}, "
                f"not {algorithm!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise jwt.InvalidTokenError("the token names no key (kid)")
        if len(kid) > MAX_KID_CHARS:
            raise jwt.InvalidTokenError("the token's key id is longer than any provider's")
        jwk = self.keys.key(kid)
        # A key that names no algorithm is taken for the token's, which PyJWT then holds it to.
        key = jwt.PyJWK(jwk, algorithm=jwk.get("alg") or algorithm)
        claims = jwt.decode(token, key, algorithms=[algorithm], issuer=self.issuer,
                            audience=self.settings.audience, leeway=self.settings.leeway_seconds,
                            options={"require": ["exp", "iss", "aud"]})
        return subject_of(claims, self.settings.subject_claim), \
            role_of(claims, self.settings.role_claim)


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named `path`, or found by following its dots into nested claims; a name that
    holds dots itself (Auth0's `https://dunwell.example/role`) is taken whole first."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def role_of(claims: Mapping[str, Any], path: str) -> Role:
    """The dunwell role the claim names: the first of its values that is one, if a list."""
    value = claim(claims, path)
    if value is None:
        raise jwt.InvalidTokenError(f"the token has no {path!r} claim, which carries the "
                                    "dunwell role")
    known = {role.value for role in Role}
    for candidate in value if isinstance(value, list) else [value]:
        if isinstance(candidate, str) and candidate in known:
            return Role(candidate)
    raise jwt.InvalidTokenError(f"the token's {path!r} claim names no dunwell role (one of "
                                f"{', '.join(sorted(known))})")


def subject_of(claims: Mapping[str, Any], path: str) -> str:
    """The caller's id: it is written into events and the audit log, so it must be one there."""
    value = claim(claims, path)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise jwt.InvalidTokenError(f"the token has no {path!r} claim, which says who the "
                                    "caller is")
    subject = str(value)
    if len(subject) > MAX_SUBJECT_CHARS or not subject.isprintable() or subject != subject.strip():
        raise jwt.InvalidTokenError(f"the token's {path!r} claim is not an id (at most "
                                    f"{MAX_SUBJECT_CHARS} printable characters)")
    return subject
