"""The AsyncAPI 3.0 document of dunwell's Kafka side, generated from the contract's own code.

Channels come from shared/topics.py, messages from the event models in shared/events.py (their
JSON Schemas and `topic`), operations from who writes and reads each topic (docs/contract.md).
`dunwell asyncapi` writes it to docs/asyncapi.json, and tests/unit/test_asyncapi.py fails when
that copy is stale: the document is never edited by hand.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from shared import topics
from shared.events import CLOUDEVENTS_CONTENT_TYPE, EVENT_TYPES, EventData, json_schemas
from shared.kafka import KEPT_FOREVER
from shared.settings import KafkaSettings

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
DEFAULT_PATH = "docs/asyncapi.json"
ENVELOPE = "CloudEvent"
DEAD_LETTER = "DeadLetter"
UNPUBLISHABLE = "UnpublishableStoredEvent"
# shared/relay.py adds this header to what it sets aside on topics.OUTBOX_DLQ.
STORED_TOPIC_HEADER = "dunwell-stored-topic"
# Topics whose writers send no record headers. Every writer goes through an outbox relay,
# which sets them, so none does.
SENT_WITHOUT_HEADERS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Party:
    """Someone who writes or reads topics: one of the four services, or someone outside."""

    id: str
    description: str


PARTIES = (
    Party("lender_core", "The lender's core system: reports its loans on Kafka or over HTTP."),
    Party("escalation", "The escalation service: intake of the lender's reports, and cases."),
    Party("reminder", "The reminder service: every message to a borrower, by the rules."),
    Party("visit", "The visit service: collectors, field visits and complaints."),
    Party("audit", "The audit service: the append-only log and its signed checkpoints."),
    Party("auditor", "An auditor or operator outside the suite, e.g. with "
                     "`dunwell audit checkpoints`."),
)


@dataclass(frozen=True)
class Use:
    """One party writing or reading one topic. A reader with a consumer group sets aside
    what it cannot take on `<topic>.dlq`; a reader without one only looks."""

    party: str
    action: Literal["send", "receive"]
    topic: str
    summary: str
    group: str | None = None


def _service_group(service: str) -> str:
    return f"dunwell-{service}"  # shared/service.py names every service's group this way


USES = (
    Use("lender_core", "send", topics.LOANS,
        "The lender's core reports overdue loans, payments, cease-contact requests and "
        "disputes directly on Kafka, with its own `source`."),
    Use("escalation", "send", topics.LOANS,
        "Each report accepted by the intake API (`POST /v1/loans/...`) is published here, "
        "with `source` `/dunwell/escalation`."),
    Use("escalation", "receive", topics.LOANS,
        "Opens, updates and closes one collection case per loan.",
        _service_group("escalation")),
    Use("escalation", "receive", topics.REMINDERS,
        "Counts consecutive failed calls (C6) and takes the promises made in calls.",
        _service_group("escalation")),
    Use("escalation", "receive", topics.VISITS,
        "Takes the promise or repayment plan written up in a field visit's VisitRecorded.",
        _service_group("escalation")),
    Use("escalation", "send", topics.CASES,
        "What happens to each collection case: opened, escalated with its reasons, visits "
        "requested (C6), promises kept or broken, the cadence paused and resumed, and each "
        "lender's strategy versions."),
    Use("reminder", "receive", topics.CASES,
        "Plans reminders when a case opens, follows its stage's cadence and its pauses; "
        "cancels what is pending when it closes.",
        _service_group("reminder")),
    Use("visit", "receive", topics.CASES,
        "Takes each visit request (C6) and follows its case: terms, stage, holds (C3), "
        "hardship, promises and closing (C4), which call pending visits off.",
        _service_group("visit")),
    Use("visit", "receive", topics.REMINDERS,
        "Records a visit's notice as sent and delivered (C8) from the reminder's reports, "
        "and keeps the contact history in short for the visit's dossier.",
        _service_group("visit")),
    Use("reminder", "receive", topics.VISITS,
        "Sends a scheduled visit's advance notice (C8) under the contact rules, and drops it "
        "while still pending when the visit is cancelled or declined.",
        _service_group("reminder")),
    Use("reminder", "send", topics.REMINDERS,
        "Every reminder planned, sent, delivered, failed or cancelled, every contact attempt "
        "and every contact a rule blocked."),
    Use("visit", "send", topics.VISITS, "Collectors, visits, notices and complaints."),
    *(Use("audit", "receive", topic,
          "Appends every event, byte for byte as consumed, to the Merkle tree.",
          _service_group("audit"))
      for topic in (topics.LOANS, topics.CASES, topics.REMINDERS, topics.VISITS)),
    Use("audit", "send", topics.CHECKPOINTS,
        "Announces each signed checkpoint after storing it."),
    Use("audit", "receive", topics.CHECKPOINTS,
        "At start, reads its newest announcement back, so that a store restored from an "
        "earlier copy signs nothing against it."),
    Use("auditor", "receive", topics.CHECKPOINTS,
        "Keeps every announcement apart from the store (`dunwell audit checkpoints`), to "
        "check it later with `dunwell audit verify-store --checkpoints`."),
    *(Use(service, "send", topics.OUTBOX_DLQ,
          "Its outbox relay sets aside a stored event it cannot publish as a contract event, "
          "and goes on.")
      for service in ("escalation", "reminder", "visit")),  # the services with a relay
)

# What each dead-letter header in shared/topics.py holds; one not described here is still
# listed, as a header dunwell sets.
DLQ_HEADER_NOTES = {
    "DLQ_REASON_HEADER": "Why, in at most 1000 bytes: `invalid: ...` when a message is not a "
                         "contract event, `rejected: ...` when its handler refused it, "
                         "`failed N times: ...` when its handler kept failing, "
                         "`unmappable: ...` when a relay could not make a stored event into "
                         "a contract event.",
    "DLQ_ERROR_TYPE_HEADER": "The type of the error, e.g. `DecodeError` or `Rejected`.",
    "DLQ_GROUP_HEADER": "Who set it aside: a consumer group (`dunwell-<service>`) or a relay "
                        "(`relay/<service>`).",
    "DLQ_ORIGIN_HEADER": "Where it was: `<topic>/<partition>/<offset>` for a consumed message, "
                         "`<service>/<position in its store>` for a stored event.",
}

CHANNEL_DESCRIPTIONS = {
    topics.LOANS: "The lender's reports about its loans: written by the lender's core directly, "
                  "or by escalation for reports made through its intake API.",
    topics.CASES: "Collection cases, one per loan: written by escalation.",
    topics.REMINDERS: "Messages to borrowers and contact attempts: written by reminder.",
    topics.VISITS: "Collectors, field visits and complaints: written by visit.",
    topics.CHECKPOINTS: "The audit log's signed checkpoints (C2SP signed notes), announced by "
                        "audit and kept forever. The key is the log's origin.",
    topics.OUTBOX_DLQ: "Stored events that a service's outbox relay could not turn into "
                       "contract events, set aside with the dead-letter headers so that the "
                       "outbox goes on. One partition.",
}


def document() -> dict[str, Any]:
    """The whole AsyncAPI document as JSON-ready data."""
    by_topic = _event_types_by_topic()
    schemas = _component_schemas()
    messages: dict[str, Any] = {name: _message(cls, schemas[name])
                                for name, cls in EVENT_TYPES.items()}
    messages[DEAD_LETTER] = _dead_letter()
    messages[UNPUBLISHABLE] = _unpublishable()
    channels: dict[str, Any] = {}
    for topic, names in by_topic.items():
        channels[channel_id(topic)] = _channel(topic, names)
        channels[channel_id(topics.dlq(topic))] = _dead_letter_channel(topic)
    for topic in _other_topics():
        channels[channel_id(topic)] = _set_aside_channel(topic)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:dunwell:kafka",
        "info": _info(),
        "defaultContentType": CLOUDEVENTS_CONTENT_TYPE,
        "servers": _servers(),
        "channels": channels,
        "operations": _operations(by_topic),
        "components": {
            "schemas": schemas,
            "messages": messages,
            "correlationIds": {"CaseChain": {
                "description": "The id of the first event of the chain (the case's opening "
                               "report); with `causationid`, the event that caused this one, "
                               "it walks cause and effect.",
                "location": "$message.payload#/correlationid"}},
        },
    }


def render() -> str:
    """The document as committed: pretty-printed, keys sorted, so output is stable."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def channel_id(topic: str) -> str:
    """A channel's id: its topic with dots as underscores (AsyncAPI ids allow no dots)."""
    return topic.replace(".", "_")


def operation_id(use: Use) -> str:
    return f"{use.party}_{use.action}_{channel_id(use.topic)}"


# --- messages and their schemas ---


def _event_types_by_topic() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {topic: [] for topic in topics.EVENT_TOPICS}
    for name, cls in EVENT_TYPES.items():
        if cls.topic not in found:
            raise ValueError(f"{name} is on {cls.topic!r}, which is not in topics.EVENT_TOPICS")
        found[cls.topic].append(name)
    return found


def _other_topics() -> list[str]:
    """Topics of shared/topics.py besides the event topics and their DLQs, the broker's
    incarnation left out (it is no one's interface)."""
    known = {*topics.EVENT_TOPICS, *map(topics.dlq, topics.EVENT_TOPICS), topics.INCARNATION}
    others = [topic for topic in topics.all_topics() if topic not in known]
    for topic in others:
        if topic not in CHANNEL_DESCRIPTIONS:
            raise ValueError(f"topic {topic!r} of shared/topics.py is not described here")
    return others


def dead_letter_headers() -> dict[str, str]:
    """Every dead-letter header that shared/topics.py names, with what it holds."""
    return {value: DLQ_HEADER_NOTES.get(name, "Set by dunwell on every dead letter.")
            for name, value in sorted(vars(topics).items())
            if name.startswith("DLQ_") and name.endswith("_HEADER") and isinstance(value, str)}


def _component_schemas() -> dict[str, Any]:
    """Every schema of json_schemas() with its `$defs` lifted into components/schemas: in
    AsyncAPI a `$ref` resolves against the whole document, not against the schema."""
    found: dict[str, Any] = {}
    for name, original in json_schemas().items():
        schema = _rehome(copy.deepcopy(original))
        for inner, definition in schema.pop("$defs", {}).items():
            _add_schema(found, inner, definition)
        _add_schema(found, name, schema)
    return found


def _rehome(node: Any) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
        for value in node.values():
            _rehome(value)
    elif isinstance(node, list):
        for value in node:
            _rehome(value)
    return node


def _add_schema(found: dict[str, Any], name: str, schema: Any) -> None:
    if name in found and found[name] != schema:
        raise ValueError(f"two different schemas are named {name!r}")
    found[name] = schema


def subject_field(cls: type[EventData]) -> str:
    """The data field that is the event's CloudEvents subject and message key, found by
    asking `subject()` of an instance whose every field holds its own name."""
    marker = "\x00"
    probe = cls.model_construct(None, **{field: marker + field for field in cls.model_fields})
    subject = probe.subject()
    if not subject.startswith(marker) or subject[1:] not in cls.model_fields:
        raise ValueError(f"{cls.__name__}.subject() is not one of its fields")
    return subject[1:]


def _message(cls: type[EventData], data_schema: dict[str, Any]) -> dict[str, Any]:
    name = cls.event_type()
    field = subject_field(cls)
    field_schema = data_schema["properties"][field]
    key = {k: v for k, v in field_schema.items()
           if k in ("type", "minLength", "maxLength", "pattern")}
    key["description"] = (f"`data.{field}` as UTF-8, the same as the CloudEvents `subject`: "
                          f"all events with one {field.replace('_', ' ')} keep their order.")
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "summary": f"`{name}` on `{cls.topic}`.",
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "headers": _headers(name, required=cls.topic not in SENT_WITHOUT_HEADERS),
        "payload": {"allOf": [
            {"$ref": f"#/components/schemas/{ENVELOPE}"},
            {"type": "object", "properties": {
                "type": {"type": "string", "const": name},
                "subject": {"type": "string", "description": f"Equals `data.{field}`."},
                "data": {"$ref": f"#/components/schemas/{name}"},
            }},
        ]},
        "bindings": {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING_VERSION}},
    }
    if field == "loan_id":  # only a loan's events belong to a case's chain of cause
        message["correlationId"] = {"$ref": "#/components/correlationIds/CaseChain"}
    return message


def _headers(name: str, *, required: bool) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "type": "object",
        "description": "Kafka record headers. dunwell's consumers read only the value; the "
                       "headers are for routing and tools.",
        "properties": {
            "content-type": {"type": "string", "const": CLOUDEVENTS_CONTENT_TYPE,
                             "description": "CloudEvents structured mode: the value is the "
                                            "whole event."},
            "ce_type": {"type": "string", "const": name,
                        "description": "The event type again, to route without parsing. "
                                       "dunwell's relays set it; a lender need not."},
            "traceparent": {"type": "string", "maxLength": 256,
                            "description": "The W3C trace context, as the event's own "
                                           "`traceparent` attribute says, when it has one."},
        },
    }
    if required:
        headers["required"] = ["content-type"]
    else:
        headers["description"] += " The audit service sends these records without headers."
    return headers


def _dead_letter_header_schema(description: str, **more: str) -> dict[str, Any]:
    notes = {**dead_letter_headers(), **more}
    return {
        "type": "object",
        "description": description,
        "required": list(notes),
        "properties": {name: {"type": "string", "description": note}
                       for name, note in notes.items()},
    }


def _dead_letter() -> dict[str, Any]:
    return {
        "name": DEAD_LETTER,
        "title": "Dead letter",
        "summary": "A consumed message that its consumer could not take, with the reason.",
        "contentType": "application/octet-stream",
        "headers": _dead_letter_header_schema(
            "The original message's own headers, if it had any, then these."),
        "payload": {"description": "The original value, byte for byte; it may not be JSON."},
        "bindings": {"kafka": {
            "key": {"type": "string", "description": "The original key, unchanged."},
            "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _unpublishable() -> dict[str, Any]:
    return {
        "name": UNPUBLISHABLE,
        "title": "Unpublishable stored event",
        "summary": "A stored event that a relay could not publish as a contract event.",
        "contentType": "application/octet-stream",
        "headers": _dead_letter_header_schema(
            "Why, and where the event is kept.",
            **{STORED_TOPIC_HEADER: "The stored event's type, as the service's store names "
                                    "it."}),
        "payload": {"description": "The stored event's state, as the service's store holds "
                                   "it."},
        "bindings": {"kafka": {
            "key": {"type": "string", "description": "The id of the aggregate that recorded "
                                                     "the event."},
            "bindingVersion": KAFKA_BINDING_VERSION}},
    }


# --- channels, operations, the rest ---


def _groups_reading(topic: str) -> list[str]:
    return sorted({use.group for use in USES if use.topic == topic and use.group})


def _channel(topic: str, names: Iterable[str]) -> dict[str, Any]:
    binding: dict[str, Any] = {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}
    if topic == topics.CHECKPOINTS:
        binding["topicConfiguration"] = {k: int(v) for k, v in KEPT_FOREVER.items()}
    partitions = KafkaSettings.model_fields["partitions"].default
    dead = (f" What a consumer group cannot take goes to `{topics.dlq(topic)}`."
            if _groups_reading(topic) else "")
    return {
        "address": topic,
        "title": topic,
        "description": f"{CHANNEL_DESCRIPTIONS[topic]} Partitions: `KAFKA_PARTITIONS` "
                       f"({partitions} by default).{dead}",
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        "bindings": {"kafka": binding},
    }


def _dead_letter_channel(topic: str) -> dict[str, Any]:
    groups = _groups_reading(topic)
    writers = (", ".join(f"`{group}`" for group in groups) if groups
               else f"nobody yet, as no consumer group reads `{topic}`")
    dead = topics.dlq(topic)
    return {
        "address": dead,
        "title": dead,
        "description": f"Messages of `{topic}` that a consumer group could not take: not a "
                       "contract event (not JSON, an unknown type, data that does not fit its "
                       "schema, a subject that does not match the data), or one its handler "
                       "refused or kept failing on. The consumer goes on. Written by "
                       f"{writers}. One partition.",
        "messages": {DEAD_LETTER: {"$ref": f"#/components/messages/{DEAD_LETTER}"}},
        "bindings": {"kafka": {"topic": dead, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _set_aside_channel(topic: str) -> dict[str, Any]:
    return {
        "address": topic,
        "title": topic,
        "description": CHANNEL_DESCRIPTIONS[topic],
        "messages": {UNPUBLISHABLE: {"$ref": f"#/components/messages/{UNPUBLISHABLE}"}},
        "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _operations(by_topic: dict[str, list[str]]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for use in USES:
        channel = channel_id(use.topic)
        verb = "writes" if use.action == "send" else "reads"
        operation: dict[str, Any] = {
            "action": use.action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}
                         for name in by_topic.get(use.topic, [UNPUBLISHABLE])],
            "title": f"{use.party} {verb} {use.topic}",
            "summary": use.summary,
            "tags": [{"name": use.party}],
        }
        if use.group:
            operation["bindings"] = {"kafka": {
                "groupId": {"type": "string", "enum": [use.group]},
                "bindingVersion": KAFKA_BINDING_VERSION}}
        operations[operation_id(use)] = operation
        if use.group:
            dead = channel_id(topics.dlq(use.topic))
            operations[operation_id(Use(use.party, "send", topics.dlq(use.topic), ""))] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{dead}"},
                "messages": [{"$ref": f"#/channels/{dead}/messages/{DEAD_LETTER}"}],
                "title": f"{use.party} sets aside what it cannot take from {use.topic}",
                "tags": [{"name": use.party}],
            }
    return operations


def _info() -> dict[str, Any]:
    return {
        "title": "dunwell events",
        "version": "1",
        "description": (
            "The Kafka side of dunwell's public contract (docs/contract.md). Every message "
            "value is a CloudEvents 1.0 event in structured JSON mode; its `data` is the "
            "event's fields. The message key is the event's subject, the loan id for loan "
            "events, so the events of one loan keep their order. Consumers de-duplicate on "
            "the CloudEvents `id` and set aside what they cannot take on `<topic>.dlq`. "
            "Generated from shared/events.py and shared/topics.py by `dunwell asyncapi`."),
        "tags": [{"name": party.id, "description": party.description} for party in PARTIES],
    }


def _servers() -> dict[str, Any]:
    return {
        "embedded": {
            "host": "127.0.0.1:9092",
            "protocol": "kafka",
            "title": "The embedded default",
            "description": "Tansu, in memory, started on loopback by `dunwell run` "
                           "(`DUNWELL_BROKER_PORT` moves it).",
        },
        "installation": {
            "host": "{bootstrap}",
            "protocol": "kafka",
            "title": "An installation's Kafka",
            "description": "The cluster named by `KAFKA_BOOTSTRAP`; dunwell creates its "
                           "topics itself and never relies on auto-creation.",
            "variables": {"bootstrap": {"default": "127.0.0.1:9092",
                                        "description": "`KAFKA_BOOTSTRAP`: host:port of a "
                                                       "broker."}},
        },
    }
