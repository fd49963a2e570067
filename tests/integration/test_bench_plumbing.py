"""`make bench` is not run by `make test`; a run of its plumbing section at toy sizes keeps it
working. It checks that the figures come out and are sane, never how fast anything is."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench import plumbing


def test_plumbing_section_runs_at_toy_sizes(tmp_path: Path) -> None:
    with Progress(console=Console(quiet=True)) as progress:
        cost = plumbing.store_cost(tmp_path, progress, messages=40, batch=20)
        ready = plumbing.readiness(tmp_path, progress, pending=300)
    assert cost["messages"] == 40 and cost["one_per_transaction_ms"] > 0
    assert cost["batched_ms"] > 0
    assert ready["agenda_rows"] == 300 and ready["empty_ready_s"] > 0
    assert ready["ready_s"] > 0
    assert [measure for measure, _ in plumbing.rows({"store_cost": cost,
                                                      "readiness": ready})][1] == (
        "reminder start → ready, 300 pending reminders")
