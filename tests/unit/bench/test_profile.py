"""bench/profile.py's reading of py-spy's collapsed stacks."""

from __future__ import annotations

from pathlib import Path

from bench.profile import kind_of, summarise


def test_a_stack_is_of_the_kind_of_its_innermost_recognised_frame() -> None:
    assert kind_of(["main (services/reminder/main.py:40)", "commit (shared/application.py:185)",
                    "commit (eventsourcing/sqlite.py:86)"]) == "store: sqlite"
    assert kind_of(["apply (services/audit/application.py:138)",
                    "raw_decode (json/decoder.py:353)"]) == "JSON"
    assert kind_of(["judge (services/audit/compliance.py:1883)"]) == "the project's own code"
    assert kind_of(["_worker (concurrent/futures/thread.py:81)"]) == "other"


def test_the_summary_gives_shares_of_the_samples(tmp_path: Path) -> None:
    stacks = tmp_path / "profile-reminder.txt"
    stacks.write_text("main (services/reminder/main.py:40);commit (eventsourcing/sqlite.py:86) 3\n"
                      "main (services/reminder/main.py:40);read (httpcore/_sync.py:1) 1\n"
                      "not a stack line\n")
    summary = summarise(stacks)
    assert summary["samples"] == 4
    assert summary["percent_by_kind"] == {"store: sqlite": 75.0, "HTTP": 25.0}
    assert summary["busiest_own_time"][0] == {"frame": "commit (eventsourcing/sqlite.py:86)",
                                              "percent": 75.0}
