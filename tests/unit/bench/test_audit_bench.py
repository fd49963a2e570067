"""`make bench` is not run by `make test`; these runs at toy sizes keep its audit section
working. They check that the figures come out and are sane, never how fast anything is."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench import audit


def quiet() -> Progress:
    return Progress(console=Console(quiet=True))


def test_audit_section_runs_at_toy_sizes(tmp_path: Path) -> None:
    with quiet() as progress:
        appends = audit.appends(tmp_path, progress, single=20, batched=200, batch=50)
        latency = audit.checkpoint_latency(tmp_path, progress, rate=100, seconds=1)
        proofs = audit.proofs_at(5_000, progress, samples=50, folder=tmp_path)
        again = audit.proofs_at(5_000, progress, samples=50, folder=tmp_path)  # kept tree
        verification = audit.verification(tmp_path, progress, size=2_000, events=20)
    assert appends["single_per_s"] > 0 and appends["batched_per_s"] > 0
    assert latency["leaves"] == 100 and 0 < latency["p50_s"] <= latency["p99_s"]
    assert latency["checkpoints"] >= 1
    assert proofs["leaves"] == again["leaves"] == 5_000 and proofs["proof_hashes"] >= 12
    assert verification["bundle_events"] == 20 and verification["verify_store_leaves"] == 2_000
    rows = audit.rows({"appends": appends, "checkpoint_latency": latency,
                       "inclusion_proofs": [proofs], "verification": verification})
    assert [measure for measure, _ in rows][3] == "inclusion proof at 5,000 leaves"
