"""deploy/grafana/dunwell.json: valid, on a Prometheus datasource variable, and naming only
metrics the services export (docs/observability.md lists each of them)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dunwell.json"
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")
# Each registers its metrics when imported.
MEASURING = ["shared.agenda", "shared.consumer", "shared.http", "shared.relay", "shared.runtime",
             "shared.telemetry", "services.audit.application", "services.reminder.channels"]


def _exported() -> set[str]:
    for module in MEASURING:
        importlib.import_module(module)
    return {family.name + suffix for family in REGISTRY.collect()
            if family.name.startswith("dunwell_") for suffix in SUFFIXES}


def test_the_dashboard_queries_prometheus_through_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


def test_the_dashboard_and_the_docs_name_only_exported_metrics() -> None:
    exported = _exported()
    used = set(re.findall(r"dunwell_[a-z_]+", DASHBOARD.read_text()))
    assert used and used <= exported, used - exported
    documented = set(re.findall(r"`(dunwell_[a-z_]+)", (ROOT / "docs" / "observability.md")
                                .read_text()))
    bare = {name.removesuffix("_bucket") for name in used}
    assert bare <= documented, bare - documented
    wanted = {"dunwell_consumer_lag", "dunwell_rule_refusals_total", "dunwell_channel_sends_total",
              "dunwell_audit_checkpoint_age_seconds", "dunwell_audit_tree_size"}
    assert wanted <= bare & documented
