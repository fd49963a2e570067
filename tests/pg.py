"""A throwaway PostgreSQL 15 cluster for the tests: its own data directory, a free loopback port,
stopped by its postmaster's pid by whoever started it.

The server binaries come from the machine image (Debian's postgresql-15 under
/usr/lib/postgresql/15/bin; `make test` installs them if missing). PostgreSQL refuses to run as
root, so under root the cluster belongs to the `postgres` user that the package creates.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN = Path(os.environ.get("DUNWELL_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "dunwell"
PASSWORD = "dunwell-test"


def available() -> bool:
    return (BIN / "initdb").exists() and (os.geteuid() != 0 or _has_user("postgres"))


def _has_user(name: str) -> bool:
    try:
        import pwd
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """initdb, start, create databases, stop. `url(db)` is what a service is given."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dunwell-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.pid: int | None = None
        self._as_root = os.geteuid() == 0

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [*(["runuser", "-u", "postgres", "--"] if self._as_root else []), *argv]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> Cluster:
        if self._as_root:
            shutil.chown(self.root, "postgres")
        password_file = self.root / "pw"
        password_file.write_text(PASSWORD + "\n")
        if self._as_root:
            shutil.chown(password_file, "postgres")
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "-A", "scram-sha-256",
                  "--pwfile", str(password_file), "-E", "UTF8", "--no-sync")
        for attempt in range(5):
            self.port = _free_port()
            try:
                self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                          "-l", str(self.root / "server.log"), "-o",
                          f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off "
                          "-c synchronous_commit=off -c full_page_writes=off "
                          "-c max_connections=200", "start")
                break
            except subprocess.CalledProcessError:
                if attempt == 4 or "already in use" not in self.log():
                    raise
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def env(self, database: str) -> dict[str, str]:
        """The eventsourcing library's settings for one database of this cluster."""
        return {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": database,
                "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(self.port),
                "POSTGRES_USER": USER, "POSTGRES_PASSWORD": PASSWORD}

    def stop(self) -> None:
        """A fast shutdown of this cluster's postmaster, by its pid; then its files go."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.1)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A postmaster that exited but was not reaped by us (it is not our child) is gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ", 1)[-1][:1] != "Z"
