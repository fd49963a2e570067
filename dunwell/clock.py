"""`dunwell clock show|set|advance`: the simulated time of one installation.

Every service started with `DUNWELL_CLOCK=simulated` and the same `DUNWELL_VAR_DIR` reads
the same time; these commands move it forward (never back). What falls due meanwhile fires
within about a second, once.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from shared.clock import ClockMovedBack, SimulatedClock, parse_duration

clock_app = typer.Typer(help="The simulated clock (DUNWELL_CLOCK=simulated): show it, move it "
                             "forward.", no_args_is_help=True)


def _clock() -> SimulatedClock:
    if os.environ.get("DUNWELL_ENVIRONMENT") == "production":
        typer.echo("a production installation has no simulated clock", err=True)
        raise typer.Exit(2)
    return SimulatedClock(Path(os.environ.get("DUNWELL_VAR_DIR", "var")) / "clock.json")


def _show(moment: datetime, zone: str | None) -> None:
    typer.echo(moment.isoformat(timespec="seconds"))
    if zone:
        try:
            typer.echo(moment.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")
                       + f" ({zone})")
        except (ZoneInfoNotFoundError, ValueError):
            typer.echo(f"unknown time zone {zone[:40]!r}", err=True)
            raise typer.Exit(2) from None


ZONE = typer.Option(None, "--zone", help="Also show the time in this IANA zone.")


@clock_app.command("show")
def show(zone: str | None = ZONE) -> None:
    """The installation's simulated time, in UTC."""
    _show(_clock().now(), zone)


@clock_app.command("set")
def set_(moment: str = typer.Argument(..., help="An RFC 3339 time with an offset, later than "
                                                "now, e.g. 2026-12-02T14:00:00+08:00."),
         zone: str | None = ZONE) -> None:
    """Move the simulated time forward to MOMENT."""
    try:
        target = datetime.fromisoformat(moment)
        _show(_clock().set(target), zone)
    except (ValueError, ClockMovedBack) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


@clock_app.command("advance")
def advance(by: str = typer.Argument(..., help="How far: 2d6h, 90m, 30s."),
            zone: str | None = ZONE) -> None:
    """Move the simulated time forward by BY."""
    try:
        _show(_clock().advance(parse_duration(by)), zone)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
