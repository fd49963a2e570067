"""The visit section of `make bench`: a visit's recording streamed to the service (C12).

The visit service runs as its own process (`python -m services.visit.main`, as devstack starts
it) over a real broker, on the simulated clock in its temp var directory. One visit is brought
to checked-in the way the end-to-end tests bring it there: CaseOpened and VisitRequested put
on cases.events as escalation writes them, the registry, verification and the schedule over
HTTP, the notice's ReminderSent/ReminderDelivered put on reminders.events as the reminder
service writes them, the clock moved 25 h on, and the check-in over HTTP.

Then `PUT /v1/visits/{id}/recording`, the body a generator of 1 MiB chunks sent by httpx:
- the service's VmRSS before and VmHWM (its peak) after, from /proc/<pid>/status, the peak
  reset (`clear_refs`) before each upload so each upload has its own peak;
- the peak growth as a share of the bytes sent; the baseline is the same figure for a 1 MB
  upload to the same process in the same run (a machine here is shared and noisy), so a
  service that holds the body shows a ratio near 50 and one that streams it a ratio near 1;
- seconds and MB/s, and whether the answered `recording_sha256` is the SHA-256 of what was
  sent (and the stored file has that size).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaProducer
from rich.progress import Progress

from dunwell import devstack
from shared.auth import issue_token, load_or_create_secret, now_utc
from shared.clock import SimulatedClock
from shared.events import (
    CLOUDEVENTS_CONTENT_TYPE,
    Borrower,
    CaseOpened,
    Channel,
    EventData,
    Reason,
    ReminderDelivered,
    ReminderSent,
    VisitRequested,
    envelope,
)
from shared.kafka import prepare_broker
from shared.roles import Role
from shared.settings import KafkaSettings
from tests.helpers import wait_for

MB = 1_000_000
CHUNK = 1024 * 1024  # 1 MiB, as a client's buffered reader hands them over
SHANGHAI = ZoneInfo("Asia/Shanghai")
LENDER = "lender-bench"
COLLECTORS = ("C-BENCH-1", "C-BENCH-2")
DPD = 92


@dataclass
class VisitService:
    var_dir: Path
    bootstrap: str
    url: str
    process: devstack.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    def clock(self) -> SimulatedClock:
        return SimulatedClock(self.var_dir / "clock.json")

    def client(self, role: Role, subject: str) -> httpx.Client:
        """A fresh token for each client: the simulated clock moves, the tokens' wall does not."""
        secret = load_or_create_secret(self.var_dir / "jwt.secret")
        token = issue_token(secret, role, subject, now_utc())
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {token}"},
                            timeout=120)


@contextmanager
def visit_service(var_dir: Path) -> Iterator[VisitService]:
    """Tansu and the visit service as real processes; both stopped by their pids."""
    port = devstack.free_port()
    broker = devstack.start_broker(port, var_dir / "logs")
    process: devstack.Process | None = None
    try:
        bootstrap = f"127.0.0.1:{port}"
        asyncio.run(prepare_broker(KafkaSettings(bootstrap=bootstrap)))
        load_or_create_secret(var_dir / "jwt.secret")
        # Simulated time from the next 09:00 in Shanghai, so tomorrow's 10:00 is 25 h away.
        local = datetime.now(UTC).astimezone(SHANGHAI) + timedelta(minutes=1)
        nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
        SimulatedClock(var_dir / "clock.json").set(nine if nine > local
                                                   else nine + timedelta(days=1))
        service_port = devstack.free_port()
        env = devstack.service_env("visit", service_port, var_dir, bootstrap,
                                   {"DUNWELL_LOG_LEVEL": "WARNING",
                                    "DUNWELL_CLOCK": "simulated"})
        process = devstack.start_service("visit", env, var_dir / "logs")
        url = f"http://127.0.0.1:{service_port}"
        devstack.wait_ready(url, process)
        yield VisitService(var_dir, bootstrap, url, process)
    finally:
        if process is not None:
            process.stop()
        broker.stop()


async def _produce(bootstrap: str, sent: list[EventData], source: str, at: datetime) -> None:
    """Events onto their topics keyed by loan, as escalation and the reminder service write
    them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for data in sent:
            event = envelope(data, event_id=str(uuid.uuid4()), source=source, time=at,
                             causation_id=None, correlation_id=None)
            await producer.send(data.topic, event.encode(), key=event.subject.encode(),
                                headers=[("content-type", CLOUDEVENTS_CONTENT_TYPE.encode())])
        await producer.flush()
    finally:
        await producer.stop()


def _ok(answer: httpx.Response, status: int) -> dict[str, Any]:
    if answer.status_code != status:
        raise RuntimeError(f"{answer.request.method} {answer.request.url.path}: "
                           f"{answer.status_code} {answer.text[:500]}")
    body: dict[str, Any] = answer.json()
    return body


def _registry(service: VisitService, day: date) -> None:
    """An agency and two collectors holding the lender's letter, valid a year either side."""
    year = timedelta(days=365)
    with service.client(Role.OPS, "ops-bench") as ops:
        _ok(ops.post("/v1/agencies", json={
            "agency_id": "AG-BENCH", "name": "Bench Field Services",
            "licence_number": "LIC-BENCH", "authorised_lenders": [LENDER],
            "reviewed_at": (day - timedelta(days=30)).isoformat(),
            "next_review_due": (day + timedelta(days=300)).isoformat()}), 201)
        for n, collector_id in enumerate(COLLECTORS, start=1):
            _ok(ops.post("/v1/collectors", json={
                "collector_id": collector_id, "name": f"Bench Collector {n}",
                "agency_id": "AG-BENCH", "id_number": f"11010119900101123{n}",
                "contact": "+8613900000000",
                "certification": {"number": f"CERT-BENCH-{n}",
                                  "valid_until": (day + year).isoformat()},
                "authorisation_letter": {"letter_id": f"LTR-BENCH-{n}", "lender_id": LENDER,
                                         "scope": "field visits",
                                         "valid_from": (day - year).isoformat(),
                                         "valid_until": (day + year).isoformat()}}), 201)


def checked_in_visit(service: VisitService, progress: Progress) -> str:
    """One visit requested → verified → scheduled → notice delivered → checked in."""
    task = progress.add_task("visit: bring a visit to checked-in", total=6)
    clock = service.clock()
    now = clock.now()
    day = now.astimezone(SHANGHAI).date()
    loan_id = f"L-BENCH-{uuid.uuid4().hex[:10]}"
    opened = CaseOpened(
        loan_id=loan_id, lender_id=LENDER,
        borrower=Borrower(borrower_id="B-BENCH", name="Wang Fang", phone="+8613800000000",
                          timezone="Asia/Shanghai", residence_address="1 Hill Road, Pudong"),
        amount_overdue=Decimal("5000.00"), currency="CNY",
        due_date=day - timedelta(days=DPD), days_past_due=DPD,
        repayment_channel="transfer to account 6222-0000-1111", stage="field_visit",
        opened_at=now)
    requested = VisitRequested(loan_id=loan_id, policy_version="cn-2026.1/default@1",
                               stage="field_visit", requested_at=now,
                               reasons=[Reason(code="dpd", value=str(DPD), threshold="91")])
    asyncio.run(_produce(service.bootstrap, [opened, requested], "/dunwell/escalation", now))
    progress.advance(task)
    _registry(service, day)
    progress.advance(task)

    with service.client(Role.OPS, "ops-bench") as ops:
        def listed() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = ops.get("/v1/visits",
                                                  params={"loan_id": loan_id}).json()["visits"]
            return found or None

        (visit,) = wait_for(listed, timeout=60, what=f"the visit service to open {loan_id}'s visit")
        visit_id: str = visit["visit_id"]
        dossier = _ok(ops.get(f"/v1/visits/{visit_id}"), 200)["dossier"]
        _ok(ops.post(f"/v1/visits/{visit_id}/verify", json={
            "name": dossier["borrower"]["name"], "phone": dossier["borrower"]["phone"],
            "amount_overdue": dossier["amount_overdue"],
            "days_past_due": dossier["days_past_due"]}), 202)
        progress.advance(task)
        start = datetime.combine(day + timedelta(days=1), datetime.min.time().replace(hour=10),
                                 SHANGHAI).astimezone(UTC)
        _ok(ops.post(f"/v1/visits/{visit_id}/schedule", json={
            "scheduled_start": start.isoformat(),
            "scheduled_end": (start + timedelta(hours=2)).isoformat(),
            "address_kind": "residence", "collector_ids": list(COLLECTORS)}), 202)
        progress.advance(task)

        # The notice, as the reminder service reports it: sent and delivered now, 25 h ahead.
        reminder_id, at = uuid.uuid4(), clock.now()
        notice: list[EventData] = [
            ReminderSent(loan_id=loan_id, reminder_id=reminder_id, channel=Channel.SMS,
                         template_id="visit.notice", template_version=1, sent_at=at,
                         borrower_local_time=at.astimezone(SHANGHAI).isoformat(),
                         visit_id=uuid.UUID(visit_id)),
            ReminderDelivered(loan_id=loan_id, reminder_id=reminder_id, channel=Channel.SMS,
                              delivered_at=at, visit_id=uuid.UUID(visit_id))]
        asyncio.run(_produce(service.bootstrap, notice, "/dunwell/reminder", at))
        wait_for(lambda: ops.get(f"/v1/visits/{visit_id}").json()["status"] == "notified",
                 timeout=60, what=f"visit {visit_id} to be notified")
        progress.advance(task)

    clock.set(start + timedelta(minutes=10))
    with service.client(Role.COLLECTOR, COLLECTORS[0]) as collector:
        _ok(collector.post(f"/v1/visits/{visit_id}/check-in", json={
            "collector_ids": list(COLLECTORS), "checked_in_at": clock.now().isoformat(),
            "credentials_presented": {"id_card": True, "badge": True,
                                      "authorisation_letter": True}}), 202)
    progress.advance(task)
    return visit_id


# --- the service's memory ---


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (its peak) of the process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def reset_peak(pid: int) -> bool:
    """VmHWM set back to the current VmRSS (Linux 4.0+, our own child); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Sampler:
    """VmRSS every 10 ms while an upload runs: a second look at the peak beside VmHWM."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, memory(self.pid)["VmRSS"])
            self._stop.wait(0.01)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def upload(service: VisitService, visit_id: str, size: int, progress: Progress,
           label: str) -> dict[str, Any]:
    """`size` bytes from a generator, CHUNK at a time; the service's memory around it."""
    digest = hashlib.sha256()
    task = progress.add_task(f"visit: upload {label}", total=size)
    seed = os.urandom(32)

    def body() -> Iterator[bytes]:
        sent = 0
        n = 0
        while sent < size:
            # distinct bytes each chunk (and each run), cheap to make: no dedup, no page reuse
            piece = hashlib.sha256(seed + n.to_bytes(8, "big")).digest()
            chunk = (piece * (CHUNK // len(piece) + 1))[:min(CHUNK, size - sent)]
            digest.update(chunk)
            sent += len(chunk)
            n += 1
            progress.update(task, completed=sent)
            yield chunk

    with service.client(Role.COLLECTOR, COLLECTORS[0]) as collector:
        reset = reset_peak(service.pid)
        before = memory(service.pid)
        with Sampler(service.pid) as sampler:
            started = time.perf_counter()
            answer = collector.put(f"/v1/visits/{visit_id}/recording", content=body(),
                                   headers={"Content-Type": "audio/mpeg"})
            seconds = time.perf_counter() - started
        after = memory(service.pid)
    stored = _ok(answer, 201)
    sha = stored["recording_sha256"]
    path = service.var_dir / "recordings" / sha[:2] / sha
    growth = after["VmHWM"] - before["VmRSS"]
    return {"bytes": size, "chunk_bytes": CHUNK, "seconds": seconds,
            "mb_per_s": size / MB / seconds,
            "rss_before": before["VmRSS"], "hwm_before": before["VmHWM"],
            "hwm_after": after["VmHWM"], "rss_after": after["VmRSS"],
            "sampled_peak_rss": sampler.peak, "peak_reset": reset,
            "peak_growth": growth, "peak_growth_over_upload": growth / size,
            "recording_sha256": sha, "sent_sha256": digest.hexdigest(),
            "sha256_matches": sha == digest.hexdigest(), "answered_bytes": stored["bytes"],
            "stored_file_bytes": path.stat().st_size if path.is_file() else None}


def run(folder: Path, progress: Progress, megabytes: int = 50) -> dict[str, Any]:
    """A warm-up, the 1 MB baseline and the `megabytes` upload, to one service process."""
    with visit_service(folder) as service:
        visit_id = checked_in_visit(service, progress)
        idle = memory(service.pid)
        warm = upload(service, visit_id, 64 * 1024, progress, "warm-up (64 KiB)")
        baseline = upload(service, visit_id, 1 * MB, progress, "baseline (1 MB)")
        full = upload(service, visit_id, megabytes * MB, progress, f"{megabytes} MB")
    ratio = (full["peak_growth"] / baseline["peak_growth"] if baseline["peak_growth"] > 0
             else None)
    return {**full, "megabytes": megabytes, "visit_id": visit_id,
            "visit_reached": "checked_in over HTTP and the broker (simulated clock)",
            "rss_idle": idle["VmRSS"], "warm_up": warm, "baseline": baseline,
            "growth_over_baseline_growth": ratio}


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.1f} MiB"


def rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    base, n = figures["baseline"], figures["megabytes"]
    ratio = figures["growth_over_baseline_growth"]
    return [
        (f"visit recording upload, {n} MB in 1 MiB chunks",
         f"{figures['seconds']:.2f} s, {figures['mb_per_s']:,.1f} MB/s"),
        ("visit service VmRSS before → VmHWM after",
         (f"{_mib(figures['rss_before'])} → {_mib(figures['hwm_after'])} "
          f"(peak growth {_mib(figures['peak_growth'])}, "
          f"×{figures['peak_growth_over_upload']:.3f} of the upload)")),
        ("baseline: peak growth for a 1 MB upload",
         (f"{_mib(base['peak_growth'])} (×{base['peak_growth_over_upload']:.3f} of it); "
          f"{n} MB / 1 MB growth ×{ratio:.2f}" if ratio is not None else
          f"{_mib(base['peak_growth'])}")),
        ("recording_sha256 = SHA-256 of what was sent",
         (f"{figures['sha256_matches']} ({figures['answered_bytes']:,} bytes answered, "
          f"{figures['stored_file_bytes'] or 0:,} on disk)")),
    ]
