"""Time comes in from outside the domain: a Clock is passed to whoever needs `now`.

Three clocks: the wall clock (the default, and the only one production accepts); a
`ManualClock` for tests in one process; and a `SimulatedClock` that every service of one
installation shares through a small file under its var directory, moved only forward by
`dunwell clock set|advance`. Simulated time runs at the wall clock's pace from the moment it
was last set, so a demo behaves as it would live, only later.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told: for tests and simulations."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, moment: datetime) -> None:
        self._now = moment


class ClockMovedBack(ValueError):
    """Simulated time only goes forward: what is due fires once, and never un-fires."""


class SimulatedClock:
    """Simulated time shared by every process that reads the same file.

    The file holds one pair, (simulated time, wall time) at the last move; now is the
    simulated time plus the wall time passed since. A reader looks at the file's stamp on every
    call and reads it again only when it changed; a mover takes a lock, so two moves at once
    never lose one.
    """

    def __init__(self, path: Path, wall: Clock | None = None) -> None:
        self.path = path
        self._wall = wall or SystemClock()
        self._stamp: tuple[int, int] | None = None
        self._anchor: tuple[datetime, datetime] | None = None

    def now(self) -> datetime:
        simulated, wall = self._read()
        return simulated + (self._wall.now() - wall)

    def set(self, moment: datetime) -> datetime:
        """Move to `moment`, which must not lie before now; returns the new now."""
        if moment.tzinfo is None:
            raise ValueError("a simulated time needs an offset, such as Z or +08:00")
        with self._locked():
            current = self.now()
            if moment < current:
                raise ClockMovedBack(f"simulated time is {current.isoformat()}; it only moves "
                                     f"forward")
            self._write(moment.astimezone(UTC))
        return self.now()

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ClockMovedBack("simulated time only moves forward")
        with self._locked():
            self._write(self.now() + delta)
        return self.now()

    def _read(self) -> tuple[datetime, datetime]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            now = self._wall.now()
            return now, now  # never moved: the wall clock's time
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp or self._anchor is None:
            state = json.loads(self.path.read_text(encoding="utf-8"))
            self._anchor = (datetime.fromisoformat(state["simulated"]),
                            datetime.fromisoformat(state["wall"]))
            self._stamp = stamp
        return self._anchor

    def _write(self, simulated: datetime) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"simulated": simulated.isoformat(),
                                         "wall": self._wall.now().isoformat()}),
                             encoding="utf-8")
        os.replace(temporary, self.path)
        self._stamp = None

    def _locked(self) -> _FileLock:
        return _FileLock(self.path.with_suffix(".lock"))


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    """`2d6h`, `90m`, `1d`, `30s`: days, hours, minutes and seconds, largest first."""
    compact = text.strip().replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration: {text[:40]!r} (write it like 2d6h, 90m or 30s)")
    units = [u for _, u in parts]
    if len(set(units)) != len(units) or units != sorted(units, key="dhms".index):
        raise ValueError(f"not a duration: {text[:40]!r} (each unit once, largest first)")
    return timedelta(**{_UNITS[u]: int(n) for n, u in parts})
