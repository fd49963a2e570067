"""A log that has announced a checkpoint never signs one that contradicts it.

The audit service reads its newest announcement back from audit.checkpoints when it starts
(`AuditLog.expect`). A store restored from an earlier copy must re-consume past that size
and hash to the announced root before it signs again; one that hashes elsewhere is forked.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from shared.clock import SystemClock
from shared.tlog import open_checkpoint
from tests.unit.audit.logs import NOW, VKEY, event_bytes, new_leaf, open_log

from services.audit.application import AuditLog, ForkedLog
from services.audit.main import checkpointer
from services.audit.relay import Announcements


def append(log: AuditLog, start: int, end: int, loan: str | None = None) -> None:
    for i in range(start, end):
        log.store.append(new_leaf(event_bytes(i, loan)), ("kafka/inc/t/0", i))


@pytest.fixture
def rolled_back(tmp_path: Path) -> tuple[Path, object]:
    """A store copied at 40 leaves, after which the live log signed (and announced) 90."""
    path = tmp_path / "audit.db"
    log = open_log(path)
    append(log, 0, 40)
    log.sign_checkpoint(NOW)
    log.store.close()
    shutil.copyfile(path, tmp_path / "earlier.db")
    log = open_log(path)
    append(log, 40, 90)
    assert log.sign_checkpoint(NOW) is not None
    announced = open_checkpoint(log.store.latest_checkpoint()[1], VKEY)  # type: ignore[index]
    log.store.close()
    shutil.copyfile(tmp_path / "earlier.db", path)
    return path, announced


def test_a_restored_store_signs_again_once_it_has_caught_up_with_the_same_leaves(
        rolled_back: tuple[Path, object]) -> None:
    path, announced = rolled_back
    log = open_log(path)
    log.expect(announced)  # type: ignore[arg-type]
    append(log, 40, 70)
    assert log.sign_checkpoint(NOW) is None  # still behind size 90
    append(log, 70, 95)
    signed = log.sign_checkpoint(NOW)
    assert signed is not None and signed.size == 95
    assert log.check() == 1
    assert log.forked is None


def test_a_restored_store_that_took_other_leaves_is_forked_and_signs_nothing(
        rolled_back: tuple[Path, object]) -> None:
    path, announced = rolled_back
    log = open_log(path)
    log.expect(announced)  # type: ignore[arg-type]
    append(log, 40, 41, loan="LN-INSERTED")  # an insider's leaf where leaf 40 was
    append(log, 41, 120)
    assert log.sign_checkpoint(NOW) is None
    assert log.sign_checkpoint(NOW) is None
    assert log.store.latest_checkpoint()[0] == 40  # type: ignore[index]
    with pytest.raises(ForkedLog, match="first 90 leaves do not hash to the root announced"):
        log.check()


def test_an_announcement_the_log_already_passed_in_step_is_no_obstacle(tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit.db")
    append(log, 0, 30)
    first = log.sign_checkpoint(NOW)
    assert first is not None
    log.expect(first)
    append(log, 30, 31)
    assert log.sign_checkpoint(NOW) is not None


def test_of_two_expectations_the_larger_holds(rolled_back: tuple[Path, object],
                                              tmp_path: Path) -> None:
    path, announced = rolled_back
    log = open_log(path)
    log.expect(announced)  # type: ignore[arg-type]
    smaller = open_checkpoint(log.store.latest_checkpoint()[1], VKEY)  # type: ignore[index]
    log.expect(smaller)  # size 40, read back later: must not lift the guard at 90
    append(log, 40, 41, loan="LN-INSERTED")
    append(log, 41, 100)
    assert log.sign_checkpoint(NOW) is None
    assert log.forked is not None and "first 90 leaves" in log.forked


def announced_by_relay(log: AuditLog, newest: object, position: int = 0) -> list[int]:
    """What the relay would announce: the checkpointer reads the newest announcement back and
    signs what it may, then the outbox offers what may be announced past `position`."""
    async def newest_announced() -> object:
        return newest

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.ensure_future(checkpointer(log, SystemClock(), 0.05,
                                                  newest_announced)(stop))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        stop.set()
        await loop

    asyncio.run(run())
    outgoing = Announcements(log).after(position, 10)
    return [json.loads(entry.event.encode())["data"]["tree_size"]
            for entry in outgoing if entry.event is not None]


def test_a_forked_store_announces_nothing_not_even_a_checkpoint_it_signed_before(
        rolled_back: tuple[Path, object]) -> None:
    path, announced = rolled_back
    log = open_log(path)
    append(log, 40, 41, loan="LN-INSERTED")
    append(log, 41, 120)
    assert log.sign_checkpoint(NOW) is not None  # signed before the guard knew: size 120
    assert announced_by_relay(log, announced) == []
    assert log.forked is not None


def test_the_relay_never_announces_below_what_was_announced(
        rolled_back: tuple[Path, object]) -> None:
    path, announced = rolled_back  # the store holds a checkpoint of 40; 90 was announced
    log = open_log(path)
    assert announced_by_relay(log, announced) == []
    append(log, 40, 95)
    assert announced_by_relay(log, announced) == [95]


def test_nothing_is_announced_before_the_newest_announcement_was_read_back(
        tmp_path: Path) -> None:
    log = open_log(tmp_path / "audit.db")
    append(log, 0, 10)
    log.sign_checkpoint(NOW)
    assert Announcements(log).after(0, 10) == []  # the checkpointer has not looked yet
    log.expect(None)
    [entry] = Announcements(log).after(0, 10)
    assert entry.position == 10 and entry.event is not None
    assert Announcements(log).after(10, 10) == []  # already announced under this position


def test_a_store_first_behind_then_forked_says_both(rolled_back: tuple[Path, object],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    path, announced = rolled_back
    log = open_log(path)
    log.expect(announced)  # type: ignore[arg-type]
    assert log.sign_checkpoint(NOW) is None  # 40 of 90: behind
    append(log, 40, 41, loan="LN-INSERTED")
    append(log, 41, 100)
    assert log.sign_checkpoint(NOW) is None
    assert [r.levelname for r in caplog.records if r.name == "services.audit.application"] == [
        "WARNING", "CRITICAL"]
    assert "do not hash to the root announced" in caplog.records[-1].getMessage()
