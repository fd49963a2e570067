"""An auditor's view: two signed checkpoints, a loan's evidence verified offline."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from shared.auth import Role
from shared.tlog import b64encode, open_checkpoint
from tests.e2e.stack import Stack
from tests.helpers import loan_body, wait_for, zone_at_local_hour


def _verify(bundle: dict, vkey: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(bundle))
    return subprocess.run([sys.executable, "-m", "dunwell.cli", "verify", str(path), "--key", vkey],
                          capture_output=True, text=True, timeout=60)


def test_evidence_bundle_and_consistency_verify_offline(stack: Stack, tmp_path: Path) -> None:
    bundle = stack.reminded_evidence()
    with stack.client("audit", Role.AUDITOR) as audit:
        first = audit.get("/v1/checkpoint").json()
        bundle_size = int(bundle["checkpoint"].split("\n")[1])

        another = loan_body(timezone_name=zone_at_local_hour(11))
        with stack.client("escalation", Role.LENDER) as lender:
            assert lender.post("/v1/loans/overdue", json=another).status_code == 202
        second = wait_for(lambda: (c := audit.get("/v1/checkpoint").json())["tree_size"]
                          > first["tree_size"] and c, what="a newer checkpoint")
        proof = audit.get("/v1/proofs/consistency",
                          params={"first": bundle_size, "second": second["tree_size"]})
        assert proof.status_code == 200
        unsigned = audit.get("/v1/proofs/consistency",
                             params={"first": 1, "second": second["tree_size"] + 1000})
        assert unsigned.status_code == 404

    announced = wait_for(
        lambda: [c for c in stack.announced()
                 if c.tree_size >= second["tree_size"]], what="CheckpointSigned on the topic")
    vkey = first["public_key"]
    for announcement in announced:
        signed = open_checkpoint(announcement.note, vkey)
        assert (signed.size, b64encode(signed.root)) == (announcement.tree_size,
                                                         announcement.root_hash)
    assert second["public_key"] == vkey
    bundle["consistency"] = {"checkpoint": second["note"], "proof": proof.json()["proof"]}
    ok = _verify(bundle, vkey, tmp_path, "good")
    assert ok.returncode == 0, ok.stderr
    assert f"size {second['tree_size']} verified" in ok.stdout

    tampered = json.loads(json.dumps(bundle))
    raw = bytearray(base64.b64decode(tampered["leaves"][1]["leaf"]))
    raw[10] ^= 0x01
    tampered["leaves"][1]["leaf"] = base64.b64encode(bytes(raw)).decode()
    bad = _verify(tampered, vkey, tmp_path, "tampered")
    assert bad.returncode != 0
    assert f"first failing leaf index {tampered['leaves'][1]['leaf_index']}" in bad.stderr

    forged = json.loads(json.dumps(bundle))
    forged["consistency"]["proof"] = forged["consistency"]["proof"][:-1] or ["A" * 43 + "="]
    assert _verify(forged, vkey, tmp_path, "forged").returncode != 0

    every_announcement = stack.announced()
    kept = tmp_path / "announced.jsonl"
    kept.write_text("".join(json.dumps({"data": {"note": a.note}}) + "\n"
                            for a in every_announcement))
    store = subprocess.run(
        [sys.executable, "-m", "dunwell.cli", "audit", "verify-store", "--store",
         stack.audit_store, "--key", vkey, "--checkpoints", str(kept)],
        capture_output=True, text=True, timeout=120)
    assert store.returncode == 0, store.stderr
    assert "leaves re-derived" in store.stdout
