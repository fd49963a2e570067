"""Stop `dunwell run` and start it again: the broker comes back empty, the stores do not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dunwell import devstack
from shared.auth import Role
from tests.e2e.stack import Stack
from tests.helpers import loan_body, wait_for, zone_at_local_hour


class RunCommand:
    """`dunwell run` as an operator starts it: unattended, standard input closed."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.broker_port = devstack.free_port()
        self.ports = {name: devstack.free_port() for name in devstack.SERVICES}
        self.process: subprocess.Popen[bytes] | None = None
        self.output = var_dir / "run-output.txt"
        self._offset = 0

    def start(self) -> None:
        env = dict(os.environ, DUNWELL_VAR_DIR=str(self.var_dir))
        env.pop("KAFKA_BOOTSTRAP", None)
        env.update({f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()})
        self._offset = self.output.stat().st_size if self.output.exists() else 0
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dunwell.cli", "run", "--broker-port",
                 str(self.broker_port)], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(lambda: self._printed("SIGTERM stops all"), timeout=90,
                 what="dunwell run to start")

    def _printed(self, text: str) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"dunwell run exited:\n{self.output.read_text()}")
        return text in self.output.read_bytes()[self._offset:].decode()

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self.process = None
        return code

    def stack(self) -> Stack:
        """A view for the helpers; it does not own the processes."""
        return Stack(var_dir=self.var_dir, broker=None, broker_port=self.broker_port,  # type: ignore[arg-type]
                     ports=self.ports)


@pytest.fixture
def run_command(tmp_path: Path) -> Iterator[RunCommand]:
    command = RunCommand(tmp_path / "var")
    command.var_dir.mkdir()
    try:
        yield command
    finally:
        if command.process is not None:
            command.stop()


def _types(stack: Stack, loan_id: str) -> list[str]:
    return [e["type"] for e in stack.timeline(loan_id)]


def _sms_keys(var_dir: Path) -> Counter[str]:
    path = var_dir / "outbox" / "sms.jsonl"
    return Counter(json.loads(line)["idempotency_key"] for line in path.read_text().splitlines())


def test_stop_and_start_keeps_cases_reminders_and_audit(run_command: RunCommand) -> None:
    run_command.start()
    view = run_command.stack()
    day = [loan_body(f"DAY-{i}", timezone_name=zone_at_local_hour(11)) for i in range(5)]
    night = [loan_body(f"NIGHT-{i}", timezone_name=zone_at_local_hour(23)) for i in range(3)]
    with view.client("escalation", Role.LENDER) as lender:
        for body in day + night:
            assert lender.post("/v1/loans/overdue", json=body).status_code == 202
    for body in day:  # sent, and its receipt back from the provider sink
        wait_for(lambda body=body: "ReminderDelivered" in _types(view, body["loan_id"]),
                 what="ReminderSent and ReminderDelivered")
    for body in night:
        wait_for(lambda body=body: "ContactBlocked" in _types(view, body["loan_id"]),
                 what="C1 block")
    before = {b["loan_id"]: view.timeline(b["loan_id"]) for b in day + night}

    assert run_command.stop() == 0
    run_command.start()

    with view.client("escalation", Role.OPS) as ops:
        for body in day + night:
            assert ops.get(f"/v1/cases/{body['loan_id']}").json()["status"] == "open"
    with view.client("reminder", Role.OPS) as ops:
        for body in night:
            pending = ops.get(f"/v1/loans/{body['loan_id']}/reminders").json()["pending"]
            assert len(pending) == 1 and pending[0]["blocked"][0]["rule"] == "C1"

    fresh = loan_body("AFTER-RESTART", timezone_name=zone_at_local_hour(11))
    with view.client("escalation", Role.LENDER) as lender:
        assert lender.post("/v1/loans/overdue", json=fresh).status_code == 202
    wait_for(lambda: "ReminderSent" in _types(view, fresh["loan_id"]), timeout=60,
             what="a new loan to flow end to end after the restart")

    for loan_id, events in before.items():
        after = view.timeline(loan_id)
        assert [(e["leaf_index"], e["id"]) for e in after] == \
               [(e["leaf_index"], e["id"]) for e in events], loan_id
    sent = _sms_keys(run_command.var_dir)
    assert len(sent) == len(day) + 1 and set(sent.values()) == {1}
