"""A running suite for end-to-end tests: Tansu, the channel sinks and the four services as real
processes.

Ports are free loopback ports, so two runs cannot collide; every process is stopped by pid.
The stores are SQLite files under var/, or, given a PostgreSQL cluster, a database of it per
service (the three event-sourced services through eventsourcing's settings, the audit log by
its URL).
What the borrowers were sent is read where the sinks keep it: `var/outbox/<channel>.jsonl`
(SMS, push) and the Maildir `var/mail/` (e-mail).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import mailbox
import re
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dunwell import devstack
from dunwell.sinks import read_jsonl
from shared import topics
from shared.auth import Role, issue_token, load_or_create_secret, now_utc
from shared.events import CheckpointSigned, DecodeError, decode
from shared.kafka import prepare_broker, read_to_now
from shared.settings import KafkaSettings
from tests.helpers import loan_body, wait_for, zone_at_local_hour
from tests.pg import Cluster

_stacks = itertools.count(1)


@dataclass
class Stack:
    var_dir: Path
    broker: devstack.Process
    broker_port: int
    ports: dict[str, int]
    extra_env: dict[str, str] = field(default_factory=dict)
    store_env: dict[str, dict[str, str]] = field(default_factory=dict)
    services: dict[str, devstack.Process] = field(default_factory=dict)
    sinks: devstack.Sinks | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def audit_store(self) -> str:
        """Where the audit keeps its log: a postgresql:// URL, or the SQLite file under var/."""
        return self.store_env.get("audit", {}).get("AUDIT_DATABASE_URL") \
            or str(self.var_dir / "audit.db")

    def query(self, service: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on `service`'s store, whichever store it runs on.

        `sql` uses `?` for parameters and `{inbox}` for the consumer's Inbox table (named
        after the application on PostgreSQL). A store or table not there yet reads as no rows.
        """
        env = self.store_env.get(service)
        if env is None:
            path = self.var_dir / f"{service}.db"
            if not path.exists():
                return []
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                return db.execute(sql.format(inbox="dunwell_inbox"), args).fetchall()
            except sqlite3.OperationalError:
                return []
            finally:
                db.close()
        import psycopg
        url = env.get("AUDIT_DATABASE_URL") or (
            f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@"
            f"{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}")
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                found = conn.execute("SELECT table_name FROM information_schema.tables "
                                     "WHERE table_name LIKE '%%\\_inbox'").fetchone()
                inbox = found[0] if found else "missing_inbox"
                return conn.execute(sql.format(inbox=inbox).replace("?", "%s"),
                                    args).fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    def copy_audit_store(self, source: str, target: str) -> str:
        """Copy the audit's store (stopped) as a backup would, and return the copy's location.

        `source` and `target` are names: `live` is the store the audit runs on. SQLite copies
        the file and its WAL; PostgreSQL makes a database from the other as its template.
        """
        url = self.store_env.get("audit", {}).get("AUDIT_DATABASE_URL")
        if url is None:
            def path(name: str) -> Path:
                return self.var_dir / ("audit.db" if name == "live" else f"audit-{name}.db")
            for suffix in ("", "-wal", "-shm"):
                into = path(target).with_name(path(target).name + suffix)
                into.unlink(missing_ok=True)
                if path(source).with_name(path(source).name + suffix).exists():
                    shutil.copyfile(path(source).with_name(path(source).name + suffix), into)
            return str(path(target))
        import psycopg
        server, live = url.rsplit("/", 1)

        def database(name: str) -> str:
            return live if name == "live" else f"{live}_{name}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database(target)}"')
            conn.execute(f'CREATE DATABASE "{database(target)}" TEMPLATE "{database(source)}"')
        return f"{server}/{database(target)}"

    def count(self, service: str, sql: str, *args: object) -> int:
        rows = self.query(service, sql, *args)
        return int(rows[0][0]) if rows else 0

    @property
    def logs(self) -> Path:
        return self.var_dir / "logs"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def token(self, role: Role, subject: str = "lender-1") -> str:
        secret = load_or_create_secret(self.var_dir / "jwt.secret")
        return issue_token(secret, role, subject, now_utc())

    def client(self, service: str, role: Role | None, subject: str = "lender-1"
               ) -> httpx.Client:
        headers = {} if role is None else {"authorization": f"Bearer {self.token(role, subject)}"}
        return httpx.Client(base_url=self.url(service), headers=headers, timeout=10)

    def start(self, *names: str, wait_ready: bool = True) -> None:
        started = []
        for name in names or devstack.SERVICES:
            self.services[name] = self._spawn(name)
            started.append(name)
        for name in started if wait_ready else []:
            for attempt in range(3):
                try:
                    devstack.wait_ready(self.url(name), self.services[name])
                    break
                except RuntimeError:
                    # Another process took the free port between its choice and the bind:
                    # take another.
                    log = self.services[name].log_path.read_text(errors="replace")
                    if attempt == 2 or "address already in use" not in log:
                        raise
                    self.ports[name] = devstack.free_port()
                    self.services[name] = self._spawn(name)

    def _spawn(self, name: str) -> devstack.Process:
        env = devstack.service_env(name, self.ports[name], self.var_dir, self.bootstrap,
                                   {**self.extra_env, **self.store_env.get(name, {})})
        return devstack.start_service(name, env, self.logs)

    def stop(self, *names: str) -> None:
        for name in names or list(self.services):
            self.services.pop(name).stop()

    def stop_within(self, grace: float) -> dict[str, int]:
        """SIGTERM each service and SIGKILL what is still running after `grace` seconds, as
        Kubernetes does; returns each exit status (-9: it had to be killed)."""
        codes = {}
        for name in list(self.services):
            process = self.services.pop(name)
            codes[name] = process.stop(timeout=grace)
            stopped = "shared.runtime stopped in" in process.log_path.read_text()
            assert stopped or codes[name] == -9, f"{name}: see {process.log_path}"
        return codes

    def kill(self, name: str) -> None:
        self.services.pop(name).kill()

    def shutdown(self) -> None:
        self.stop()
        if self.sinks is not None:
            self.sinks.stop()
        self.broker.stop()

    def outbox(self, channel: str = "sms") -> list[dict[str, Any]]:
        """Every message the provider sink accepted on `channel`, in order: idempotency_key
        (the reminder id), channel, to, text, language, provider_id, accepted_at."""
        return read_jsonl(self.var_dir / "outbox" / f"{channel}.jsonl")

    def mail(self) -> list[mailbox.MaildirMessage]:
        """Every mail the SMTP sink kept; `message_id(reminder_id)` is its Message-ID."""
        folder = self.var_dir / "mail"
        if not folder.exists():
            return []
        return [message for _, message in mailbox.Maildir(folder, create=False).items()]

    def reminder_ids(self, loan_id: str) -> set[str]:
        """The ids of the loan's reminders, as the reminder service lists them."""
        with self.client("reminder", Role.OPS) as ops:
            response = ops.get(f"/v1/loans/{loan_id}/reminders")
        if response.status_code == 404:
            return set()
        response.raise_for_status()
        body = response.json()
        return {r["reminder_id"] for part in ("sent", "pending", "cancelled")
                for r in body.get(part, [])}

    def sent_per_loan(self, loans: Iterable[str], channel: str = "sms") -> Counter[str]:
        """How many messages the sink accepted for each of `loans`, mapped by reminder id."""
        keys = Counter(entry["idempotency_key"] for entry in self.outbox(channel))
        counts: Counter[str] = Counter()
        for loan in loans:
            counts[loan] += sum(keys[key] for key in self.reminder_ids(loan))
        return +counts

    def reminded_evidence(self) -> dict[str, Any]:
        """Post a daytime loan; wait for, and return, a signed evidence bundle that holds
        its ReminderSent."""
        body = loan_body(timezone_name=zone_at_local_hour(11))
        with self.client("escalation", Role.LENDER) as lender:
            assert lender.post("/v1/loans/overdue", json=body).status_code == 202
        with self.client("audit", Role.AUDITOR) as audit:
            def reminded() -> dict[str, Any] | None:
                response = audit.get(f"/v1/loans/{body['loan_id']}/evidence")
                if response.status_code != 200:
                    return None
                bundle: dict[str, Any] = response.json()
                types = {json.loads(base64.b64decode(leaf["leaf"]))["type"]
                         for leaf in bundle["leaves"]}
                return bundle if "ReminderSent" in types else None

            return wait_for(reminded, what="signed evidence with ReminderSent")

    def announced(self) -> list[CheckpointSigned]:
        """Every CheckpointSigned on audit.checkpoints so far, read as the audit service reads
        it; records that are not events (a test may put one there) are passed over."""
        records = asyncio.run(read_to_now(KafkaSettings(bootstrap=self.bootstrap),
                                          topics.CHECKPOINTS))
        announced = []
        for record in records:
            try:
                _, data = decode(record.value)
            except DecodeError:
                continue
            if isinstance(data, CheckpointSigned):
                announced.append(data)
        return announced

    def timeline(self, loan_id: str) -> list[dict[str, Any]]:
        with self.client("audit", Role.AUDITOR) as audit:
            response = audit.get(f"/v1/loans/{loan_id}/timeline")
        if response.status_code == 404:
            return []
        response.raise_for_status()
        events = response.json()["events"]
        for event in events:
            event["cloudevent"] = json.loads(base64.b64decode(event["leaf"]))
        return events


# The loan id as the approved SMS texts show it, in English and in Chinese (shared/templates.py).
_LOAN_IN_TEXT = re.compile(r"^Loan (?P<en>[A-Za-z0-9._:-]+):"
                           r"|^您的借款(?P<zh>[A-Za-z0-9._:-]+)已逾期")


def sms_per_loan(stack: Stack) -> Counter[str]:
    """How many SMS the provider sink accepted for each loan, read from the texts (cheap: no
    call per loan); `Stack.sent_per_loan` maps by reminder id instead."""
    counts: Counter[str] = Counter()
    for entry in stack.outbox("sms"):
        found = _LOAN_IN_TEXT.match(entry["text"])
        if found:
            counts[found["en"] or found["zh"]] += 1
    return counts


def postgres_env(cluster: Cluster) -> dict[str, dict[str, str]]:
    """A new database of `cluster` for each service of one stack."""
    number = next(_stacks)
    env = {}
    for name in devstack.SERVICES:
        database = cluster.create_database(f"s{number}_{name}").rsplit("/", 1)[1]
        env[name] = ({"AUDIT_DATABASE_URL": cluster.url(database)} if name == "audit"
                     else cluster.env(database))
    return env


def start_stack(var_dir: Path, extra_env: dict[str, str] | None = None,
                postgres: Cluster | None = None) -> Stack:
    var_dir.mkdir(parents=True, exist_ok=True)
    port = devstack.free_port()
    broker = devstack.start_broker(port, var_dir / "logs")
    asyncio.run(prepare_broker(KafkaSettings(bootstrap=f"127.0.0.1:{port}")))
    stack = Stack(var_dir=var_dir, broker=broker, broker_port=port,
                  ports={name: devstack.free_port() for name in devstack.SERVICES},
                  store_env=postgres_env(postgres) if postgres is not None else {})
    try:
        simulated = (extra_env or {}).get("DUNWELL_CLOCK") == "simulated"
        stack.sinks = devstack.start_sinks(
            var_dir, stack.url("reminder"), stack.logs, receipt_delay=0.2,
            ports={"provider": devstack.free_port(), "smtp": devstack.free_port()},
            provider_options=["--clock-file", str(var_dir / "clock.json")] if simulated else ())
        # In extra_env, so that a replica a test starts with it uses the same sinks.
        stack.extra_env = {**stack.sinks.reminder_env(), **(extra_env or {})}
        stack.start()
        if postgres is not None:  # nothing fell back to a file under var/
            assert not list(var_dir.glob("*.db")), list(var_dir.glob("*.db"))
    except BaseException:
        stack.shutdown()
        raise
    return stack
