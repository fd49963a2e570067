"""Channel adapters: the SMS gateway and push service over HTTP, e-mail over SMTP.

Every send carries the reminder id as its idempotency key, so a send repeated after a crash
or a lost answer is recognised by the provider (HTTP: it keeps the first message per key and
answers a repeat with the first one's id) or by whoever reads the mail (the Message-ID is
made from the key). An adapter tells two kinds of failure apart: `ChannelError`, which may
pass (the reminder is tried again later), and `ChannelRefused`, the provider's no for this
message (not retried). Neither carries the recipient or the text: exceptions and logs name
the reminder id and the provider's status only.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import IO, Protocol

import httpx

from shared.errors import describe, mask

from services.reminder.settings import Settings

log = logging.getLogger(__name__)

REASON_LIMIT = 160


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
    """The provider said no to this message (a 4xx, an SMTP 5xx): trying again won't help."""


class Gateway(Protocol):
    def send(self, message: OutboundMessage) -> str:
        """Hand the message over; the provider's message id, or ChannelError."""
        ...


def _reason(text: str) -> str:
    """A provider's words, masked (they may echo a number or an address) and cut short."""
    return mask(" ".join(text.split()))[:REASON_LIMIT]


# --- HTTP: the SMS gateway and the push service ----------------------------------------------

RETRYABLE = frozenset({408, 429})


@dataclass(frozen=True)
class Retry:
    """How hard a send tries: attempts with doubling pauses, all within `deadline` seconds, so
    a worker thread (and the service's stop) is never held for long by one slow provider."""

    attempts: int = 4
    first_pause: float = 0.2
    deadline: float = 6.0


class HttpGateway:
    """A provider's JSON API: `POST {base_url}/v1/messages`, answered `{provider_id}`.

    Connection errors, timeouts, 408, 429 and 5xx are tried again with backoff; any other
    4xx is the provider's refusal and raised at once as ChannelRefused.
    """

    def __init__(self, base_url: str, token: str | None = None, *,
                 connect_timeout: float = 1.0, read_timeout: float = 3.0,
                 retry: Retry | None = None, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/messages"
        self.retry = retry or Retry()
        self._timeouts = (connect_timeout, read_timeout)
        self._sleep = sleep
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(headers=headers, transport=transport)

    def close(self) -> None:
        self._client.close()

    def send(self, message: OutboundMessage) -> str:
        deadline = time.monotonic() + self.retry.deadline
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return self._attempt(message, deadline)
            except ChannelRefused:
                raise
            except ChannelError as error:
                pause = self._pause(attempt, error)
                if attempt == self.retry.attempts or time.monotonic() + pause >= deadline:
                    raise
                log.warning("%s send of %s: %s; trying again in %.1f s", message.channel,
                            message.idempotency_key, error, pause)
                self._sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _attempt(self, message: OutboundMessage, deadline: float) -> str:
        """One POST; the provider id, or ChannelError / ChannelRefused saying what happened."""
        left = max(deadline - time.monotonic(), 0.1)
        connect, read = (min(limit, left) for limit in self._timeouts)
        body = {"idempotency_key": message.idempotency_key, "channel": message.channel,
                "to": message.to, "text": message.text, "language": message.language}
        try:
            response = self._client.post(
                self.url, json=body, headers={"idempotency-key": message.idempotency_key},
                timeout=httpx.Timeout(read, connect=connect))
        except httpx.HTTPError as error:
            raise ChannelError(f"{message.channel} provider unreachable: "
                               f"{describe(error)}") from None
        return _provider_id(response, message)

    def _pause(self, attempt: int, error: ChannelError) -> float:
        """Doubling pauses; longer when a busy provider asked for a (short) wait."""
        pause = self.retry.first_pause * 2.0 ** (attempt - 1)
        if isinstance(error, _Busy) and error.retry_after is not None:
            return max(pause, error.retry_after)
        return pause


class _Busy(ChannelError):
    """A 408, 429 or 5xx; carries the provider's Retry-After, if it gave a short one."""

    def __init__(self, text: str, retry_after: float | None) -> None:
        super().__init__(text)
        self.retry_after = retry_after


def _provider_id(response: httpx.Response, message: OutboundMessage) -> str:
    status, channel = response.status_code, message.channel
    if response.is_success:
        try:
            provider_id = response.json()["provider_id"]
        except (ValueError, KeyError, TypeError):
            provider_id = None
        if not isinstance(provider_id, str) or not provider_id:
            # It may have the message: a retry under the same key is safe and tells us.
            raise ChannelError(f"{channel} provider answered {status} without a provider_id")
        return provider_id
    reason = _scrubbed(_error_text(response), message)
    if status in RETRYABLE or status >= 500:
        raise _Busy(f"{channel} provider answered {status}: {reason}",
                    _retry_after(response))
    raise ChannelRefused(f"{channel} provider refused the message ({status}): {reason}")


def _error_text(response: httpx.Response) -> str:
    """The provider's reason: `{"error": {"message"}}`, FastAPI's `detail`, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        found = error.get("message") if isinstance(error, dict) else body.get("detail")
        if found:
            return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
    return json.dumps(body, ensure_ascii=False)


def _scrubbed(text: str, message: OutboundMessage) -> str:
    """A provider may quote the message back: its recipient and text never go further."""
    for said, name in ((message.text, "<text>"), (message.to, "<to>")):
        if said:
            text = text.replace(said, name)
    return _reason(text)


def _retry_after(response: httpx.Response, ceiling: float = 2.0) -> float | None:
    """Retry-After in seconds when it is short enough to honour within one send."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= ceiling else None


# --- SMTP: e-mail ------------------------------------------------------------------------------

_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")


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
    fixed, as do 4xx answers and broken connections (ChannelError).
    """

    def __init__(self, server: SmtpServer, mail_from: str) -> None:
        self.server = server
        self.mail_from = mail_from
        self._envelope_from = parseaddr(mail_from)[1] or mail_from

    def send(self, message: OutboundMessage) -> str:
        mail = self.compose(message)
        try:
            with smtplib.SMTP(self.server.host, self.server.port,
                              timeout=self.server.timeout) as smtp:
                self._open(smtp)
                smtp.send_message(mail, self._envelope_from, [message.to])
        except smtplib.SMTPRecipientsRefused as error:
            code, text = next(iter(error.recipients.values()), (0, b""))
            raise _smtp_failure("the recipient", code, text) from None
        except smtplib.SMTPDataError as error:
            raise _smtp_failure("the message", error.smtp_code, error.smtp_error) from None
        except (smtplib.SMTPException, OSError) as error:
            raise ChannelError(f"e-mail relay: {describe(error)}") from None
        return str(mail["Message-ID"])

    def compose(self, message: OutboundMessage) -> EmailMessage:
        """The mail as sent: UTF-8 subject (RFC 2047) and body (base64), keyed Message-ID."""
        mail = EmailMessage(policy=SMTP_POLICY)
        try:
            mail["From"] = self.mail_from
            mail["To"] = message.to
            mail["Subject"] = message.subject or ""
        except (ValueError, IndexError, HeaderParseError):
            raise ChannelRefused("not a usable e-mail address or subject") from None
        if "@" not in message.to:
            raise ChannelRefused("not a usable e-mail address")
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


def _smtp_failure(what: str, code: int, text: bytes | str) -> ChannelError:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    summary = f"e-mail relay answered {code} about {what}: {_reason(words)}"
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
