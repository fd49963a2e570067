"""docs/asyncapi.json: current with the code, valid in shape, and true to what is on the wire."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7
from typer.testing import CliRunner

from dunwell import asyncapi
from dunwell.cli import app
from shared import topics
from shared.events import (
    EVENT_TYPES,
    CaseEscalated,
    Channel,
    CheckpointSigned,
    ContactBlocked,
    EventData,
    LoanOverdue,
    Reason,
    envelope,
)
from tests.helpers import loan_body

COMMITTED = Path(__file__).resolve().parents[2] / asyncapi.DEFAULT_PATH
REGENERATE = "run `.venv/bin/dunwell asyncapi` at the repository root and commit docs/asyncapi.json"
ID = re.compile(r"^[A-Za-z0-9_\-]+$")  # AsyncAPI's pattern for the keys of its maps
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
URI = "urn:dunwell:asyncapi"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.document()


def test_the_committed_document_is_current() -> None:
    fresh = asyncapi.render()
    committed = COMMITTED.read_text() if COMMITTED.is_file() else ""
    if committed != fresh:
        old, new = committed.splitlines(), fresh.splitlines()
        line = next((i for i, pair in enumerate(zip(old, new, strict=False)) if pair[0] != pair[1]),
                    min(len(old), len(new)))
        pytest.fail(f"docs/asyncapi.json is stale (first difference at line {line + 1}): "
                    f"{REGENERATE}", pytrace=False)


def test_rendering_is_stable() -> None:
    text = asyncapi.render()
    assert text == asyncapi.render()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True,
                              ensure_ascii=False) + "\n"


def test_the_command_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    runner = CliRunner()
    assert runner.invoke(app, ["asyncapi", "--out", str(out), "--check"]).exit_code == 1
    assert runner.invoke(app, ["asyncapi", "--out", str(out)]).exit_code == 0
    assert out.read_text() == asyncapi.render()
    assert runner.invoke(app, ["asyncapi", "--out", str(out), "--check"]).exit_code == 0
    out.write_text(out.read_text().replace("CloudEvents", "Cloud Events"))
    stale = runner.invoke(app, ["asyncapi", "--out", str(out), "--check"])
    assert stale.exit_code == 1 and "dunwell asyncapi" in stale.output


# --- shape: AsyncAPI 3.0 ---


def test_top_level(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert set(doc) <= {"asyncapi", "id", "info", "servers", "defaultContentType", "channels",
                        "operations", "components"}
    for server in doc["servers"].values():
        assert server["protocol"] == "kafka" and server["host"]
        for variable in re.findall(r"\{(\w+)\}", server["host"]):
            assert variable in server["variables"]


def test_map_keys_are_asyncapi_ids(doc: dict[str, Any]) -> None:
    maps = [doc["servers"], doc["channels"], doc["operations"],
            *doc["components"].values(),
            *(channel["messages"] for channel in doc["channels"].values())]
    for mapping in maps:
        for key in mapping:
            assert ID.match(key), key


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only local references"
    node: Any = doc
    for escaped in ref[2:].split("/"):
        part = escaped.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_every_reference_resolves_and_no_schema_keeps_its_own_defs(
        doc: dict[str, Any]) -> None:
    refs = list(_refs(doc))
    assert refs
    for ref in refs:
        _resolve(doc, ref)
    assert "$defs" not in json.dumps(doc)


def test_operations_take_only_their_channels_messages(doc: dict[str, Any]) -> None:
    tags = {tag["name"] for tag in doc["info"]["tags"]}
    for name, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        assert operation["messages"], name
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), (name, message)
        assert {tag["name"] for tag in operation["tags"]} <= tags


def test_every_schema_is_a_draft7_schema(doc: dict[str, Any]) -> None:
    schemas = list(doc["components"]["schemas"].values())
    for message in doc["components"]["messages"].values():
        schemas += [message["payload"], message["headers"], message["bindings"]["kafka"]["key"]]
    for schema in schemas:
        Draft7Validator.check_schema(schema)


# --- content: the contract's topics, events and parties ---


def test_every_topic_has_a_channel_and_a_dead_letter_channel(doc: dict[str, Any]) -> None:
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == set(topics.all_topics()) - {topics.INCARNATION}
    for topic in topics.EVENT_TOPICS:
        dead = doc["channels"][asyncapi.channel_id(topics.dlq(topic))]
        assert list(dead["messages"]) == [asyncapi.DEAD_LETTER]


def test_every_event_type_is_a_message_on_its_topic(doc: dict[str, Any]) -> None:
    for name, cls in EVENT_TYPES.items():
        channel = doc["channels"][asyncapi.channel_id(cls.topic)]
        assert channel["messages"][name] == {"$ref": f"#/components/messages/{name}"}
        payload = _resolve(doc, f"#/components/messages/{name}/payload")
        assert payload["allOf"][1]["properties"]["data"]["$ref"] == \
            f"#/components/schemas/{name}"
    on_channels = [name for channel in doc["channels"].values() for name in channel["messages"]]
    assert sorted(on_channels) == sorted([*EVENT_TYPES, *[asyncapi.DEAD_LETTER] * 5,
                                          asyncapi.UNPUBLISHABLE])


def test_the_key_is_the_subject_field(doc: dict[str, Any]) -> None:
    keys = {name: asyncapi.subject_field(cls) for name, cls in EVENT_TYPES.items()}
    assert {name for name, field in keys.items() if field != "loan_id"} == \
        {"AgencyRegistered", "CollectorRegistered", "CollectorRevoked", "CheckpointSigned",
         "StrategyPublished"}
    for name, field in keys.items():
        key = doc["components"]["messages"][name]["bindings"]["kafka"]["key"]
        data = doc["components"]["schemas"][name]["properties"][field]
        assert key["type"] == "string" and f"data.{field}" in key["description"]
        assert key.get("pattern") == data.get("pattern")


def _senders(doc: dict[str, Any], topic: str) -> set[str]:
    ref = f"#/channels/{asyncapi.channel_id(topic)}"
    return {op["tags"][0]["name"] for op in doc["operations"].values()
            if op["action"] == "send" and op["channel"]["$ref"] == ref}


def _receivers(doc: dict[str, Any], topic: str) -> dict[str, str | None]:
    ref = f"#/channels/{asyncapi.channel_id(topic)}"
    return {op["tags"][0]["name"]: op.get("bindings", {}).get("kafka", {}).get("groupId",
                                                                                {}).get("enum",
                                                                                        [None])[0]
            for op in doc["operations"].values()
            if op["action"] == "receive" and op["channel"]["$ref"] == ref}


def test_writers_are_those_of_the_contract(doc: dict[str, Any]) -> None:
    """CONTRACT.md's topic table: who writes each topic."""
    assert {topic: _senders(doc, topic) for topic in topics.EVENT_TOPICS} == {
        topics.LOANS: {"lender_core", "escalation"},
        topics.CASES: {"escalation"},
        topics.REMINDERS: {"reminder"},
        topics.VISITS: {"visit"},
        topics.CHECKPOINTS: {"audit"},
    }


def test_readers_are_those_of_the_code(doc: dict[str, Any]) -> None:
    from services.audit.main import AUDITED_TOPICS
    from services.escalation.handlers import HANDLERS as ESCALATION
    from services.reminder.handlers import HANDLERS as REMINDER
    from services.visit.handlers import HANDLERS as VISIT

    handled: dict[str, dict[type[EventData], Any]] = {
        "escalation": ESCALATION, "reminder": REMINDER, "visit": VISIT}
    for service, handlers in handled.items():
        for event_type in handlers:
            assert _receivers(doc, event_type.topic).get(service) == f"dunwell-{service}"
    audited = {topic for topic in topics.EVENT_TOPICS
               if _receivers(doc, topic).get("audit") == "dunwell-audit"}
    assert audited == set(AUDITED_TOPICS)


def test_every_consumer_group_dead_letters_what_it_reads(doc: dict[str, Any]) -> None:
    for topic in topics.EVENT_TOPICS:
        grouped = {party for party, group in _receivers(doc, topic).items() if group}
        assert _senders(doc, topics.dlq(topic)) == grouped


def test_dead_letters_carry_every_header_of_the_convention(doc: dict[str, Any]) -> None:
    named = {value for name, value in vars(topics).items()
             if name.startswith("DLQ_") and name.endswith("_HEADER")}
    assert {topics.DLQ_REASON_HEADER, topics.DLQ_GROUP_HEADER} <= named
    for message, extra in ((asyncapi.DEAD_LETTER, set()),
                           (asyncapi.UNPUBLISHABLE, {asyncapi.STORED_TOPIC_HEADER})):
        headers = doc["components"]["messages"][message]["headers"]
        assert set(headers["required"]) == set(headers["properties"]) == named | extra


# --- the wire: real envelopes fit their messages, wrong ones do not ---


def _samples() -> list[EventData]:
    return [
        LoanOverdue.model_validate(loan_body("L-1")),
        CaseEscalated(loan_id="L-1", from_stage="soft_reminders", to_stage="calls",
                      reasons=[Reason(code="dpd", value="31", threshold="30")],
                      policy_version="cn-2026.1"),
        ContactBlocked(loan_id="L-1", channel=Channel.SMS, rule="C1", reason="outside hours",
                       deferred_until=NOW, reminder_id=UUID(int=7)),
        CheckpointSigned(origin="dunwell.local/audit", tree_size=3,
                         root_hash="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                         note="dunwell.local/audit\n3\nAAAA\n\n— dunwell.local/audit x\n",
                         signed_at=NOW),
    ]


def _validator(doc: dict[str, Any], pointer: str) -> Draft7Validator:
    registry: Registry[Any] = Registry().with_resource(URI, DRAFT7.create_resource(doc))
    return Draft7Validator({"$ref": f"{URI}#{pointer}"}, registry=registry)


def _wire(data: EventData) -> dict[str, Any]:
    event = envelope(data, event_id="ev-1", source="/dunwell/test", time=NOW,
                     causation_id="ev-0", correlation_id="ev-0")
    return dict(json.loads(event.encode()))


@pytest.mark.parametrize("data", _samples(), ids=lambda d: d.event_type())
def test_an_encoded_event_fits_its_message(doc: dict[str, Any], data: EventData) -> None:
    name = data.event_type()
    payload = _validator(doc, f"/components/messages/{name}/payload")
    value = _wire(data)
    payload.validate(value)
    assert not payload.is_valid({**value, "type": "LoanOverdue" if name != "LoanOverdue"
                                 else "PaymentReceived"})
    assert not payload.is_valid({**value, "dataschema": "urn:x"})
    assert not payload.is_valid({**value, "data": {}})
    event = envelope(data, event_id="ev-1", source="/dunwell/test", time=NOW,
                     causation_id=None, correlation_id=None)
    from shared.relay import headers_of  # what every outbox relay sends with the value

    headers = {key: raw.decode() for key, raw in headers_of(event)}
    _validator(doc, f"/components/messages/{name}/headers").validate(headers)
