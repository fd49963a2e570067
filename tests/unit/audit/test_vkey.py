"""`dunwell audit vkey`: the verifier key an operator hands to auditors, from the signer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.audit.signer import generate_signer


def vkey(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dunwell.cli", "audit", "vkey", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_the_verifier_key_is_derived_from_the_signer_file(tmp_path: Path) -> None:
    skey, expected = generate_signer("audit.example/dunwell")
    (tmp_path / "audit-signer.key").write_text(skey + "\n")
    assert vkey("--signer", str(tmp_path / "audit-signer.key")).stdout.strip() == expected
    default = vkey(env={"DUNWELL_VAR_DIR": str(tmp_path), "PATH": ""})
    assert default.stdout.strip() == expected


def test_a_missing_or_broken_signer_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "junk.key").write_text("not a key")
    for path in (tmp_path / "absent.key", tmp_path / "junk.key"):
        result = vkey("--signer", str(path))
        assert result.returncode == 2 and result.stderr.startswith("error: no usable signer key")
