"""The simulated clock: one time for every process of an installation, moved only forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.clock import ClockMovedBack, ManualClock, SimulatedClock, SystemClock, parse_duration
from shared.settings import ServiceSettings

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def clocks(tmp_path: Path) -> tuple[ManualClock, SimulatedClock, SimulatedClock]:
    wall = ManualClock(T0)
    path = tmp_path / "clock.json"
    return wall, SimulatedClock(path, wall), SimulatedClock(path, wall)


def test_never_moved_is_the_wall_clock(tmp_path: Path) -> None:
    wall, _mover, reader = clocks(tmp_path)
    assert reader.now() == T0
    wall.advance(timedelta(seconds=5))
    assert reader.now() == T0 + timedelta(seconds=5)


def test_a_move_is_seen_by_every_reader_and_time_runs_on_from_it(tmp_path: Path) -> None:
    wall, mover, reader = clocks(tmp_path)
    assert reader.now() == T0  # the reader has looked once before the move
    mover.advance(timedelta(days=2, hours=6))
    assert reader.now() == T0 + timedelta(days=2, hours=6)
    wall.advance(timedelta(minutes=1))
    assert reader.now() == T0 + timedelta(days=2, hours=6, minutes=1)
    target = datetime(2027, 1, 1, 8, 0, tzinfo=UTC)
    assert mover.set(target) == target
    assert reader.now() == target


def test_time_only_moves_forward(tmp_path: Path) -> None:
    _wall, mover, reader = clocks(tmp_path)
    mover.advance(timedelta(days=1))
    with pytest.raises(ClockMovedBack):
        mover.set(T0)
    with pytest.raises(ClockMovedBack):
        mover.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="offset"):
        mover.set(datetime(2030, 1, 1))  # noqa: DTZ001 - a naive time is what is refused
    assert reader.now() == T0 + timedelta(days=1)


@pytest.mark.parametrize(("text", "delta"), [
    ("2d", timedelta(days=2)), ("2d6h", timedelta(days=2, hours=6)),
    ("90m", timedelta(minutes=90)), ("1h30m15s", timedelta(hours=1, minutes=30, seconds=15)),
    (" 4d ", timedelta(days=4)),
])
def test_durations(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "2", "d", "6h2d", "2d2d", "-1d", "1w", "2 days"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_settings_choose_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNWELL_VAR_DIR", str(tmp_path))
    assert isinstance(ServiceSettings().make_clock(), SystemClock)
    monkeypatch.setenv("DUNWELL_CLOCK", "simulated")
    clock = ServiceSettings().make_clock()
    assert isinstance(clock, SimulatedClock)
    assert clock.path == tmp_path / "clock.json"


def test_production_refuses_a_simulated_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNWELL_ENVIRONMENT", "production")
    assert isinstance(ServiceSettings().make_clock(), SystemClock)
    monkeypatch.setenv("DUNWELL_CLOCK", "simulated")
    with pytest.raises(ValidationError, match="refused in production"):
        ServiceSettings()


def test_the_clock_command_moves_time_forward_only(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dunwell.cli import app

    monkeypatch.setenv("DUNWELL_VAR_DIR", str(tmp_path))
    runner = CliRunner()
    moved = runner.invoke(app, ["clock", "set", "2030-01-01T08:00:00+08:00",
                                "--zone", "Asia/Shanghai"])
    assert moved.exit_code == 0, moved.output
    assert moved.output.splitlines() == ["2030-01-01T00:00:00+00:00",
                                         "2030-01-01T08:00:00+08:00 (Asia/Shanghai)"]
    assert runner.invoke(app, ["clock", "advance", "2d"]).output.startswith("2030-01-03T00:00")
    for bad in (["set", "2029-01-01T00:00:00Z"], ["set", "tomorrow"],
                ["set", "2031-01-01T00:00:00"], ["advance", "-2d"], ["advance", "2x"],
                ["show", "--zone", "Mars/Olympus"]):
        refused = runner.invoke(app, ["clock", *bad])
        assert refused.exit_code == 2, (bad, refused.output)
    assert SimulatedClock(tmp_path / "clock.json").now() < datetime(2030, 1, 3, 0, 1, tzinfo=UTC)
    monkeypatch.setenv("DUNWELL_ENVIRONMENT", "production")
    assert runner.invoke(app, ["clock", "advance", "1d"]).exit_code == 2
