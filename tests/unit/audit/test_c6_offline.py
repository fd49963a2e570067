"""C6 offline: the evidence bundle carries the StrategyPublished leaves its visit requests name
(a lender's leaves, proven like the loan's), and `tlog.py` with the rules re-derives the same
C6 verdict from them, with nothing but the standard library and `cryptography`."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from shared.tlog import (
    VerificationError,
    leaf_hash,
    verdict_differences,
    verify_bundle,
    verify_loan,
)
from tests.unit.audit import cases
from tests.unit.audit.logs import NOW, VKEY, open_log
from tests.unit.audit.test_offline_verdicts import _offline

from services.audit.application import AuditLog
from services.audit.compliance import rederive
from services.audit.store import NewLeaf

LENDERS = "cn-2026.1/lender-1@3"


def _log(tmp_path: Path, *events: dict[str, Any]) -> AuditLog:
    """A signed log of these events, each under its own subject, judged as it grew."""
    log = open_log(tmp_path / "audit.db")
    for offset, event in enumerate(events):
        data = json.dumps(event).encode()
        log.store.append(NewLeaf(event["id"], event["subject"], event["type"], data,
                                 leaf_hash(data)), ("kafka/inc/t/0", offset))
        log.judge_pending()
    assert log.sign_checkpoint(NOW) is not None
    return log


def _c6(bundle: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in bundle["verdicts"] if v["rule"] == "C6")
    return found


def _strict(tmp_path: Path) -> dict[str, Any]:
    """A visit stating the pack's thresholds under lender-1@3, whose strategy (logged after
    it, as another partition may bring it) asks for 92 days: C6 fails."""
    log = _log(tmp_path, cases.overdue(), cases.opened(), *cases.failed_calls(),
               cases.visit(policy=LENDERS), cases.strategy(3, (92, "3000.00", 3)))
    stored = log.store.verdicts_of(cases.LOAN)
    assert stored is not None and _c6({"verdicts": stored.rules})["verdict"] == "fail"
    bundle = log.evidence(cases.LOAN)
    assert bundle is not None
    return bundle


def test_the_bundle_carries_the_named_strategy_and_re_derives_offline(tmp_path: Path) -> None:
    bundle = _strict(tmp_path)
    assert [leaf["leaf_index"] for leaf in bundle["strategies"]] == [6]
    assert _c6(bundle)["verdict"] == "fail" and _c6(bundle)["evidence"] == [5]
    assert verdict_differences(bundle, rederive) == []
    good = _offline(tmp_path, bundle)
    assert good.returncode == 0, good.stderr
    assert "every verdict re-derived from the leaves" in good.stdout


def test_a_bundle_without_its_strategy_re_derives_another_c6(tmp_path: Path) -> None:
    bundle = _strict(tmp_path)
    bundle["strategies"] = []
    assert verdict_differences(bundle, rederive) == ["C6: bundle says fail, leaves say pass"]
    older = dict(bundle)
    del older["strategies"]  # a bundle from before strategies: judged without them
    assert verdict_differences(older, rederive) == ["C6: bundle says fail, leaves say pass"]


def test_a_strategy_leaf_must_be_proven(tmp_path: Path) -> None:
    bundle = _strict(tmp_path)
    data = base64.b64decode(bundle["strategies"][0]["leaf"])
    assert b'"min_dpd": 92' in data
    edited = data.replace(b'"min_dpd": 92', b'"min_dpd": 91')  # a laxer strategy passes C6
    bundle["strategies"][0]["leaf"] = base64.b64encode(edited).decode()
    with pytest.raises(VerificationError, match="does not lead to the root") as info:
        verify_bundle(bundle, VKEY)
    assert info.value.leaf_index == 6


@pytest.mark.parametrize("where", ["loan-leaf", "both"])
def test_a_strategy_leaf_must_be_a_lenders_strategy_and_only_there(
        tmp_path: Path, where: str) -> None:
    bundle = _strict(tmp_path)
    if where == "loan-leaf":
        moved, *kept = bundle["leaves"]
        bundle.update(leaves=kept, strategies=[moved, *bundle["strategies"]])
        verify_bundle(bundle, VKEY)  # its proof holds, wherever it is put
        with pytest.raises(VerificationError,
                           match="strategy leaf 0 is a LoanOverdue, not a StrategyPublished"):
            verify_loan(bundle)
    else:
        bundle["leaves"] = [*bundle["leaves"], *bundle["strategies"]]
        with pytest.raises(VerificationError, match="leaf 6 is in both"):
            verify_bundle(bundle, VKEY)
