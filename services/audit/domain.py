"""The audit log's own rule for itself: never sign or announce against what it already said.

Checkpoints announced on `audit.checkpoints` live outside the store. A store restored from an
earlier copy is behind the newest announcement: it signs nothing until it has re-consumed past
that size and its tree hashes to the announced root there. A store whose tree hashes to
another root is forked: it signs and announces nothing more. Pure: the root of a prefix of the
tree is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from shared.tlog import Checkpoint


class Signing(StrEnum):
    ALLOWED = "allowed"
    BEHIND = "behind"  # the store holds fewer leaves than already announced: catching up
    FORKED = "forked"  # the store contradicts an announced checkpoint


@dataclass
class CheckpointGuard:
    """What the log announced before this run, and whether the store still agrees with it."""

    read_back: bool = False  # the newest announcement has been looked for
    expected: Checkpoint | None = None  # announced, not yet matched by the store
    floor: int = 0  # no announcement below this size: the newest read back is the largest
    forked: str | None = None

    def expect(self, announced: Checkpoint | None) -> None:
        """The newest announcement read back (None: nothing announced). Of two, the larger
        holds."""
        self.read_back = True
        if announced is None:
            return
        if self.expected is None or announced.size >= self.expected.size:
            self.expected = announced
        self.floor = max(self.floor, announced.size)

    def signing(self, size: int, root_at: Callable[[int], bytes]) -> Signing:
        """May a checkpoint of `size` leaves be signed now?"""
        if self.forked is not None:
            return Signing.FORKED
        expected = self.expected
        if expected is None:
            return Signing.ALLOWED
        if size < expected.size:
            return Signing.BEHIND
        if root_at(expected.size) != expected.root:
            self.forked = (f"the log's first {expected.size} leaves do not hash to the root "
                           f"announced at that size: the store was rolled back or rewritten "
                           f"(run `dunwell audit verify-store`); no checkpoint will be signed")
            return Signing.FORKED
        self.expected = None  # matched once; every later checkpoint extends it
        return Signing.ALLOWED

    def may_announce(self, size: int) -> bool:
        """Only after the read-back, never when forked, never below what was announced."""
        return self.read_back and self.forked is None and size >= self.floor
