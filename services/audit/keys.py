"""The log's keys across rotations: the current signer's vkey, the retired ones, and which
checkpoints each signed.

A rotation changes the key, never the log: the origin (the key name) stays, old checkpoints
keep their old signatures, and the key that made them stays published as `retired`. Keys
follow one another: once a newer key has signed a checkpoint, no older one signs again. So the
checkpoints each key signed are one run of sizes, found by a binary search over the stored
checkpoints (a few dozen indexed reads, never a scan of the table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from shared.tlog import VerificationError, decode_vkey, note_signers


class Checkpoints(Protocol):
    """What the search reads from the store."""

    def latest_checkpoint(self) -> tuple[int, str] | None: ...
    def checkpoint_from(self, size: int) -> tuple[int, str] | None: ...
    def checkpoint_before(self, size: int) -> tuple[int, str] | None: ...
    def checkpoint_signed_at(self, size: int) -> datetime: ...


@dataclass(frozen=True)
class LogKey:
    """One verifier key of the log and the checkpoints it signed (None: none found yet)."""

    vkey: str
    key_id: str  # hex, as in the vkey and each signature line
    status: Literal["current", "retired"]
    from_size: int | None
    until_size: int | None  # the current key's run is open: None
    from_time: datetime | None
    until_time: datetime | None


def signer_id(vkey: str) -> str:
    """'<name>+<hex key ID>', as `note_signers` names a signature line."""
    name, key_id, _ = vkey.split("+", 2)
    return f"{name}+{key_id}"


def retired_vkeys(text: str, origin: str) -> list[str]:
    """Parse the retired keys (comma- or newline-separated vkeys, oldest first), each of which
    must be a verifier key of this log."""
    keys = [k.strip() for line in text.splitlines() for k in line.split(",")]
    keys = [k for k in keys if k and not k.startswith("#")]
    for key in keys:
        try:
            name, _ = decode_vkey(key)
        except VerificationError as error:
            raise ValueError(f"retired key {key[:40]!r}: {error}") from None
        if name != origin:
            raise ValueError(f"retired key is for {name!r}, not the origin {origin!r}")
    return list(dict.fromkeys(keys))


def _signers(note: str) -> list[str]:
    try:
        return note_signers(note)
    except VerificationError:
        return []


def _first(store: Checkpoints, holds: Callable[[str], bool]) -> tuple[int, str] | None:
    """The first checkpoint whose note `holds`, for a test that once true stays true."""
    latest = store.latest_checkpoint()
    if latest is None or not holds(latest[1]):
        return None
    low, high = 1, latest[0]  # the first at or after `high` holds; none before `low` does
    while low < high:
        middle = (low + high) // 2
        found = store.checkpoint_from(middle)
        assert found is not None  # there is one at `high` or after
        if holds(found[1]):
            high = middle
        else:
            low = found[0] + 1
    return store.checkpoint_from(low)


def log_keys(store: Checkpoints, current: str, retired: Sequence[str]) -> list[LogKey]:
    """The retired keys, oldest first, then the current one, each with the run of checkpoint
    sizes it signed. A run that cannot be confirmed (no checkpoint by that key where the
    search lands, as when the retired keys are listed out of order) is published as unknown."""
    vkeys = [*retired, current]
    ids = [signer_id(vkey) for vkey in vkeys]

    def rank(note: str) -> int:
        signed = _signers(note)
        return max((n for n, kid in enumerate(ids) if kid in signed), default=-1)

    def from_key(n: int) -> Callable[[str], bool]:
        return lambda note: rank(note) >= n

    keys = []
    for n, vkey in enumerate(vkeys):
        first = _first(store, from_key(n))
        start = first if first is not None and ids[n] in _signers(first[1]) else None
        end = None
        if n < len(vkeys) - 1 and start is not None:
            successor = _first(store, from_key(n + 1))
            last = (store.latest_checkpoint() if successor is None
                    else store.checkpoint_before(successor[0]))
            end = last if last is not None and ids[n] in _signers(last[1]) else None
        keys.append(LogKey(
            vkey=vkey, key_id=ids[n].rsplit("+", 1)[1],
            status="current" if n == len(vkeys) - 1 else "retired",
            from_size=None if start is None else start[0],
            until_size=None if end is None else end[0],
            from_time=None if start is None else store.checkpoint_signed_at(start[0]),
            until_time=None if end is None else store.checkpoint_signed_at(end[0])))
    return keys
