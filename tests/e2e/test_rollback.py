"""An audit store restored from an earlier copy never signs a checkpoint that contradicts one
already announced.

This test runs its own suite: it rolls the audit store back and forges it, which the shared
suite must not see. The broker keeps running, so audit.checkpoints still holds every
announcement.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared import topics
from shared.auth import Role
from shared.events import CheckpointSigned
from shared.kafka import make_producer
from shared.settings import KafkaSettings
from shared.tlog import leaf_hash
from tests.e2e.stack import Stack
from tests.helpers import wait_for

from services.audit.store import LogStore, NewLeaf


def _signed_with_reminder(stack: Stack) -> int:
    """Post a loan; return the size of a signed checkpoint covering its ReminderSent."""
    return int(stack.reminded_evidence()["checkpoint"].split("\n")[1])


async def _put_after_announcements(bootstrap: str, vkey: str) -> None:
    producer = make_producer(KafkaSettings(bootstrap=bootstrap))
    await producer.start()
    try:
        origin = vkey.split("+")[0]
        await producer.send_and_wait(topics.CHECKPOINTS, b"not an announcement",
                                     key=origin.encode())
    finally:
        await producer.stop()


def _roots_by_size(announced: list[CheckpointSigned]) -> dict[int, set[str]]:
    roots: dict[int, set[str]] = {}
    for announcement in announced:
        roots.setdefault(announcement.tree_size, set()).add(announcement.root_hash)
    return roots


def test_a_rolled_back_and_forged_store_signs_nothing_and_says_so(own_stack: Stack,
                                                                  tmp_path: Path) -> None:
    stack = own_stack
    store = stack.audit_store
    _signed_with_reminder(stack)
    with stack.client("audit", Role.AUDITOR) as audit:
        key = audit.get("/v1/checkpoint").json()["public_key"]
    stack.stop("audit")
    earlier = LogStore(stack.copy_audit_store("live", "earlier"))
    earlier_size = earlier.size
    earlier.close()

    stack.start("audit")
    later = _signed_with_reminder(stack)
    assert later > earlier_size
    stack.stop("audit")
    before = _roots_by_size(stack.announced())
    assert max(before) >= later

    # Something else lands last in the log's partition: the read-back must look past it.
    asyncio.run(_put_after_announcements(stack.bootstrap, key))

    # The insider restores the earlier copy and slips in an event of their own.
    stack.copy_audit_store("earlier", "live")
    insider = LogStore(store)
    data = json.dumps({"specversion": "1.0", "id": "forged-1", "source": "/insider",
                       "type": "ReminderSent", "subject": "LN-FORGED"}).encode()
    assert insider.append(NewLeaf("forged-1", "LN-FORGED", "ReminderSent", data,
                                  leaf_hash(data)), ("insider", 0))
    insider.close()

    # It re-consumes what the broker still holds, reaches the announced size, and stops there.
    stack.start("audit", wait_ready=False)  # it may find the fork before it is ever ready
    log_file = stack.logs / "audit.log"
    wait_for(lambda: "do not hash to the root announced" in log_file.read_text(),
             what="the audit service to find the fork", timeout=60)
    with httpx.Client(base_url=stack.url("audit"), timeout=5) as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
    time.sleep(2)  # four checkpoint intervals, in which nothing may be signed or announced
    after = _roots_by_size(stack.announced())
    assert after == before

    # Restarts do not wear the guard down: each one reads back the same newest announcement.
    for restart in (2, 3):
        stack.stop("audit")
        stack.start("audit", wait_ready=False)
        wait_for(lambda restart=restart: log_file.read_text().count(
                     "do not hash to the root announced") >= restart,
                 what=f"the fork found again after restart {restart}", timeout=60)
    time.sleep(2)
    assert _roots_by_size(stack.announced()) == before
    stack.stop("audit")  # the store has one writer: on PostgreSQL it holds a lock
    restored = LogStore(store)
    assert restored.latest_checkpoint()[0] < max(before)  # type: ignore[index]
    restored.close()

    # The announcements an auditor kept show where the store went wrong.
    kept = tmp_path / "announced.jsonl"
    dump = subprocess.run([sys.executable, "-m", "dunwell.cli", "audit", "checkpoints", "--out",
                           str(kept)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KAFKA_BOOTSTRAP": stack.bootstrap})
    assert dump.returncode == 0, dump.stderr
    assert {json.loads(line)["data"]["tree_size"]
            for line in kept.read_text().splitlines()} == set(after)
    result = subprocess.run(
        [sys.executable, "-m", "dunwell.cli", "audit", "verify-store", "--store", store,
         "--key", key, "--checkpoints", str(kept)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout
    first_bad = int(result.stderr.split("first bad leaf index ")[1].split()[0])
    assert first_bad <= earlier_size  # the forged leaf took index earlier_size
