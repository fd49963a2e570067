"""Rotating the audit signer key: the service is restarted on the same store with a new
AUDIT_SIGNER_KEY and the old vkey in AUDIT_RETIRED_VKEYS. Every checkpoint it ever signed
still verifies with the keys it publishes, offline (`dunwell verify`) and over the whole
store (`dunwell audit verify-store`); a checkpoint by a key it never had does not."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from dunwell.cli import app as dunwell
from shared.clock import ManualClock
from shared.events import CloudEvent
from shared.roles import Role
from shared.tlog import Checkpoint, VerificationError, open_checkpoint
from tests.service.records import consumer_record, tracking_of
from tests.unit.audit.loans import LOAN, at_local, opened, overdue, sent

from services.audit import main as audit_main
from services.audit.application import AuditLog
from services.audit.relay import Announcements, announcement
from services.audit.settings import Settings
from services.audit.signer import generate_signer, load_signer, sign_note
from services.audit.store import LogStore

ORIGIN = "dunwell.local/audit"
SKEY_A, VKEY_A = generate_signer(ORIGIN)
SKEY_B, VKEY_B = generate_signer(ORIGIN)
SKEY_C, VKEY_C = generate_signer(ORIGIN)  # never this log's
OFFSETS = itertools.count()

Headers = Callable[..., dict[str, str]]


@pytest.fixture
def auditor(token: Headers) -> dict[str, str]:
    return token(Role.AUDITOR, "auditor-1")


@contextmanager
def started(tmp_path: Path, clock: ManualClock, **settings: Any) -> Iterator[TestClient]:
    service: FastAPI = audit_main.create(Settings(DUNWELL_VAR_DIR=tmp_path, **settings), clock,
                                         connect=False)
    with TestClient(service) as client:
        yield client


def log_of(client: TestClient) -> AuditLog:
    log: AuditLog = client.app.state.service  # type: ignore[attr-defined]
    return log


def append_and_sign(client: TestClient, *events: dict[str, Any]) -> int:
    log = log_of(client)
    for event in events:
        envelope = CloudEvent.model_validate(event)
        record = consumer_record(envelope, "audit.test", offset=next(OFFSETS))
        assert log.process(tracking_of(record), record, envelope, envelope.payload())
    assert log.sign_checkpoint(at_local("2026-10-14 12:00")) is not None
    return log.store.size


def get(client: TestClient, path: str, auditor: dict[str, str]) -> Any:
    response = client.get(path, headers=auditor)
    assert response.status_code == 200, response.text
    return response.json()


def cli(*args: str) -> Result:
    return CliRunner().invoke(dunwell, list(args))


@pytest.fixture
def rotated(tmp_path: Path, clock: ManualClock, auditor: dict[str, str]) -> dict[str, Any]:
    """A log signed by key A (two checkpoints), then restarted on key B with A retired (one
    more); what an auditor saved on the way: the bundle from before, the published keys."""
    ten = at_local("2026-10-14 10:00")
    with started(tmp_path, clock, signer_key=SKEY_A) as client:
        first = append_and_sign(client, overdue(), opened(ten))
        before = append_and_sign(client, sent(ten))
        (tmp_path / "old.json").write_text(json.dumps(
            get(client, f"/v1/loans/{LOAN}/evidence", auditor)))
        keys_before = get(client, "/v1/keys", auditor)
    with started(tmp_path, clock, signer_key=SKEY_B, retired_vkeys=VKEY_A) as client:
        restarted = get(client, "/v1/checkpoint", auditor)
        after = append_and_sign(client, sent(at_local("2026-10-14 11:00")))
        (tmp_path / "new.json").write_text(json.dumps(
            get(client, f"/v1/loans/{LOAN}/evidence", auditor)))
        published = get(client, "/v1/keys", auditor)
        (tmp_path / "keys.json").write_text(json.dumps(published))
        checkpoint = get(client, "/v1/checkpoint", auditor)
    return {"first": first, "before": before, "after": after, "keys_before": keys_before,
            "restarted": restarted, "published": published, "checkpoint": checkpoint,
            "dir": tmp_path}


def test_the_published_keys_list_the_retired_key_and_the_current_one(
        rotated: dict[str, Any]) -> None:
    def entry(vkey: str, status: str, start: int, end: int | None) -> dict[str, Any]:
        return {"vkey": vkey, "key_id": vkey.split("+")[1], "status": status,
                "from_size": start, "until_size": end}

    def shown(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in key.items() if not k.endswith("_time")} for key in keys]

    assert rotated["keys_before"]["public_key"] == VKEY_A
    assert shown(rotated["keys_before"]["keys"]) == [
        entry(VKEY_A, "current", rotated["first"], None)]
    published = rotated["published"]
    assert (published["origin"], published["public_key"]) == (ORIGIN, VKEY_B)
    assert shown(published["keys"]) == [
        entry(VKEY_A, "retired", rotated["first"], rotated["before"]),
        entry(VKEY_B, "current", rotated["after"], None)]
    assert published["keys"][0]["until_time"] is not None
    assert published["keys"][1]["until_time"] is None
    # /v1/checkpoint keeps its fields and carries the same keys.
    assert rotated["checkpoint"]["public_key"] == VKEY_B
    assert rotated["checkpoint"]["keys"] == published["keys"]
    assert open_checkpoint(rotated["checkpoint"]["note"], VKEY_B).size == rotated["after"]


def test_right_after_the_restart_the_latest_checkpoint_is_the_retired_keys(
        rotated: dict[str, Any]) -> None:
    """Nothing new signed yet: the latest note is A's, and the keys served beside it say so."""
    restarted = rotated["restarted"]
    assert restarted["public_key"] == VKEY_B
    assert open_checkpoint(restarted["note"], VKEY_A).size == rotated["before"]
    assert [(k["status"], k["until_size"]) for k in restarted["keys"]] == [
        ("retired", rotated["before"]), ("current", None)]


def test_a_bundle_from_before_the_rotation_verifies_with_the_published_keys(
        rotated: dict[str, Any]) -> None:
    where = rotated["dir"]
    keys = str(where / "keys.json")
    for bundle in ("old.json", "new.json"):
        result = cli("verify", str(where / bundle), "--key", keys)
        assert result.exit_code == 0, result.stderr
        assert "every verdict re-derived from the leaves" in result.stdout
    both = cli("verify", str(where / "old.json"), "--vkey", VKEY_B, "--vkey", VKEY_A)
    assert both.exit_code == 0, both.stderr
    only_new = cli("verify", str(where / "old.json"), "--key", VKEY_B)
    assert only_new.exit_code == 1
    assert f"it is signed by {ORIGIN}+{VKEY_A.split('+')[1]}" in only_new.stderr
    only_old = cli("verify", str(where / "new.json"), "--key", VKEY_A)
    assert only_old.exit_code == 1


def test_verify_store_checks_every_checkpoint_under_the_published_keys(
        rotated: dict[str, Any]) -> None:
    store = str(rotated["dir"] / "audit.db")
    result = cli("audit", "verify-store", "--store", store, "--key",
                 str(rotated["dir"] / "keys.json"))
    assert result.exit_code == 0, result.stderr
    assert f"{rotated['after']} leaves re-derived; 3 checkpoints verified" in result.stdout
    assert f"key {VKEY_A.split('+')[1]}: 2 stored checkpoints" in result.stdout
    assert f"key {VKEY_B.split('+')[1]}: 1 stored checkpoints" in result.stdout
    repeated = cli("audit", "verify-store", "--store", store, "--vkey", VKEY_A, "--vkey", VKEY_B)
    assert repeated.exit_code == 0, repeated.stderr


def test_verify_store_with_only_the_new_key_names_the_old_checkpoints(
        rotated: dict[str, Any]) -> None:
    result = cli("audit", "verify-store", "--store", str(rotated["dir"] / "audit.db"),
                 "--key", VKEY_B)
    assert result.exit_code == 1
    old = f"it is signed by {ORIGIN}+{VKEY_A.split('+')[1]}"
    for size in (rotated["first"], rotated["before"]):
        assert f"stored checkpoint {size}: note carries no signature" in result.stderr
    assert result.stderr.count(old) == 2


def _signed_by(skey: str, log: AuditLog, size: int) -> str:
    """A note over the log's real tree of `size` leaves, signed by another key of the name."""
    name, signer = load_signer(skey)
    root = open_checkpoint(log.store.checkpoint_note(size) or "", log.trusted()).root
    return sign_note(Checkpoint(name, size, root).body(), name, signer)


def test_a_checkpoint_by_a_key_the_log_never_had_fails(rotated: dict[str, Any]) -> None:
    """An insider re-signs the latest checkpoint with key C: verify-store and `dunwell
    verify` both refuse it, though its tree is the real one."""
    where = rotated["dir"]
    store = LogStore(where / "audit.db")
    log = AuditLog(store, ORIGIN, load_signer(SKEY_B)[1], VKEY_B, retired=[VKEY_A])
    forged = _signed_by(SKEY_C, log, rotated["after"])
    bundle = json.loads((where / "new.json").read_text())
    (where / "forged.json").write_text(json.dumps(dict(bundle, checkpoint=forged)))
    with store._transaction() as db:
        db.execute("UPDATE checkpoints SET note=? WHERE tree_size=?", (forged, rotated["after"]))
    store.close()
    keys = str(where / "keys.json")
    checked = cli("audit", "verify-store", "--store", str(where / "audit.db"), "--key", keys)
    assert checked.exit_code == 1
    assert (f"stored checkpoint {rotated['after']}: note carries no signature by {ORIGIN}"
            in checked.stderr)
    assert f"it is signed by {ORIGIN}+{VKEY_C.split('+')[1]}" in checked.stderr
    verified = cli("verify", str(where / "forged.json"), "--key", keys)
    assert verified.exit_code == 1
    assert "note carries no signature" in verified.stderr


def test_a_retired_key_past_its_last_checkpoint_is_refused_by_the_published_keys(
        rotated: dict[str, Any]) -> None:
    """Key A leaked after the rotation: a checkpoint it signs at a size past its `until_size`
    fails with the published keys, which bound it; given bare, as two vkeys, it would pass."""
    where = rotated["dir"]
    log = AuditLog(LogStore(where / "audit.db"), ORIGIN, load_signer(SKEY_B)[1], VKEY_B,
                   retired=[VKEY_A])
    late = _signed_by(SKEY_A, log, rotated["after"])
    log.store.close()
    bundle = json.loads((where / "new.json").read_text())
    (where / "late.json").write_text(json.dumps(dict(bundle, checkpoint=late)))
    refused = cli("verify", str(where / "late.json"), "--key", str(where / "keys.json"))
    assert refused.exit_code == 1
    assert (f"signed only by a retired key, which signed none past size {rotated['before']}"
            in refused.stderr)
    unbounded = cli("verify", str(where / "late.json"), "--key", VKEY_A, "--key", VKEY_B)
    assert unbounded.exit_code == 0, unbounded.stderr


def test_a_checkpoint_from_before_the_rotation_is_still_announced_and_read_back(
        tmp_path: Path, clock: ManualClock) -> None:
    """Restarted on key B before anything new was signed, the log announces its latest
    checkpoint (A's) and takes A's announcements as its own when it reads them back."""
    with started(tmp_path, clock, signer_key=SKEY_A) as client:
        size = append_and_sign(client, overdue())
    with started(tmp_path, clock, signer_key=SKEY_B, retired_vkeys=VKEY_A) as client:
        log = log_of(client)
        latest = log.latest()
        assert latest is not None and latest[0] == size
        event = announcement(log, Announcements(log).stream, size, latest[1])
        assert json.loads(event.encode())["data"]["note"] == latest[1]
        assert log.open(latest[1]).size == size
        with pytest.raises(VerificationError):
            AuditLog(log.store, ORIGIN, load_signer(SKEY_B)[1], VKEY_B).open(latest[1])


def test_a_new_signer_without_the_old_key_retired_stops_the_start(
        tmp_path: Path, clock: ManualClock) -> None:
    """Forgetting AUDIT_RETIRED_VKEYS would orphan every earlier checkpoint: refused."""
    with started(tmp_path, clock, signer_key=SKEY_A) as client:
        append_and_sign(client, overdue())
    with pytest.raises(SystemExit, match="put the old vkey into AUDIT_RETIRED_VKEYS"):
        audit_main.create(Settings(DUNWELL_VAR_DIR=tmp_path, signer_key=SKEY_B), clock,
                          connect=False)
    with pytest.raises(SystemExit, match="does not verify"):
        audit_main.create(Settings(DUNWELL_VAR_DIR=tmp_path, signer_key=SKEY_B,
                                   retired_vkeys=VKEY_C), clock, connect=False)


@pytest.mark.parametrize("retired", [
    "not-a-vkey", generate_signer("another.log/audit")[1]])
def test_a_retired_key_that_is_not_this_logs_stops_the_start(
        tmp_path: Path, clock: ManualClock, retired: str) -> None:
    with pytest.raises(SystemExit, match="AUDIT_RETIRED_VKEYS"):
        audit_main.create(Settings(DUNWELL_VAR_DIR=tmp_path, signer_key=SKEY_B,
                                   retired_vkeys=f"{VKEY_A},{retired}"), clock, connect=False)


def test_retired_keys_come_from_the_setting_and_the_file(tmp_path: Path) -> None:
    older = generate_signer(ORIGIN)[1]
    (tmp_path / "retired.vkeys").write_text(f"# rotated 2026-12\n{VKEY_A}\n\n")
    settings = Settings(DUNWELL_VAR_DIR=tmp_path, signer_key=SKEY_B,
                        retired_vkeys=f"{older},\n{VKEY_A}",
                        retired_vkeys_file=tmp_path / "retired.vkeys")
    assert settings.retired_keys() == [older, VKEY_A]
