"""Channel adapters. The embedded default's SMS gateway is a local sink file.

Every send carries the reminder id as its idempotency key; the sink keeps the first message
for a key and answers a repeat with the first one's id, as a real gateway's idempotency does.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class OutboundMessage:
    idempotency_key: str
    to: str
    text: str


class ChannelError(Exception):
    """The channel did not accept the message; the reminder is retried later."""


class SmsGateway(Protocol):
    def send(self, message: OutboundMessage) -> str: ...


class FileSmsSink:
    """An SMS gateway stand-in: one JSON line per accepted message, fsynced before success."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._accepted = self._load()

    def _load(self) -> dict[str, str]:
        accepted: dict[str, str] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    accepted.setdefault(entry["idempotency_key"], entry["provider_id"])
        return accepted

    def send(self, message: OutboundMessage) -> str:
        with self._lock:
            earlier = self._accepted.get(message.idempotency_key)
            if earlier is not None:
                return earlier
            provider_id = f"sink-{len(self._accepted) + 1}"
            line = json.dumps({"idempotency_key": message.idempotency_key, "to": message.to,
                               "text": message.text, "provider_id": provider_id})
            try:
                with self.path.open("a") as handle:
                    handle.write(line + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                raise ChannelError(f"sink write failed: {error.strerror}") from error
            self._accepted[message.idempotency_key] = provider_id
            return provider_id
