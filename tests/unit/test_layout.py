"""The layout shows the design: shared/ knows no service, no service imports another, only the
suite's own package (dunwell/) knows them all, and every service has the same modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("escalation", "reminder", "visit", "audit")
MODULES = {"domain", "policy", "application", "handlers", "relay", "api", "settings", "main"}


def imported(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_shared_imports_no_service_and_not_the_suite() -> None:
    offending = {str(path.relative_to(ROOT)): sorted(
        name for name in imported(path) if name.split(".")[0] in ("services", "dunwell"))
        for path in sources("shared")}
    assert {path: names for path, names in offending.items() if names} == {}


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(service: str) -> None:
    others = {f"services.{other}" for other in SERVICES if other != service}
    offending = {str(path.relative_to(ROOT)): sorted(
        name for name in imported(path) if ".".join(name.split(".")[:2]) in others)
        for path in sources(f"services/{service}")}
    assert {path: names for path, names in offending.items() if names} == {}


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_modules(service: str) -> None:
    present = {path.stem for path in (ROOT / "services" / service).glob("*.py")}
    assert present >= MODULES, MODULES - present


def test_the_suite_package_is_where_services_meet() -> None:
    launcher = imported(ROOT / "dunwell" / "devstack.py") | imported(ROOT / "dunwell" / "cli.py")
    assert "services.audit.signer" in launcher or "services.audit.signer.generate_signer" \
        in launcher
    assert not (ROOT / "shared" / "cli.py").exists()
    assert not (ROOT / "shared" / "devstack.py").exists()


def test_the_checks_see_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def later():\n    from services.audit.store import LogStore\n")
    assert "services.audit.store" in imported(sample)
