"""Sign-in as production runs it: a service takes the tokens of an OpenID Connect provider,
checked against the keys the provider publishes, here served by a real HTTP endpoint on
loopback, and still takes the installation's own tokens unless told not to."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.auth import Principal, Role, issue_token, load_or_create_secret, now_utc
from shared.oidc import Provider, ProviderKeys
from shared.settings import OidcSettings

AUDIENCE = "dunwell-api"
CALL_TASKS = "/v1/call-tasks"  # reminder: collectors only
REMINDERS = "/v1/loans/L-1/reminders"  # reminder: lenders, ops, auditors


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        maker = RSAAlgorithm if self.algorithm.startswith("RS") else ECAlgorithm
        public: dict[str, Any] = maker.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


@dataclass
class IdentityProvider:
    """An OpenID provider's public side: its discovery document and its key set."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    jwks_fetches: int = 0
    discovery_issuer: str | None = None  # what the discovery document claims, if not `url`
    available: bool = True  # false: every request is answered 503

    def rotate(self, new: SigningKey) -> None:
        """The provider retires every key it had: the key set now serves only `new`."""
        self.keys = [new]

    def token(self, key: SigningKey | None = None, *, ttl: timedelta = timedelta(minutes=5),
              **claims: Any) -> str:
        key = key or self.keys[0]
        now = now_utc()
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "user-1", "iat": int(now.timestamp()),
                "exp": int((now + ttl).timestamp()), **claims}
        return jwt.encode(body, key.private, algorithm=key.algorithm, headers={"kid": key.kid})


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider(keys=[rsa_key("key-2026-a")])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not provider.available:
                self.send_error(503)
                return
            if self.path == "/realms/dunwell/.well-known/openid-configuration":
                body: dict[str, Any] = {
                    "issuer": provider.discovery_issuer or provider.url,
                    "jwks_uri": f"{provider.url}/protocol/openid-connect/certs"}
            elif self.path == "/realms/dunwell/protocol/openid-connect/certs":
                provider.jwks_fetches += 1
                body = {"keys": [key.jwk() for key in provider.keys]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    provider.url = f"http://127.0.0.1:{server.server_address[1]}/realms/dunwell"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                              daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _oidc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ISSUER", "AUDIENCE", "JWKS_URL", "ALGORITHMS", "ROLE_CLAIM", "SUBJECT_CLAIM",
                 "LEEWAY_SECONDS", "JWKS_CACHE_SECONDS", "JWKS_REFETCH_SECONDS", "ONLY",
                 "CA_FILE", "FETCH_TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"DUNWELL_OIDC_{name}", raising=False)
    monkeypatch.delenv("DUNWELL_ENVIRONMENT", raising=False)


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, idp: IdentityProvider) -> Callable[..., None]:
    """Points the services at the provider, as an operator's environment would."""

    def setenv(**extra: str) -> None:
        values = {"ISSUER": idp.url, "AUDIENCE": AUDIENCE, "JWKS_REFETCH_SECONDS": "0",
                  "ROLE_CLAIM": "realm_access.roles", **extra}
        for name, value in values.items():
            monkeypatch.setenv(f"DUNWELL_OIDC_{name}", value)

    return setenv


@pytest.fixture
def reminder(configure: Callable[..., None],
             build: Callable[[str], FastAPI]) -> Iterator[TestClient]:
    configure()
    with TestClient(build("reminder")) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def collector_token(idp: IdentityProvider, key: SigningKey | None = None, **claims: Any) -> str:
    roles = {"realm_access": {"roles": ["offline_access", "default-roles-dunwell", "collector"]}}
    return idp.token(key, **{**roles, **claims})


def test_a_token_with_the_mapped_role_and_subject_reaches_a_route(
        configure: Callable[..., None], build: Callable[[str], FastAPI],
        idp: IdentityProvider) -> None:
    configure(ROLE_CLAIM="dunwell_role", SUBJECT_CLAIM="lender_id")
    with TestClient(build("reminder")) as client:
        token = idp.token(sub="f3a1c2-user", lender_id="lender-7", dunwell_role="lender")
        answer = client.get(REMINDERS, headers=bearer(token))
        assert answer.status_code == 404, answer.text  # past the gate: the loan has none
        tokens = client.app.state.tokens  # type: ignore[attr-defined]
        assert tokens.read(token) == Principal(subject="lender-7", role=Role.LENDER)
        refused = client.get(REMINDERS, headers=bearer(idp.token(dunwell_role="lender")))
        assert refused.status_code == 401
        assert "'lender_id' claim" in refused.json()["error"]["message"]
        other = client.get(CALL_TASKS, headers=bearer(token))
        assert other.status_code == 403  # a lender is not a collector


def test_the_role_is_the_first_dunwell_role_of_a_nested_list(
        reminder: TestClient, idp: IdentityProvider) -> None:
    answer = reminder.get(CALL_TASKS, headers=bearer(collector_token(idp)))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"tasks": []}
    tokens = reminder.app.state.tokens  # type: ignore[attr-defined]
    both = idp.token(realm_access={"roles": ["uma_authorization", "ops", "collector"]})
    assert tokens.read(both).role is Role.OPS


@pytest.mark.parametrize(("claims", "message"), [
    ({}, "has no 'realm_access.roles' claim"),
    ({"realm_access": {"roles": ["offline_access", "admin"]}}, "names no dunwell role"),
    ({"realm_access": {"roles": "superuser"}}, "names no dunwell role"),
])
def test_a_missing_or_unknown_role_is_401_and_says_so(
        reminder: TestClient, idp: IdentityProvider, claims: dict[str, Any],
        message: str) -> None:
    answer = reminder.get(CALL_TASKS, headers=bearer(idp.token(**claims)))
    assert answer.status_code == 401
    assert message in answer.json()["error"]["message"]


def test_a_rotated_key_is_picked_up_and_the_retired_one_refused(
        reminder: TestClient, idp: IdentityProvider) -> None:
    retired = idp.keys[0]
    assert reminder.get(CALL_TASKS, headers=bearer(collector_token(idp))).status_code == 200
    assert idp.jwks_fetches == 1
    new = ec_key("key-2026-b")
    idp.rotate(new)
    assert reminder.get(CALL_TASKS, headers=bearer(collector_token(idp, new))).status_code == 200
    assert idp.jwks_fetches == 2  # the new kid made the service fetch the set again
    old = reminder.get(CALL_TASKS, headers=bearer(collector_token(idp, retired)))
    assert old.status_code == 401
    assert "not one the provider holds" in old.json()["error"]["message"]
    assert reminder.get(CALL_TASKS, headers=bearer(collector_token(idp, new))).status_code == 200
    assert idp.jwks_fetches == 3  # only the unknown kid cost a fetch; the known one is cached


def refused(reminder: TestClient, token: str) -> str:
    answer = reminder.get(CALL_TASKS, headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    message: str = answer.json()["error"]["message"]
    return message


def test_another_audience_is_401(reminder: TestClient, idp: IdentityProvider) -> None:
    assert "audience" in refused(reminder, collector_token(idp, aud="another-client")).lower()


def test_an_expired_token_is_401(reminder: TestClient, idp: IdentityProvider) -> None:
    expired = collector_token(idp, ttl=timedelta(minutes=-2))  # well past the 30 s leeway
    assert "expired" in refused(reminder, expired)


def test_a_token_without_expiry_is_401(reminder: TestClient, idp: IdentityProvider) -> None:
    key = idp.keys[0]
    claims = {"iss": idp.url, "aud": AUDIENCE, "sub": "user-1", "role": "collector",
              "realm_access": {"roles": ["collector"]}}
    token = jwt.encode(claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid})
    assert "exp" in refused(reminder, token)


def test_a_token_of_another_issuer_is_401(reminder: TestClient, idp: IdentityProvider) -> None:
    refused(reminder, collector_token(idp, iss="http://127.0.0.1:1/realms/other"))


def test_hs256_claiming_the_provider_is_401(reminder: TestClient, idp: IdentityProvider,
                                            tmp_path: Path) -> None:
    """Whoever holds a secret, the installation's own included, cannot sign for the provider."""
    claims = {"iss": idp.url, "aud": AUDIENCE, "sub": "user-1", "exp": 4102444800,
              "realm_access": {"roles": ["ops"]}}
    secret = load_or_create_secret(tmp_path / "jwt.secret")
    forged = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": idp.keys[0].kid})
    assert "not 'HS256'" in refused(reminder, forged)


def test_alg_none_is_401(reminder: TestClient, idp: IdentityProvider) -> None:
    claims = {"iss": idp.url, "aud": AUDIENCE, "sub": "user-1", "exp": 4102444800,
              "realm_access": {"roles": ["ops"]}}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": idp.keys[0].kid})
    assert "not 'none'" in refused(reminder, unsigned)
    as_ours = jwt.encode({**claims, "iss": "dunwell", "role": "ops"}, None, algorithm="none")
    refused(reminder, as_ours)


def test_a_token_naming_no_key_is_401(reminder: TestClient, idp: IdentityProvider) -> None:
    key = idp.keys[0]
    claims = {"iss": idp.url, "aud": AUDIENCE, "sub": "user-1", "exp": 4102444800,
              "realm_access": {"roles": ["collector"]}}
    unnamed = jwt.encode(claims, key.private, algorithm=key.algorithm)
    assert "kid" in refused(reminder, unnamed)


def test_the_installations_own_tokens_still_work(
        reminder: TestClient, token: Callable[..., dict[str, str]]) -> None:
    assert reminder.get(CALL_TASKS, headers=token(Role.COLLECTOR, "col-1")).status_code == 200
    assert reminder.get(REMINDERS, headers=token(Role.LENDER)).status_code == 404


def test_only_the_providers_tokens_when_told(
        configure: Callable[..., None], build: Callable[[str], FastAPI],
        idp: IdentityProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "the-installations-own-secret-of-48-characters-xx"
    monkeypatch.setenv("DUNWELL_JWT_SECRET", secret)
    configure(ONLY="true")
    with TestClient(build("reminder")) as client:
        ours = issue_token(secret, Role.COLLECTOR, "col-1", now_utc())
        answer = client.get(CALL_TASKS, headers=bearer(ours))
        assert answer.status_code == 401
        assert "only tokens of" in answer.json()["error"]["message"]
        assert client.get(CALL_TASKS, headers=bearer(collector_token(idp))).status_code == 200
    monkeypatch.delenv("DUNWELL_JWT_SECRET")
    build("reminder")
    assert not (tmp_path / "jwt.secret").exists()  # no secret is made that nothing would read


def test_a_key_set_url_given_skips_discovery(
        configure: Callable[..., None], build: Callable[[str], FastAPI],
        idp: IdentityProvider) -> None:
    idp.discovery_issuer = "https://someone-else.example"  # discovery would be refused
    configure(JWKS_URL=f"{idp.url}/protocol/openid-connect/certs")
    with TestClient(build("reminder")) as client:
        assert client.get(CALL_TASKS, headers=bearer(collector_token(idp))).status_code == 200


def test_a_discovery_document_of_another_issuer_is_not_trusted(
        reminder: TestClient, idp: IdentityProvider) -> None:
    idp.discovery_issuer = "https://someone-else.example"
    answer = reminder.get(CALL_TASKS, headers=bearer(collector_token(idp)))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert idp.jwks_fetches == 0


def settings_of(idp: IdentityProvider, **values: Any) -> OidcSettings:
    return OidcSettings(issuer=idp.url, audience=AUDIENCE, role_claim="realm_access.roles",
                        **values)


def test_refetches_are_rate_limited(idp: IdentityProvider) -> None:
    """A stream of tokens naming keys the provider never had costs it one fetch per period."""
    now = [1000.0]
    settings = settings_of(idp, jwks_refetch_seconds=30)
    provider = Provider(settings, ProviderKeys(settings, monotonic=lambda: now[0]))
    assert provider.read(collector_token(idp)) == ("user-1", Role.COLLECTOR)
    new = rsa_key("key-2026-b")
    idp.rotate(new)
    for _ in range(5):
        with pytest.raises(jwt.InvalidTokenError, match="not one the provider holds"):
            provider.read(collector_token(idp, new))
    assert idp.jwks_fetches == 1
    now[0] += 30
    assert provider.read(collector_token(idp, new)) == ("user-1", Role.COLLECTOR)
    assert idp.jwks_fetches == 2


def test_known_keys_serve_while_the_provider_is_away(
        configure: Callable[..., None], build: Callable[[str], FastAPI],
        idp: IdentityProvider) -> None:
    configure(JWKS_CACHE_SECONDS="0")
    with TestClient(build("reminder")) as client:
        token = collector_token(idp)
        assert client.get(CALL_TASKS, headers=bearer(token)).status_code == 200
        idp.available = False
        answer = client.get(CALL_TASKS, headers=bearer(token))
        assert answer.status_code == 200  # the refetch failed; the key fetched before serves
        unknown = client.get(CALL_TASKS,
                             headers=bearer(collector_token(idp, ec_key("key-never-seen"))))
        assert unknown.status_code == 503  # it may be a new key: cannot tell until it answers
        assert "cannot be fetched" in unknown.json()["error"]["message"]
        assert unknown.json()["error"]["code"] == "unavailable"
        idp.available = True
        assert client.get(CALL_TASKS, headers=bearer(token)).status_code == 200
