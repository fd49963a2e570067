"""deploy/k8s: both overlays render and validate offline, and the validator catches the
mistakes it is there for (a wrong type, an unknown field, a KafkaTopic without partitions,
a Secret written out, an ACL wider than the event flow, a topic nobody makes)."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = [K8S / "overlays" / "dev", K8S / "overlays" / "prod"]


def _validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_validate", K8S / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate = _validator()


def run_validator(*targets: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(K8S / "validate.py"), *map(str, targets)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    assert shutil.which("kubectl"), "kubectl is needed to render the overlays"
    return validate.render(K8S / "overlays" / "prod")


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_both_overlays_render_and_validate() -> None:
    assert shutil.which("kubectl"), "kubectl is needed to render the overlays"
    result = run_validator(*OVERLAYS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "overlays/dev: " in result.stdout and "overlays/prod: " in result.stdout


def test_a_wrong_type_in_the_base_fails_the_overlay(tmp_path: Path) -> None:
    copied = tmp_path / "k8s"
    shutil.copytree(K8S, copied)
    audit = copied / "base" / "audit.yaml"
    text = audit.read_text()
    assert "  replicas: 1\n" in text
    audit.write_text(text.replace("  replicas: 1\n", '  replicas: "three"\n', 1))
    result = run_validator(copied / "overlays" / "dev")
    assert result.returncode == 1
    assert "Deployment/audit: spec.replicas: 'three' is not of type 'integer'" in result.stdout


def test_an_unknown_field_is_refused(rendered: list[dict[str, Any]]) -> None:
    docs = copy.deepcopy(rendered)
    container = find(docs, "Deployment", "reminder")["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbee"] = container.pop("livenessProbe")
    found = validate.problems(docs)
    assert any("Deployment/reminder" in p and "'livenessProbee' was unexpected" in p
               for p in found), found


def test_a_kafka_topic_without_partitions_is_refused(rendered: list[dict[str, Any]]) -> None:
    docs = copy.deepcopy(rendered)
    del find(docs, "KafkaTopic", "loans-events")["spec"]["partitions"]
    found = validate.problems(docs)
    assert "KafkaTopic/loans-events: spec: 'partitions' is a required property" in found


def test_the_rendered_overlay_has_no_problem(rendered: list[dict[str, Any]]) -> None:
    assert validate.problems(rendered) == []


def _inline_secret(docs: list[dict[str, Any]]) -> None:
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dunwell-jwt"},
                 "stringData": {"secret": "not-here"}})


def _wider_acl(docs: list[dict[str, Any]]) -> None:
    user = find(docs, "KafkaUser", "dunwell-reminder")
    user["spec"]["authorization"]["acls"].append(
        {"resource": {"type": "topic", "name": "loans.events", "patternType": "literal"},
         "operations": ["Write"]})


def _missing_topic(docs: list[dict[str, Any]]) -> None:
    docs.remove(find(docs, "KafkaTopic", "audit-checkpoints-dlq"))


def _root_container(docs: list[dict[str, Any]]) -> None:
    pod = find(docs, "Deployment", "visit")["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False


def _password_in_clear(docs: list[dict[str, Any]]) -> None:
    container = find(docs, "Deployment", "escalation")["spec"]["template"]["spec"][
        "containers"][0]
    container["env"] = [{"name": "POSTGRES_PASSWORD", "value": "hunter2"}
                        if v["name"] == "POSTGRES_PASSWORD" else v for v in container["env"]]


def _two_audit_writers(docs: list[dict[str, Any]]) -> None:
    find(docs, "Deployment", "audit")["spec"]["replicas"] = 2


def _unknown_kind(docs: list[dict[str, Any]]) -> None:
    docs.append({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaConnect",
                 "metadata": {"name": "x"}, "spec": {}})


def _image(name: str) -> Any:
    def set_image(docs: list[dict[str, Any]]) -> None:
        find(docs, "Deployment", "reminder")["spec"]["template"]["spec"]["containers"][0][
            "image"] = name
    return set_image


def _no_limits(docs: list[dict[str, Any]]) -> None:
    find(docs, "Deployment", "visit")["spec"]["template"]["spec"]["containers"][0][
        "resources"].pop("limits")


def _deep_typo(docs: list[dict[str, Any]]) -> None:
    container = find(docs, "Deployment", "audit")["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["runAsNonRot"] = container["securityContext"].pop(
        "runAsNonRoot")


def _crd_wrong_type(docs: list[dict[str, Any]]) -> None:
    find(docs, "KafkaTopic", "audit-checkpoints-dlq")["spec"]["partitions"] = "four"


def _no_network_policy(docs: list[dict[str, Any]]) -> None:
    docs[:] = [d for d in docs if d["kind"] != "NetworkPolicy"]


@pytest.mark.parametrize(("break_it", "expected"), [
    (_image("ghcr.io/dunwell/dunwell:latest"), "image 'ghcr.io/dunwell/dunwell:latest' must"),
    (_image("ghcr.io/dunwell/dunwell"), "image 'ghcr.io/dunwell/dunwell' must carry"),
    (_image("registry.example:5000/dunwell"), "image 'registry.example:5000/dunwell' must"),
    (_image("registry.example:5000/dunwell:"), "image 'registry.example:5000/dunwell:' must"),
    (_no_limits, "Deployment/visit: container visit: resources.limits must set cpu and memory"),
    (_deep_typo, "securityContext: Additional properties are not allowed ('runAsNonRot'"),
    (_crd_wrong_type, "KafkaTopic/audit-checkpoints-dlq: spec.partitions: 'four' is not of"),
    (_no_network_policy, "no default-deny NetworkPolicy"),
    (_inline_secret, "Secret/dunwell-jwt: a Secret with inline data"),
    (_wider_acl, "KafkaUser/dunwell-reminder: topic loans.events: more than needed: Write"),
    (_missing_topic, "topic audit.checkpoints.dlq (shared/topics.py) has no KafkaTopic"),
    (_root_container, "Deployment/visit: container visit: readOnlyRootFilesystem must be true"),
    (_password_in_clear,
     ("Deployment/escalation: container escalation: POSTGRES_PASSWORD must come from a "
      "secretKeyRef")),
    (_two_audit_writers, "Deployment/audit: one replica only (the audit log has one writer)"),
    (_unknown_kind, "KafkaConnect/x: unknown custom kind kafka.strimzi.io/v1beta2 KafkaConnect"),
])
def test_the_validator_names_the_problem(rendered: list[dict[str, Any]], break_it: Any,
                                         expected: str) -> None:
    docs = copy.deepcopy(rendered)
    break_it(docs)
    found = validate.problems(docs)
    assert any(expected in problem for problem in found), found


def test_every_service_user_may_read_what_it_consumes(rendered: list[dict[str, Any]]) -> None:
    """The ACLs as the services' composition roots subscribe (services/*/main.py)."""
    reads = {"escalation": {"loans.events", "reminders.events", "visits.events"},
             "reminder": {"cases.events", "visits.events"},
             "visit": {"cases.events", "reminders.events"},
             "audit": {"loans.events", "cases.events", "reminders.events", "visits.events",
                       "audit.checkpoints", "dunwell.incarnation"}}
    for service, topics in reads.items():
        acls = find(rendered, "KafkaUser", f"dunwell-{service}")["spec"]["authorization"]["acls"]
        readable = {a["resource"]["name"] for a in acls
                    if a["resource"]["type"] == "topic" and "Read" in a["operations"]}
        assert readable == topics | {"dunwell.incarnation"}, service


def test_the_topics_file_is_plain_yaml() -> None:
    """topics.yaml is kept by hand: every document a KafkaTopic of the dunwell cluster."""
    docs = [d for d in yaml.safe_load_all((K8S / "base" / "topics.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"KafkaTopic"}
    assert {d["metadata"]["labels"]["strimzi.io/cluster"] for d in docs} == {"dunwell"}


SECRET_STAND_INS = {"AUDIT_DATABASE_URL": "postgresql://audit:pw@dunwell-pg-rw:5432/audit"}


@pytest.mark.parametrize("service", ["escalation", "reminder", "visit", "audit"])
def test_each_service_accepts_its_rendered_settings(
        rendered: list[dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """The environment the prod overlay gives a service's container is one its settings
    take: production, the wall clock, listening on every address of the pod at its port."""
    container = find(rendered, "Deployment", service)["spec"]["template"]["spec"][
        "containers"][0]
    for source in container["envFrom"]:
        data = find(rendered, "ConfigMap", source["configMapRef"]["name"])["data"]
        for key, value in data.items():
            monkeypatch.setenv(key, value)
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], SECRET_STAND_INS.get(variable["name"], "stand-in"))
    ca = tmp_path / "ca.crt"
    ca.write_text("not read here\n")
    monkeypatch.setenv("KAFKA_SSL_CAFILE", str(ca))  # the mounted CA is not on this machine
    module = importlib.import_module(f"services.{service}.settings")
    settings = module.Settings()
    port = container["ports"][0]["containerPort"]
    assert (settings.host, settings.port) == ("0.0.0.0", port)
    assert (settings.environment, settings.clock) == ("production", "wall")
    assert settings.kafka.bootstrap == "dunwell-kafka-bootstrap:9093"
    assert settings.kafka.replication_factor == 3
    command = container["command"]
    assert command == ["python", "-m", f"services.{service}.main"]
    assert importlib.util.find_spec(f"services.{service}.main") is not None


def settings_names(settings_class: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads, nested settings included."""
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in settings_class.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            names |= settings_names(annotation)
            continue
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        else:
            names.add((prefix + name).upper())
    return names


def store_names() -> set[str]:
    """What the event store (eventsourcing's PostgreSQL factory) reads from the environment."""
    from eventsourcing.postgres import PostgresFactory

    found = {getattr(PostgresFactory, name) for name in dir(PostgresFactory)
             if name.startswith("POSTGRES_")}
    return {PostgresFactory.PERSISTENCE_MODULE} | {v for v in found if isinstance(v, str)}


# Read by libpq, Python itself and shared/service.py's logging set-up.
OTHER_READERS = {"PGSSLMODE", "PYTHONDONTWRITEBYTECODE", "DUNWELL_LOG_LEVEL"}


def container_names(rendered: list[dict[str, Any]], service: str) -> set[str]:
    container = find(rendered, "Deployment", service)["spec"]["template"]["spec"][
        "containers"][0]
    names = {variable["name"] for variable in container["env"]}
    for source in container["envFrom"]:
        names |= set(find(rendered, "ConfigMap", source["configMapRef"]["name"])["data"])
    return names


@pytest.mark.parametrize("service", ["escalation", "reminder", "visit", "audit"])
def test_every_rendered_variable_is_one_the_service_reads(
        rendered: list[dict[str, Any]], service: str) -> None:
    """Settings ignore unknown variables, so a misspelt name (KAFKA_BOOTSTRAPP) would be
    dropped without a word and the default used: every name must be one the settings read."""
    reads = settings_names(importlib.import_module(f"services.{service}.settings").Settings) \
        | store_names() | OTHER_READERS
    assert container_names(rendered, service) - reads == set()
    assert {"KAFKA_BOOTSTRAP", "DUNWELL_JWT_SECRET"} <= reads
    assert "KAFKA_BOOTSTRAPP" not in reads
