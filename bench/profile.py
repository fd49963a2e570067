"""Where a loan's time goes, service by service: py-spy samples every service while N loans
flow from loans.events to a ReminderSent in the audit log (issue #12's first step).

    .venv/bin/pip install py-spy==0.4.1
    .venv/bin/python -m bench.profile --loans 3000

Each service's samples go to bench/results/profile-<service>.txt (py-spy's collapsed stacks),
and a summary to bench/results/profile.json: per service, the share of its samples spent in
each kind of work (the store, JSON, pydantic, Kafka, HTTP, hashing, the event loop idle) and
its busiest functions by own time. py-spy itself needs a core, so the loans/s under it is not
the pipeline's rate; `make bench` measures that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.run import RESULTS, from_kafka, start_suite
from dunwell import devstack
from shared.kafka import prepare_broker
from shared.settings import KafkaSettings

# The kinds of work, by the first matching frame from the innermost out (file or function).
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("idle (event loop waiting)", ("select (selectors.py", "poll (selectors.py",
                                   "_run_once (asyncio/base_events.py")),
    ("store: sqlite", ("sqlite3", "eventsourcing/sqlite.py")),
    ("store: eventsourcing", ("eventsourcing/",)),
    ("JSON", ("json/", "orjson")),
    ("pydantic", ("pydantic",)),
    ("Kafka client", ("aiokafka/",)),
    ("HTTP", ("httpx/", "httpcore/", "h11/", "uvicorn/", "starlette/", "fastapi/")),
    ("hashing and signing", ("hashlib", "cryptography/", "shared/tlog.py", "merkle.py")),
    ("logging and metrics", ("logging/", "prometheus_client/", "opentelemetry/")),
]


def kind_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for kind, marks in KINDS:
            if any(mark in frame for mark in marks):
                return kind
    return "the project's own code" if any("/work/" in f or "services/" in f or "shared/" in f
                                           for f in stack) else "other"


def summarise(path: Path) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        total += count
        kinds[kind_of(stack)] += count
        own[stack[-1]] += count
    share = {kind: round(100 * n / total, 1) for kind, n in kinds.most_common()} if total else {}
    busiest = [{"frame": frame, "percent": round(100 * n / total, 1)}
               for frame, n in own.most_common(12)] if total else []
    return {"samples": total, "percent_by_kind": share, "busiest_own_time": busiest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loans", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples a second")
    parser.add_argument("--cpu-only", action="store_true",
                        help="only each process's CPU time a loan, without py-spy")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL: where the CPU goes")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(".venv/bin/py-spy"))
    if not args.cpu_only and not Path(spy).exists():
        raise SystemExit("py-spy is missing: .venv/bin/pip install py-spy==0.4.1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dunwell-profile-") as tmp:
        var_dir = Path(tmp)
        port = devstack.free_port()
        broker = devstack.start_broker(port, var_dir / "logs")
        processes: list[devstack.Process] = []
        spies: dict[str, subprocess.Popen[bytes]] = {}
        try:
            bootstrap = f"127.0.0.1:{port}"
            asyncio.run(prepare_broker(KafkaSettings(bootstrap=bootstrap)))
            _, services = start_suite(var_dir, bootstrap, processes)
            watched = {**{name: process.pid for name, process in services.items()},
                       "channel sinks": processes[0].pid, "broker": broker.pid}
            before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            for name, process in ({} if args.cpu_only else services).items():
                out = RESULTS / f"profile-{name}.txt"
                spies[name] = subprocess.Popen(
                    [spy, "record", "--pid", str(process.pid), "--rate", str(args.rate),
                     "--format", "raw", "--output", str(out), "--nonblocking",
                     *(["--gil"] if args.gil else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rate = asyncio.run(from_kafka(bootstrap, var_dir, args.loans))
            cpu = {name: round((cpu_seconds(pid) - before[name]) * 1000 / args.loans, 2)
                   for name, pid in watched.items()}
        finally:
            for spied in spies.values():
                spied.send_signal(2)  # py-spy writes its file on SIGINT
            for spied in spies.values():
                spied.wait(timeout=60)
            for process in processes:
                process.stop()
            broker.stop()
    print(json.dumps({"loans_per_s": round(rate["loans_per_s"], 1),
                      "cpu_ms_a_loan": cpu, "in_all": round(sum(cpu.values()), 2)}, indent=2))
    if args.cpu_only:
        (RESULTS / "profile-cpu.json").write_text(json.dumps(
            {"loans": args.loans, "rate": rate, "cpu_ms_a_loan": cpu}, indent=2) + "\n")
        return
    summary = {"loans": args.loans, "under_py_spy": rate, "cpu_ms_a_loan": cpu,
               "services": {name: summarise(RESULTS / f"profile-{name}.txt")
                            for name in devstack.SERVICES}}
    (RESULTS / "profile.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({name: s["percent_by_kind"] for name, s in summary["services"].items()},
                     indent=2))


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process and its waited-for children have used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(value) for value in fields[11:15]) / ticks


if __name__ == "__main__":
    main()
