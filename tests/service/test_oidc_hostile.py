"""Sign-in against hostile input: tokens that name the wrong kind of key or carry claims of the
wrong shape, and a key-set endpoint that trickles, floods, redirects or answers HTML. Each is
refused (401) or counted as a provider away (503), within the fetch's time limit."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.oidc import KeysUnavailable, Provider, ProviderKeys
from shared.roles import Role
from shared.settings import OidcSettings
from tests.service.test_oidc import AUDIENCE, SigningKey, ec_key, rsa_key

CERTS = "/certs"


@dataclass
class KeyServer:
    """A key-set endpoint whose answer a test chooses: `answer(handler)` writes the response."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=lambda: [rsa_key("rsa-1"), ec_key("ec-1")])
    extra: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[BaseHTTPRequestHandler], None] | None = None
    delay: float = 0.0
    fetches: int = 0
    bytes_sent: int = 0

    def document(self) -> bytes:
        return json.dumps({"keys": [key.jwk() for key in self.keys] + self.extra}).encode()

    def token(self, key: SigningKey, *, kid: str | None = None, algorithm: str | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": "https://idp.example", "aud": AUDIENCE, "sub": "user-1", "iat": now,
                "exp": now + 300, "role": "ops", **claims}
        return jwt.encode(body, key.private, algorithm=algorithm or key.algorithm,
                          headers={"kid": kid or key.kid})


@pytest.fixture
def keyserver() -> Iterator[KeyServer]:
    state = KeyServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            time.sleep(state.delay)
            if state.answer is not None:
                state.answer(self)
                return
            data = state.document()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.answer, state.delay = None, 0.0
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def provider_of(keyserver: KeyServer, **values: Any) -> Provider:
    settings = OidcSettings(issuer="https://idp.example", audience=AUDIENCE,
                            jwks_url=keyserver.url + CERTS, **values)
    return Provider(settings, ProviderKeys(settings))


def refused(provider: Provider, token: str) -> str:
    with pytest.raises(jwt.PyJWTError) as error:
        provider.read(token)
    return str(error.value)


# --- tokens ---

def test_a_token_naming_a_key_of_another_kind_is_refused(keyserver: KeyServer) -> None:
    provider = provider_of(keyserver)
    rsa, ec = keyserver.keys
    assert "does not match" in refused(provider, keyserver.token(rsa_key("mine"), kid=ec.kid))
    assert "does not match" in refused(provider, keyserver.token(ec_key("mine"), kid=rsa.kid))


def test_a_symmetric_key_in_the_key_set_signs_nothing(keyserver: KeyServer) -> None:
    """An `oct` key, or a public key marked HS256, is passed over; an HMAC over the RSA key's
    own public bytes (the classic confusion) is refused by its algorithm."""
    secret = b"a-shared-secret-the-provider-should-not-publish"
    keyserver.extra = [
        {"kty": "oct", "kid": "oct-1", "alg": "HS256",
         "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()},
        {**rsa_key("rsa-hs").jwk(), "alg": "HS256"}]
    provider = provider_of(keyserver)
    body = {"iss": "https://idp.example", "aud": AUDIENCE, "sub": "u", "role": "ops",
            "exp": int(time.time()) + 300}
    assert "not 'HS256'" in refused(
        provider, jwt.encode(body, secret, algorithm="HS256", headers={"kid": "oct-1"}))
    assert "not one the provider holds" in refused(
        provider, keyserver.token(rsa_key("rsa-hs"), kid="rsa-hs"))
    pem = keyserver.keys[0].private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = _b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    claims = _b64(json.dumps(body).encode())
    signature = _b64(hmac.new(pem, head + b"." + claims, hashlib.sha256).digest())
    assert "not 'HS256'" in refused(provider, (head + b"." + claims + b"." + signature).decode())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_a_huge_or_odd_kid_costs_no_fetch(keyserver: KeyServer) -> None:
    provider = provider_of(keyserver, jwks_refetch_seconds=30)
    rsa = keyserver.keys[0]
    assert provider.read(keyserver.token(rsa)) == ("user-1", Role.OPS)
    assert "longer than" in refused(provider, keyserver.token(rsa, kid="k" * 10_000))
    assert "not one" in refused(provider, keyserver.token(rsa, kid="../../etc/passwd"))
    assert keyserver.fetches == 1


@pytest.mark.parametrize(("claims", "message"), [
    ({"iss": "https://idp.example/"}, "Invalid issuer"),
    ({"nbf": int(time.time()) + 3600}, "not yet valid (nbf)"),
    ({"iat": int(time.time()) + 3600}, "not yet valid (iat)"),
    ({"role": {"ops": True}}, "names no dunwell role"),
    ({"role": 3}, "names no dunwell role"),
    ({"sub": ""}, "who the caller is"),
    ({"sub": {"id": "x"}}, "Subject must be a string"),
    ({"sub": "u" * 10_000}, "is not an id"),
    ({"sub": "user-1\nforged log line"}, "is not an id"),
    ({"sub": " user-1"}, "is not an id"),
])
def test_claims_of_the_wrong_shape_are_refused(keyserver: KeyServer, claims: dict[str, Any],
                                               message: str) -> None:
    provider = provider_of(keyserver)
    assert message in refused(provider, keyserver.token(keyserver.keys[0], **claims))


def test_an_audience_list_holding_ours_is_taken(keyserver: KeyServer) -> None:
    provider = provider_of(keyserver)
    token = keyserver.token(keyserver.keys[1], aud=["account", AUDIENCE])
    assert provider.read(token) == ("user-1", Role.OPS)
    assert "Audience" in refused(provider, keyserver.token(keyserver.keys[1], aud=["account"]))


# --- the key-set endpoint ---

def _trickle(handler: BaseHTTPRequestHandler) -> None:
    """Valid JSON one byte every 0.2 s: each read is within the timeout, the whole is not."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    try:
        for byte in b'{"keys": [' + b" " * 100:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass  # the client hung up, as it should


def _flood(server: KeyServer) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()  # no Content-Length: the size shows only in the reading
        chunk = b" " * 65536
        try:
            handler.wfile.write(b'{"keys": [')
            for _ in range(50 * 16):  # 50 MB
                handler.wfile.write(chunk)
                server.bytes_sent += len(chunk)
        except OSError:
            pass
    return answer


def _html(handler: BaseHTTPRequestHandler) -> None:
    data = b"<html><body>Sign in</body></html>"
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _redirect(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(302)
    handler.send_header("Location", "http://elsewhere.invalid/certs")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def unavailable_within(provider: Provider, token: str, seconds: float) -> None:
    started = time.monotonic()
    with pytest.raises(KeysUnavailable):
        provider.read(token)
    assert time.monotonic() - started < seconds


def test_a_trickling_endpoint_is_given_up_at_the_time_limit(keyserver: KeyServer) -> None:
    keyserver.answer = _trickle
    provider = provider_of(keyserver, fetch_timeout_seconds=0.5)
    unavailable_within(provider, keyserver.token(keyserver.keys[0]), 1.5)  # the whole takes 20 s


def test_a_slow_endpoint_is_given_up_at_the_time_limit(keyserver: KeyServer) -> None:
    keyserver.delay = 2.0
    provider = provider_of(keyserver, fetch_timeout_seconds=0.5)
    unavailable_within(provider, keyserver.token(keyserver.keys[0]), 1.5)


def test_a_flooding_endpoint_is_read_no_further_than_a_key_set_could_be(
        keyserver: KeyServer) -> None:
    keyserver.answer = _flood(keyserver)
    provider = provider_of(keyserver)
    unavailable_within(provider, keyserver.token(keyserver.keys[0]), 5)
    assert keyserver.bytes_sent < 10 * 2**20  # the client hung up near 1 MiB, not at 50 MB


@pytest.mark.parametrize("answer", [_html, _redirect])
def test_html_or_a_redirect_is_no_key_set(keyserver: KeyServer,
                                          answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
    keyserver.answer = answer
    unavailable_within(provider_of(keyserver), keyserver.token(keyserver.keys[0]), 5)
    assert keyserver.fetches == 1


def test_many_unknown_kids_at_once_cost_one_fetch(keyserver: KeyServer) -> None:
    provider = provider_of(keyserver, jwks_refetch_seconds=30)
    keyserver.delay = 0.3
    errors: list[str] = []

    def one(index: int) -> None:
        try:
            provider.read(keyserver.token(rsa_key("r"), kid=f"made-up-{index}"))
        except jwt.InvalidTokenError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(errors) == 20 and all("not one the provider holds" in e for e in errors)
    assert keyserver.fetches == 1


def test_a_known_key_waits_for_no_refresh_under_way(keyserver: KeyServer) -> None:
    """While one request refreshes a stale set from a slow provider, the others serve the key
    they have rather than queue behind it, each holding a worker thread."""
    provider = provider_of(keyserver, jwks_cache_seconds=0, jwks_refetch_seconds=0,
                           fetch_timeout_seconds=5)
    token = keyserver.token(keyserver.keys[0])
    assert provider.read(token) == ("user-1", Role.OPS)
    keyserver.delay = 1.5
    refreshing = threading.Thread(target=provider.read, args=(token,))
    refreshing.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert provider.read(token) == ("user-1", Role.OPS)
    assert time.monotonic() - started < 0.5
    refreshing.join(timeout=10)
    assert keyserver.fetches == 2
