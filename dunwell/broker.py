"""`dunwell broker`: what an operator does to the Kafka cluster itself."""

from __future__ import annotations

import asyncio

import typer

broker_app = typer.Typer(help="The Kafka cluster the services work with (KAFKA_* settings).",
                         no_args_is_help=True)


def _why(error: BaseException, seconds: float) -> str:
    """The error as an operator reads it: a timeout says nothing of itself."""
    if isinstance(error, TimeoutError):
        return f"no answer within {seconds:g} s (is the broker up, and KAFKA_* right?)"
    return str(error)


@broker_app.command("incarnation")
def incarnation() -> None:
    """Print the broker's incarnation: the id every service checks it against."""
    from aiokafka.errors import KafkaError

    from shared.kafka import read_incarnation
    from shared.settings import KafkaSettings

    settings = KafkaSettings()
    try:
        found = asyncio.run(asyncio.wait_for(read_incarnation(settings), 30))
    except (KafkaError, OSError, TimeoutError) as error:
        typer.echo(f"error: could not read the incarnation from {settings.bootstrap}: "
                   f"{_why(error, 30)}", err=True)
        raise typer.Exit(2) from error
    if found is None:
        typer.echo("none yet: the first service to start writes it", err=True)
        raise typer.Exit(1)
    typer.echo(found)


@broker_app.command("reincarnate")
def reincarnate(
    yes: bool = typer.Option(False, "--yes", help="Do it without asking."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the broker."),
) -> None:
    """Give a cluster restored from a backup a new incarnation, so every service refills it.

    Run it after restoring the cluster and before the services are started again, or while
    they run: within a few seconds each one republishes its whole store and re-reads every
    topic from the beginning, de-duplicating on event ids (docs/operations.md).
    """
    from aiokafka.errors import KafkaError

    from shared.kafka import new_incarnation
    from shared.settings import KafkaSettings

    settings = KafkaSettings()
    if not yes:
        typer.confirm(f"Give the broker at {settings.bootstrap} a new incarnation? Every "
                      "service will republish its store and re-read every topic", abort=True)
    try:
        old, new = asyncio.run(asyncio.wait_for(new_incarnation(settings), timeout))
    except (KafkaError, OSError, TimeoutError) as error:
        typer.echo(f"error: could not reincarnate the broker at {settings.bootstrap}: "
                   f"{_why(error, timeout)}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"incarnation {old[:8] or 'none'} -> {new[:8]}: the services refill it within "
               f"a few seconds (/readyz shows \"relay\": false until each has)")
