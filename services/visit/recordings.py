"""The recordings of visits (C12), kept by their SHA-256.

The embedded default keeps them in a local folder: a file per recording, named by its hash.
An upload is streamed to a temporary file beside the others while it is hashed, flushed to
disk, and only then renamed into place, so a recording is either whole under its name or not
there at all; the same bytes uploaded twice are kept once. Nothing holds a recording in
memory: an upload takes one chunk of it at a time, and the file work runs off the event loop.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread


class TooLarge(Exception):
    """The upload went past the size the store takes."""


class Empty(Exception):
    """An upload with no bytes."""


@dataclass(frozen=True)
class Stored:
    sha256: str
    size: int


class RecordingStore:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / sha256

    def has(self, sha256: str, size: int | None = None) -> bool:
        path = self.path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def _open(self) -> tuple[BinaryIO, str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".upload-", dir=self.folder)
        return os.fdopen(handle, "wb"), temporary

    async def put(self, chunks: AsyncIterator[bytes]) -> Stored:
        digest = hashlib.sha256()
        size = 0
        out, temporary = await to_thread.run_sync(self._open)
        try:
            try:
                async for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLarge(f"the recording exceeds {self.max_bytes} bytes")
                    digest.update(chunk)
                    await to_thread.run_sync(out.write, chunk)
                await to_thread.run_sync(_flush, out)
            finally:
                out.close()
            if size == 0:
                raise Empty("the recording has no bytes")
            sha256 = digest.hexdigest()
            await to_thread.run_sync(self._keep, temporary, sha256)
            return Stored(sha256, size)
        finally:
            await to_thread.run_sync(_discard, temporary)

    def _keep(self, temporary: str, sha256: str) -> None:
        target = self.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, target)
        descriptor = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _flush(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _discard(temporary: str) -> None:
    if os.path.exists(temporary):
        os.unlink(temporary)
