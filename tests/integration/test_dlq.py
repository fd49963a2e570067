"""`dunwell dlq` over a real broker: a poison loan set aside by the consumer loop is listed
without its personal data, shown whole, fixed and replayed, and applied exactly once; a
second replay is refused and, forced through, is dropped by the consumer's de-duplication."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dunwell.dlq import Coordinates, DlqError, Letter, plan, replay_id
from shared import topics
from shared.application import Unit
from shared.clock import SystemClock
from shared.consumer import ConsumerSettings, EventConsumer, Handler, HandlerSink, tracking_name
from shared.events import CaseClosed, CloudEvent, EventData, LoanOverdue
from shared.kafka import make_producer
from tests.helpers import loan_body
from tests.integration.kit import (
    Behaviour,
    Broker,
    Mark,
    Marks,
    closed_event,
    create_topics,
    eventually,
    fresh_topic,
    marks,
    produce,
    records,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = ConsumerSettings(attempts=2, backoff_seconds=0.05)
PERSONAL = ("Wang Fang", "+8613800000000", "wang@example.org", "1 Example Road", "6222-0000")


def dunwell(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it, from this checkout, against the test broker."""
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap}
    return subprocess.run([sys.executable, "-m", "dunwell.cli", "dlq", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


async def cli(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(dunwell, broker, *args)


@dataclass
class Loans:
    """A loan handler as a service has one: each loan marked once, every call counted."""

    calls: dict[str, int] = field(default_factory=dict)

    def handler(self, app: Marks, unit: Unit, cloud_event: CloudEvent, data: LoanOverdue,
                now: datetime) -> None:
        self.calls[data.loan_id] = self.calls.get(data.loan_id, 0) + 1
        unit.save(Mark(loan_id=data.loan_id))


@asynccontextmanager
async def running(broker: Broker, app: Marks, group: str, topic: str,
                  handlers: dict[type[EventData], Handler]) -> AsyncIterator[EventConsumer]:
    """A service's consumer loop over `topic`, as `main` runs it, until the block ends."""
    producer = make_producer(broker.settings())
    await producer.start()
    consumer = EventConsumer(
        group=group, subscribe=[topic], sink=HandlerSink(app, handlers, SystemClock()),
        kafka_options=broker.settings().consumer_options(), producer=lambda: producer,
        incarnation=lambda: broker.incarnation, clock=SystemClock(), settings=FAST)
    stop = asyncio.Event()
    task = asyncio.ensure_future(consumer.run(stop))
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await producer.stop()


def raw_overdue(body: dict[str, Any], event_id: str) -> dict[str, Any]:
    """As a lender's core writes it straight to loans.events: no model of ours checks it."""
    return {"specversion": "1.0", "id": event_id, "source": "/lender-1/core",
            "type": "LoanOverdue", "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "subject": body["loan_id"], "datacontenttype": "application/json", "data": body}


async def letters_of(broker: Broker, topic: str, probe: Callable[[Any], bool]) -> list[Any]:
    return [r for r in await records(broker.settings(), topic) if probe(r)]


async def test_a_poison_loan_is_listed_shown_fixed_and_replayed_exactly_once(
        broker: Broker, tmp_path: Path) -> None:
    body = loan_body()
    loan_id, event_id = body["loan_id"], str(uuid.uuid4())
    poison = raw_overdue(body | {"repayment_channel": " "}, event_id)
    key = f"loan-{loan_id}".encode()
    await produce(broker.settings(), topics.LOANS, [json.dumps(poison).encode()], key=key)
    loans, app = Loans(), marks(tmp_path)
    group = f"dunwell-escalation-{uuid.uuid4().hex[:6]}"
    dlq_topic = topics.dlq(topics.LOANS)

    def ours(record: Any) -> bool:
        return dict(record.headers).get(topics.DLQ_GROUP_HEADER) == group.encode()

    async with running(broker, app, group, topics.LOANS, {LoanOverdue: loans.handler}):
        [letter] = await eventually(lambda: letters_of(broker, dlq_topic, ours),
                                    what="the poison's dead letter")
        at = f"{letter.topic}:{letter.partition}:{letter.offset}"

        # list: a row per letter, where and why, never the data.
        listed = await cli(broker, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [row] = [json.loads(line) for line in listed.stdout.splitlines()
                 if json.loads(line)["letter"] == at]
        assert row["group"] == group and row["event_id"] == event_id
        assert row["event_type"] == "LoanOverdue" and row["error_type"] == "DecodeError"
        assert row["reason"].startswith("invalid: repayment_channel")
        origin = row["origin"]
        assert origin.startswith(f"{topics.LOANS}/")
        table = await cli(broker, "list", "--topic", dlq_topic, "--since", "1h")
        assert table.returncode == 0, table.stderr
        assert at in table.stdout and event_id in table.stdout
        for text in (listed.stdout, table.stdout):
            assert not [p for p in PERSONAL if p in text]
        assert at not in (await cli(broker, "list", "--since", "2999-01-01T00:00:00Z")).stdout

        # show: the whole letter, with a warning, and the message to fix.
        shown = await cli(broker, "show", at, "--json")
        assert shown.returncode == 0, shown.stderr
        assert "personal data" in shown.stderr
        detail = json.loads(shown.stdout)
        assert detail["value"] == poison
        assert [topics.DLQ_ORIGIN_HEADER, origin] in detail["headers"]
        by_id = await cli(broker, "show", event_id)
        assert by_id.returncode == 0 and "Wang Fang" in by_id.stdout and at in by_id.stdout
        original = json.loads((await cli(broker, "show", at, "--value")).stdout)
        assert original == poison

        # As it is, it would only be set aside again: refused, and nothing is sent.
        unfixed = await cli(broker, "replay", at, "--yes")
        assert unfixed.returncode == 2 and "is not a contract event" in unfixed.stderr

        # A fixed file under another id would be applied again where the original was.
        other = tmp_path / "other-id.json"
        other.write_text(json.dumps(original | {"id": str(uuid.uuid4()),
                                                "data": body}))
        refused = await cli(broker, "replay", at, "--fixed", str(other), "--yes")
        assert refused.returncode == 2, refused.stderr
        assert f'Keep "id": "{event_id}"' in refused.stderr
        assert "Traceback" not in refused.stderr

        fixed = tmp_path / "fixed.json"
        fixed.write_text(json.dumps(original | {"data": body}, indent=2))
        replayed = await cli(broker, "replay", at, "--fixed", str(fixed), "--yes")
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {at} as LoanOverdue {event_id}" in replayed.stdout
        await eventually(lambda: app.marked(loan_id), what="the replay applied")

        again = await cli(broker, "replay", at, "--fixed", str(fixed), "--yes")
        assert again.returncode == 1 and "replayed already" in again.stderr

        # Forced through (two operators at once): the consumer drops it as a duplicate.
        [copy] = await letters_of(broker, topics.LOANS, lambda r: dict(r.headers).get(
            "dunwell-replayed-from") == at.encode())
        await produce(broker.settings(), topics.LOANS, [copy.value], key=key)
        name = tracking_name(broker.incarnation, topics.LOANS, copy.partition)
        await eventually(lambda: (app.position(name) or 0) > copy.offset,
                         what="the forced copy consumed")
        await asyncio.sleep(0.3)

    assert loans.calls[loan_id] == 1
    assert json.loads(copy.value)["data"] == body
    assert (copy.partition, copy.key) == (letter_origin_partition(origin), key)
    assert await letters_of(broker, dlq_topic, ours) == [letter]  # nothing set aside again


def letter_origin_partition(origin: str) -> int:
    return int(origin.split("/")[1])


async def test_a_letter_one_group_refused_is_applied_there_once_and_not_again_elsewhere(
        broker: Broker, tmp_path: Path) -> None:
    """Both groups read the replay; de-duplication on the unchanged id keeps it to one."""
    topic = fresh_topic()
    await create_topics(broker.settings(), topic, topics.dlq(topic))
    flaky = Behaviour(fail={"L-1": lambda n: ValueError("store of record was down")})
    steady = Behaviour()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = marks(tmp_path / "a"), marks(tmp_path / "b")
    event = closed_event("L-1")
    await produce(broker.settings(), topic, [event])
    async with running(broker, first, f"a-{topic}", topic, {CaseClosed: flaky.handler}), \
            running(broker, second, f"b-{topic}", topic, {CaseClosed: steady.handler}):
        [letter] = await eventually(lambda: records(broker.settings(), topics.dlq(topic)),
                                    what="the letter")
        await eventually(lambda: second.marked("L-1"), what="the other group's handling")
        flaky.fail.clear()  # the cause is fixed; the message itself was right
        at = f"{letter.topic}:{letter.partition}:{letter.offset}"
        replayed = await cli(broker, "replay", at, "--yes")
        assert replayed.returncode == 0, replayed.stderr
        await eventually(lambda: first.marked("L-1"), what="the replay applied")
        name = tracking_name(broker.incarnation, topic, 0)
        await eventually(lambda: (second.position(name) or 0) >= 1, what="the replay read")
    assert flaky.calls["L-1"] == FAST.attempts + 1
    assert steady.calls["L-1"] == 1
    [_, copy] = await records(broker.settings(), topic)
    assert copy.value == event.encode()  # byte for byte, as the audit log hashed it


async def test_bad_coordinates_are_a_clear_error(broker: Broker) -> None:
    for target, said in [("loans.events.dlq:zero:1", "is not TOPIC:PARTITION:OFFSET"),
                         ("loans.events:0:0", "is not a dead-letter topic"),
                         ("loans.events.dlq:7:0", "has no partition 7"),
                         ("loans.events.dlq:0:99999", "no dead letter at"),
                         ("no-such-id", "no dead letter of an event with id")]:
        for command in ("show", "replay"):
            answer = await cli(broker, command, target, *(["--yes"] * (command == "replay")))
            assert answer.returncode == 2, (target, command, answer.stderr)
            assert said in answer.stderr, (target, command, answer.stderr)
            assert "Traceback" not in answer.stderr


def a_letter(value: bytes | None, group: str, *, topic: str = topics.dlq(topics.LOANS),
             origin: str = f"{topics.LOANS}/1/40", offset: int = 3) -> Letter:
    return Letter(Coordinates(topic, 0, offset), datetime.now(UTC), b"loan-key", value,
                  ((topics.DLQ_GROUP_HEADER, group.encode()),
                   (topics.DLQ_ORIGIN_HEADER, origin.encode())))


def test_a_message_whose_id_cannot_be_read_is_replayed_under_one_id_from_its_place() -> None:
    """Set aside by every group and applied by none: any id would do once, so the one taken
    from its place on the topic makes any second replay of it a duplicate."""
    escalation = a_letter(b"\x00not json", "dunwell-escalation")
    audit = a_letter(b"\x00not json", "dunwell-audit", offset=4)
    assert replay_id(escalation) == replay_id(audit) != replay_id(
        a_letter(b"\x00not json", "dunwell-audit", origin=f"{topics.LOANS}/1/41"))
    body = loan_body()
    fixed = raw_overdue(body, str(uuid.uuid4()))
    with pytest.raises(DlqError, match=re.escape(f'Keep "id": "{replay_id(escalation)}"')):
        plan(escalation, json.dumps(fixed).encode())
    replay = plan(escalation, json.dumps(fixed | {"id": replay_id(escalation)}).encode())
    assert (replay.to.topic, replay.to.partition) == (topics.LOANS, 1)
    assert dict(replay.headers)["dunwell-replayed-from"] == str(escalation.at).encode()
    assert not [name for name, _ in replay.headers if name.startswith("dunwell-dlq-")]


def test_what_cannot_be_put_back_is_refused_with_its_reason() -> None:
    body = loan_body()
    event_id = str(uuid.uuid4())
    letter = a_letter(json.dumps(raw_overdue(body, event_id)).encode(), "dunwell-escalation")
    elsewhere = raw_overdue(body, event_id) | {"type": "CaseClosed", "data": {
        "loan_id": body["loan_id"], "reason": "paid", "closed_at": "2026-12-01T03:00:00Z"}}
    wrong_topic = re.escape("a CaseClosed, which does not belong on loans.events")
    with pytest.raises(DlqError, match=wrong_topic):
        plan(letter, json.dumps(elsewhere).encode())
    payment = a_letter(json.dumps(raw_overdue(body, event_id) | {"type": "PaymentReceived"})
                       .encode(), "dunwell-escalation")
    with pytest.raises(DlqError, match="a fix corrects the event's fields"):
        plan(payment, json.dumps(raw_overdue(body, event_id)).encode())
    with pytest.raises(DlqError, match="holds no value"):
        plan(a_letter(None, "dunwell-escalation"), None)
    relayed = a_letter(b"{}", "relay/reminder", topic=topics.OUTBOX_DLQ, origin="reminder/12")
    with pytest.raises(DlqError, match="set aside by a relay"):
        plan(relayed, None)
    forged = a_letter(json.dumps(raw_overdue(body, event_id)).encode(), "dunwell-escalation",
                      origin=f"{topics.CASES}/0/1")
    with pytest.raises(DlqError, match="not put back"):
        plan(forged, None)


# --- hostile input: each a clear error with its exit code, no traceback, nothing sent ---

NO_BROKER = "127.0.0.1:9"  # nothing listens: a refusal must come before any connection


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP": NO_BROKER}
    return subprocess.run([sys.executable, "-m", "dunwell.cli", "dlq", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("target", [
    "loans.events.dlq:0:-1", "loans.events.dlq:-1:0", "loans.events.dlq:0:²",
    "loans.events.dlq:٣:1", "loans.events.dlq:0:1:2", "loans.events.dlq::1", ":0:1",
    "loans.events.dlq:0:99999999999999999999", "loans.events.dlq:9999999999:0",
    "loans.events.dlq:0x1:0", "loans.events.dlq: 0:1"])
def test_malformed_coordinates_are_refused_before_the_broker(target: str) -> None:
    with pytest.raises(DlqError, match="is not TOPIC:PARTITION:OFFSET"):
        Coordinates.parse(target)
    answer = offline("show", target, "--timeout", "3")
    assert answer.returncode == 2, answer.stderr
    assert "is not TOPIC:PARTITION:OFFSET" in answer.stderr and "Traceback" not in answer.stderr


@pytest.mark.parametrize("since", ["", "yesterday", "99999999999d", "999999999d", "2026-13-01",
                                   "1h1h", "-5m", "2026-12-01T08:00:00"])
def test_a_since_that_is_no_time_is_refused(since: str) -> None:
    answer = offline("list", "--since", since, "--timeout", "3")
    assert answer.returncode == 2, answer.stderr
    assert "--since" in answer.stderr and "Traceback" not in answer.stderr


def test_a_huge_limit_is_only_an_upper_bound() -> None:
    answer = offline("list", "--limit", "0")
    assert answer.returncode == 2 and "Traceback" not in answer.stderr
    assert "Traceback" not in offline("list", "--limit", "9" * 30, "--timeout", "3").stderr





@pytest.mark.parametrize(("fixed", "said"), [
    (b"not json {", "not JSON"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'"LoanOverdue"', "not a JSON object"),
    (b"", "not JSON"),
])
def test_a_fixed_file_that_is_no_event_is_refused(fixed: bytes, said: str) -> None:
    event_id = str(uuid.uuid4())
    letter = a_letter(json.dumps(raw_overdue(loan_body(), event_id)).encode(), "dunwell-audit")
    with pytest.raises(DlqError, match=f"the fixed event is not a contract event: {said}"):
        plan(letter, fixed)


def test_a_fix_may_not_move_the_event_to_another_loan() -> None:
    body, event_id = loan_body(), str(uuid.uuid4())
    letter = a_letter(json.dumps(raw_overdue(body | {"repayment_channel": " "}, event_id))
                      .encode(), "dunwell-escalation")
    other = body | {"loan_id": body["loan_id"] + "-other"}
    with pytest.raises(DlqError, match="not whom it concerns"):
        plan(letter, json.dumps(raw_overdue(other, event_id)).encode())
    assert plan(letter, json.dumps(raw_overdue(body, event_id)).encode()).event_id == event_id


def test_a_fix_bigger_than_the_broker_takes_is_refused(tmp_path: Path) -> None:
    body, event_id = loan_body(), str(uuid.uuid4())
    letter = a_letter(json.dumps(raw_overdue(body, event_id)).encode(), "dunwell-escalation")
    huge = raw_overdue(body | {"repayment_channel": "x" * (20 * 2**20)}, event_id)
    with pytest.raises(DlqError, match="larger than a message the broker takes"):
        plan(letter, json.dumps(huge).encode())


async def test_a_letter_whose_topic_is_gone_is_not_put_back(broker: Broker) -> None:
    """Its original topic was deleted: the replay is refused, and no topic is made by it."""
    gone = fresh_topic()
    await create_topics(broker.settings(), topics.dlq(gone))
    event_id = str(uuid.uuid4())
    producer = make_producer(broker.settings())
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topics.dlq(gone), json.dumps(raw_overdue(loan_body(), event_id)).encode(),
            key=b"k", headers=[(topics.DLQ_ORIGIN_HEADER, f"{gone}/0/5".encode()),
                               (topics.DLQ_GROUP_HEADER, b"dunwell-audit")])
    finally:
        await producer.stop()
    at = f"{topics.dlq(gone)}:{sent.partition}:{sent.offset}"
    answer = await cli(broker, "replay", at, "--yes", "--timeout", "20")
    assert answer.returncode == 2, answer.stderr
    assert f"topic {gone} does not exist" in answer.stderr and "Traceback" not in answer.stderr
    listed = await cli(broker, "show", f"{topics.dlq(gone)}:0:{2**63 - 1}", "--timeout", "20")
    assert listed.returncode == 2 and "no dead letter at" in listed.stderr, listed.stderr
