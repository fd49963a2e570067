"""Channel adapters. The embedded default's SMS gateway is a local sink file.

Every send carries the reminder id as its idempotency key; the sink keeps the first message
for a key and answers a repeat with the first one's id, as a real gateway's idempotency does.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol


@dataclass(frozen=True)
class OutboundMessage:
    idempotency_key: str
    to: str
    text: str


class ChannelError(Exception):
    """The channel did not accept the message; the reminder is retried later."""


class SmsGateway(Protocol):
    def send(self, message: OutboundMessage) -> str: ...


LOCK_SECONDS = 10.0


class FileSmsSink:
    """An SMS gateway stand-in: one JSON line per accepted message, fsynced before success.

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
