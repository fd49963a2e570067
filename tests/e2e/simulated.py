"""What the end-to-end tests on the simulated clock share: the `dunwell clock` an operator
runs, the clock's reading, a loan's events as the audit log holds them, and events put
straight on a topic as a lender's core (or a rogue service) would."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.clock import SimulatedClock
from shared.events import CLOUDEVENTS_CONTENT_TYPE, CloudEvent
from tests.e2e.stack import Stack
from tests.helpers import wait_for


def clock(stack: Stack, *args: str) -> str:
    """`dunwell clock ...` for this installation, as an operator runs it."""
    command = [str(Path(sys.executable).with_name("dunwell")), "clock", *args]
    done = subprocess.run(command, env={**os.environ, "DUNWELL_VAR_DIR": str(stack.var_dir)},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def now(stack: Stack) -> datetime:
    return SimulatedClock(stack.var_dir / "clock.json").now()


def events(stack: Stack, loan_id: str, kind: str) -> list[dict[str, Any]]:
    """The data of the loan's `kind` events, in log order."""
    return [e["cloudevent"]["data"] for e in stack.timeline(loan_id) if e["type"] == kind]


def wait_event(stack: Stack, loan_id: str, kind: str, count: int = 1, timeout: float = 90,
               **fields: Any) -> list[dict[str, Any]]:
    """Once the log holds `count` of the loan's `kind` events with these fields: those."""
    def found() -> list[dict[str, Any]] | None:
        matching = [d for d in events(stack, loan_id, kind)
                    if all(d.get(k) == v for k, v in fields.items())]
        return matching if len(matching) >= count else None

    return wait_for(found, timeout=timeout, what=f"{count} {kind} {fields} for {loan_id}")


async def produce(bootstrap: str, topic: str, sent: list[CloudEvent]) -> None:
    """Events straight onto `topic`, keyed by their subject, as anyone may write them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in sent:
            await producer.send(topic, event.encode(), key=event.subject.encode(),
                                headers=[("content-type", CLOUDEVENTS_CONTENT_TYPE.encode())])
        await producer.flush()
    finally:
        await producer.stop()
