"""The plumbing section of `make bench`: what a consumed message costs the store, and how soon
a service with a large agenda is ready.

- per-message store cost: the reminder service's real sink and handlers (CaseOpened → a
  planned reminder) over SQLite, one message per transaction (the unit of work before
  batching) against batches as the consumer now fetches them, in the same run;
- readiness: the reminder service started as a process against a store holding 100 000
  pending reminders, from start to `/readyz` 200, against the same start on an empty store.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from dunwell import devstack
from shared.clock import ManualClock
from shared.consumer import Batch, Delivery, HandlerSink, tracking_name
from shared.policy_pack import CN
from tests.helpers import case_opened
from tests.service.records import consumer_record

from services.reminder.application import Reminders
from services.reminder.handlers import HANDLERS

# 23:00 in Shanghai, years ahead: C1 defers each reminder to an 08:00 that a benchmark never
# reaches, so the reminders stay pending while the service is started and stopped.
NIGHT_IN_SHANGHAI = datetime(2036, 10, 14, 15, 0, tzinfo=UTC)


def _deliveries(start: int, count: int, prefix: str) -> list[Delivery]:
    found = []
    for i in range(start, start + count):
        event = case_opened(f"{prefix}-{i:07d}", f"{prefix}-{i}", NIGHT_IN_SHANGHAI,
                            lender_id="lender-bench")
        record = consumer_record(event, "cases.events", i)
        found.append(Delivery(record, tracking_name("bench", "cases.events", 0), event,
                              event.payload()))
    return found


def _reminders(path: Path) -> Reminders:
    return Reminders(CN, "the official hotline", env={
        "PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})


def fill(path: Path, count: int, progress: Progress, batch: int = 500,
         description: str = "store: pending reminders") -> float:
    """`count` cases consumed in batches of `batch`; returns the seconds it took."""
    app = _reminders(path)
    sink = HandlerSink(app, HANDLERS, ManualClock(NIGHT_IN_SHANGHAI))
    task = progress.add_task(description, total=count)
    started = time.perf_counter()
    for start in range(0, count, batch):
        size = min(batch, count - start)
        sink.apply(Batch(_deliveries(start, size, path.stem), "bench", NIGHT_IN_SHANGHAI))
        progress.advance(task, size)
    seconds = time.perf_counter() - started
    app.close()
    return seconds


def store_cost(tmp: Path, progress: Progress, messages: int, batch: int) -> dict[str, float]:
    one = fill(tmp / "one-by-one.db", messages, progress, batch=1,
               description="store: one message per transaction")
    batched = fill(tmp / "batched.db", messages, progress, batch=batch,
                   description=f"store: {batch} messages per transaction")
    return {"messages": messages, "batch": batch,
            "one_per_transaction_ms": one / messages * 1e3,
            "batched_ms": batched / messages * 1e3, "speedup": one / batched}


def _time_to_ready(var_dir: Path, bootstrap: str) -> float:
    port = devstack.free_port()
    env = devstack.service_env("reminder", port, var_dir, bootstrap,
                               {"DUNWELL_LOG_LEVEL": "WARNING"})
    started = time.perf_counter()
    process = devstack.start_service("reminder", env, var_dir / "logs")
    try:
        while True:
            if not process.alive():
                raise RuntimeError(f"the reminder service exited; see {process.log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    finally:
        process.stop()


def readiness(tmp: Path, progress: Progress, pending: int) -> dict[str, Any]:
    """Start to ready with `pending` reminders on the agenda, beside an empty store."""
    broker_port = devstack.free_port()
    broker = devstack.start_broker(broker_port, tmp / "logs")
    bootstrap = f"127.0.0.1:{broker_port}"
    try:
        full, empty = tmp / "full", tmp / "empty"
        full.mkdir()
        empty.mkdir()
        filled = fill(full / "reminder.db", pending, progress)
        rows = _agenda_rows(full / "reminder.db")
        task = progress.add_task("reminder: start → ready", total=4)
        empty_s, full_s = [], []
        for _ in range(2):  # alternated, so both see the same machine
            empty_s.append(_time_to_ready(empty, bootstrap))
            progress.advance(task)
            full_s.append(_time_to_ready(full, bootstrap))
            progress.advance(task)
    finally:
        broker.stop()
    return {"pending": pending, "fill_s": filled, "ready_s": min(full_s),
            "empty_ready_s": min(empty_s), "ratio": min(full_s) / min(empty_s),
            "agenda_rows": rows}


def _agenda_rows(path: Path) -> int:
    app = _reminders(path)
    try:
        return app.extras.agenda_size()
    finally:
        app.close()


def rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    cost, ready = figures["store_cost"], figures["readiness"]
    return [
        (f"consumer store cost per message ({cost['messages']:,} CaseOpened)",
         (f"{cost['one_per_transaction_ms']:.2f} ms one per transaction → "
          f"{cost['batched_ms']:.2f} ms in batches of {cost['batch']} (×{cost['speedup']:.1f})")),
        (f"reminder start → ready, {ready['pending']:,} pending reminders",
         (f"{ready['ready_s']:.2f} s (empty store {ready['empty_ready_s']:.2f} s, "
          f"×{ready['ratio']:.2f})")),
    ]
