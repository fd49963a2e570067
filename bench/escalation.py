"""The escalation section of `make bench`: the daily evaluation of every open case (issue 9).

On the service's own SQLite store (`Settings.persistence_env`), in a temp dir:
- fill: N LoanOverdue through the real handlers, in batches as the consumer applies them,
  spread over five zones; a lender strategy with a calls stage from DPD 31 and 3000.00, so
  the cases at DPD 30 with a large amount (one in twenty) escalate at the next midnight;
- the daily evaluation: the clock moved past every zone's next midnight, then the real agenda
  loop (claims, leases, its concurrency and batch) fires `Cases.fire` until nothing is due.
  Every case must be fired once, be due again after the new time, and exactly the expected
  cases escalate. The baseline is the same evaluation of N/10 cases in the same run: a per-case
  cost that does not grow with N means the due cases are found without a scan;
- the store's size per case.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.utils import get_topic
from rich.progress import Progress

from shared.agenda import Agenda
from shared.clock import ManualClock
from shared.consumer import Batch, Delivery, HandlerSink, tracking_name
from shared.events import (
    Cadence,
    CaseEscalated,
    Channel,
    LoanOverdue,
    Repeat,
    StageDef,
    StageEntry,
    StrategyDocument,
    envelope,
)
from shared.policy_pack import pack
from tests.service.records import consumer_record

from services.escalation import policy
from services.escalation.application import Cases
from services.escalation.domain import CollectionCase
from services.escalation.handlers import HANDLERS
from services.escalation.relay import integration_event
from services.escalation.settings import Settings

LENDER = "lender-bench"
# A Monday in late November: no zone below changes its clocks within a day of it.
OPENED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ZONES = ["Asia/Shanghai", "Asia/Kolkata", "Europe/Berlin", "America/Sao_Paulo",
         "America/New_York"]
ESCALATED_TOPIC = get_topic(CollectionCase.Escalated)  # type: ignore[attr-defined]

# The shipped default with a calls stage between, as a lender may publish it.
STRATEGY = StrategyDocument(
    stages=[policy.DEFAULT_DOCUMENT.stages[0],
            StageDef(name="calls", entry=StageEntry(min_dpd=31, min_amount=Decimal("3000.00")),
                     cadence=Cadence(repeat=Repeat(channel=Channel.CALL, from_day=0))),
            policy.DEFAULT_DOCUMENT.stages[1]],
    visit=policy.DEFAULT_DOCUMENT.visit)

# (DPD at opening, amount): one in twenty crosses DPD 31 at midnight with 3000.00 or more;
# the others miss the calls stage on the amount, on DPD, or on both.
ESCALATES = (30, "5000.00")
STAYS = [(30, "1200.50"), (10, "5000.00"), (20, "800.00")]


def profile(i: int) -> tuple[int, str]:
    return ESCALATES if i % 20 == 0 else STAYS[i % len(STAYS)]


def loan_id(prefix: str, i: int) -> str:
    return f"{prefix}-{i:07d}"


def _overdue(prefix: str, i: int) -> LoanOverdue:
    zone = ZONES[i % len(ZONES)]
    dpd, amount = profile(i)
    due = policy.local_day(OPENED, ZoneInfo(zone)) - timedelta(days=dpd)
    return LoanOverdue.model_validate({
        "loan_id": loan_id(prefix, i), "lender_id": LENDER,
        "borrower": {"borrower_id": f"B-{prefix}-{i}", "name": "Wang Fang",
                     "phone": "+8613800000000", "timezone": zone},
        "amount_overdue": amount, "currency": "CNY", "due_date": due.isoformat(),
        "days_past_due": dpd, "repayment_channel": "transfer to account 6222-0000-1111"})


def _deliveries(prefix: str, start: int, count: int) -> list[Delivery]:
    found = []
    for i in range(start, start + count):
        data = _overdue(prefix, i)
        event = envelope(data, event_id=f"bench-escalation-{prefix}-{i}",
                         source="/lender-bench/core", time=OPENED, causation_id=None,
                         correlation_id=None)
        record = consumer_record(event, "loans.events", i)
        found.append(Delivery(record, tracking_name("bench", "loans.events", 0), event, data))
    return found


def the_next_day() -> datetime:
    """Just past the latest of the zones' next midnights: one new day for every borrower."""
    moment = max(policy.next_local_midnight(OPENED, ZoneInfo(zone)) for zone in ZONES)
    moment = moment.astimezone(UTC) + timedelta(minutes=1)
    for zone in ZONES:
        days = policy.local_day(moment, ZoneInfo(zone)) - policy.local_day(OPENED, ZoneInfo(zone))
        assert days == timedelta(days=1), f"{zone} is not one day on"
    return moment


def fill(cases: Cases, prefix: str, count: int, progress: Progress, batch: int = 500) -> float:
    """`count` cases opened from LoanOverdue, `batch` per transaction; the seconds it took."""
    cases.publish_strategy(LENDER, STRATEGY, OPENED)
    sink = HandlerSink(cases, HANDLERS, ManualClock(OPENED))
    task = progress.add_task(f"escalation: open {count:,} cases", total=count)
    started = time.perf_counter()
    for start in range(0, count, batch):
        size = min(batch, count - start)
        applied = sink.apply(Batch(_deliveries(prefix, start, size), "bench", OPENED))
        assert applied.handled == size and not applied.dead_letters
        progress.advance(task, size)
    return time.perf_counter() - started


class Firings:
    """`Cases.fire`, counted per case; the first error kept, so the run stops on it."""

    def __init__(self, cases: Cases) -> None:
        self.cases = cases
        self.count: Counter[UUID] = Counter()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def __call__(self, aggregate_id: UUID, kind: str, now: datetime) -> None:
        try:
            self.cases.fire(aggregate_id, kind, now)
        except BaseException as error:
            self.error = self.error or error
            raise
        with self._lock:
            self.count[aggregate_id] += 1

    def many(self, aggregate_ids: list[UUID], kind: str, now: datetime) -> None:
        """`Cases.fire_many`, as the service's agenda calls it: a claim in one commit."""
        try:
            self.cases.fire_many(aggregate_ids, kind, now)
        except BaseException as error:
            self.error = self.error or error
            raise
        with self._lock:
            self.count.update(aggregate_ids)


def evaluate(agenda: Agenda, firings: Firings, moment: datetime, count: int,
             progress: Progress) -> float:
    """The agenda loop at `moment` until nothing is due then; the seconds it took."""
    task = progress.add_task(f"escalation: evaluate {count:,} cases", total=count)
    stop = asyncio.Event()

    def progressed() -> None:
        progress.update(task, completed=firings.count.total())
        if firings.error is not None or not agenda.app.extras.due_ids(moment, 1):
            stop.set()

    agenda.on_progress = progressed
    started = time.perf_counter()
    asyncio.run(agenda.run(stop))
    seconds = time.perf_counter() - started
    if firings.error is not None:
        raise RuntimeError("a case's evaluation failed") from firings.error
    return seconds


def escalations(cases: Cases) -> list[CaseEscalated]:
    """The stored events the relay publishes as CaseEscalated."""
    found: list[CaseEscalated] = []
    start = 1
    while True:
        page = cases.recorder.select_notifications(start, 1000, topics=[ESCALATED_TOPIC])
        for notification in page:
            publication = integration_event(cases.mapper.to_domain_event(notification))
            if publication is not None and isinstance(publication.data, CaseEscalated):
                found.append(publication.data)
        if len(page) < 1000:
            return found
        start = page[-1].id + 1


def store_bytes(path: Path) -> int:
    return sum(part.stat().st_size for part in path.parent.glob(f"{path.name}*"))


def daily_evaluation(folder: Path, count: int, progress: Progress) -> dict[str, Any]:
    """N cases opened, then evaluated once at the next borrower-local day; checked and timed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "escalation.db"
    settings = Settings(store=path)
    env = settings.persistence_env("escalation")
    assert env.get("SQLITE_DBNAME") == str(path), "the bench measures the SQLite store"
    cases = Cases(pack(settings.pack), env=env)
    prefix = folder.name.upper()
    try:
        filled = fill(cases, prefix, count, progress)
        assert escalations(cases) == [], "a case escalated at opening"
        moment = the_next_day()
        assert len(cases.extras.due_ids(moment, count + 1)) == count
        firings = Firings(cases)
        agenda = Agenda(app=cases, fire=firings, fire_many=firings.many,
                        clock=ManualClock(moment), owner="bench",
                        lease=timedelta(seconds=settings.agenda_lease_seconds),
                        batch=settings.agenda_batch)
        seconds = evaluate(agenda, firings, moment, count, progress)
        escalated = escalations(cases)
        expected = {loan_id(prefix, i) for i in range(count) if profile(i) == ESCALATES}
        checks = {
            "fired": firings.count.total(),
            "fired_once": sum(1 for n in firings.count.values() if n == 1),
            "due_after": len(cases.extras.due_ids(moment, count + 1)),
            "agenda_rows": cases.extras.agenda_size(),
            "escalated": len(escalated),
            "expected_escalations": len(expected),
        }
        assert checks["fired"] == checks["fired_once"] == count, checks
        assert checks["due_after"] == 0 and checks["agenda_rows"] == count, checks
        assert {e.loan_id for e in escalated} == expected, "not the expected cases escalated"
        assert all(e.to_stage == "calls" and e.escalated_at == moment
                   and e.days_past_due == 31 for e in escalated)
        refired = refire(cases, [e.loan_id for e in escalated[:50]], moment)
        checks["refired"] = len(refired)
        checks["refired_new_events"] = len(escalations(cases)) - len(escalated)
        assert checks["refired_new_events"] == 0, "a second firing recorded again"
    finally:
        cases.close()
    return {"cases": count, "zones": len(ZONES), "fill_s": filled, "fill_per_s": count / filled,
            "evaluation_s": seconds, "evaluated_per_s": count / seconds,
            "per_case_ms": seconds / count * 1e3, "evaluated_at": moment.isoformat(),
            "agenda_batch": agenda.batch, "concurrency": agenda.concurrency,
            **checks, "store_bytes": store_bytes(path),
            "bytes_per_case": store_bytes(path) / count}


def refire(cases: Cases, loan_ids: list[str], moment: datetime) -> list[str]:
    """A firing repeated (a lease ran out, a replica restarted) finds the day decided."""
    for loan in loan_ids:
        cases.fire(CollectionCase.create_id(loan), "CollectionCase", moment)
    return loan_ids


def run(folder: Path, progress: Progress, cases: int) -> dict[str, Any]:
    """The evaluation at N/10 (the baseline) and at N, in the same run on the same disk."""
    baseline = daily_evaluation(folder / "baseline", max(1, cases // 10), progress)
    full = daily_evaluation(folder / "full", cases, progress)
    return {**full, "baseline": baseline,
            "per_case_ratio": full["per_case_ms"] / baseline["per_case_ms"]}


def rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    base, n = figures["baseline"], figures["cases"]
    return [
        (f"escalation: open {n:,} cases (LoanOverdue, {figures['zones']} zones)",
         f"{figures['fill_per_s']:,.0f} cases/s"),
        ((f"daily evaluation of {n:,} open cases (agenda, ×{figures['concurrency']}, "
          f"batch {figures['agenda_batch']})"),
         (f"{figures['evaluation_s']:.1f} s, {figures['evaluated_per_s']:,.0f} cases/s, "
          f"{figures['escalated']:,} escalated")),
        (f"evaluation per case, {n:,} vs {base['cases']:,} cases (1 = no scan)",
         (f"{figures['per_case_ms']:.2f} ms vs {base['per_case_ms']:.2f} ms "
          f"(×{figures['per_case_ratio']:.2f})")),
        ("evaluated exactly once that day",
         (f"{figures['fired_once']:,} fired once, {figures['due_after']} still due; "
          f"{figures['escalated']:,}/{figures['expected_escalations']:,} CaseEscalated; "
          f"refired {figures['refired']}: {figures['refired_new_events']} new")),
        ("escalation store per case", f"{figures['bytes_per_case']:,.0f} bytes"),
    ]
