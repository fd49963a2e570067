"""Channel adapters: the SMS gateway and push service over HTTP, e-mail over SMTP.

Every send carries the reminder id as its idempotency key, so a send repeated after a crash
or a lost answer is recognised by the provider (HTTP: it keeps the first message per key and
answers a repeat with the first one's id) or by whoever reads the mail (the Message-ID is
made from the key). An adapter tells two kinds of failure apart: `ChannelError`, which may
pass (the reminder is tried again later), and `ChannelRefused`, the provider's no for this
message (not retried). Neither carries the recipient or the text: exceptions and logs name
the reminder id, the provider's status and at most its short error code, never what else a
provider's answer says (it may quote the message back).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import httpx
from prometheus_client import Counter

from shared.errors import describe, mask

from services.reminder.settings import Settings

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Each handing-over of a message: `sent` (the provider took it), `refused` (its no for this
# message, not retried), `failed` (may pass; the reminder is tried again later).
SENDS = Counter("dunwell_channel_sends_total", "Messages handed to a channel, by outcome",
                ["channel", "outcome"])


@dataclass(frozen=True)
class OutboundMessage:
    idempotency_key: str  # the reminder id: the provider keeps the first message per key
    channel: str  # "sms" | "push" | "email"
    to: str  # phone number; e-mail address; for push the borrower_id
    text: str
    subject: str | None = None  # e-mail only
    language: str = "zh-CN"


class ChannelError(Exception):
    """The channel did not take the message this time; the reminder is tried again later."""


class ChannelRefused(ChannelError):
    """The provider said no to this message (HTTP 400, 413, 415 or 422; an SMTP 5xx about the
    recipient or the message): trying again won't help."""


class Gateway(Protocol):
    def send(self, message: OutboundMessage) -> str:
        """Hand the message over; the provider's message id, or ChannelError."""
        ...


BATCH = 100  # messages of one channel in one request to a provider that takes batches


class SendsBroke(Exception):
    """A gateway raised something that is no ChannelError (a fault of its own) while the others
    sent: `answers` holds, per message, what its provider said, None for the messages of the
    sends that broke, and `error` the first such fault."""

    def __init__(self, answers: list[str | ChannelError | None], error: Exception) -> None:
        super().__init__(describe(error))
        self.answers = answers
        self.error = error


def send_all(gateways: Mapping[str, Gateway], messages: Sequence[OutboundMessage],
             pool: Executor | None = None) -> list[str | ChannelError]:
    """Each message handed to its channel's gateway: per message, in order, the provider's id
    or the ChannelError it gave. A gateway that `takes_batches` gets its channel's messages
    `BATCH` at a time (`send_many`); the others get them one by one. Both go together on
    `pool` (one after the other without). Anything else a gateway raises is raised as
    SendsBroke, after every send ended, with what the other providers said: those messages
    were handed over and must be recorded so, not sent again."""
    channels: dict[str, list[int]] = {}
    for index, message in enumerate(messages):
        channels.setdefault(message.channel, []).append(index)
    jobs: list[list[int]] = []
    for channel, indexes in channels.items():
        if getattr(gateways[channel], "takes_batches", False) and len(indexes) > 1:
            jobs += [indexes[at:at + BATCH] for at in range(0, len(indexes), BATCH)]
        else:
            jobs += [[index] for index in indexes]
    answers: list[str | ChannelError | None] = [None] * len(messages)

    def run(job: list[int]) -> None:
        batch = [messages[index] for index in job]
        gateway = gateways[batch[0].channel]
        said = gateway.send_many(batch) if len(batch) > 1 else None  # type: ignore[attr-defined]
        if said is None:  # one by one (a single message, or no batches at this provider)
            said = [_one(gateway, message) for message in batch]
        for index, message, answer in zip(job, batch, said, strict=True):
            outcome = ("refused" if isinstance(answer, ChannelRefused) else
                       "failed" if isinstance(answer, ChannelError) else "sent")
            SENDS.labels(message.channel, outcome).inc()
            answers[index] = answer

    broke: list[Exception] = []

    def guarded(job: list[int]) -> None:
        try:
            run(job)
        except Exception as error:  # noqa: BLE001 - raised below, once every send ended
            broke.append(error)

    if pool is None or len(jobs) < 2:
        for job in jobs:
            guarded(job)
    else:
        wait([pool.submit(guarded, job) for job in jobs])
    if broke:
        raise SendsBroke(answers, broke[0])
    return [answer if answer is not None else ChannelError("not sent") for answer in answers]


def _one(gateway: Gateway, message: OutboundMessage) -> str | ChannelError:
    try:
        return gateway.send(message)
    except ChannelError as error:
        return error


# --- HTTP: the SMS gateway and the push service ----------------------------------------------

REFUSED = frozenset({400, 413, 415, 422})  # the provider's no to this message itself
RETRYABLE = frozenset({408, 429})
ANSWER_LIMIT = 64 * 1024  # a provider's answer is `{provider_id}` or an error: short
# A provider's own error code, the one thing taken from an answer's body: an identifier that
# starts with a letter (so no number), and is not a word of the message (checked at use).
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")


@dataclass(frozen=True)
class Retry:
    """How hard a send tries: attempts with doubling pauses, all within `deadline` seconds, so
    a worker thread (and the service's stop) is never held for long by one slow provider."""

    attempts: int = 4
    first_pause: float = 0.2
    deadline: float = 6.0


class HttpGateway:
    """A provider's JSON API: `POST {base_url}/v1/messages`, answered `{provider_id}`.

    - Connection errors, timeouts, 408, 429 and 5xx are tried again with backoff.
    - 400, 413, 415 and 422 say the message itself is unacceptable: ChannelRefused, at once.
    - Any other answer (401, 403, 404, 405, a redirect, another 4xx) is this installation's
      fault, a wrong URL or token: ChannelError at once (the reminder is tried again later,
      once it is fixed), logged as an error so an operator sees it.

    One send, every try and pause included, ends within `retry.deadline`: each try's reads
    are cut off at the deadline however the provider trickles its answer. Only the status and
    a provider's short error code are ever told, never what its answer says.
    """

    def __init__(self, base_url: str, token: str | None = None, *,
                 connect_timeout: float = 1.0, read_timeout: float = 3.0,
                 retry: Retry | None = None, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/messages"
        self.batch_url = f"{self.url}:batch"
        self._batches = True  # until the provider says it has no batch route
        self.retry = retry or Retry()
        self._timeouts = (connect_timeout, read_timeout)
        self._sleep = sleep
        headers = {"authorization": f"Bearer {token}"} if token else {}
        # No kept-alive connections: each try has its own, which the deadline can cut off.
        self._client = httpx.Client(headers=headers, transport=transport,
                                    limits=httpx.Limits(max_keepalive_connections=0))

    def close(self) -> None:
        self._client.close()

    def send(self, message: OutboundMessage) -> str:
        return self._tried(lambda deadline: self._attempt(message, deadline), message.channel,
                           message.idempotency_key)

    @property
    def takes_batches(self) -> bool:
        """Until the provider answered that it has no batch route."""
        return self._batches

    def send_many(self, messages: Sequence[OutboundMessage]) -> list[str | ChannelError] | None:
        """Messages of one channel in one request, `POST {base_url}/v1/messages:batch` with
        `{messages: [...]}`, answered `{items: [{index, status, provider_id | error}]}`: per
        message, in order, the provider's id or its ChannelError, each item judged as the
        single route's answer would be. The request is tried as a send is (backoff, all
        within the deadline); when it keeps failing every message has that failure. None when
        the provider has no such route (404, 405) or refuses the request whole (400, 415,
        422): the messages then go one by one, and later ones too; and None when it finds
        this batch too large (413): these go one by one, later batches still as batches."""
        if not messages or not self._batches:
            return None
        channel = messages[0].channel
        label = f"a batch of {len(messages)} from {messages[0].idempotency_key}"
        try:
            return self._tried(lambda deadline: self._attempt_many(messages, deadline),
                               channel, label)
        except _TooLarge:
            # This batch is too large for the provider, not its batches: these go one by one.
            log.info("%s provider found %s too large; sending it one by one", channel, label)
            return None
        except (_NoBatches, ChannelRefused):
            self._batches = False
            log.warning("%s provider takes no batches (%s); sending one by one", channel,
                        _shown(self.batch_url))
            return None
        except ChannelError as error:
            return [error] * len(messages)

    def _tried(self, once: Callable[[float], _T], channel: str, what: str) -> _T:
        """`once(deadline)` tried with doubling pauses while it may pass, within the deadline."""
        deadline = time.monotonic() + self.retry.deadline
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return once(deadline)
            except (ChannelRefused, _NoBatches):
                raise
            except _Misdirected as error:
                log.error("%s send of %s: %s, an answer about the request, not the message: "
                          "check this installation's gateway URL (%s) and token; the reminder "
                          "is tried again later", channel, what, error, _shown(self.url))
                raise
            except ChannelError as error:
                pause = self._pause(attempt, error)
                if attempt == self.retry.attempts or time.monotonic() + pause >= deadline:
                    raise
                log.warning("%s send of %s: %s; trying again in %.1f s", channel, what, error,
                            pause)
                self._sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _attempt(self, message: OutboundMessage, deadline: float) -> str:
        """One POST; the provider id, or ChannelError / ChannelRefused saying what happened."""
        body = {"idempotency_key": message.idempotency_key, "channel": message.channel,
                "to": message.to, "text": message.text, "language": message.language}
        status, answer, retry_after = self._post(
            self.url, body, {"idempotency-key": message.idempotency_key}, message.channel,
            deadline, ANSWER_LIMIT)
        return _provider_id(status, answer, retry_after, message)

    def _attempt_many(self, messages: Sequence[OutboundMessage],
                      deadline: float) -> list[str | ChannelError]:
        channel = messages[0].channel
        body = {"messages": [{"idempotency_key": m.idempotency_key, "channel": m.channel,
                              "to": m.to, "text": m.text, "language": m.language}
                             for m in messages]}
        status, answer, retry_after = self._post(self.batch_url, body, {}, channel, deadline,
                                                 ANSWER_LIMIT * 32)
        if status in (404, 405):
            raise _NoBatches(f"{channel} provider answered {status}")
        if status == 413:
            raise _TooLarge(f"{channel} provider answered 413 to a batch")
        if not 200 <= status < 300:
            _provider_id(status, answer, retry_after, messages[0])  # raises what it means
            raise ChannelError(f"{channel} provider answered {status} to a batch")
        try:
            found = [item for item in json.loads(answer)["items"]
                     if isinstance(item, dict) and type(item.get("index")) is int]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ChannelError(f"{channel} provider answered a batch without its items"
                               ) from None
        # An index answered twice says two things of one message: neither is taken (a 201
        # and a 422 must not make it refused for good); a retry under its key is safe.
        items: dict[int, dict[str, Any] | None] = {}
        for item in found:
            items[item["index"]] = None if item["index"] in items else item
        return [_item(items.get(index), message) for index, message in enumerate(messages)]

    def _post(self, url: str, body: dict[str, Any], headers: dict[str, str], channel: str,
              deadline: float, most: int) -> tuple[int, bytes, float | None]:
        """One POST cut off at the deadline: the status, at most `most` of the answer, and a
        short Retry-After."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChannelError(f"{channel} provider: no time left within the send's deadline")
        connect, read = (min(limit, left) for limit in self._timeouts)
        try:
            with _Watchdog(deadline) as watchdog, self._client.stream(
                    "POST", url, json=body, headers=headers,
                    timeout=httpx.Timeout(read, connect=connect, write=left, pool=left),
                    extensions={"trace": watchdog.trace}) as response:
                return (response.status_code, _read_until(response, deadline, most),
                        _retry_after(response))
        except httpx.HTTPError as error:
            if time.monotonic() >= deadline:
                raise _late(channel, self.retry.deadline) from None
            raise ChannelError(f"{channel} provider unreachable: "
                               f"{describe(error)}") from None

    def _pause(self, attempt: int, error: ChannelError) -> float:
        """Doubling pauses; longer when a busy provider asked for a (short) wait."""
        pause = self.retry.first_pause * 2.0 ** (attempt - 1)
        if isinstance(error, _Busy) and error.retry_after is not None:
            return max(pause, error.retry_after)
        return pause


class _NoBatches(ChannelError):
    """The provider has no batch route."""


class _TooLarge(ChannelRefused):
    """The provider takes batches, but not one this large (413)."""


def _item(item: dict[str, Any] | None, message: OutboundMessage) -> str | ChannelError:
    """A batch answer's item for one message, judged as the single route's answer."""
    if item is None:
        return ChannelError(f"{message.channel} provider answered a batch without this message")
    status = item.get("status")
    if not isinstance(status, int):
        return ChannelError(f"{message.channel} provider answered an item without its status")
    try:
        return _provider_id(status, json.dumps(item).encode(), None, message)
    except ChannelError as error:
        return error


class _Busy(ChannelError):
    """A 408, 429 or 5xx; carries the provider's Retry-After, if it gave a short one."""

    def __init__(self, text: str, retry_after: float | None) -> None:
        super().__init__(text)
        self.retry_after = retry_after


class _Misdirected(ChannelError):
    """An answer that says the request went wrong, not the message: a 3xx, 401, 403, 404…"""


class _Watchdog:
    """Shuts a try's connection down at the deadline, so no read outlives it.

    httpx's read timeout is per read: a provider that sends a byte now and then would hold a
    try for as long as it likes. The connection's socket is taken as it is opened (a copy of
    its descriptor: it outlives a TLS wrap) and shut at the deadline, which ends any read.
    """

    def __init__(self, deadline: float) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._fired = False
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's trace extension: every new connection of the try is watched."""
        if not event.endswith("connect_tcp.complete"):
            return
        stream = info.get("return_value")
        opened = getattr(stream, "get_extra_info", lambda _: None)("socket")
        if not isinstance(opened, socket.socket):
            return
        try:
            watched = socket.socket(fileno=os.dup(opened.fileno()))
        except OSError:
            return  # unwatched, the try still ends within its per-read timeouts
        with self._lock:
            if self._socket is not None:
                self._socket.close()
            self._socket = watched
            if self._fired:
                self._shut()

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)


def _read_until(response: httpx.Response, deadline: float, most: int = ANSWER_LIMIT) -> bytes:
    """The answer's body, at most `most` of it, read before the deadline."""
    data = bytearray()
    for chunk in response.iter_bytes():
        if time.monotonic() >= deadline:
            raise httpx.ReadTimeout("the answer did not end within the deadline")
        data += chunk
        if len(data) >= most:
            break
    return bytes(data)


def _late(channel: str, budget: float) -> ChannelError:
    return ChannelError(f"{channel} provider gave no full answer within the send's "
                        f"{budget:g} s")


def _provider_id(status: int, answer: bytes, retry_after: float | None,
                 message: OutboundMessage) -> str:
    channel = message.channel
    if 200 <= status < 300:
        try:
            provider_id = json.loads(answer)["provider_id"]
        except (ValueError, KeyError, TypeError, RecursionError):
            provider_id = None
        if not isinstance(provider_id, str) or not provider_id:
            # It may have the message: a retry under the same key is safe and tells us.
            raise ChannelError(f"{channel} provider answered {status} without a provider_id")
        return provider_id
    said = f"{status}, code {code}" if (code := _error_code(answer, message)) else f"{status}"
    if status in REFUSED:
        raise ChannelRefused(f"{channel} provider refused the message ({said})")
    if status in RETRYABLE or status >= 500:
        raise _Busy(f"{channel} provider answered {said}", retry_after)
    raise _Misdirected(f"{channel} provider answered {said}")


def _error_code(answer: bytes, message: OutboundMessage) -> str | None:
    """The provider's error code (`{"error": {"code"}}`, `{"error": "…"}`, `{"code"}`) when
    it is shaped like an identifier and is none of the message's words; else None. Nothing
    else of an answer is told: a provider may quote the message back, whole or in part."""
    try:
        body = json.loads(answer)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    said = (message.text, message.to, message.subject or "")
    for found in (error.get("code") if isinstance(error, dict) else error, body.get("code"),
                  body.get("error_code")):
        if (isinstance(found, str) and _CODE.fullmatch(found) and mask(found) == found
                and not any(found.lower() in words.lower() for words in said)):
            return found
    return None


def _retry_after(response: httpx.Response, ceiling: float = 2.0) -> float | None:
    """Retry-After in seconds when it is short enough to honour within one send."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= ceiling else None


def _shown(url: str) -> str:
    """The gateway's URL for a log line: without a user or password in it."""
    return str(httpx.URL(url).copy_with(username=None, password=None))


# --- SMTP: e-mail ------------------------------------------------------------------------------

_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
# An enhanced status code (RFC 3463), the one thing taken from a relay's words: the rest may
# quote the address or the message.
_ENHANCED = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})(?!\S)")


def message_id(idempotency_key: str) -> str:
    """The Message-ID of a reminder's mail: the same for every try, so a resend is known."""
    return f"<{_KEY_CHARS.sub('-', idempotency_key)}@dunwell>"


@dataclass(frozen=True)
class SmtpServer:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 5.0
    tls: ssl.SSLContext | None = None  # for STARTTLS; the system's trust store when None


class SmtpGateway:
    """E-mail through an SMTP relay, one connection per message (reminders are few a second).

    A 5xx about the recipient or the message is the relay's refusal (ChannelRefused); a 5xx
    about our sender, greeting or login is this installation's fault and passes once it is
    fixed, as do 4xx answers and broken connections (ChannelError). A domain in another
    script is sent IDNA-encoded (`xn--…`); an address whose own part is not ASCII needs a relay
    that offers SMTPUTF8, and is refused by one that does not.
    """

    def __init__(self, server: SmtpServer, mail_from: str) -> None:
        self.server = server
        self.mail_from = mail_from
        self._envelope_from = _ascii_domain(parseaddr(mail_from)[1] or mail_from)

    def send(self, message: OutboundMessage) -> str:
        mail = self.compose(message)
        recipient = _address_of(mail)
        try:
            with smtplib.SMTP(self.server.host, self.server.port,
                              timeout=self.server.timeout) as smtp:
                self._open(smtp)
                if not recipient.isascii() and not smtp.has_extn("smtputf8"):
                    raise ChannelRefused("the recipient's address is not ASCII and the relay "
                                         "does not offer SMTPUTF8")
                smtp.send_message(mail, self._envelope_from, [recipient])
        except smtplib.SMTPRecipientsRefused as error:
            code, text = next(iter(error.recipients.values()), (0, b""))
            raise _smtp_failure("the recipient", code, text) from None
        except smtplib.SMTPDataError as error:
            raise _smtp_failure("the message", error.smtp_code, error.smtp_error) from None
        except smtplib.SMTPResponseException as error:  # this installation's, or passing
            raise ChannelError(f"e-mail relay answered {_said(error.smtp_code, error.smtp_error)}"
                               f" about {_SESSION.get(type(error), 'the session')}") from None
        except (smtplib.SMTPException, OSError) as error:
            raise ChannelError(f"e-mail relay: {describe(error)}") from None
        return str(mail["Message-ID"])

    def compose(self, message: OutboundMessage) -> EmailMessage:
        """The mail as sent: UTF-8 subject (RFC 2047) and body (base64), keyed Message-ID,
        one recipient whose domain is ASCII (IDNA)."""
        mail = EmailMessage(policy=SMTP_POLICY)
        try:
            mail["From"] = self.mail_from
            mail["Subject"] = message.subject or ""
            mail["To"] = message.to
            addresses = mail["To"].addresses
            if len(addresses) != 1 or not addresses[0].username or not addresses[0].domain:
                raise ValueError("not one address")
            address = addresses[0]
            del mail["To"]
            mail["To"] = Address(address.display_name, address.username,
                                 _ascii_domain(address.domain))
        except (ValueError, IndexError, HeaderParseError):
            raise ChannelRefused("not a usable e-mail address or subject") from None
        mail["Message-ID"] = message_id(message.idempotency_key)
        mail["Date"] = formatdate(usegmt=True)
        mail.set_content(message.text, charset="utf-8", cte="base64")
        mail["Content-Language"] = message.language  # after: set_content clears Content-*
        return mail

    def _open(self, smtp: smtplib.SMTP) -> None:
        """Greet, then STARTTLS and log in as configured (STARTTLS before any password)."""
        smtp.ehlo()
        if self.server.starttls:
            smtp.starttls(context=self.server.tls or ssl.create_default_context())
            smtp.ehlo()
        if self.server.username:
            smtp.login(self.server.username, self.server.password or "")


_SESSION: dict[type[smtplib.SMTPResponseException], str] = {
    smtplib.SMTPSenderRefused: "our sender", smtplib.SMTPHeloError: "the greeting",
    smtplib.SMTPAuthenticationError: "the login", smtplib.SMTPConnectError: "the connection"}


def _ascii_domain(address: str) -> str:
    """`address` (or a bare domain) with its domain IDNA-encoded when it is not ASCII;
    ValueError when it cannot be."""
    local, at, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        encoded = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("not a usable domain") from None
    return f"{local}{at}{encoded}"


def _address_of(mail: EmailMessage) -> str:
    """The envelope recipient: the To header's one address, as `local@domain`."""
    return str(mail["To"].addresses[0].addr_spec)


def _said(code: int, text: bytes | str) -> str:
    """A relay's answer as told: its code, and its enhanced status code if it gave one."""
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    enhanced = _ENHANCED.match(words)
    return f"{code} {enhanced.group(1)}" if enhanced else str(code)


def _smtp_failure(what: str, code: int, text: bytes | str) -> ChannelError:
    summary = f"e-mail relay answered {_said(code, text)} about {what}"
    return ChannelRefused(summary) if 500 <= code < 600 else ChannelError(summary)


# --- the composition --------------------------------------------------------------------------


def build_gateways(settings: Settings) -> dict[str, Gateway]:
    """One gateway per channel, as the settings say: the embedded sinks by default."""
    token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
    retry = Retry(attempts=settings.gateway_attempts,
                  deadline=settings.gateway_deadline_seconds)

    def http(url: str) -> HttpGateway:
        return HttpGateway(url, token, connect_timeout=settings.gateway_connect_timeout_seconds,
                           read_timeout=settings.gateway_read_timeout_seconds, retry=retry)

    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    tls = (ssl.create_default_context(cafile=str(settings.smtp_ca_file))
           if settings.smtp_ca_file else None)
    server = SmtpServer(host=settings.smtp_host, port=settings.smtp_port,
                        starttls=settings.smtp_starttls, username=settings.smtp_username,
                        password=password, timeout=settings.smtp_timeout_seconds, tls=tls)
    return {"sms": http(settings.sms_gateway_url), "push": http(settings.push_gateway_url),
            "email": SmtpGateway(server, settings.mail_from)}


# --- the file sink of old ---------------------------------------------------------------------

LOCK_SECONDS = 10.0


class FileSmsSink:
    """An SMS gateway stand-in in the process itself: one JSON line per accepted message,
    fsynced before success. Kept for the in-memory tests; the embedded default now runs a
    real provider (dunwell/sinks.py) behind an HttpGateway.

    Several processes (replicas of the reminder service) may share the file: a send takes an
    exclusive lock on it and reads what the others appended since, so a repeated key is
    answered with the first message's id, whoever sent it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        self._accepted: dict[str, str] = {}
        self._read_to = 0

    def _catch_up(self, handle: IO[str]) -> None:
        """Read the lines appended since; a line cut short by a crash is passed over."""
        handle.seek(self._read_to)
        for line in handle:
            self._read_to += len(line.encode())
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            self._accepted.setdefault(entry["idempotency_key"], entry["provider_id"])

    @staticmethod
    def _lock_within(handle: IO[str], seconds: float) -> None:
        """The file lock, or ChannelError: a replica stuck holding it must not stall us."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ChannelError(f"the sink stayed locked for {seconds:.0f} s") from None
                time.sleep(0.01)

    def _ends_a_line(self, handle: IO[str]) -> bool:
        with self.path.open("rb") as raw:
            raw.seek(-1, os.SEEK_END)
            return raw.read(1) == b"\n"

    def send(self, message: OutboundMessage) -> str:
        with self._lock, self.path.open("a+", encoding="utf-8") as handle:
            try:
                self._lock_within(handle, LOCK_SECONDS)
                self._catch_up(handle)
                earlier = self._accepted.get(message.idempotency_key)
                if earlier is not None:
                    return earlier
                provider_id = f"sink-{uuid.uuid4().hex[:12]}"
                line = json.dumps({"idempotency_key": message.idempotency_key, "to": message.to,
                                   "text": message.text, "provider_id": provider_id}) + "\n"
                if self._read_to and not self._ends_a_line(handle):
                    line = "\n" + line  # after a line cut short by a crash
                handle.seek(0, os.SEEK_END)
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as error:
                raise ChannelError(f"sink write failed: {error.strerror}") from error
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
            self._accepted[message.idempotency_key] = provider_id
            self._read_to += len(line.encode())
            return provider_id
