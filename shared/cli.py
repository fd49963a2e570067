"""The `dunwell` command: run the embedded default, issue tokens."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType

import typer

from shared import devstack
from shared.auth import Role, issue_token, load_or_create_secret, now_utc
from shared.kafka import prepare_broker
from shared.settings import AuthSettings, KafkaSettings

app = typer.Typer(help="dunwell: compliant collection of overdue loans, with proof.",
                  no_args_is_help=True, add_completion=False)


def _var_dir() -> Path:
    return Path(os.environ.get("DUNWELL_VAR_DIR", "var"))


@app.command()
def run(
    broker_port: int = typer.Option(int(os.environ.get("DUNWELL_BROKER_PORT", 9092)),
                                    help="Port of the embedded broker on 127.0.0.1."),
) -> None:
    """Start the embedded broker (unless KAFKA_BOOTSTRAP is set) and the four services."""
    var_dir = _var_dir()
    logs = var_dir / "logs"
    stopping = {"signal": None}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping["signal"] = signum  # type: ignore[assignment]

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    processes: list[devstack.Process] = []
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    try:
        if not bootstrap:
            broker = devstack.start_broker(broker_port, logs)
            bootstrap = f"127.0.0.1:{broker_port}"
            typer.echo(f"broker     Tansu on {bootstrap} (pid {broker.pid}, in memory)")
        else:
            typer.echo(f"broker     {bootstrap} (external)")
        incarnation = asyncio.run(prepare_broker(KafkaSettings(bootstrap=bootstrap)))
        typer.echo(f"topics     ready (broker incarnation {incarnation[:8]})")
        load_or_create_secret(var_dir / "jwt.secret")
        for name in devstack.SERVICES:
            port = int(os.environ.get(f"{name.upper()}_PORT", devstack.DEFAULT_PORTS[name]))
            env = devstack.service_env(name, port, var_dir, bootstrap)
            process = devstack.start_service(name, env, logs)
            processes.append(process)
            devstack.wait_ready(f"http://127.0.0.1:{port}", process)
            typer.echo(f"{name:<11}http://127.0.0.1:{port}  (docs /docs, pid {process.pid})")
        typer.echo("\ntoken      .venv/bin/dunwell token --role lender --subject <lender_id>"
                   "   (roles: lender collector ops auditor provider)")
        typer.echo(f"logs       {logs}/    stores {var_dir}/*.db\nCtrl-C or SIGTERM stops all.")
        while stopping["signal"] is None:
            dead = [p for p in processes + ([broker] if broker else []) if not p.alive()]
            if dead:
                typer.echo(f"{dead[0].name} exited unexpectedly; see {dead[0].log_path}",
                           err=True)
                raise typer.Exit(1)
            time.sleep(0.2)
        typer.echo("stopping ...")
    finally:
        for process in reversed(processes):
            process.stop()
        if broker is not None:
            broker.stop()
    typer.echo("stopped")


@app.command()
def token(
    role: Role = typer.Option(..., help="The role the token carries."),
    subject: str = typer.Option("demo", help="Who it is: a lender id, a collector id, ..."),
    hours: float = typer.Option(12.0, help="Hours until it expires."),
) -> None:
    """Print a bearer token signed with this installation's secret."""
    settings = AuthSettings()
    secret = settings.secret or load_or_create_secret(settings.secret_file
                                                      or _var_dir() / "jwt.secret")
    typer.echo(issue_token(secret, role, subject, now_utc(), timedelta(hours=hours)))


@app.command()
def schemas(out: Path = typer.Option(Path("docs/schemas"), help="Folder to write into.")) -> None:
    """Write the JSON Schema of every event type and of the CloudEvents envelope."""
    import json

    from shared.events import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    typer.echo(f"wrote {len(json_schemas())} schemas to {out}/")


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="An evidence bundle (JSON) from /v1/loans/{id}/evidence."),
    key: str = typer.Option(..., help="The log's public key (vkey text), or a file holding it."),
) -> None:
    """Verify a bundle offline: signature, every inclusion proof, consistency if present."""
    import json

    from shared.tlog import VerificationError, verify_bundle

    vkey = Path(key).read_text().strip() if Path(key).is_file() else key.strip()
    try:
        checkpoint = verify_bundle(json.loads(bundle.read_text()), vkey)
    except (VerificationError, ValueError) as error:
        where = ""
        if isinstance(error, VerificationError):
            if error.leaf_index is not None:
                where = f" (first failing leaf index {error.leaf_index})"
            elif error.size is not None:
                where = f" (size {error.size})"
        typer.echo(f"FAILED{where}: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"OK: {checkpoint.origin} size {checkpoint.size} verified")


def main() -> None:
    app(prog_name="dunwell")


if __name__ == "__main__":
    sys.exit(main())
