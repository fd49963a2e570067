"""The verdicts re-derived offline need what the proofs need: the standard library and
`cryptography`, plus the rules (services/audit/compliance.py) and the two registers they read
(shared/policy_pack.py, shared/templates.py), each of them standard library only."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.tlog import leaf_hash, verdict_differences
from tests.unit.audit.loans import LOAN, at_local, opened, overdue, sent
from tests.unit.audit.logs import NOW, VKEY, open_log

from services.audit.application import AuditLog
from services.audit.compliance import rederive
from services.audit.store import NewLeaf

ROOT = Path(__file__).resolve().parents[3]
RULES_FILES = ["services/audit/compliance.py", "shared/policy_pack.py", "shared/templates.py"]
PROJECT = {"shared", "shared.policy_pack", "shared.templates", "services", "services.audit",
           "services.audit.compliance"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    return names | {node.module or "" for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 0}


def test_the_rules_import_only_the_standard_library_and_the_registers() -> None:
    for name in RULES_FILES:
        found = imports_of(ROOT / name) - {"__future__"}
        outside = {module for module in found if module.split(".")[0]
                   not in sys.stdlib_module_names}
        assert outside <= {"shared.policy_pack", "shared.templates"}, (name, outside)


def _bundle(tmp_path: Path, jurisdiction: str | None = None) -> dict[str, Any]:
    log = open_log(tmp_path / "audit.db")
    at = at_local("2026-10-14 10:00")
    for offset, event in enumerate([overdue(jurisdiction=jurisdiction), opened(at), sent(at),
                                    sent(at_local("2026-10-14 23:00"))]):
        data = json.dumps(event).encode()
        log.store.append(NewLeaf(event["id"], LOAN, event["type"], data, leaf_hash(data)),
                         ("kafka/inc/t/0", offset))
    log.judge_pending()
    assert log.sign_checkpoint(NOW) is not None
    bundle = log.evidence(LOAN)
    assert bundle is not None
    return bundle


def _offline(tmp_path: Path, bundle: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run the verifier from copies of its files, every other import refused."""
    copies = tmp_path / "auditor"
    for name in ["shared/tlog.py", *RULES_FILES]:
        (copies / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, copies / name)
    for package in ["shared", "services", "services/audit"]:
        (copies / package / "__init__.py").touch()
    (copies / "bundle.json").write_text(json.dumps(bundle))
    code = f"""
import sys
sys.path.insert(0, {str(copies)!r})
sys.path.insert(0, {str(copies / "shared")!r})
ROOTS = set(sys.stdlib_module_names) | {{"cryptography", "_cffi_backend", "tlog"}}
PROJECT = {sorted(PROJECT)!r}

class OnlyThese:
    def find_spec(self, name, path=None, target=None):
        root = name.partition(".")[0]
        if name not in PROJECT and root not in ROOTS and not root.startswith("_sysconfigdata"):
            raise ModuleNotFoundError("refused: " + name)
        return None

sys.meta_path.insert(0, OnlyThese())
import tlog
from services.audit import compliance
assert compliance.__file__.startswith({str(copies)!r}), compliance.__file__
sys.exit(tlog.main(["bundle.json", "--key", {VKEY!r}], judge=compliance.rederive))
"""
    return subprocess.run([sys.executable, "-I", "-c", code], cwd=copies, capture_output=True,
                          text=True, timeout=60)


def test_the_verdicts_re_derive_with_only_cryptography_installed(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    assert bundle["verdicts"][0]["verdict"] == "fail"
    good = _offline(tmp_path, bundle)
    assert good.returncode == 0, good.stderr
    assert "every verdict re-derived from the leaves" in good.stdout
    bundle["verdicts"][4]["verdict"] = "fail"
    edited = _offline(tmp_path, bundle)
    assert edited.returncode == 1
    assert "C5: bundle says fail, leaves say pass" in edited.stderr


def test_a_verdicts_evidence_findings_and_the_pack_are_compared_too(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    assert verdict_differences(bundle, rederive) == []
    bundle["verdicts"][0]["evidence"] = [2]
    bundle["verdicts"][4]["findings"] = [{"leaf_index": 3, "message": "made up"}]
    del bundle["verdicts"][12]
    bundle["verdicts"].append({"rule": "C99", "verdict": "pass", "evidence": [],
                               "findings": []})
    assert verdict_differences(bundle, rederive) == [
        "C1: bundle's evidence [2] is not the leaves' [2, 3]",
        "C5: bundle's findings at leaves [3] are not the leaves' []",
        "C13: bundle has no verdict, leaves say not_applicable",
        "C99: bundle says pass, but there is no such rule",
    ]


def test_the_bundles_pack_is_the_default_and_must_be_known(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    # The loan names no jurisdiction, so the bundle's pack is taken as the default; these
    # leaves judge alike under both packs (10:00 and 23:00 fall on the same side of 21:00 and
    # 22:00).
    bundle["pack"] = "us"
    assert verdict_differences(bundle, rederive) == []
    bundle["pack"] = "xx"
    with pytest.raises(ValueError, match="unknown policy pack"):
        verdict_differences(bundle, rederive)


def test_a_pack_the_leaves_contradict_is_named(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, jurisdiction="cn")
    bundle["pack"] = "us"
    assert verdict_differences(bundle, rederive)[0] == "pack: bundle says us, leaves say cn"


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda b: b.update(verdicts={}), id="not-a-list"),
    pytest.param(lambda b: b["verdicts"].append(b["verdicts"][0]), id="rule-twice"),
    pytest.param(lambda b: b["verdicts"][0].update(evidence=["2"]), id="evidence-text"),
    pytest.param(lambda b: b["verdicts"][0].update(findings=[{}]), id="finding-no-leaf"),
    pytest.param(lambda b: b["verdicts"][0].pop("verdict"), id="no-verdict"),
    pytest.param(lambda b: b.pop("pack"), id="no-pack"),
])
def test_malformed_verdicts_are_verification_errors(tmp_path: Path,
                                                    mutate: Any) -> None:
    from shared.tlog import VerificationError

    bundle = _bundle(tmp_path)
    mutate(bundle)
    with pytest.raises(VerificationError):
        verdict_differences(bundle, rederive)


# --- the bundle's leaves are its loan's, and ones the rules cannot read are named ----------


def _log_of(tmp_path: Path, events: list[tuple[str, bytes]]) -> AuditLog:
    """A signed log of these (subject, leaf bytes), appended as they are."""
    log = open_log(tmp_path / "audit.db")
    for offset, (subject, data) in enumerate(events):
        event = json.loads(data)
        log.store.append(NewLeaf(event["id"], subject, event["type"], data, leaf_hash(data)),
                         ("kafka/inc/t/0", offset))
    log.judge_pending()
    assert log.sign_checkpoint(NOW) is not None
    return log


def _of(loan: str, event: dict[str, Any]) -> tuple[str, bytes]:
    moved = json.loads(json.dumps(event))
    moved["subject"] = moved["data"]["loan_id"] = loan
    moved["id"] = f"{loan}-{event['id']}"
    return loan, json.dumps(moved).encode()


def _loans(tmp_path: Path) -> AuditLog:
    at = at_local("2026-10-14 10:00")
    honest = [overdue(), opened(at), sent(at)]
    return _log_of(tmp_path, [_of("L-good", e) for e in honest]
                   + [_of("L-bad", e) for e in [*honest, sent(at_local("2026-10-14 23:00"))]])


def test_a_bundle_relabelled_for_another_loan_fails_at_its_first_leaf(tmp_path: Path) -> None:
    log = _loans(tmp_path)
    bundle = log.evidence("L-good")
    assert bundle is not None and _offline(tmp_path, bundle).returncode == 0
    bundle["loan_id"] = "L-bad"  # whose own verdicts fail C1
    result = _offline(tmp_path, bundle)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "FAILED (first failing leaf index 0): leaf 0 is an event of L-good, not of the "
        "bundle's loan L-bad"), result.stderr


def test_a_leaf_of_another_loan_spliced_in_fails_naming_it(tmp_path: Path) -> None:
    log = _loans(tmp_path)
    bundle, other = log.evidence("L-bad"), log.evidence("L-good")
    assert bundle is not None and other is not None
    # L-good's LoanOverdue in the place of L-bad's own: its proof holds, its subject does not.
    bundle["leaves"] = [other["leaves"][0], *bundle["leaves"][1:]]
    result = _offline(tmp_path, bundle)
    assert result.returncode == 1
    assert "(first failing leaf index 0): leaf 0 is an event of L-good" in result.stderr


def test_a_leaf_whose_data_names_another_loan_fails(tmp_path: Path) -> None:
    at = at_local("2026-10-14 10:00")
    _, moved = _of("L-other", sent(at))
    event = json.loads(moved)
    event["subject"] = LOAN
    log = _log_of(tmp_path, [_of(LOAN, overdue()), (LOAN, json.dumps(event).encode())])
    bundle = log.evidence(LOAN)
    assert bundle is not None
    result = _offline(tmp_path, bundle)
    assert result.returncode == 1
    expected = ("(first failing leaf index 1): leaf 1 has data.loan_id L-other, not of the "
                "bundle's loan")
    assert expected in result.stderr


def test_a_leaf_the_rules_cannot_read_fails_naming_it(tmp_path: Path) -> None:
    odd = {"specversion": "1.0", "id": "odd-1", "source": "/dunwell/test",
           "type": "CeaseContactRequested", "subject": LOAN, "time": "2026-10-14T00:00:00Z",
           "data": {"loan_id": LOAN, "channels": 5, "requested_at": "2026-10-14T00:00:00Z"}}
    log = _log_of(tmp_path, [_of(LOAN, overdue()), (LOAN, json.dumps(odd).encode()),
                             _of(LOAN, sent(at_local("2026-10-14 10:00")))])
    bundle = log.evidence(LOAN)
    assert bundle is not None
    c3 = bundle["verdicts"][2]
    assert (c3["verdict"], [f["leaf_index"] for f in c3["findings"]]) == ("not_evaluated", [1])
    result = _offline(tmp_path, bundle)
    assert result.returncode == 1
    assert result.stderr.startswith("FAILED (first failing leaf index 1): leaf 1 cannot be "
                                    "judged: C3 raised TypeError"), result.stderr
    assert "Traceback" not in result.stderr
