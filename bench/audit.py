"""The audit section of `make bench`: appends, checkpoint latency, proofs at size, verification.

Every figure sits beside a baseline measured in the same run on the same disk:
- appends: the audit store's append (leaf, bytes, tree nodes, position) against a bare
  SQLite insert of the same bytes, one commit per event and in batches;
- append → covered by a signed checkpoint: the service's own checkpointer loop, against its
  signing interval;
- inclusion proofs at 1 M and 10 M leaves: a store of synthetic leaf hashes (the tree nodes
  are real, built by the same code as the service's), against a single-node lookup;
- a 100-event evidence bundle verified offline, in process and by `dunwell verify`, against
  the interpreter's own start-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from rich.progress import Progress

from shared.clock import SystemClock
from shared.tlog import leaf_hash, verify_bundle, verify_inclusion

from services.audit import merkle
from services.audit.application import AuditLog
from services.audit.main import checkpointer
from services.audit.settings import Settings
from services.audit.signer import generate_signer, load_signer
from services.audit.store import SCHEMA, LogStore, NewLeaf, StoreReader
from services.audit.verify import verify_store

ORIGIN = "bench.dunwell.local/audit"
NOW = datetime(2026, 11, 23, tzinfo=UTC)
SYNTHETIC = Path("var/bench")  # the big synthetic trees are kept here between runs


def _event(i: int, subject: str) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": str(uuid5(NAMESPACE_URL, f"bench/{i}")),
        "source": "/dunwell/bench", "type": "ReminderSent", "subject": subject,
        "time": NOW.isoformat(), "datacontenttype": "application/json",
        "data": {"loan_id": subject, "channel": "sms", "template": "sms.first_reminder",
                 "template_version": 1, "sent_at": NOW.isoformat(), "seq": i},
    }).encode()


def _leaf(i: int, subject: str = "") -> NewLeaf:
    data = _event(i, subject or f"BENCH-{i % 9973:05d}")
    return NewLeaf(str(uuid5(NAMESPACE_URL, f"bench/{i}")), subject or f"BENCH-{i % 9973:05d}",
                   "ReminderSent", data, leaf_hash(data))


def _open_log(path: Path) -> AuditLog:
    skey, vkey = generate_signer(ORIGIN)
    _, signer = load_signer(skey)
    return AuditLog(LogStore(path), ORIGIN, signer, vkey)


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- appends -------------------------------------------------------------------------------


def _bare_sqlite(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # as the audit store
    db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, data BLOB)")
    return db


def appends(tmp: Path, progress: Progress, single: int, batched: int,
            batch: int) -> dict[str, float]:
    task = progress.add_task("audit: appends", total=2 * (single + batched))
    leaves = [_leaf(i) for i in range(single + batched)]

    bare = _bare_sqlite(tmp / "bare.db")
    started = time.perf_counter()
    for i in range(single):
        bare.execute("BEGIN")
        bare.execute("INSERT INTO events VALUES (?, ?)", (i, leaves[i].data))
        bare.execute("COMMIT")
        progress.advance(task)
    bare_single = single / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(single, single + batched, batch):
        chunk = leaves[start:start + batch]
        bare.execute("BEGIN")
        bare.executemany("INSERT INTO events VALUES (?, ?)",
                         [(start + j, leaf.data) for j, leaf in enumerate(chunk)])
        bare.execute("COMMIT")
        progress.advance(task, len(chunk))
    bare_batched = batched / (time.perf_counter() - started)
    bare.close()

    store = LogStore(tmp / "appends.db")
    started = time.perf_counter()
    for i in range(single):
        store.append(leaves[i], ("kafka/bench/t/0", i))
        progress.advance(task)
    audit_single = single / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(single, single + batched, batch):
        chunk = leaves[start:start + batch]
        store.append_many(chunk, ("kafka/bench/t/0", start))
        progress.advance(task, len(chunk))
    audit_batched = batched / (time.perf_counter() - started)
    store.close()
    return {"single_per_s": audit_single, "bare_sqlite_single_per_s": bare_single,
            "single_ratio": audit_single / bare_single,
            "batched_per_s": audit_batched, "bare_sqlite_batched_per_s": bare_batched,
            "batched_ratio": audit_batched / bare_batched, "batch": batch}


# --- append → covered by a signed checkpoint -------------------------------------------------


def checkpoint_latency(tmp: Path, progress: Progress, rate: float,
                       seconds: float) -> dict[str, float]:
    """Leaves appended at a steady rate while the service's checkpointer loop runs."""
    interval = Settings().checkpoint_interval_seconds
    audit = _open_log(tmp / "latency.db")
    count = int(rate * seconds)
    appended: list[float] = []
    task = progress.add_task("audit: append → signed checkpoint", total=count)

    def appender() -> None:
        started = time.perf_counter()
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            audit.store.append(_leaf(i), ("kafka/bench/t/0", i))
            appended.append(time.perf_counter())
            progress.advance(task)

    signed: list[tuple[int, float]] = []
    audit.on_signed(lambda: signed.append((audit.latest()[0], time.perf_counter())))  # type: ignore[index]

    async def run() -> None:
        stop = asyncio.Event()

        async def nothing_announced_yet() -> None:
            return None

        signing = checkpointer(audit, SystemClock(), interval, nothing_announced_yet)
        loop = asyncio.ensure_future(signing(stop))
        await asyncio.to_thread(appender)
        while not signed or signed[-1][0] < count:
            if loop.done():
                loop.result()  # the checkpointer failed: raise what it raised
                raise RuntimeError("the checkpointer stopped before covering every leaf")
            await asyncio.sleep(0.01)
        stop.set()
        await loop

    asyncio.run(run())
    announced = signed
    latencies = []
    cursor = 0
    for index, at in enumerate(appended):
        while announced[cursor][0] <= index:
            cursor += 1
        latencies.append(announced[cursor][1] - at)
    audit.store.close()
    p50, p99 = _percentile(latencies, 0.50), _percentile(latencies, 0.99)
    return {"leaves": count, "rate_per_s": rate, "interval_s": interval,
            "p50_s": p50, "p99_s": p99, "p99_over_interval": p99 / interval,
            "checkpoints": len(announced)}


# --- inclusion proofs at size ------------------------------------------------------------------


class _RightEdge:
    """The left siblings a batch append needs: the right edge of the tree built so far."""

    def __init__(self) -> None:
        self.nodes: dict[merkle.NodeKey, bytes] = {}

    def get_nodes(self, keys: Sequence[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
        return {key: self.nodes[key] for key in keys if key in self.nodes}

    def keep(self, entries: list[merkle.NodeEntry], end: int) -> None:
        self.nodes.update((key, value) for key, value in entries
                          if (key[1] + 1) << key[0] == end)


def _synthetic_hash(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def synthetic_tree(size: int, progress: Progress, folder: Path = SYNTHETIC) -> Path:
    """A store whose level 0 holds H(i) for i < size, every node above built as the service
    builds them. Made once and kept (under var/bench/)."""
    path = folder / f"tree-{size}.db"
    if path.exists():
        db = sqlite3.connect(path)
        row = db.execute("SELECT COUNT(*) FROM nodes WHERE level=0").fetchone()
        db.close()
        if row[0] == size:
            return path
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_suffix(".building")
    building.unlink(missing_ok=True)
    db = sqlite3.connect(building, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(SCHEMA)
    edge = _RightEdge()
    task = progress.add_task(f"audit: build a {size:,}-leaf tree", total=size)
    step = 1 << 16
    for start in range(0, size, step):
        hashes = [_synthetic_hash(i) for i in range(start, min(size, start + step))]
        entries = merkle.nodes_for_appends(start, hashes, edge)
        db.execute("BEGIN")
        db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                       [(level, idx, value) for (level, idx), value in entries])
        db.execute("COMMIT")
        edge.keep(entries, start + len(hashes))
        progress.advance(task, len(hashes))
    db.close()
    building.rename(path)
    return path


def proofs_at(size: int, progress: Progress, samples: int,
              folder: Path = SYNTHETIC) -> dict[str, float]:
    path = synthetic_tree(size, progress, folder)
    store = LogStore(path)
    root = merkle.root(size, store)
    rng = random.Random(size)
    indices = [rng.randrange(size) for _ in range(samples)]
    task = progress.add_task(f"audit: proofs at {size:,}", total=2 * samples)
    lookups, proofs = [], []
    for i in indices:
        started = time.perf_counter()
        store.get_nodes([(0, i)])
        lookups.append(time.perf_counter() - started)
        progress.advance(task)
    proof_hashes = 0
    for i in indices:
        started = time.perf_counter()
        proof = merkle.inclusion_proof(i, size, store)
        proofs.append(time.perf_counter() - started)
        proof_hashes = len(proof)
        progress.advance(task)
    for i in indices[:20]:  # the figures are for real proofs
        verify_inclusion(_synthetic_hash(i), i, size, merkle.inclusion_proof(i, size, store), root)
    store.close()
    p99 = _percentile(proofs, 0.99)
    lookup = statistics.median(lookups)
    return {"leaves": size, "proof_hashes": proof_hashes, "p50_ms": 1e3 * statistics.median(proofs),
            "p99_ms": 1e3 * p99, "one_node_lookup_p50_ms": 1e3 * lookup,
            "p99_over_one_lookup": p99 / lookup}


# --- offline verification of a 100-event bundle, and of a whole store --------------------------


def _timed(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def verification(tmp: Path, progress: Progress, size: int, events: int) -> dict[str, float]:
    audit = _open_log(tmp / "bundle.db")
    every = size // events
    task = progress.add_task(f"audit: a {size:,}-leaf log to verify", total=size)
    for start in range(0, size, 1000):
        audit.store.append_many(
            [_leaf(i, "BENCH-LOAN" if i % every == every - 1 else "")
             for i in range(start, min(size, start + 1000))], ("kafka/bench/t/0", start))
        progress.advance(task, min(1000, size - start))
    audit.sign_checkpoint(NOW)
    bundle = audit.evidence("BENCH-LOAN")
    assert bundle is not None and len(bundle["leaves"]) == events
    bundle_path, key_path = tmp / "bundle.json", tmp / "audit.vkey"
    bundle_path.write_text(json.dumps(bundle))
    key_path.write_text(audit.vkey)

    in_process = []
    for _ in range(30):
        started = time.perf_counter()
        verify_bundle(bundle, audit.vkey)
        in_process.append(time.perf_counter() - started)
    command = _timed([sys.executable, "-m", "dunwell.cli", "verify", str(bundle_path),
                      "--key", str(key_path)], 5)
    standalone = _timed([sys.executable, "shared/tlog.py", str(bundle_path),
                         "--key", str(key_path)], 5)
    startup = _timed([sys.executable, "-c", "pass"], 5)

    reader = StoreReader(tmp / "bundle.db")
    started = time.perf_counter()
    report = verify_store(reader, audit.vkey)
    store_seconds = time.perf_counter() - started
    reader.close()
    assert report.ok and report.size == size
    audit.store.close()
    return {"bundle_events": events, "bundle_bytes": bundle_path.stat().st_size,
            "in_process_p50_ms": 1e3 * statistics.median(in_process),
            "command_s": command, "tlog_py_s": standalone, "python_startup_s": startup,
            "command_over_startup": command / startup,
            "tlog_py_over_startup": standalone / startup,
            "verify_store_leaves": size, "verify_store_s": store_seconds,
            "verify_store_leaves_per_s": size / store_seconds}


def run(tmp: Path, progress_factory: Callable[[], Progress],
        sizes: Sequence[int]) -> dict[str, Any]:
    with progress_factory() as progress:
        figures: dict[str, Any] = {
            "appends": appends(tmp, progress, single=2_000, batched=50_000, batch=500),
            "checkpoint_latency": checkpoint_latency(tmp, progress, rate=400, seconds=10),
            "inclusion_proofs": [proofs_at(size, progress, samples=2_000) for size in sizes],
            "verification": verification(tmp, progress, size=100_000, events=100),
        }
    return figures


def rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """The audit section of the printed table."""
    a, c, v = figures["appends"], figures["checkpoint_latency"], figures["verification"]
    out = [
        ("audit append, one commit per event",
         (f"{a['single_per_s']:,.0f}/s (bare SQLite {a['bare_sqlite_single_per_s']:,.0f}/s, "
          f"×{a['single_ratio']:.2f})")),
        (f"audit append, {a['batch']} per commit",
         (f"{a['batched_per_s']:,.0f}/s (bare SQLite {a['bare_sqlite_batched_per_s']:,.0f}/s, "
          f"×{a['batched_ratio']:.2f})")),
        (f"append → signed checkpoint ({c['rate_per_s']:.0f}/s, every {c['interval_s']} s)",
         (f"p50 {c['p50_s'] * 1e3:.0f} ms, p99 {c['p99_s'] * 1e3:.0f} ms "
          f"(p99/interval {c['p99_over_interval']:.2f})")),
    ]
    out.extend((f"inclusion proof at {p['leaves']:,} leaves",
                (f"p50 {p['p50_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms "
                 f"(×{p['p99_over_one_lookup']:.1f} one node lookup)"))
               for p in figures["inclusion_proofs"])
    out += [
        (f"verify a {v['bundle_events']}-event bundle offline",
         (f"{v['in_process_p50_ms']:.1f} ms in process; `dunwell verify` {v['command_s']:.2f} s "
          f"(×{v['command_over_startup']:.1f} Python start-up), tlog.py alone "
          f"{v['tlog_py_s']:.2f} s (×{v['tlog_py_over_startup']:.1f})")),
        (f"verify-store, {v['verify_store_leaves']:,} leaves",
         f"{v['verify_store_s']:.1f} s ({v['verify_store_leaves_per_s']:,.0f} leaves/s)"),
    ]
    return out

