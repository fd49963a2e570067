"""Checks the rendered manifests offline: `python deploy/k8s/validate.py overlays/dev ...`.

Each argument is a kustomize directory (rendered with `kubectl kustomize`) or a file of
rendered YAML. The Kubernetes kinds are checked strictly against the pinned Kubernetes
version's schemas (kubernetes-validate: unknown fields fail); the Strimzi, CloudNativePG and
Prometheus Operator kinds against the fields this installation relies on; a kind that is
neither fails. Then what the installation promises: no Secret written out, every pod locked
down, every topic of shared/topics.py made, each Kafka user granted exactly what its
service's event flow needs (dunwell/asyncapi.py says who reads and writes what).

Exit status 0 when everything holds, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dunwell.asyncapi import USES  # noqa: E402
from shared import topics  # noqa: E402

KUBERNETES_VERSION = "1.32.0"
SERVICES = ("escalation", "reminder", "visit", "audit")
# The user of the operator's own `dunwell broker` commands (docs/operations.md).
OPERATOR = "operator"
# Values that only ever come from a Secret (secretKeyRef), never from a literal or ConfigMap.
SECRET_SETTINGS = {"DUNWELL_JWT_SECRET", "AUDIT_SIGNER_KEY", "AUDIT_DATABASE_URL",
                   "POSTGRES_PASSWORD", "KAFKA_SASL_PASSWORD", "REMINDER_SMTP_PASSWORD",
                   "REMINDER_GATEWAY_TOKEN"}

# Secrets the operator of the installation creates (README.md says how); the others
# referenced are made by Strimzi: the cluster CA and one per KafkaUser.
OPERATOR_SECRETS = {"dunwell-jwt", "dunwell-audit-signer", "dunwell-audit-database",
                    "dunwell-db-escalation", "dunwell-db-reminder", "dunwell-db-visit",
                    "dunwell-db-audit", "dunwell-pg-backup", "dunwell-reminder-providers"}
STRIMZI_CA_SECRET = "dunwell-cluster-ca-cert"
README = Path(__file__).with_name("README.md")

Doc = dict[str, Any]


def _obj(required: list[str], properties: dict[str, Any], closed: bool = True) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties,
            "additionalProperties": not closed}


_STR = {"type": "string", "minLength": 1}
_INT = {"type": "integer", "minimum": 1}
_META = _obj(["name"], {"name": _STR, "labels": {"type": "object"},
                        "annotations": {"type": "object"}, "namespace": _STR}, closed=False)
_ACL = _obj(["resource", "operations"], {
    "resource": _obj(["type"], {
        "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
        "name": _STR, "patternType": {"enum": ["literal", "prefix"]}}),
    "operations": {"type": "array", "minItems": 1, "items": {"enum": [
        "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
        "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"]}},
    "host": _STR})
_LISTENER = _obj(["name", "port", "type", "tls"], {
    "name": _STR, "port": {"type": "integer", "minimum": 9092}, "tls": {"type": "boolean"},
    "type": {"enum": ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]},
    "authentication": _obj(["type"], {"type": {"enum": ["tls", "scram-sha-512", "oauth",
                                                        "custom"]}}, closed=False),
    "configuration": {"type": "object"}})
_VOLUME = _obj(["id", "type", "size"], {
    "id": {"type": "integer", "minimum": 0}, "type": {"enum": ["persistent-claim"]},
    "size": _STR, "class": _STR, "deleteClaim": {"type": "boolean"},
    "kraftMetadata": {"enum": ["shared"]}})
_SECRET_KEY = _obj(["name", "key"], {"name": _STR, "key": _STR})

# What each custom kind must have for its operator to act on it: required fields, their
# types, and (where a typo would silently do nothing) no fields beyond the known ones.
CUSTOM_KINDS: dict[tuple[str, str], dict[str, Any]] = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): {"spec": _obj(["kafka", "entityOperator"], {
        "kafka": _obj(["version", "metadataVersion", "listeners", "authorization"], {
            "version": _STR, "metadataVersion": _STR,
            "listeners": {"type": "array", "minItems": 1, "items": _LISTENER},
            "authorization": _obj(["type"], {"type": {"enum": ["simple"]},
                                             "superUsers": {"type": "array"}}),
            "config": {"type": "object"}, "rack": {"type": "object"},
            "template": {"type": "object"}, "resources": {"type": "object"},
            "metricsConfig": {"type": "object"}}),
        "entityOperator": _obj(["topicOperator", "userOperator"], {
            "topicOperator": {"type": "object"}, "userOperator": {"type": "object"},
            "template": {"type": "object"}}),
        "cruiseControl": {"type": "object"}, "kafkaExporter": {"type": "object"}})},
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): {"spec": _obj(["replicas", "roles",
                                                                   "storage"], {
        "replicas": _INT,
        "roles": {"type": "array", "minItems": 1,
                  "items": {"enum": ["controller", "broker"]}},
        "storage": _obj(["type", "volumes"], {
            "type": {"enum": ["jbod"]},
            "volumes": {"type": "array", "minItems": 1, "items": _VOLUME}}),
        "resources": {"type": "object"}, "jvmOptions": {"type": "object"},
        "template": {"type": "object"}})},
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): {"spec": _obj(["partitions", "replicas"], {
        "topicName": _STR, "partitions": _INT, "replicas": _INT,
        "config": {"type": "object", "additionalProperties": {
            "type": ["string", "integer", "boolean"]}}})},
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): {"spec": _obj(["authentication",
                                                              "authorization"], {
        "authentication": _obj(["type"], {"type": {"enum": ["scram-sha-512", "tls"]}}),
        "authorization": _obj(["type", "acls"], {
            "type": {"enum": ["simple"]},
            "acls": {"type": "array", "minItems": 1, "items": _ACL}}),
        "quotas": {"type": "object"}})},
    ("postgresql.cnpg.io/v1", "Cluster"): {"spec": _obj(["instances", "imageName", "storage"], {
        "instances": _INT, "imageName": {"type": "string", "pattern": r":\d+\.\d+"},
        "storage": _obj(["size"], {"size": _STR, "storageClass": _STR}),
        "walStorage": _obj(["size"], {"size": _STR, "storageClass": _STR}),
        "managed": _obj(["roles"], {"roles": {"type": "array", "items": _obj(
            ["name", "ensure", "login", "passwordSecret"], {
                "name": _STR, "ensure": {"enum": ["present", "absent"]},
                "login": {"type": "boolean"}, "comment": _STR,
                "connectionLimit": {"type": "integer"},
                "passwordSecret": _obj(["name"], {"name": _STR})})}}),
        "bootstrap": {"type": "object"}, "postgresql": {"type": "object"},
        "backup": _obj(["barmanObjectStore"], {
            "barmanObjectStore": _obj(["destinationPath"], {
                "destinationPath": _STR, "endpointURL": _STR,
                "s3Credentials": _obj(["accessKeyId", "secretAccessKey"], {
                    "accessKeyId": _SECRET_KEY, "secretAccessKey": _SECRET_KEY}),
                "wal": {"type": "object"}, "data": {"type": "object"}}),
            "retentionPolicy": {"type": "string", "pattern": r"^\d+[dwm]$"}}),
        "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
        "resources": {"type": "object"}, "affinity": {"type": "object"},
        "monitoring": {"type": "object"}, "enableSuperuserAccess": {"type": "boolean"},
        "description": _STR})},
    ("postgresql.cnpg.io/v1", "Database"): {"spec": _obj(["name", "owner", "cluster"], {
        "name": _STR, "owner": _STR, "cluster": _obj(["name"], {"name": _STR}),
        "ensure": {"enum": ["present", "absent"]},
        "databaseReclaimPolicy": {"enum": ["retain", "delete"]}})},
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): {"spec": _obj(["schedule", "cluster"], {
        "schedule": {"type": "string", "pattern": r"^(\S+ ){5}\S+$"},  # six fields: seconds
        "cluster": _obj(["name"], {"name": _STR}), "immediate": {"type": "boolean"},
        "backupOwnerReference": {"enum": ["none", "self", "cluster"]},
        "method": {"enum": ["barmanObjectStore", "volumeSnapshot", "plugin"]}})},
    ("monitoring.coreos.com/v1", "PrometheusRule"): {"spec": _obj(["groups"], {
        "groups": {"type": "array", "minItems": 1, "items": _obj(["name", "rules"], {
            "name": _STR, "interval": _STR,
            "rules": {"type": "array", "minItems": 1, "items": _obj(["alert", "expr"], {
                "alert": _STR, "expr": _STR, "for": _STR,
                "labels": {"type": "object"}, "annotations": {"type": "object"}})}})}})},
}


def _custom_schema(spec_schema: dict[str, Any]) -> dict[str, Any]:
    return _obj(["apiVersion", "kind", "metadata", "spec"],
                {"apiVersion": _STR, "kind": _STR, "metadata": _META, **spec_schema})


def name_of(doc: Doc) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def is_core(api_version: str) -> bool:
    """Kubernetes' own API groups: no group (v1), a dotless group (apps/v1), or *.k8s.io."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def check_schema(doc: Doc) -> Iterator[str]:
    api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    if is_core(api_version):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(p) for p in error.path) or "(top)"
            yield f"{name_of(doc)}: {where}: {error.message}"
        except kubernetes_validate.SchemaNotFoundError:
            yield f"{name_of(doc)}: no {api_version} {kind} in Kubernetes {KUBERNETES_VERSION}"
        return
    schema = CUSTOM_KINDS.get((api_version, kind))
    if schema is None:
        yield f"{name_of(doc)}: unknown custom kind {api_version} {kind}"
        return
    validator = jsonschema.Draft202012Validator(_custom_schema(schema))
    for failure in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in failure.absolute_path) or "(top)"
        yield f"{name_of(doc)}: {where}: {failure.message}"


def pod_spec(doc: Doc) -> Doc | None:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Deployment":
        return (spec.get("template") or {}).get("spec")
    if doc.get("kind") == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        return (job.get("template") or {}).get("spec")
    return None


def check_pod(doc: Doc) -> Iterator[str]:
    """Every container of a Deployment or CronJob: non-root, read-only, nothing to escalate
    with, limits set, secrets only by reference; a Deployment's also probed."""
    pod = pod_spec(doc)
    if pod is None:
        return
    where = name_of(doc)
    if pod.get("automountServiceAccountToken") is not False:
        yield f"{where}: automountServiceAccountToken must be false"
    pod_security = pod.get("securityContext") or {}
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        at = f"{where}: container {container.get('name')}"
        security = container.get("securityContext") or {}
        if not (security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))):
            yield f"{at}: runAsNonRoot must be true"
        uid = security.get("runAsUser", pod_security.get("runAsUser"))
        if not isinstance(uid, int) or uid == 0:
            yield f"{at}: runAsUser must be a fixed non-zero uid"
        if security.get("readOnlyRootFilesystem") is not True:
            yield f"{at}: readOnlyRootFilesystem must be true"
        if security.get("allowPrivilegeEscalation") is not False:
            yield f"{at}: allowPrivilegeEscalation must be false"
        if (security.get("capabilities") or {}).get("drop") != ["ALL"]:
            yield f"{at}: capabilities must drop ALL"
        seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            yield f"{at}: seccompProfile must be RuntimeDefault"
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(part) or {}):
                yield f"{at}: resources.{part} must set cpu and memory"
        image = str(container.get("image", ""))
        # The tag is after the last ":" of the last path part: "registry:5000/dunwell" has none.
        _, _, tag = image.rpartition("/")[2].rpartition(":")
        if "@sha256:" not in image and (":" not in image.rpartition("/")[2]
                                        or tag in ("", "latest")):
            yield f"{at}: image {image!r} must carry a pinned tag or digest"
        if doc.get("kind") == "Deployment" and container in pod.get("containers", []):
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = ((container.get(probe) or {}).get("httpGet") or {}).get("path")
                if got != path:
                    yield f"{at}: {probe} must GET {path} (has {got!r})"
        for variable in container.get("env", []):
            if variable.get("name") in SECRET_SETTINGS and \
                    "secretKeyRef" not in (variable.get("valueFrom") or {}):
                yield f"{at}: {variable['name']} must come from a secretKeyRef"


def check_secrets(docs: list[Doc]) -> Iterator[str]:
    for doc in docs:
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            yield f"{name_of(doc)}: a Secret with inline data; the operator creates it"
        if doc.get("kind") == "ConfigMap":
            for key in SECRET_SETTINGS & set(doc.get("data") or {}):
                yield f"{name_of(doc)}: {key} belongs in a Secret, not a ConfigMap"


def check_topics(docs: list[Doc]) -> Iterator[str]:
    made: dict[str, Doc] = {}
    for doc in docs:
        if doc.get("kind") == "KafkaTopic":
            spec = doc.get("spec") or {}
            made[str(spec.get("topicName") or doc["metadata"]["name"])] = doc
    for topic in topics.all_topics():
        if topic not in made:
            yield f"topic {topic} (shared/topics.py) has no KafkaTopic"
    for topic, doc in made.items():
        if topic not in topics.all_topics():
            yield f"{name_of(doc)}: topic {topic} is not in shared/topics.py"
        spec = doc.get("spec") or {}
        config = spec.get("config") or {}
        if topic in (topics.CHECKPOINTS, topics.INCARNATION) and \
                str(config.get("retention.ms")) != "-1":
            yield f"{name_of(doc)}: {topic} must be kept forever (retention.ms -1)"
        if topic == topics.INCARNATION and spec.get("partitions") != 1:
            yield f"{name_of(doc)}: {topic} must have one partition"
        min_isr = int(config.get("min.insync.replicas", 1))
        if isinstance(spec.get("replicas"), int) and min_isr > spec["replicas"]:
            yield f"{name_of(doc)}: min.insync.replicas {min_isr} > replicas {spec['replicas']}"


Grants = dict[tuple[str, str], set[str]]


def expected_acls(user: str) -> Grants:
    """What a service's Kafka user may do, from who reads and writes what (dunwell.asyncapi).

    Every service (and the operator's `dunwell broker`): Describe on every topic (ensure_topics lists them all at start and would
    try to create one it cannot see), Read and Write on the incarnation topic (the first
    service writes its one record), Write on dunwell.outbox.dlq (its relay's set-aside
    events), and for each topic it consumes in its group, Write on that topic's DLQ.
    """
    grants: Grants = defaultdict(set)
    service = user.removeprefix("dunwell-")
    if service in (*SERVICES, OPERATOR):
        for topic in topics.all_topics():
            grants[("topic", topic)].add("Describe")
        grants[("topic", topics.INCARNATION)] |= {"Read", "Write"}
    if service in SERVICES:
        grants[("topic", topics.OUTBOX_DLQ)].add("Write")
    if service == OPERATOR:
        # `dunwell broker reincarnate` deletes the incarnation topic and makes it again.
        grants[("topic", topics.INCARNATION)] |= {"Create", "Delete"}
    for use in USES:
        if use.party != service:
            continue
        grants[("topic", use.topic)] |= {"Describe",
                                        "Read" if use.action == "receive" else "Write"}
        if use.action == "receive" and use.group:
            grants[("group", use.group)].add("Read")
            grants[("topic", topics.dlq(use.topic))].add("Write")
    return dict(grants)


def granted(doc: Doc) -> Grants:
    grants: Grants = defaultdict(set)
    for acl in ((doc.get("spec") or {}).get("authorization") or {}).get("acls", []):
        resource = acl.get("resource") or {}
        if resource.get("patternType", "literal") != "literal":
            grants[("prefix", str(resource.get("name")))].update(acl.get("operations", []))
            continue
        grants[(str(resource.get("type")), str(resource.get("name")))].update(
            acl.get("operations", []))
    return dict(grants)


def check_users(docs: list[Doc]) -> Iterator[str]:
    users = {doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == "KafkaUser"}
    for doc in docs:
        pod = pod_spec(doc)
        if doc.get("kind") != "Deployment" or pod is None:
            continue
        for container in pod.get("containers", []):
            for variable in container.get("env", []):
                ref = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
                if variable.get("name") == "KAFKA_SASL_PASSWORD" and ref.get("name") not in users:
                    yield (f"{name_of(doc)}: KAFKA_SASL_PASSWORD is from {ref.get('name')!r}, "
                           "which no KafkaUser makes")
    for service in SERVICES:
        if f"dunwell-{service}" not in users:
            yield f"service {service} has no KafkaUser dunwell-{service}"
    for name, doc in users.items():
        want, have = expected_acls(name), granted(doc)
        if not want:
            yield f"{name_of(doc)}: no service or reader of dunwell/asyncapi.py is {name}"
            continue
        for resource in sorted(set(want) | set(have)):
            extra = have.get(resource, set()) - want.get(resource, set())
            missing = want.get(resource, set()) - have.get(resource, set())
            if extra:
                yield (f"{name_of(doc)}: {resource[0]} {resource[1]}: more than needed: "
                       f"{', '.join(sorted(extra))}")
            if missing:
                yield (f"{name_of(doc)}: {resource[0]} {resource[1]}: missing "
                       f"{', '.join(sorted(missing))}")


def referenced_secrets(value: object) -> Iterator[str]:
    """Every Secret a manifest names: secretKeyRef, secretRef, a secret volume, a passwordSecret."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("secretKeyRef", "secretRef", "passwordSecret", "accessKeyId",
                       "secretAccessKey") and isinstance(inner, dict) and "name" in inner:
                yield str(inner["name"])
            elif key == "secret" and isinstance(inner, dict) and "secretName" in inner:
                yield str(inner["secretName"])
            else:
                yield from referenced_secrets(inner)
    elif isinstance(value, list):
        for item in value:
            yield from referenced_secrets(item)


def check_secret_names(docs: list[Doc]) -> Iterator[str]:
    """A Secret nobody creates keeps its pods from starting: each must be documented or made."""
    made = {doc["metadata"]["name"] for doc in docs if doc.get("kind") == "KafkaUser"}
    documented = README.read_text() if README.is_file() else ""
    for doc in docs:
        for name in sorted(set(referenced_secrets(doc.get("spec")))):
            if name in made or name == STRIMZI_CA_SECRET:
                continue
            if name not in OPERATOR_SECRETS:
                yield (f"{name_of(doc)}: Secret {name} is neither made by Strimzi nor listed "
                       "for the operator to create")
            elif f"`{name}`" not in documented:
                yield f"{name_of(doc)}: Secret {name} is not in deploy/k8s/README.md"


def check_replicas(docs: list[Doc]) -> Iterator[str]:
    """One pod only where one writer is the rule: the audit log (its advisory lock), and a
    Deployment on a ReadWriteOnce volume; such a Deployment is recreated, not rolled."""
    once = {doc["metadata"]["name"] for doc in docs if doc.get("kind") ==
            "PersistentVolumeClaim" and doc["spec"].get("accessModes") == ["ReadWriteOnce"]}
    scaled = {doc["spec"]["scaleTargetRef"]["name"] for doc in docs
              if doc.get("kind") == "HorizontalPodAutoscaler"}
    for doc in docs:
        pod = pod_spec(doc)
        if doc.get("kind") != "Deployment" or pod is None:
            continue
        claims = {(v.get("persistentVolumeClaim") or {}).get("claimName")
                  for v in pod.get("volumes", [])}
        name = doc["metadata"]["name"]
        if name == "audit" or claims & once:
            why = "the audit log has one writer" if name == "audit" else "a ReadWriteOnce volume"
            if doc["spec"].get("replicas", 1) != 1 or name in scaled:
                yield f"{name_of(doc)}: one replica only ({why})"
            if (doc["spec"].get("strategy") or {}).get("type") != "Recreate":
                yield f"{name_of(doc)}: strategy must be Recreate ({why})"


def check_topic_settings(docs: list[Doc]) -> Iterator[str]:
    """The KafkaTopics as the services' own settings would have made them."""
    common = next((doc.get("data") or {} for doc in docs if doc.get("kind") == "ConfigMap"
                   and doc["metadata"]["name"].startswith("dunwell-common")), {})
    partitions = int(common.get("KAFKA_PARTITIONS", 4))
    replicas = int(common.get("KAFKA_REPLICATION_FACTOR", 1))
    min_isr = common.get("KAFKA_MIN_INSYNC_REPLICAS")
    for doc in docs:
        if doc.get("kind") != "KafkaTopic":
            continue
        spec = doc.get("spec") or {}
        topic = spec.get("topicName") or doc["metadata"]["name"]
        if topic in topics.EVENT_TOPICS and spec.get("partitions") != partitions:
            yield (f"{name_of(doc)}: partitions {spec.get('partitions')} but "
                   f"KAFKA_PARTITIONS is {partitions}")
        if spec.get("replicas") != replicas:
            yield (f"{name_of(doc)}: replicas {spec.get('replicas')} but "
                   f"KAFKA_REPLICATION_FACTOR is {replicas}")
        got = (spec.get("config") or {}).get("min.insync.replicas")
        if min_isr is not None and str(got) != str(min_isr):
            yield (f"{name_of(doc)}: min.insync.replicas {got} but "
                   f"KAFKA_MIN_INSYNC_REPLICAS is {min_isr}")


def check_network(docs: list[Doc]) -> Iterator[str]:
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") == "NetworkPolicy" and spec.get("podSelector") == {} and \
                set(spec.get("policyTypes", [])) == {"Ingress", "Egress"} and \
                not spec.get("ingress") and not spec.get("egress"):
            return
    yield "no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)"


def problems(docs: list[Doc]) -> list[str]:
    found: list[str] = []
    for doc in docs:
        found += check_schema(doc)
        found += check_pod(doc)
    for check in (check_secrets, check_secret_names, check_topics, check_topic_settings,
                  check_users, check_replicas, check_network):
        try:
            found += check(docs)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            # A manifest too broken for the check; its schema errors above say how.
            found.append(f"{check.__name__}: a manifest is malformed "
                         f"({type(error).__name__}: {error})")
    return found


def render(target: Path) -> list[Doc]:
    """A kustomize directory through `kubectl kustomize` (no network), or a file as it is."""
    if target.is_dir():
        result = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{target}: kubectl kustomize failed:\n{result.stderr}")
        text = result.stdout
    else:
        text = target.read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", type=Path,
                        help="kustomize directories or rendered YAML files")
    args = parser.parse_args(list(argv) if argv is not None else None)
    failed = False
    for target in args.targets:
        docs = render(target)
        found = problems(docs)
        for problem in found:
            print(f"{target}: {problem}")
        failed = failed or bool(found)
        if not found:
            print(f"{target}: {len(docs)} resources valid (Kubernetes {KUBERNETES_VERSION})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
