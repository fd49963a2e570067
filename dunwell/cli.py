"""The `dunwell` command: run the embedded default, issue tokens, verify the audit log."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from dunwell.broker import broker_app
from dunwell.clock import clock_app
from shared.roles import Role

# Commands import what they use when they run: `dunwell verify` should not pay for Kafka.

app = typer.Typer(help="dunwell: compliant collection of overdue loans, with proof.",
                  no_args_is_help=True, add_completion=False)
audit_app = typer.Typer(help="The audit log: its signer, its announced checkpoints, its store.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(clock_app, name="clock")
app.add_typer(broker_app, name="broker")
dlq_app = typer.Typer(help="Dead letters: list them, show one, put one back on its topic "
                           "(docs/dlq.md).", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _var_dir() -> Path:
    return Path(os.environ.get("DUNWELL_VAR_DIR", "var"))


@app.command()
def run(
    broker_port: int = typer.Option(int(os.environ.get("DUNWELL_BROKER_PORT", "9092")),
                                    help="Port of the embedded broker on 127.0.0.1."),
) -> None:
    """Start the embedded broker (unless KAFKA_BOOTSTRAP is set) and the four services."""
    from dunwell import devstack
    from shared.auth import load_or_create_secret
    from shared.kafka import prepare_broker
    from shared.settings import KafkaSettings

    var_dir = _var_dir()
    logs = var_dir / "logs"
    stopping: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping["signal"] = signum

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
        sinks = devstack.start_sinks(var_dir, f"http://127.0.0.1:{_port('reminder')}", logs,
                                     _sink_ports())
        processes += [sinks.provider, sinks.smtp]
        typer.echo(f"sms, push  http://127.0.0.1:{sinks.provider_port}  outbox "
                   f"{sinks.outbox}/<channel>.jsonl (pid {sinks.provider.pid})")
        typer.echo(f"e-mail     smtp://127.0.0.1:{sinks.smtp_port}  Maildir {sinks.maildir}/ "
                   f"(pid {sinks.smtp.pid})")
        # A channel set in the environment (a real provider) wins over the local sink.
        channels = {k: v for k, v in sinks.reminder_env().items() if k not in os.environ}
        for name in devstack.SERVICES:
            port = _port(name)
            env = devstack.service_env(name, port, var_dir, bootstrap, channels)
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


def _port(service: str) -> int:
    from dunwell.devstack import DEFAULT_PORTS

    return int(os.environ.get(f"{service.upper()}_PORT", "") or DEFAULT_PORTS[service])


def _sink_ports() -> dict[str, int]:
    from dunwell.devstack import SINK_PORTS

    return {name: int(os.environ.get(f"DUNWELL_{name.upper()}_SINK_PORT", "") or port)
            for name, port in SINK_PORTS.items()}


@app.command()
def token(
    role: Role = typer.Option(..., help="The role the token carries."),
    subject: str = typer.Option("demo", help="Who it is: a lender id, a collector id, ..."),
    hours: float = typer.Option(12.0, help="Hours until it expires."),
) -> None:
    """Print a bearer token signed with this installation's secret."""
    from shared.auth import issue_token, load_or_create_secret, now_utc
    from shared.settings import AuthSettings

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
def asyncapi(
    out: Path = typer.Option(Path("docs/asyncapi.json"), help="File to write."),
    check: bool = typer.Option(False, "--check",
                               help="Write nothing; exit 1 if OUT differs from the code."),
) -> None:
    """Write the AsyncAPI 3.0 document of the Kafka side, generated from shared/events.py."""
    from dunwell.asyncapi import render

    _write_or_check(out, render(), check, "asyncapi")


def _write_or_check(out: Path, text: str, check: bool, command: str) -> None:
    """Write a generated document, or (`--check`) exit 1 when the committed one is stale."""
    if check:
        current = out.read_text() if out.is_file() else None
        if current != text:
            typer.echo(f"{out} is stale: run `dunwell {command} --out {out}`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out} is current")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out}")


STRATEGY_SCHEMA_PATH = Path("docs/strategy.schema.json")


def strategy_schema_text() -> str:
    """The JSON Schema of a lender's strategy document, as docs/strategy.schema.json holds it."""
    import json

    from shared.events import StrategyDocument

    return json.dumps(StrategyDocument.model_json_schema(), indent=2) + "\n"


@app.command("strategy-schema")
def strategy_schema(
    out: Path = typer.Option(STRATEGY_SCHEMA_PATH, help="File to write."),
    check: bool = typer.Option(False, "--check",
                               help="Write nothing; exit 1 if OUT differs from the code."),
) -> None:
    """Write the JSON Schema of a strategy document (PUT /v1/strategies/{lender_id})."""
    _write_or_check(out, strategy_schema_text(), check, "strategy-schema")


KEY_HELP = ("The log's public key (vkey text), or a file holding it: one vkey a line, or the "
            "keys the log publishes (GET /v1/keys saved as JSON), current and retired. "
            "Repeatable: across a key rotation, give the retired keys and the current one.")


@app.command()
def verify(
    bundle: Path = typer.Argument(
        ..., help="An evidence bundle (JSON) from /v1/loans/{id}/evidence."),
    key: list[str] = typer.Option(..., "--key", "--vkey", help=KEY_HELP),
) -> None:
    """Verify a bundle offline: signature, every inclusion proof, that every leaf is an
    event of the bundle's loan, consistency if present, and every compliance verdict,
    re-derived from the bundle's leaves."""
    from shared.tlog import main as verify_offline

    from services.audit.compliance import rederive

    keys = [arg for given in key for arg in ("--key", given)]
    raise typer.Exit(verify_offline([str(bundle), *keys], judge=rederive))


def _notes_in(path: Path) -> list[str]:
    """Checkpoint notes kept outside the store: a note as text, a JSON document or JSON Lines.

    JSON items may be `/v1/checkpoint` answers or `CheckpointSigned` events (as read from
    audit.checkpoints): anything with a "note", directly or under "data".
    """
    import json

    text = path.read_text()
    if not text.strip():
        return []  # nothing announced yet
    if not text.lstrip().startswith(("{", "[")):
        return [text]
    try:
        try:
            document = json.loads(text)
            items = document if isinstance(document, list) else [document]
        except ValueError:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    notes = []
    for item in items:
        holder = item.get("data", item) if isinstance(item, dict) else None
        note = holder.get("note") if isinstance(holder, dict) else None
        if not isinstance(note, str):
            raise ValueError(f"{path}: an item has no checkpoint note")
        notes.append(note)
    return notes


@audit_app.command("checkpoints")
def checkpoints(
    out: Path | None = typer.Option(None, help="Write here instead of to standard output."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for the broker."),
) -> None:
    """Every checkpoint announced on audit.checkpoints (KAFKA_BOOTSTRAP), as JSON Lines.

    Keep them apart from the audit store: `verify-store --checkpoints` shows with them
    that the store was not rolled back past any of them.
    """
    import json

    from aiokafka.errors import KafkaError

    from shared import topics
    from shared.kafka import read_to_now
    from shared.settings import KafkaSettings

    settings = KafkaSettings()
    try:
        records = asyncio.run(read_to_now(settings, topics.CHECKPOINTS, timeout=timeout))
    except (OSError, TimeoutError, LookupError, KafkaError) as error:
        typer.echo(f"error: could not read {topics.CHECKPOINTS} from {settings.bootstrap}: "
                   f"{error}", err=True)
        raise typer.Exit(2) from error
    lines = []
    for record in records:
        try:
            event = json.loads(record.value or b"")
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict) and event.get("type") == "CheckpointSigned":
            lines.append(json.dumps(event, ensure_ascii=False) + "\n")
    text = "".join(lines)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
    typer.echo(f"{len(lines)} checkpoints from {settings.bootstrap}", err=True)


@audit_app.command("vkey")
def vkey(
    key_file: Path | None = typer.Option(None, "--signer", help="The signer key file "
                                  "[default: $DUNWELL_VAR_DIR/audit-signer.key, or "
                                  "$AUDIT_SIGNER_KEY when set]."),
) -> None:
    """Print the audit log's verifier key, derived from its signer, to hand to auditors.

    Auditors should pin this key, received out of band, rather than trust the key a running
    service serves beside its own checkpoints.
    """
    from shared.tlog import encode_vkey

    from services.audit.signer import load_signer, public_bytes

    text = os.environ.get("AUDIT_SIGNER_KEY") if key_file is None else None
    path = key_file or _var_dir() / "audit-signer.key"
    try:
        name, signer = load_signer(text if text else path.read_text().strip())
    except (OSError, ValueError) as error:
        typer.echo(f"error: no usable signer key: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(encode_vkey(name, public_bytes(signer)))


@audit_app.command("keygen")
def keygen(
    origin: str = typer.Option(
        ..., help="The log's origin line, e.g. audit.lender.example/dunwell."),
    out: Path = typer.Option(..., help="Writes OUT.skey (the signer, mode 0600) and OUT.vkey."),
) -> None:
    """Make an Ed25519 signer for the audit log and its public key.

    The skey goes into the Secret behind AUDIT_SIGNER_KEY; the vkey goes to auditors.
    """
    from services.audit.signer import generate_signer

    skey, vkey = generate_signer(origin)
    skey_path, vkey_path = Path(f"{out}.skey"), Path(f"{out}.vkey")
    try:
        fd = os.open(skey_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        typer.echo(f"error: {skey_path} exists; not overwriting a signer", err=True)
        raise typer.Exit(2) from error
    with os.fdopen(fd, "w") as handle:
        handle.write(skey + "\n")
    vkey_path.write_text(vkey + "\n")
    typer.echo(f"signer {skey_path} (keep secret)\nverifier key {vkey_path}:\n{vkey}")


@audit_app.command("verify-store")
def verify_store(
    key: list[str] = typer.Option(..., "--key", "--vkey", help=KEY_HELP),
    store: str | None = typer.Option(
        None, help="The audit store: a SQLite file, or a postgresql:// URL "
        "[default: $AUDIT_DATABASE_URL, else $DUNWELL_VAR_DIR/audit.db]."),
    checkpoints: list[Path] = typer.Option(
        [], "--checkpoints", help="Checkpoints kept outside the store (a note, or JSON / JSON "
        "Lines of /v1/checkpoint answers or CheckpointSigned events). Repeatable."),
) -> None:
    """Re-derive the whole tree from a store and check it against every issued checkpoint."""
    import psycopg
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from shared.tlog import VerificationError, read_vkeys, trusted_keys

    from services.audit.store import StoreReader, is_database_url
    from services.audit.verify import verify_store as check

    where: Path | str = store or os.environ.get("AUDIT_DATABASE_URL") or _var_dir() / "audit.db"
    if isinstance(where, str) and not is_database_url(where):
        if "://" in where:  # a URL of another scheme: never echoed, it may hold a password
            typer.echo("error: --store: a database is given as a postgresql:// URL", err=True)
            raise typer.Exit(2)
        where = Path(where)
    try:
        vkey = trusted_keys([k for given in key for k in read_vkeys(given)])
    except VerificationError as error:
        typer.echo(f"error: --key: {error}", err=True)
        raise typer.Exit(2) from error
    try:
        notes = [note for file in checkpoints for note in _notes_in(file)]
        if isinstance(where, Path) and not where.is_file():
            raise FileNotFoundError(f"no audit store at {where}")
    except (OSError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    try:
        reader = StoreReader(where)
    except (sqlite3.DatabaseError, psycopg.Error) as error:
        typer.echo(f"FAILED: the store cannot be read: {error}", err=True)
        raise typer.Exit(1) from error
    console = Console(stderr=True)
    try:
        with Progress("re-deriving", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("leaves", total=None)
            report = check(reader, vkey, notes,
                           lambda done, total: bar.update(task, completed=done, total=total))
    except (sqlite3.DatabaseError, psycopg.Error, ValueError, TypeError) as error:
        typer.echo(f"FAILED: the store cannot be read as an audit store: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        reader.close()
    if report.ok:
        latest = report.latest
        typer.echo(f"OK: {report.size} leaves re-derived; {report.checkpoints_verified} "
                   f"checkpoints verified" + (f" (latest size {latest.size})" if latest else "")
                   + (f"; {report.other_logs} of other logs skipped" if report.other_logs else ""))
        if len(vkey) > 1:
            for trusted in vkey:
                typer.echo(f"  key {trusted.vkey.split('+')[1]}: "
                           f"{report.signed_by.get(trusted.vkey, 0)} stored checkpoints")
        return
    first = report.first_bad_index
    where = f"; first bad leaf index {first}" if first is not None else ""
    typer.echo(f"FAILED: {len(report.findings)} problems{where}", err=True)
    for finding in report.ordered()[:20]:
        typer.echo(f"  {finding.problem}", err=True)
    raise typer.Exit(1)


PERSONAL_DATA = ("warning: a dead letter holds the message as sent, with the borrower's "
                 "personal data; do not paste it into tickets or chats")
DLQ_TIMEOUT = typer.Option(30.0, "--timeout", help="Seconds to wait for the broker.")


def _console() -> Any:
    """Rich output; as wide as the terminal, or wide enough for a row when piped."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _dlq(call: Any) -> Any:
    """Run one dlq step on KAFKA_BOOTSTRAP; its refusals are messages and exit codes."""
    from aiokafka.errors import KafkaError

    from dunwell.dlq import DlqError

    try:
        return asyncio.run(call)
    except DlqError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except (OSError, KafkaError) as error:
        typer.echo(f"error: the broker failed or cannot be reached: "
                   f"{type(error).__name__}: {error}", err=True)
        raise typer.Exit(2) from None


@dlq_app.command("list")
def dlq_list(
    topic: str | None = typer.Option(None, help="One DLQ topic [default: every one]."),
    since: str | None = typer.Option(None, help="Only letters set aside since this time "
                                     "(RFC 3339) or this long ago (90m, 2h, 3d)."),
    limit: int = typer.Option(100, min=1, help="Show the newest N."),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines, for scripts."),
    timeout: float = DLQ_TIMEOUT,
) -> None:
    """The dead letters, a row each: where from, which group set it aside, why, when.

    Never the message's data: `show` has it."""
    import json
    from datetime import UTC, datetime

    from rich.table import Table

    from dunwell import dlq
    from shared.settings import KafkaSettings

    try:
        after = dlq.parse_since(since, datetime.now(UTC)) if since is not None else None
    except dlq.DlqError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    letters = _dlq(dlq.read_letters(KafkaSettings(), topic, timeout))
    rows = [letter.summary() for letter in letters
            if after is None or letter.timestamp >= after][-limit:]
    if as_json:
        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
        return
    table = Table(title=f"{len(rows)} dead letter{'' if len(rows) == 1 else 's'}",
                  title_justify="left")
    for column in ("letter / origin", "event type / id", "group / when"):
        table.add_column(column, no_wrap=True)
    table.add_column("error", overflow="fold")
    for row in rows:
        at = datetime.fromisoformat(row["at"]).strftime("%Y-%m-%dT%H:%M:%SZ")
        table.add_row(f"{row['letter']}\n{row['origin']}",
                      f"{row['event_type'] or '-'}\n{row['event_id'] or '-'}",
                      f"{row['group']}\n{at}", f"{row['error_type']}: {row['reason']}",
                      end_section=True)
    _console().print(table)


@dlq_app.command("show")
def dlq_show(
    target: str = typer.Argument(..., help="TOPIC:PARTITION:OFFSET of a letter, or the "
                                 "CloudEvents id of its event."),
    value_only: bool = typer.Option(False, "--value", help="Print only the message (JSON), "
                                    "to fix it and replay it with --fixed."),
    as_json: bool = typer.Option(False, "--json", help="The whole letter as JSON."),
    timeout: float = DLQ_TIMEOUT,
) -> None:
    """One letter whole: its headers, its error and the message, personal data included."""
    import json

    from rich.table import Table

    from dunwell import dlq
    from shared.settings import KafkaSettings

    letters = _dlq(dlq.find(KafkaSettings(), target, timeout))
    typer.echo(PERSONAL_DATA, err=True)
    for letter in letters:
        detail = letter.detail()
        if value_only:
            value = detail["value"]
            text = value if isinstance(value, str) else json.dumps(value, indent=2,
                                                                    ensure_ascii=False)
            sys.stdout.write((text or "") + "\n")
        elif as_json:
            sys.stdout.write(json.dumps(detail, ensure_ascii=False) + "\n")
        else:
            console = _console()
            table = Table(title=f"dead letter {detail['letter']}", title_justify="left",
                          show_header=False)
            table.add_column(overflow="fold")
            table.add_column(overflow="fold")
            for name in ("origin", "group", "event_id", "event_type", "error_type", "reason",
                         "value_omitted", "at", "key"):
                if detail[name] is not None:
                    table.add_row(name, str(detail[name]))
            for name, header in detail["headers"]:
                table.add_row(f"header {name}", header)
            console.print(table)
            console.print_json(json.dumps(detail["value"], ensure_ascii=False))


@dlq_app.command("replay")
def dlq_replay(
    target: str = typer.Argument(..., help="TOPIC:PARTITION:OFFSET of a letter, or the "
                                 "CloudEvents id of its event."),
    fixed: Path | None = typer.Option(None, help="The corrected CloudEvent (JSON) to send "
                                      "instead; '-' reads standard input. It keeps the id."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
    timeout: float = DLQ_TIMEOUT,
) -> None:
    """Put a letter's message, or its fixed version, back on its original topic, once.

    It keeps its CloudEvents id, so each consuming service applies it exactly once."""
    from dunwell import dlq
    from shared.settings import KafkaSettings

    settings = KafkaSettings()
    try:  # a byte past what the broker takes is enough for plan() to refuse it
        limit = settings.max_request_bytes + 1
        if fixed is None:
            body = None
        elif str(fixed) == "-":
            body = sys.stdin.buffer.read(limit)
        else:
            with fixed.open("rb") as handle:
                body = handle.read(limit)
    except OSError as error:
        typer.echo(f"error: --fixed: {error}", err=True)
        raise typer.Exit(2) from None
    letters = _dlq(dlq.find(settings, target, timeout))
    if len(letters) > 1:
        typer.echo("error: more than one letter of this event (one per group that set it "
                   "aside); one replay serves them all, name one: "
                   + ", ".join(str(x.at) for x in letters), err=True)
        raise typer.Exit(2)
    try:
        replay = dlq.plan(letters[0], body, settings.max_request_bytes)
    except dlq.DlqError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    earlier = _dlq(dlq.earlier_replay(settings, replay, timeout))
    if earlier is not None:
        typer.echo(f"refused: {replay.event_type} {replay.event_id} was replayed already, "
                   f"from {earlier.header(dlq.REPLAYED_FROM_HEADER)} to {earlier.at} at "
                   f"{earlier.timestamp.isoformat(timespec='seconds')}; its consumers would "
                   "drop a second copy as a duplicate (set aside again? replay the newer "
                   "letter, see `dunwell dlq list`)", err=True)
        raise typer.Exit(1)
    where = f"{replay.to.topic} partition {replay.to.partition}"
    if not yes and not typer.confirm(f"Put {replay.event_type} {replay.event_id} from "
                                     f"{replay.letter.at} back on {where}?"):
        raise typer.Exit(1)
    landed = _dlq(dlq.send(settings, replay, timeout))
    typer.echo(f"replayed {replay.letter.at} as {replay.event_type} {replay.event_id} "
               f"to {landed}")


def main() -> None:
    app(prog_name="dunwell")


if __name__ == "__main__":
    main()
