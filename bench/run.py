"""`make bench`: the raw broker rate beside the end-to-end rate, the audit log's figures, and
the escalation's daily evaluation of every open case, and the visit service's memory while a
visit's recording streams in.

Raw: aiokafka produce + consume of N records the size of a LoanOverdue event.
End to end: N overdue loans, from the first POST until every loan's ReminderSent is in the
audit log. Machines here are shared and noisy, so the figure that matters is the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import audit, escalation, plumbing, visits
from dunwell import devstack
from shared import topics
from shared.auth import issue_token, load_or_create_secret, now_utc
from shared.events import LoanOverdue, envelope
from shared.kafka import make_producer, prepare_broker
from shared.roles import Role
from shared.settings import KafkaSettings
from tests.helpers import loan_body, zone_at_local_hour

console = Console()
RESULTS = Path("bench/results")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def _loan(i: int, zone: str) -> dict[str, Any]:
    return loan_body(f"BENCH-{i:07d}", lender_id="lender-bench", timezone_name=zone, dpd=40)


async def raw_broker(bootstrap: str, count: int, value: bytes) -> dict[str, float]:
    topic = "bench.raw"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    with _progress() as progress:
        task = progress.add_task("raw broker: produce", total=count)
        started = time.perf_counter()
        for i in range(count):
            await producer.send(topic, value, key=f"BENCH-{i:07d}".encode())
            if i % 500 == 0:
                progress.update(task, completed=i)
        await producer.flush()
        produced = time.perf_counter() - started
        progress.update(task, completed=count)
        await producer.stop()

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        task = progress.add_task("raw broker: consume", total=count)
        seen = 0
        started = time.perf_counter()
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
            seen += sum(len(records) for records in batch.values())
            progress.update(task, completed=seen)
        consumed = time.perf_counter() - started
        await consumer.stop()
    return {"produce_per_s": count / produced, "consume_per_s": count / consumed,
            "round_trip_per_s": count / (produced + consumed)}


async def end_to_end(stack_urls: dict[str, str], var_dir: Path, count: int,
                     concurrency: int = 16) -> dict[str, float]:
    """One `POST /v1/loans/overdue` a loan, `concurrency` at a time."""
    zone = zone_at_local_hour(12)

    async def post(client: httpx.AsyncClient, i: int) -> int:
        response = await client.post("/v1/loans/overdue", json=_loan(i, zone))
        response.raise_for_status()
        return 1

    return await _through_intake(stack_urls, var_dir, count, "end to end: POST LoanOverdue",
                                 "BENCH-", list(range(count)), post, concurrency)


async def via_batch(stack_urls: dict[str, str], var_dir: Path, count: int,
                    batch: int = 1000, concurrency: int = 2) -> dict[str, float]:
    """The nightly batch through `POST /v1/loans/overdue:batch`, `batch` loans a request."""
    zone = zone_at_local_hour(12)

    async def post(client: httpx.AsyncClient, part: range) -> int:
        loans = [_loan(i, zone) | {"loan_id": f"BATCH-{i:07d}"} for i in part]
        response = await client.post("/v1/loans/overdue:batch", json={"loans": loans},
                                     headers={"idempotency-key": f"bench-{part.start}"})
        response.raise_for_status()
        if response.json()["accepted"] != len(part):
            raise RuntimeError(f"the batch from {part.start} was not taken whole")
        return len(part)

    parts = [range(start, min(start + batch, count)) for start in range(0, count, batch)]
    figures = await _through_intake(stack_urls, var_dir, count, "batch route: loans posted",
                                    "BATCH-", parts, post, concurrency)
    return {**figures, "batch": batch}


async def _through_intake(stack_urls: dict[str, str], var_dir: Path, count: int, label: str,
                          prefix: str, jobs: list[Any],
                          post: Callable[[httpx.AsyncClient, Any], Awaitable[int]],
                          concurrency: int) -> dict[str, float]:
    """Post `jobs` to the intake as lender-bench (`post` says how many loans each took) and
    wait until `count` ReminderSent of loans named `prefix`… are in the audit log."""
    secret = load_or_create_secret(var_dir / "jwt.secret")
    token = issue_token(secret, Role.LENDER, "lender-bench", now_utc())
    audit_db = sqlite3.connect(f"file:{var_dir / 'audit.db'}?mode=ro", uri=True)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    with _progress() as progress:
        posted_task = progress.add_task(label, total=count)
        sent_task = progress.add_task(f"{label.split(':')[0]}: ReminderSent in audit",
                                      total=count)
        started = time.perf_counter()

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                progress.advance(posted_task, await post(client, queue.get_nowait()))

        async with httpx.AsyncClient(base_url=stack_urls["escalation"], timeout=120,
                                     headers={"authorization": f"Bearer {token}"}) as client:
            posting = asyncio.gather(*(worker(client) for _ in range(concurrency)))
            posted_at = None
            while True:
                sent = audit_db.execute("SELECT COUNT(*) FROM leaves WHERE event_type="
                                        "'ReminderSent' AND subject LIKE ?",
                                        (f"{prefix}%",)).fetchone()[0]
                progress.update(sent_task, completed=sent)
                if posting.done() and posted_at is None:
                    posting.result()
                    posted_at = time.perf_counter() - started
                if sent >= count:
                    break
                await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
    audit_db.close()
    return {"loans_per_s": count / elapsed, "seconds": elapsed,
            "post_per_s": count / (posted_at or elapsed)}


async def from_kafka(bootstrap: str, var_dir: Path, count: int) -> dict[str, float]:
    """The lender's core writes N LoanOverdue straight to loans.events: what the pipeline does
    when the intake API is not the bottleneck."""
    zone = zone_at_local_hour(12)
    audit_db = sqlite3.connect(f"file:{var_dir / 'audit.db'}?mode=ro", uri=True)
    producer = make_producer(KafkaSettings(bootstrap=bootstrap))
    await producer.start()
    with _progress() as progress:
        produced_task = progress.add_task("from Kafka: LoanOverdue produced", total=count)
        sent_task = progress.add_task("from Kafka: ReminderSent in audit", total=count)
        started = time.perf_counter()
        sends = []
        for i in range(count):
            body = _loan(i, zone) | {"loan_id": f"KAFKA-{i:07d}"}
            event = envelope(LoanOverdue.model_validate(body), event_id=f"kafka-bench-{i}",
                             source="/lender-bench/core", time=now_utc(), causation_id=None,
                             correlation_id=None)
            sends.append(await producer.send(topics.LOANS, event.encode(),
                                             key=body["loan_id"].encode()))
            if i % 500 == 0:
                progress.update(produced_task, completed=i)
        await asyncio.gather(*sends)
        await producer.stop()
        progress.update(produced_task, completed=count)
        while True:
            sent = audit_db.execute("SELECT COUNT(*) FROM leaves WHERE event_type="
                                    "'ReminderSent' AND subject LIKE 'KAFKA-%'").fetchone()[0]
            progress.update(sent_task, completed=sent)
            if sent >= count:
                break
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
    audit_db.close()
    return {"loans_per_s": count / elapsed, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loans", type=int, default=int(os.environ.get("BENCH_LOANS", "10000")))
    parser.add_argument("--only", choices=["all", "pipeline", "plumbing", "audit", "escalation",
                                            "visits"],
                        default="all")
    parser.add_argument("--pending", type=int, default=100_000,
                        help="pending reminders for the readiness figure")
    parser.add_argument("--audit-sizes", default=os.environ.get("BENCH_AUDIT_SIZES",
                                                                "1000000,10000000"),
                        help="tree sizes for the inclusion-proof figures, comma-separated")
    parser.add_argument("--cases", type=int,
                        default=int(os.environ.get("BENCH_CASES", "100000")),
                        help="open cases for the daily-evaluation figure")
    parser.add_argument("--recording-mb", type=int,
                        default=int(os.environ.get("BENCH_RECORDING_MB", "50")),
                        help="size of the visit recording streamed to the visit service")
    args = parser.parse_args()
    figures: dict[str, Any] = {"measured_at": datetime.now(UTC).isoformat(),
                     "machine": {"cpus": os.cpu_count()}}
    table = Table(title="dunwell bench")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    if args.only in ("all", "pipeline"):
        figures.update(pipeline(args.loans, table))
    if args.only in ("all", "plumbing"):
        with tempfile.TemporaryDirectory(prefix="dunwell-bench-plumbing-") as tmp, \
                _progress() as progress:
            figures["plumbing"] = {
                "store_cost": plumbing.store_cost(Path(tmp), progress, messages=5_000,
                                                  batch=500),
                "readiness": plumbing.readiness(Path(tmp), progress, pending=args.pending),
            }
        for measure, figure in plumbing.rows(figures["plumbing"]):
            table.add_row(measure, figure)
    if args.only in ("all", "audit"):
        with tempfile.TemporaryDirectory(prefix="dunwell-bench-audit-") as tmp:
            sizes = [int(size) for size in args.audit_sizes.split(",") if size.strip()]
            figures["audit"] = audit.run(Path(tmp), _progress, sizes)
        for measure, figure in audit.rows(figures["audit"]):
            table.add_row(measure, figure)
    if args.only in ("all", "escalation"):
        with tempfile.TemporaryDirectory(prefix="dunwell-bench-escalation-") as tmp, \
                _progress() as progress:
            figures["escalation"] = escalation.run(Path(tmp), progress, args.cases)
        for measure, figure in escalation.rows(figures["escalation"]):
            table.add_row(measure, figure)
    if args.only in ("all", "visits"):
        with tempfile.TemporaryDirectory(prefix="dunwell-bench-visits-") as tmp, \
                _progress() as progress:
            figures["visits"] = visits.run(Path(tmp), progress, args.recording_mb)
        for measure, figure in visits.rows(figures["visits"]):
            table.add_row(measure, figure)
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("bench.json" if args.only == "all" else f"bench-{args.only}.json")
    path.write_text(json.dumps(figures, indent=2))
    console.print(f"figures written to {path}")


def start_suite(var_dir: Path, bootstrap: str, processes: list[devstack.Process]
                ) -> tuple[dict[str, str], dict[str, devstack.Process]]:
    """The channel sinks and the four services on `bootstrap`, each ready; every process is
    added to `processes` as it starts, for the caller to stop. Returns the services' URLs and
    processes by name."""
    ports = {name: devstack.free_port() for name in devstack.SERVICES}
    urls = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}
    # The real channels: SMS through the provider sink, which posts receipts back.
    sinks = devstack.start_sinks(
        var_dir, urls["reminder"], var_dir / "logs",
        ports={"provider": devstack.free_port(), "smtp": devstack.free_port()})
    processes += [sinks.provider, sinks.smtp]
    services = {}
    for name in devstack.SERVICES:
        env = devstack.service_env(name, ports[name], var_dir, bootstrap,
                                   {"DUNWELL_LOG_LEVEL": "WARNING", **sinks.reminder_env()})
        services[name] = devstack.start_service(name, env, var_dir / "logs")
        processes.append(services[name])
    for name, process in services.items():
        devstack.wait_ready(urls[name], process)
    return urls, services


def pipeline(count: int, table: Table) -> dict[str, Any]:
    """Raw broker round trip beside POST → ReminderSent in the audit log, N loans."""
    with tempfile.TemporaryDirectory(prefix="dunwell-bench-") as tmp:
        var_dir = Path(tmp)
        port = devstack.free_port()
        broker = devstack.start_broker(port, var_dir / "logs")
        processes: list[devstack.Process] = []
        try:
            bootstrap = f"127.0.0.1:{port}"
            asyncio.run(prepare_broker(KafkaSettings(bootstrap=bootstrap)))
            sample = _loan(0, "Asia/Shanghai")
            value = envelope(LoanOverdue.model_validate(sample), event_id="0" * 36,
                             source="/bench", time=now_utc(), causation_id=None,
                             correlation_id=None).encode()
            raw = asyncio.run(raw_broker(bootstrap, count, value))
            urls, _ = start_suite(var_dir, bootstrap, processes)
            e2e = asyncio.run(end_to_end(urls, var_dir, count))
            kafka = asyncio.run(from_kafka(bootstrap, var_dir, count))
            batched = asyncio.run(via_batch(urls, var_dir, count))
        finally:
            for process in processes:
                process.stop()
            broker.stop()
    ratio = e2e["loans_per_s"] / raw["round_trip_per_s"]
    table.add_row(f"raw broker produce ({len(value)}-byte events)",
                  f"{raw['produce_per_s']:,.0f} msg/s")
    table.add_row("raw broker consume", f"{raw['consume_per_s']:,.0f} msg/s")
    table.add_row("raw broker produce+consume", f"{raw['round_trip_per_s']:,.0f} msg/s")
    table.add_row(f"intake POST ({count} loans)", f"{e2e['post_per_s']:,.0f} loans/s")
    table.add_row("end to end (POST → ReminderSent in audit)", f"{e2e['loans_per_s']:,.0f} loans/s")
    table.add_row("ratio end-to-end / raw round trip", f"{ratio:.4f}")
    kafka_ratio = kafka["loans_per_s"] / raw["round_trip_per_s"]
    table.add_row("from Kafka (LoanOverdue → ReminderSent in audit)",
                  f"{kafka['loans_per_s']:,.0f} loans/s (ratio {kafka_ratio:.4f})")
    batch_ratio = batched["loans_per_s"] / raw["round_trip_per_s"]
    table.add_row(f"batch route ({batched['batch']} a request → ReminderSent in audit)",
                  f"{batched['loans_per_s']:,.0f} loans/s (ratio {batch_ratio:.4f}; "
                  f"intake {batched['post_per_s']:,.0f} loans/s)")
    table.add_row("batch route / from Kafka",
                  f"{batched['loans_per_s'] / kafka['loans_per_s']:.2f}")
    return {"loans": count, "event_bytes": len(value), "raw_broker": raw, "end_to_end": e2e,
            "ratio_e2e_to_raw": ratio, "from_kafka": kafka, "ratio_kafka_to_raw": kafka_ratio,
            "via_batch": batched, "ratio_batch_to_raw": batch_ratio,
            "ratio_batch_to_kafka": batched["loans_per_s"] / kafka["loans_per_s"]}


if __name__ == "__main__":
    main()
