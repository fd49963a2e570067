"""docs/strategy.schema.json: current with the code, and the strategies the docs show (the
shipped default, the guide's worked example in JSON and TOML) valid against it."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from dunwell.cli import STRATEGY_SCHEMA_PATH, app, strategy_schema_text
from shared.events import StrategyDocument
from shared.policy_pack import CN

from services.escalation import policy

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / STRATEGY_SCHEMA_PATH
GUIDE = ROOT / "docs" / "strategies.md"
REGENERATE = ("run `.venv/bin/dunwell strategy-schema` at the repository root and commit "
              "docs/strategy.schema.json")


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(COMMITTED.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _guide_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", GUIDE.read_text(), re.S)


def _guide_strategies() -> list[dict[str, Any]]:
    """Every strategy document the guide prints (its JSON blocks with stages, and its TOML)."""
    found = [json.loads(block) for block in _guide_blocks("json")]
    found = [doc for doc in found if "stages" in doc]
    return found + [tomllib.loads(block) for block in _guide_blocks("toml")]


def test_the_committed_schema_is_current() -> None:
    committed = COMMITTED.read_text() if COMMITTED.is_file() else ""
    if committed != strategy_schema_text():
        pytest.fail(f"docs/strategy.schema.json is stale: {REGENERATE}", pytrace=False)


def test_the_command_writes_the_schema_and_checks_it(tmp_path: Path) -> None:
    out = tmp_path / "strategy.schema.json"
    runner = CliRunner()
    assert runner.invoke(app, ["strategy-schema", "--check", "--out", str(out)]).exit_code == 1
    written = runner.invoke(app, ["strategy-schema", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text() == strategy_schema_text()
    assert runner.invoke(app, ["strategy-schema", "--check", "--out", str(out)]).exit_code == 0


def test_the_shipped_default_validates_against_the_schema(
        validator: Draft202012Validator) -> None:
    for dumped in (policy.DEFAULT_DOCUMENT.model_dump(mode="json"),
                   policy.DEFAULT_DOCUMENT.model_dump(mode="json", exclude_none=True)):
        assert list(validator.iter_errors(dumped)) == []


def test_the_schema_refuses_what_the_service_refuses(validator: Draft202012Validator) -> None:
    document = policy.DEFAULT_DOCUMENT.model_dump(mode="json")
    document["visit"]["min_amount"] = 3000  # money is a string
    document["stages"][0]["colour"] = "red"  # no field the schema does not name
    assert {error.validator for error in validator.iter_errors(document)} == {
        "type", "additionalProperties"}


def test_the_guide_prints_the_shipped_default() -> None:
    assert policy.DEFAULT_DOCUMENT.model_dump(mode="json") in _guide_strategies()


def test_the_guides_strategies_are_valid_coherent_and_keep_to_the_pack(
        validator: Draft202012Validator) -> None:
    strategies = _guide_strategies()
    assert len(strategies) == 3  # the default, the worked example in JSON and in TOML
    for document in strategies:
        assert list(validator.iter_errors(document)) == []
        parsed = StrategyDocument.model_validate(document)
        assert policy.incoherence(parsed) == []
        assert policy.loosenings(parsed, CN) == []
    example_json, example_toml = (StrategyDocument.model_validate(d) for d in strategies[1:])
    assert example_json == example_toml
