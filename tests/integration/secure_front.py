"""A test peer: TLS, and optionally SASL SCRAM-SHA-512, in front of the embedded broker.

Tansu speaks plaintext only, while a production cluster wants TLS and SCRAM-SHA-512. This
front terminates TLS on a loopback port with a certificate from a CA made for the test, and
pipes each connection to Tansu, which advertises the front's port so that every connection a
client opens comes through here. With users given, a connection must first authenticate:
the front forwards ApiVersions, answers SaslHandshake and runs the server side of SCRAM
(RFC 5802, RFC 7677) over SaslAuthenticate itself, and closes on anything else. It speaks the
versions aiokafka 0.14 sends (header v1; SaslHandshake v1, SaslAuthenticate v0-1) and no more.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
MECHANISM = "SCRAM-SHA-512"
ITERATIONS = 4096  # Kafka's least for SCRAM-SHA-512


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha512).digest()


@dataclass(frozen=True)
class Credential:
    """What a SCRAM server keeps of a password (RFC 5802, section 3): never the password."""

    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def of(cls, password: str) -> Credential:
        salt = os.urandom(16)
        salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
        stored = hashlib.sha512(_hmac(salted, b"Client Key")).digest()
        return cls(salt, stored, _hmac(salted, b"Server Key"))


class ScramExchange:
    """The server side of one SCRAM-SHA-512 exchange: two client messages, two answers.
    A step answers None when the client is refused."""

    def __init__(self, credentials: Mapping[str, Credential]) -> None:
        self.credentials = credentials
        self.user: str | None = None  # set once the client's proof is verified
        self._first = ""

    def step(self, message: bytes) -> bytes | None:
        text = message.decode()
        return self._client_final(text) if self._first else self._client_first(text)

    def _client_first(self, text: str) -> bytes | None:
        flag, authzid, bare = text.split(",", 2)
        attributes = dict(pair.split("=", 1) for pair in bare.split(","))
        name = attributes["n"].replace("=2C", ",").replace("=3D", "=")
        credential = self.credentials.get(name)
        if flag not in ("n", "y") or authzid or credential is None:
            return None
        self._name, self._credential = name, credential
        self._nonce = attributes["r"] + secrets.token_urlsafe(18)
        server_first = (f"r={self._nonce},s={base64.b64encode(credential.salt).decode()},"
                        f"i={ITERATIONS}")
        self._gs2, self._first = f"{flag},,", f"{bare},{server_first}"
        return server_first.encode()

    def _client_final(self, text: str) -> bytes | None:
        without_proof, _, proof = text.rpartition(",p=")
        attributes = dict(pair.split("=", 1) for pair in without_proof.split(","))
        if attributes.get("c") != base64.b64encode(self._gs2.encode()).decode() \
                or attributes.get("r") != self._nonce:
            return None
        auth_message = f"{self._first},{without_proof}".encode()
        signature = _hmac(self._credential.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature,
                                                 strict=True))
        if not hmac.compare_digest(hashlib.sha512(client_key).digest(),
                                   self._credential.stored_key):
            return None
        self.user = self._name
        return b"v=" + base64.b64encode(_hmac(self._credential.server_key, auth_message))


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(value.encode())) + value.encode()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@dataclass
class SecureFront:
    """The front on 127.0.0.1:`port`, forwarding to Tansu on `broker_port`; with `users`
    (name -> password), SASL SCRAM-SHA-512 is required. What it saw is kept for the tests."""

    port: int
    broker_port: int
    cert: Path  # for 127.0.0.1, signed by the CA the clients trust
    key: Path
    users: Mapping[str, str] | None = None
    sessions: list[str] = field(default_factory=list)  # users authenticated, one per connection
    failed: list[str] = field(default_factory=list)  # why connections were refused
    upstream_connections: int = 0  # connections made to the broker
    _credentials: dict[str, Credential] = field(default_factory=dict, repr=False)
    _server: asyncio.Server | None = field(default=None, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    async def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self._credentials = {name: Credential.of(password)
                             for name, password in (self.users or {}).items()}
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  ssl=context)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.broker_port)
            self.upstream_connections += 1
            if self.users is None or await self._authenticated(reader, writer, up_reader,
                                                               upstream):
                await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer),
                                     return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, ValueError, KeyError):
            pass  # the client went away or sent what no Kafka client would
        finally:
            self._tasks.discard(task)
            for side in (writer, upstream):
                if side is not None:
                    side.close()

    async def _authenticated(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             up_reader: asyncio.StreamReader,
                             upstream: asyncio.StreamWriter) -> bool:
        """Run the SASL exchange; True once the client is authenticated."""
        exchange: ScramExchange | None = None
        decided: bool | None = None
        while decided is None:
            frame = await _read_frame(reader)
            # Request header v1: api key, api version, correlation id, nullable client id.
            api_key, version, correlation, id_size = struct.unpack_from(">hhih", frame)
            body = frame[10 + max(id_size, 0):]
            header = struct.pack(">i", correlation)  # response header v0

            if api_key == API_VERSIONS and exchange is None:
                upstream.write(_frame(frame))
                writer.write(_frame(await _read_frame(up_reader)))
            elif api_key == SASL_HANDSHAKE and version == 1 and exchange is None:
                (size,) = struct.unpack_from(">h", body)
                wanted = body[2:2 + size].decode()
                code = 0 if wanted == MECHANISM else UNSUPPORTED_SASL_MECHANISM
                writer.write(_frame(header + struct.pack(">hi", code, 1) + _string(MECHANISM)))
                if code:
                    self.failed.append(f"mechanism {wanted}")
                    decided = False
                exchange = ScramExchange(self._credentials)
            elif api_key == SASL_AUTHENTICATE and version <= 1 and exchange is not None:
                (size,) = struct.unpack_from(">i", body)
                reply = exchange.step(body[4:4 + size])
                code = 0 if reply is not None else SASL_AUTHENTICATION_FAILED
                message = None if reply is not None else "Authentication failed"
                reply = reply or b""
                lifetime = struct.pack(">q", 0) if version == 1 else b""  # 0: no limit
                writer.write(_frame(header + struct.pack(">h", code) + _string(message)
                                    + struct.pack(">i", len(reply)) + reply + lifetime))
                if code:
                    self.failed.append("authentication")
                    decided = False
                elif exchange.user is not None:
                    self.sessions.append(exchange.user)
                    decided = True
            else:
                self.failed.append(f"api key {api_key} before authentication")
                decided = False
            await writer.drain()
        return decided
