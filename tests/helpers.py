"""Small helpers the test tiers share: borrower time zones, loan bodies, polling."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from shared.events import Borrower, CaseOpened, CloudEvent, envelope

T = TypeVar("T")


def zone_at_local_hour(hour: int, now: datetime | None = None) -> str:
    """An IANA zone (Etc/GMT±N) whose local hour is `hour` right now."""
    now = now or datetime.now(UTC)
    offset = (hour - now.hour) % 24
    if offset > 14:
        offset -= 24
    # Etc/GMT names have the sign inverted: Etc/GMT-3 is UTC+3.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def loan_body(loan_id: str | None = None, *, lender_id: str = "lender-1",
              timezone_name: str = "Asia/Shanghai", amount: str = "1200.50",
              dpd: int = 35) -> dict[str, Any]:
    return {
        "loan_id": loan_id or f"L-{uuid.uuid4().hex[:12]}",
        "lender_id": lender_id,
        "borrower": {"borrower_id": "B-1", "name": "Wang Fang", "phone": "+8613800000000",
                     "email": "wang@example.org", "residence_address": "1 Example Road",
                     "timezone": timezone_name},
        "amount_overdue": amount, "currency": "CNY", "due_date": "2026-10-01",
        "days_past_due": dpd, "repayment_channel": "transfer to account 6222-0000-1111",
    }


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.2,
             what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def case_opened(loan_id: str, event_id: str, at: datetime, *,
                lender_id: str = "lender-1", zone: str = "Asia/Shanghai") -> CloudEvent:
    """A CaseOpened as escalation publishes it: what the reminder service plans from."""
    data = CaseOpened(
        loan_id=loan_id, lender_id=lender_id,
        borrower=Borrower(borrower_id=f"B-{loan_id}", name="Wang Fang",
                          phone="+8613800000000", timezone=zone),
        amount_overdue=Decimal("1200.50"), currency="CNY", due_date=date(2026, 10, 1),
        days_past_due=13, repayment_channel="transfer to account 6222-0000-1111",
        stage="soft_reminders", opened_at=at)
    return envelope(data, event_id=event_id, source="/dunwell/escalation", time=at,
                    causation_id=None, correlation_id=None)


@contextlib.contextmanager
def served(app: Any, port: int, what: str) -> Iterator[None]:
    """An ASGI app served by uvicorn on 127.0.0.1:`port` in a thread, stopped on the way out."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, every=0.02, what=what)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
