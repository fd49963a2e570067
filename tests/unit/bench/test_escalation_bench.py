"""The escalation section of `make bench` at a toy size: every case evaluated once for the
new day, the expected ones escalated. Never how fast anything is."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench import escalation


def test_escalation_section_runs_at_a_toy_size(tmp_path: Path) -> None:
    with Progress(console=Console(quiet=True)) as progress:
        figures = escalation.run(tmp_path, progress, cases=200)
    assert figures["cases"] == figures["fired_once"] == figures["agenda_rows"] == 200
    assert figures["due_after"] == 0
    assert figures["escalated"] == figures["expected_escalations"] == 10  # one in twenty
    assert figures["refired"] == 10 and figures["refired_new_events"] == 0
    baseline = figures["baseline"]
    assert baseline["cases"] == baseline["fired_once"] == 20 and baseline["escalated"] == 1
    assert figures["bytes_per_case"] > 0 and figures["per_case_ratio"] > 0
    measures = [measure for measure, _ in escalation.rows(figures)]
    assert measures[1] == "daily evaluation of 200 open cases (agenda, ×8, batch 200)"
