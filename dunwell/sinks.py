"""The embedded default's channel providers: real servers on loopback that keep what they get.

- The provider sink stands in for an SMS gateway and a push service: `POST /v1/messages`
  takes `{idempotency_key, channel, to, text, language}`, keeps the first message per key (a
  repeat is answered with the first one's `provider_id`), appends it to
  `<outbox>/<channel>.jsonl` (fsynced before the answer), and later posts a delivery receipt
  to the reminder service, as a real provider's callback would; the receipts still to post
  are kept in `<outbox>/receipts.jsonl`, so a stop loses none.
- The SMTP sink (aiosmtpd) keeps every mail in a Maildir.

Both run as one process each, so any number of reminder replicas share them; `python -m
dunwell.sinks provider|smtp ...` starts one, and SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import io
import json
import logging
import mailbox
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, cast

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("dunwell.sinks")

CHANNELS = ("sms", "push")
MAX_BODY = 64 * 1024
MAX_BATCH_BODY = 4 * 1024 * 1024  # `POST /v1/messages:batch`: up to MESSAGES_A_BATCH messages
MESSAGES_A_BATCH = 1000
BODY_SECONDS = 5.0  # how long a request's body may take, in all, once its headers came
LINGER_SECONDS = 1.0  # how long what follows a request refused mid-way is read and dropped
_DIGITS = re.compile(r"[0-9]{1,12}")


# --- the outbox ---------------------------------------------------------------------------------


class Outbox:
    """The messages the provider accepted: one JSON line each, per channel, first per key wins.

    The sink is one process, so a lock in it orders every replica's sends; what the files hold
    is read back at start, so a restarted sink still answers a repeat with the first id. A line
    a crash left half-written is passed over, and the next one starts on a line of its own.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._accepted: dict[tuple[str, str], str] = {}
        for channel in CHANNELS:
            for entry in read_jsonl(self.path(channel)):
                key, provider_id = entry.get("idempotency_key"), entry.get("provider_id")
                if isinstance(key, str) and isinstance(provider_id, str):
                    self._accepted.setdefault((channel, key), provider_id)

    def path(self, channel: str) -> Path:
        return self.folder / f"{channel}.jsonl"

    @property
    def receipts_path(self) -> Path:
        """Where the receipts still to post are kept, next to the messages."""
        return self.folder / "receipts.jsonl"

    def accept(self, message: dict[str, str], at: datetime) -> tuple[str, bool]:
        """The provider id, and whether the message is new (False: a repeat of its key)."""
        key = (message["channel"], message["idempotency_key"])
        with self._lock:
            earlier = self._accepted.get(key)
            if earlier is not None:
                return earlier, False
            provider_id = f"prov-{uuid.uuid4().hex[:16]}"
            entry = {**message, "provider_id": provider_id,
                     "accepted_at": at.isoformat(timespec="milliseconds")}
            append_line(self.path(message["channel"]), json.dumps(entry, ensure_ascii=False))
            self._accepted[key] = provider_id
            return provider_id, True

    def accept_many(self, messages: list[dict[str, str]], at: datetime
                    ) -> list[tuple[str, bool]]:
        """`accept` for many, each channel's new lines written and fsynced once."""
        with self._lock:
            answers: list[tuple[str, bool]] = []
            lines: dict[str, list[str]] = {}
            for message in messages:
                key = (message["channel"], message["idempotency_key"])
                earlier = self._accepted.get(key)
                if earlier is not None:
                    answers.append((earlier, False))
                    continue
                provider_id = f"prov-{uuid.uuid4().hex[:16]}"
                entry = {**message, "provider_id": provider_id,
                         "accepted_at": at.isoformat(timespec="milliseconds")}
                lines.setdefault(message["channel"], []).append(
                    json.dumps(entry, ensure_ascii=False))
                self._accepted[key] = provider_id
                answers.append((provider_id, True))
            sizes: dict[Path, int] = {}
            try:
                for channel, written in lines.items():
                    path = self.path(channel)
                    sizes[path] = path.stat().st_size if path.exists() else 0
                    append_line(path, "\n".join(written))
            except OSError:
                # Nothing of the batch kept: the lines written of it (another channel's, or
                # those before a write failed part-way) are cut off again, so that a restart
                # never reads an id its sender was not given.
                for path, size in sizes.items():
                    _cut_back(path, size)
                for message, (_, new) in zip(messages, answers, strict=True):
                    if new:  # not kept: not accepted, so a try again is new again
                        self._accepted.pop((message["channel"], message["idempotency_key"]),
                                           None)
                raise
            return answers


def _cut_back(path: Path, size: int) -> None:
    """`path` cut back to `size` bytes and fsynced, if it can be (else logged: a restart may
    then read a line of a batch that was refused)."""
    try:
        if path.stat().st_size <= size:
            return  # nothing of the batch reached it
        with path.open("rb+") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        log.error("the outbox %s could not be cut back after a failed write: %s", path.name,
                  error.strerror)


def append_line(path: Path, line: str) -> None:
    """`line` appended to a JSON Lines file and fsynced; on a line of its own when the file
    ends inside one (a write a crash cut short), which is thus left alone, not glued to."""
    with path.open("ab+") as handle:
        handle.seek(0, os.SEEK_END)
        data = line.encode("utf-8") + b"\n"
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The entries of a JSON Lines file. A line that cannot be read (cut short by a crash, not
    UTF-8, not a JSON object) is passed over, and the lines after it are read as usual."""
    if not path.exists():
        return []
    entries, unreadable = [], 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
        else:
            unreadable += 1
    if unreadable:
        log.warning("passed over %d unreadable lines of %s", unreadable, path)
    return entries


# --- delivery receipts --------------------------------------------------------------------------


@dataclass(order=True)
class Receipt:
    due: float
    channel: str = field(compare=False)
    body: dict[str, str] = field(compare=False)
    attempt: int = field(default=1, compare=False)
    not_found: int = field(default=0, compare=False)  # of the attempts, those answered 404
    unauthorized: int = field(default=0, compare=False)  # those answered 401


@dataclass(frozen=True)
class ReceiptPolicy:
    """When to post a receipt and how long to keep trying: while the reminder service is
    down or failing (5xx), and a few times on a 404 (the send may not be recorded yet) or a 401
    (the token may be being renewed)."""

    delay: float = 0.5
    first_pause: float = 0.5
    longest_pause: float = 10.0
    attempts: int = 12
    attempts_on_404: int = 5
    attempts_on_401: int = 5


PENDING, POSTED, GIVEN_UP = "pending", "posted", "given_up"
BATCH = 500  # receipts posted in one request, at most (the reminder takes up to 1 000)


class Receipts:
    """Receipts posted to `{reminder_url}/v1/receipts/{channel}:batch` by a few worker threads,
    each one due at its time, so one that must wait never holds back the others: a worker
    takes every receipt due (up to `BATCH`) and posts each channel's in one request, as
    providers that report receipts in batches do.

    With a journal (`keep_in`, which the provider sink does next to its outbox) each receipt's
    state is kept on disk: pending when expected (fsynced before the send is answered), then
    posted or given up. Receipts still pending at a stop are posted after the next start, and a
    repeated send of a key whose receipt was never posted schedules it again.
    """

    def __init__(self, reminder_url: str, token: Callable[[], str],
                 policy: ReceiptPolicy | None = None, now: Callable[[], datetime] | None = None,
                 workers: int = 4) -> None:
        self.url = reminder_url.rstrip("/")
        self.policy = policy or ReceiptPolicy()
        self._token = token
        self._now = now or (lambda: datetime.now(UTC))
        self._due: list[Receipt] = []
        self._ready = threading.Condition()
        self._stopping = False
        self._states: dict[tuple[str, str], str] = {}
        self._kept = threading.Lock()  # the states and the journal
        self.journal: Path | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0))
        # The latest receipts the reminder service took, for tests; bounded for a long run.
        self.posted: deque[dict[str, str]] = deque(maxlen=1000)
        self._workers = [threading.Thread(target=self._work, name=f"receipts-{i}", daemon=True)
                         for i in range(workers)]
        for worker in self._workers:
            worker.start()

    def keep_in(self, journal: Path) -> None:
        """Keep the receipts' states in `journal` from now on; the ones it holds as pending
        (left by an earlier run) are scheduled. Compacts it to one line per receipt."""
        with self._kept:
            if self.journal is not None:
                return
            entries = [e for e in read_jsonl(journal)
                       if isinstance(e.get("channel"), str)
                       and isinstance(e.get("message_id"), str)
                       and e.get("state") in (PENDING, POSTED, GIVEN_UP)]
            latest: dict[tuple[str, str], dict[str, Any]] = {}
            for entry in entries:
                latest[(entry["channel"], entry["message_id"])] = entry
            _rewrite(journal, latest.values())
            self.journal = journal
            replayed = []
            for key, entry in latest.items():
                if key in self._states:
                    continue  # expected in this run already
                state, body = entry["state"], entry.get("body")
                if state == PENDING and isinstance(body, dict):
                    replayed.append(Receipt(time.monotonic() + self.policy.delay, key[0],
                                            {k: str(v) for k, v in body.items()}))
                elif state == PENDING:
                    state = GIVEN_UP  # nothing to post: a repeated send schedules it anew
                self._states[key] = state
        for receipt in replayed:
            self._put(receipt)
        if replayed:
            log.info("%d receipts left pending by the last run are due again", len(replayed))

    def expect(self, channel: str, message_id: str, failed_reason: str | None = None) -> None:
        """A receipt for a message just accepted, due after the policy's delay; nothing when
        that message's receipt is already pending or posted (a repeated send)."""
        self.expect_many([(channel, message_id, failed_reason)])

    def expect_many(self, expected: list[tuple[str, str, str | None]]) -> None:
        """`expect` for many (channel, message id, failed reason), journalled in one write."""
        due = time.monotonic() + self.policy.delay
        fresh: list[Receipt] = []
        with self._kept:
            entries = []
            for channel, message_id, failed_reason in expected:
                if self._states.get((channel, message_id)) in (PENDING, POSTED):
                    continue
                self._states[(channel, message_id)] = PENDING  # a key twice in `expected`
                body = {"message_id": message_id,
                        "status": "failed" if failed_reason else "delivered"}
                if failed_reason:
                    body["reason"] = failed_reason
                entries.append({"channel": channel, "message_id": message_id,
                                "state": PENDING, "body": body})
                fresh.append(Receipt(due, channel, body))
            self._record(entries)
        for receipt in fresh:
            self._put(receipt)

    def close(self) -> None:
        with self._ready:
            self._stopping = True
            left = len(self._due)
            self._ready.notify_all()
        for worker in self._workers:
            worker.join(timeout=8)
        self._client.close()
        if left and self.journal is not None:
            log.info("stopped with %d receipts not yet posted; they are kept for the next "
                     "start", left)
        elif left:
            log.warning("stopped with %d receipts not yet posted", left)

    def _record(self, entries: list[dict[str, Any]]) -> None:
        """Receipts' new states (`{channel, message_id, state[, body]}`), in memory and in the
        journal, in one write. Holds `_kept`."""
        for entry in entries:
            self._states[(entry["channel"], entry["message_id"])] = entry["state"]
        if not entries or self.journal is None:
            return
        try:
            append_line(self.journal, "\n".join(json.dumps(entry, ensure_ascii=False)
                                                for entry in entries))
        except OSError as error:
            log.error("the receipts journal %s could not be written: %s", self.journal,
                      error.strerror)

    def _settled(self, settled: list[tuple[Receipt, str]]) -> None:
        with self._kept:
            self._record([{"channel": receipt.channel, "message_id": receipt.body["message_id"],
                           "state": state} for receipt, state in settled])

    def _put(self, receipt: Receipt) -> None:
        with self._ready:
            heapq.heappush(self._due, receipt)
            self._ready.notify()

    def _next(self) -> list[Receipt]:
        """The receipts due now, at most `BATCH` of them, once one is due; [] when stopping."""
        with self._ready:
            while not self._stopping:
                wait = self._due[0].due - time.monotonic() if self._due else None
                if wait is not None and wait <= 0:
                    due: list[Receipt] = []
                    now = time.monotonic()
                    while self._due and self._due[0].due <= now and len(due) < BATCH:
                        due.append(heapq.heappop(self._due))
                    return due
                self._ready.wait(wait)
            return []

    def _work(self) -> None:
        while due := self._next():
            channels: dict[str, list[Receipt]] = {}
            for receipt in due:
                channels.setdefault(receipt.channel, []).append(receipt)
            for channel, receipts in channels.items():
                self._post(channel, receipts)

    def _post(self, channel: str, receipts: list[Receipt]) -> None:
        """One channel's due receipts in one request to the batch route; each is settled by
        its own item of the answer, or tried again as the whole answer says. A request refused
        whole (400, 413, 422) is posted again a receipt to a request."""
        at = self._now().astimezone(UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
        for receipt in receipts:
            receipt.body.setdefault("at", at)
        try:
            response = self._client.post(
                f"{self.url}/v1/receipts/{channel}:batch",
                json={"receipts": [receipt.body for receipt in receipts]},
                headers={"authorization": f"Bearer {self._token()}"})
            status = response.status_code
            items = response.json()["items"] if status == 200 else []
            answered = {item["index"]: item for item in items
                        if isinstance(item, dict) and type(item.get("index")) is int}
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError) as error:
            status, why, answered = 0, type(error).__name__, {}
        else:
            why = str(status)
        if status in (400, 413, 422) and len(receipts) > 1:
            # The request refused whole, maybe for one receipt of it (a message id the
            # reminder cannot take): each is posted on its own, so only that one is lost.
            for receipt in receipts:
                self._post(channel, [receipt])
            return
        settled: list[tuple[Receipt, str]] = []
        for index, receipt in enumerate(receipts):
            item = answered.get(index)
            if item is not None and item.get("status") == "accepted":
                settled.append((receipt, POSTED))
                continue
            # A rejected item is not (yet) known as sent: as a 404 of the single route.
            said = 404 if item is not None else (status if status != 200 else 0)
            if self._again(receipt, said):
                continue
            settled.append((receipt, GIVEN_UP))
            log.warning("receipt for %s given up after %d attempts (%s)",
                        receipt.body["message_id"], receipt.attempt,
                        "not_found" if item is not None else why)
        self._settled(settled)
        self.posted.extend(receipt.body for receipt, state in settled if state == POSTED)

    def _again(self, receipt: Receipt, status: int) -> bool:
        """Schedule another try when the answer may change; False when it will not."""
        not_found = receipt.not_found + (status == 404)
        unauthorized = receipt.unauthorized + (status == 401)
        if status == 404:
            worth_it = not_found < self.policy.attempts_on_404
        elif status == 401:
            worth_it = unauthorized < self.policy.attempts_on_401
            if worth_it:
                log.warning("receipt for %s: the reminder service refused the provider token "
                            "(401); trying again", receipt.body["message_id"])
        else:
            # A 409 is the reminder's "changed meanwhile, send it again" (a batch of receipts
            # that kept conflicting): a repeated receipt changes nothing there.
            worth_it = status in (0, 409) or status >= 500
        if not worth_it or receipt.attempt >= self.policy.attempts:
            return False
        pause = min(self.policy.first_pause * 2 ** (receipt.attempt - 1),
                    self.policy.longest_pause)
        self._put(Receipt(time.monotonic() + pause, receipt.channel, receipt.body,
                          receipt.attempt + 1, not_found, unauthorized))
        return True


def _rewrite(path: Path, entries: Iterable[dict[str, Any]]) -> None:
    """`path` replaced, atomically, by `entries` as JSON Lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        for entry in entries:
            handle.write(json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def token_from(path: Path) -> Callable[[], str]:
    """The provider token, read at each receipt: a token renewed in the file is used at once."""
    return lambda: path.read_text().strip()


# --- the provider's HTTP API --------------------------------------------------------------------


class Refusal(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Behaviour:
    """How the sink answers, for demos and tests: recipients whose receipt says failed,
    recipients it refuses outright (400), and how many sends it answers 503 before any works."""

    fail_to: frozenset[str] = frozenset()
    refuse_to: frozenset[str] = frozenset()
    busy_first: int = 0
    api_token: str | None = None


class ProviderSink:
    """The SMS and push provider on 127.0.0.1: `POST /v1/messages`, answered 201 (new) or 200
    (a repeat of its key) with `{provider_id}`."""

    def __init__(self, outbox: Outbox, receipts: Receipts | None = None, port: int = 0,
                 behaviour: Behaviour | None = None,
                 now: Callable[[], datetime] | None = None) -> None:
        self.outbox = outbox
        self.receipts = receipts
        if receipts is not None:
            receipts.keep_in(outbox.receipts_path)  # pending receipts outlive a stop
        self.behaviour = behaviour or Behaviour()
        self.requests = 0  # every POST /v1/messages seen, for tests counting retries
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="provider-sink", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProviderSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop taking sends, finish the ones in hand, then stop the receipts."""
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever, so only once it runs
            self._thread.join(timeout=5)
        self._server.server_close()
        if self.receipts is not None:
            self.receipts.close()

    def take(self, authorization: str | None, idempotency_header: str | None,
             body: Any) -> tuple[HTTPStatus, str]:
        """One send: checks, the outbox, the receipt to come. Raises Refusal."""
        self._count_and_maybe_busy()
        token = self.behaviour.api_token
        if token is not None and authorization != f"Bearer {token}":
            raise Refusal(HTTPStatus.UNAUTHORIZED, "unauthorized", "a bearer token is required")
        message = _message(body, idempotency_header)
        if message["to"] in self.behaviour.refuse_to:
            raise Refusal(HTTPStatus.BAD_REQUEST, "recipient_refused",
                          "the provider does not deliver to this recipient")
        try:
            provider_id, new = self.outbox.accept(message, self._now())
        except OSError as error:
            log.error("the outbox could not be written: %s", error.strerror)
            raise Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable",
                          "the message could not be kept; try again") from None
        if new:
            log.info("accepted %s %s as %s", message["channel"], message["idempotency_key"],
                     provider_id)
        if self.receipts is not None:  # a repeat: again, unless its receipt is under way
            failed = "unreachable" if message["to"] in self.behaviour.fail_to else None
            self.receipts.expect(message["channel"], message["idempotency_key"], failed)
        return (HTTPStatus.CREATED if new else HTTPStatus.OK), provider_id

    def take_many(self, authorization: str | None, body: Any) -> list[dict[str, Any]]:
        """Many sends, `{messages: [...]}`: each checked and answered on its own (`status`
        201, 200 for a repeat, or the single route's 4xx with `error`), the new ones kept in
        one write. Raises Refusal for the whole request (busy, token, not a batch)."""
        self._count_and_maybe_busy()
        token = self.behaviour.api_token
        if token is not None and authorization != f"Bearer {token}":
            raise Refusal(HTTPStatus.UNAUTHORIZED, "unauthorized", "a bearer token is required")
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MESSAGES_A_BATCH:
            raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid",
                          f"the body is not {{messages: [1 to {MESSAGES_A_BATCH}]}}")
        answers: list[dict[str, Any]] = [{} for _ in items]
        taken: list[tuple[int, dict[str, str]]] = []
        for index, item in enumerate(items):
            try:
                message = _message(item, None)
                if message["to"] in self.behaviour.refuse_to:
                    raise Refusal(HTTPStatus.BAD_REQUEST, "recipient_refused",
                                  "the provider does not deliver to this recipient")
            except Refusal as refusal:
                answers[index] = {"index": index, "status": int(refusal.status),
                                  **_error(refusal.code, str(refusal))}
                continue
            taken.append((index, message))
        try:
            kept = self.outbox.accept_many([message for _, message in taken], self._now())
        except OSError as error:
            log.error("the outbox could not be written: %s", error.strerror)
            raise Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable",
                          "the messages could not be kept; try again") from None
        for (index, _), (provider_id, new) in zip(taken, kept, strict=True):
            answers[index] = {"index": index, "status": 201 if new else 200,
                              "provider_id": provider_id}
        if self.receipts is not None:  # a repeat: again, unless its receipt is under way
            self.receipts.expect_many([
                (message["channel"], message["idempotency_key"],
                 "unreachable" if message["to"] in self.behaviour.fail_to else None)
                for _, message in taken])
        log.info("accepted %d of %d messages of a batch", sum(a.get("status") == 201
                                                              for a in answers), len(items))
        return answers

    def _count_and_maybe_busy(self) -> None:
        with self._lock:
            self.requests += 1
            busy = self.requests <= self.behaviour.busy_first
        if busy:
            raise Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "busy", "try again shortly")


def _message(body: Any, idempotency_header: str | None) -> dict[str, str]:
    """The message's fields, checked; a 422 Refusal names what is wrong, never a value."""
    if not isinstance(body, dict):
        raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid", "the body is not an object")
    message = {name: body.get(name) for name in
               ("idempotency_key", "channel", "to", "text", "language")}
    message["language"] = message["language"] or "zh-CN"
    bad = [name for name, value in message.items() if not isinstance(value, str) or not value]
    if bad:
        raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid",
                      f"missing or not text: {', '.join(bad)}")
    if message["channel"] not in CHANNELS:
        raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid",
                      f"channel must be one of {', '.join(CHANNELS)}")
    if idempotency_header is not None and idempotency_header != message["idempotency_key"]:
        raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid",
                      "the Idempotency-Key header differs from idempotency_key")
    return {name: str(value) for name, value in message.items()}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 sink: ProviderSink) -> None:
        self.sink = sink
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    """Every request is answered with JSON, a malformed one with a 4xx: never a dropped
    connection, never a handler left waiting for a body that does not come."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle kept-alive connection is closed after this
    left_unread = False  # a body refused before it was read in full: the connection ends

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        sink = cast(_Server, self.server).sink
        authorization = self.headers.get("authorization")
        if path == "/v1/messages:batch":
            self._taken("a batch of sends", lambda: (
                HTTPStatus.OK, {"items": sink.take_many(authorization,
                                                        self._body(MAX_BATCH_BODY))}))
        elif path == "/v1/messages":
            def one() -> tuple[HTTPStatus, dict[str, Any]]:
                status, provider_id = sink.take(authorization,
                                                self.headers.get("idempotency-key"),
                                                self._body())
                return status, {"provider_id": provider_id}

            self._taken("a send", one)
        else:
            self._end_after_answer()  # its body is not read
            self._answer(HTTPStatus.NOT_FOUND, _error("not_found", "no such route"))

    def _taken(self, what: str, take: Callable[[], tuple[HTTPStatus, dict[str, Any]]]
               ) -> None:
        """Answer what `take` gives, its Refusal as such, anything else as a 500."""
        try:
            status, answer = take()
        except Refusal as refusal:
            extra = {"retry-after": "0"} if refusal.status == HTTPStatus.SERVICE_UNAVAILABLE \
                else {}
            self._answer(refusal.status, _error(refusal.code, str(refusal)), extra)
            return
        except Exception:  # logged: a request is answered, whatever went wrong
            log.exception("%s could not be taken", what)
            self.close_connection = True
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR,
                         _error("internal", f"{what} could not be taken; try again"))
            return
        self._answer(status, answer)

    def _body(self, most: int = MAX_BODY) -> Any:
        """The request's JSON body, or Refusal. A body whose end is not known (no usable
        Content-Length), too large, or cut short also ends the connection after the answer:
        what follows on it could not be told apart from the next request."""
        if self.headers.get("transfer-encoding"):
            self._end_after_answer()
            raise Refusal(HTTPStatus.BAD_REQUEST, "invalid", "send the body with Content-Length")
        given = {value.strip() for value in self.headers.get_all("content-length") or ["0"]}
        said = given.pop() if len(given) == 1 else ""
        if not _DIGITS.fullmatch(said):  # not a number, negative, or two that differ
            self._end_after_answer()
            raise Refusal(HTTPStatus.BAD_REQUEST, "invalid", "Content-Length is not a length")
        length = int(said)
        if length > most:
            self._end_after_answer()
            raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large", "body too large")
        data = self._read(length)
        if len(data) < length:
            self._end_after_answer()
            raise Refusal(HTTPStatus.BAD_REQUEST, "invalid", "the body is shorter than "
                          "Content-Length")
        try:
            return json.loads(data or b"null")
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise Refusal(HTTPStatus.BAD_REQUEST, "invalid", "the body is not JSON") from None

    def _read(self, length: int) -> bytes:
        """Up to `length` bytes of body, as many as come within BODY_SECONDS in all."""
        data, deadline = bytearray(), time.monotonic() + BODY_SECONDS
        reader = cast(io.BufferedReader, self.rfile)
        try:
            while len(data) < length and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = reader.read1(length - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError:  # the body did not come in time, or the client went
            pass
        finally:
            self.connection.settimeout(self.timeout)
        return bytes(data)

    def _end_after_answer(self) -> None:
        self.close_connection = self.left_unread = True

    def _answer(self, status: HTTPStatus, body: dict[str, Any],
                headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def finish(self) -> None:
        """After an answer that ends the connection, what the client still sends is read and
        dropped for a moment before it closes: closed with data unread, the connection would be
        reset, and the client might lose the answer."""
        super().finish()
        if not self.left_unread:
            return
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            deadline, drained = time.monotonic() + LINGER_SECONDS, 0
            while time.monotonic() < deadline and drained < 4 * MAX_BODY:
                chunk = self.connection.recv(MAX_BODY)
                if not chunk:
                    break
                drained += len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged by the sink itself (by key, never by recipient)."""


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": {}}}


# --- the SMTP server ------------------------------------------------------------------------------


class MaildirKeeper:
    """An aiosmtpd handler that keeps each mail, exactly as received, in a Maildir.

    Recipients in `refuse` and any at a `.invalid` domain (RFC 2606) are refused with 550, so
    tests and demos can see a relay's permanent no.
    """

    def __init__(self, maildir: Path, refuse: Iterable[str] = ()) -> None:
        self.maildir = mailbox.Maildir(maildir, create=True)
        self.refuse = {address.lower() for address in refuse}

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        lowered = address.lower()
        if lowered in self.refuse or lowered.rstrip(">").endswith(".invalid"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        key = self.maildir.add(content)
        log.info("kept a mail as %s", key)
        return "250 2.0.0 OK"


class SmtpSink:
    """The local SMTP server, on 127.0.0.1 only, without TLS or login."""

    def __init__(self, maildir: Path, port: int = 0, refuse: Iterable[str] = ()) -> None:
        self.keeper = MaildirKeeper(maildir, refuse)
        self.port = port or _free_port()
        self._controller = Controller(self.keeper, hostname="127.0.0.1", port=self.port,
                                      ready_timeout=10)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the command ---------------------------------------------------------------------------------


def _until_stopped() -> None:
    """Block until SIGTERM or SIGINT."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(0.5):
        pass


def _clock(path: Path | None) -> Callable[[], datetime] | None:
    """The installation's simulated clock when it has one, so receipts agree with its time."""
    if path is None:
        return None
    from shared.clock import SimulatedClock

    return SimulatedClock(path).now


def run_provider(options: argparse.Namespace) -> None:
    now = _clock(options.clock_file)
    receipts = None
    if options.reminder_url:
        receipts = Receipts(options.reminder_url, token_from(options.token_file),
                            ReceiptPolicy(delay=options.receipt_delay), now=now)
    behaviour = Behaviour(fail_to=frozenset(options.fail_to),
                          refuse_to=frozenset(options.refuse_to))
    sink = ProviderSink(Outbox(options.outbox), receipts, options.port, behaviour, now).start()
    log.info("provider sink on %s, outbox %s", sink.url, options.outbox)
    _until_stopped()
    sink.stop()
    log.info("provider sink stopped")


def run_smtp(options: argparse.Namespace) -> None:
    sink = SmtpSink(options.maildir, options.port, options.refuse).start()
    log.info("smtp sink on 127.0.0.1:%d, maildir %s", sink.port, options.maildir)
    _until_stopped()
    sink.stop()
    log.info("smtp sink stopped")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m dunwell.sinks", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    provider = commands.add_parser("provider", help="the SMS and push provider over HTTP")
    provider.add_argument("--port", type=int, default=8005)
    provider.add_argument("--outbox", type=Path, default=Path("var/outbox"))
    provider.add_argument("--reminder-url", help="where receipts go; none are sent without it")
    provider.add_argument("--token-file", type=Path, default=Path("var/provider.token"),
                          help="a bearer token with role provider, for the receipts")
    provider.add_argument("--receipt-delay", type=float, default=0.5, help="seconds")
    provider.add_argument("--fail-to", action="append", default=[], metavar="RECIPIENT",
                          help="report this recipient's messages as failed (repeatable)")
    provider.add_argument("--refuse-to", action="append", default=[], metavar="RECIPIENT",
                          help="refuse messages to this recipient with 400 (repeatable)")
    provider.add_argument("--clock-file", type=Path,
                          help="the installation's simulated clock (var/clock.json)")
    provider.set_defaults(run=run_provider)
    smtp = commands.add_parser("smtp", help="the SMTP server keeping mail in a Maildir")
    smtp.add_argument("--port", type=int, default=8025)
    smtp.add_argument("--maildir", type=Path, default=Path("var/mail"))
    smtp.add_argument("--refuse", action="append", default=[], metavar="ADDRESS",
                      help="refuse this recipient with 550 (repeatable)")
    smtp.set_defaults(run=run_smtp)
    return top


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=os.environ.get("DUNWELL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's: it names addresses
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per receipt otherwise
    options = parser().parse_args(argv)
    options.run(options)


if __name__ == "__main__":
    main()
