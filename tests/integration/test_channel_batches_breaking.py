"""What a helper tried against sends and receipts many to a request: a provider's batch answer
that is not what it should be, a batch refused as too large, the sink's outbox failing part-way
through a batch, a receipts batch the reminder refuses whole or answers with garbage, and the
receipts a batch expected outliving a restart of the sink."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from dunwell import devstack
from dunwell.sinks import Outbox, ProviderSink, Receipts, read_jsonl
from tests.helpers import served, wait_for
from tests.integration.test_channel_batches import gateway, keyed
from tests.integration.test_channels import QUICK

from services.reminder.api import ReceiptsIn
from services.reminder.channels import SENDS, ChannelError, send_all

AT = datetime(2026, 10, 14, 4, 0, tzinfo=UTC)


# --- a provider whose batch answers are canned ------------------------------------------------


@dataclass
class Canned:
    """A provider whose batch route answers what it is told, in turn (status, body); its
    single route takes every message."""

    answers: list[tuple[int, bytes]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                canned.seen.append(self.path)
                if self.path == "/v1/messages:batch" and canned.answers:
                    status, answer = canned.answers.pop(0)
                elif self.path == "/v1/messages:batch":
                    items = json.loads(body)["messages"]
                    status, answer = 200, json.dumps({"items": [
                        {"index": i, "status": 201, "provider_id": "b-" + m["idempotency_key"]}
                        for i, m in enumerate(items)]}).encode()
                else:
                    status = 201
                    answer = json.dumps({"provider_id": "p-" + json.loads(body)[
                        "idempotency_key"]}).encode()
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def canned() -> Iterator[tuple[Canned, str]]:
    provider = Canned()
    server = ThreadingHTTPServer(("127.0.0.1", 0), provider.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def items(*found: dict[str, Any]) -> tuple[int, bytes]:
    return 200, json.dumps({"items": list(found)}).encode()


def test_an_item_that_says_two_things_of_one_message_or_names_it_with_true_is_no_answer(
        canned: tuple[Canned, str]) -> None:
    provider, url = canned
    messages = keyed(4)
    provider.answers = [items(
        {"index": 0, "status": 201, "provider_id": "first"},
        {"index": 0, "status": 422, "error": {"code": "invalid"}},  # index 0 again
        {"index": True, "status": 201, "provider_id": "by-true"},  # not an index
        {"index": 2, "status": "201", "provider_id": "by-text"},  # a status that is text
        {"index": 3, "status": 201, "provider_id": "fine"},
        {"index": 7, "status": 201, "provider_id": "out-of-range"})]
    answers = gateway(url).send_many(messages)
    assert answers is not None
    assert [type(a) for a in answers[:3]] == [ChannelError] * 3  # tried again later
    assert answers[3] == "fine"


def test_a_huge_batch_answer_is_cut_off_and_asked_again_under_the_same_keys(
        canned: tuple[Canned, str]) -> None:
    provider, url = canned
    huge = b'{"items": [' + b'{"index": 0, "status": 201, "provider_id": "x"}, ' * 60000
    provider.answers = [(200, huge + b"]}"), (200, huge + b"]}")]
    messages = keyed(2)
    answers = gateway(url).send_many(messages)
    # Read no further than 2 MiB, judged no answer, and asked again: the third is the real one.
    assert answers == [f"b-{m.idempotency_key}" for m in messages]
    assert provider.seen.count("/v1/messages:batch") == 3


def test_a_batch_too_large_goes_one_by_one_and_later_batches_still_go_as_batches(
        canned: tuple[Canned, str]) -> None:
    provider, url = canned
    provider.answers = [(413, b'{"error": {"code": "too_large"}}')]
    sms_gateway = gateway(url)
    before = SENDS.labels("sms", "sent")._value.get()
    with ThreadPoolExecutor(4) as pool:
        first = send_all({"sms": sms_gateway}, keyed(3), pool)
        second = send_all({"sms": sms_gateway}, keyed(3, start=10), pool)
    assert first == [f"p-{m.idempotency_key}" for m in keyed(3)]
    assert second == [f"b-{m.idempotency_key}" for m in keyed(3, start=10)]
    assert provider.seen.count("/v1/messages:batch") == 2
    assert SENDS.labels("sms", "sent")._value.get() - before == 6  # each counted once


# --- the sink's batch route ---------------------------------------------------------------------


def test_a_batch_over_64_kb_is_taken_whole(tmp_path: Path) -> None:
    sink = ProviderSink(Outbox(tmp_path / "outbox")).start()
    try:
        long = [m.__class__(m.idempotency_key, "sms", m.to, m.text * 60) for m in keyed(80)]
        assert len(json.dumps([m.text for m in long]).encode()) > 64 * 1024
        answers = gateway(sink.url).send_many(long)
        assert answers is not None and all(isinstance(a, str) for a in answers)
        assert sink.requests == 1
        assert len(read_jsonl(tmp_path / "outbox" / "sms.jsonl")) == 80
    finally:
        sink.stop()


def test_an_outbox_that_fails_part_way_keeps_nothing_of_the_batch(tmp_path: Path) -> None:
    """The SMS lines were written, the push ones not: the SMS ones must not stay either, or a
    restarted sink answers a repeat with an id the sender was never given."""
    folder = tmp_path / "outbox"
    outbox = Outbox(folder)
    (folder / "push.jsonl").mkdir()  # the push file cannot be opened
    batch = [{"idempotency_key": "k-sms", "channel": "sms", "to": "+8613800000000",
              "text": "hi", "language": "zh-CN"},
             {"idempotency_key": "k-push", "channel": "push", "to": "B-1", "text": "hi",
              "language": "zh-CN"}]
    with pytest.raises(IsADirectoryError):
        outbox.accept_many(batch, AT)
    assert read_jsonl(folder / "sms.jsonl") == []
    (folder / "push.jsonl").rmdir()
    answers = outbox.accept_many(batch, AT)
    assert [new for _, new in answers] == [True, True]
    again = Outbox(folder).accept_many(batch, AT)  # a restarted sink
    assert again == [(provider_id, False) for provider_id, _ in answers]
    assert len(read_jsonl(folder / "sms.jsonl")) == 1


def test_an_outbox_whose_fsync_fails_keeps_no_line_of_the_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lines reached the file but not the disk: refused, so they are cut off again, and
    the retry's ids are the ones a restarted sink answers."""
    folder = tmp_path / "outbox"
    outbox = Outbox(folder)
    outbox.accept_many([{"idempotency_key": "k-0", "channel": "sms", "to": "+8613800000000",
                         "text": "before", "language": "zh-CN"}], AT)
    batch = [{"idempotency_key": f"k-{n}", "channel": "sms", "to": "+8613800000000",
              "text": "hi", "language": "zh-CN"} for n in (1, 2)]
    real, calls = os.fsync, []

    def first_fails(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "I/O error")
        real(fd)

    monkeypatch.setattr(os, "fsync", first_fails)
    with pytest.raises(OSError, match="I/O error"):
        outbox.accept_many(batch, AT)
    monkeypatch.setattr(os, "fsync", real)
    assert [e["idempotency_key"] for e in read_jsonl(folder / "sms.jsonl")] == ["k-0"]
    answers = outbox.accept_many(batch, AT)
    assert Outbox(folder).accept_many(batch, AT) == [(p, False) for p, _ in answers]


# --- receipts, as the reminder's batch route takes them ---------------------------------------


@dataclass
class ReminderDesk:
    """The reminder's receipts batch route as far as its body goes: a body its model refuses
    is a 422 for the whole request (a message id that is not a UUID, for one); `garbage`
    answers are given first, in turn."""

    port: int
    garbage: list[bytes] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # whole-request answers, in turn
    accepted: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/receipts/{channel}:batch")
        async def receipts(channel: str, request: Request) -> Response:
            self.requests += 1
            body = await request.json()
            if self.garbage:
                return Response(self.garbage.pop(0), media_type="application/json")
            if self.statuses:
                return JSONResponse({"error": {"code": "conflict"}},
                                    status_code=self.statuses.pop(0))
            try:
                ReceiptsIn.model_validate(body)
            except ValidationError:
                return JSONResponse({"error": {"code": "invalid_request"}}, status_code=422)
            self.accepted += [r["message_id"] for r in body["receipts"]]
            return JSONResponse({"items": [
                {"index": index, "message_id": r["message_id"], "status": "accepted"}
                for index, r in enumerate(body["receipts"])]})

        return app


@pytest.fixture
def reminder_desk() -> Iterator[ReminderDesk]:
    desk = ReminderDesk(devstack.free_port())
    with served(desk.app(), desk.port, "the reminder desk"):
        yield desk


def test_one_receipt_the_reminder_cannot_take_does_not_give_up_the_rest_of_its_batch(
        tmp_path: Path, reminder_desk: ReminderDesk) -> None:
    """A message sent under a key that is no UUID: its receipt is refused (422), alone."""
    receipts = Receipts(reminder_desk.url, lambda: "t", QUICK, workers=1)
    try:
        good = [m.idempotency_key for m in keyed(3)]
        receipts.expect_many([("sms", key, None) for key in [good[0], "not-a-uuid", *good[1:]]])
        wait_for(lambda: sorted(reminder_desk.accepted) == sorted(good), timeout=5,
                 every=0.02, what="the three receipts the reminder can take")
    finally:
        receipts.close()


@pytest.mark.parametrize("garbage", [b'{"items": 5}', b'{"items": [{"index": [0]}]}',
                                     b'{"items": [{"index": {}}]}'])
def test_a_garbled_answer_to_a_receipts_batch_is_tried_again(
        tmp_path: Path, reminder_desk: ReminderDesk, garbage: bytes) -> None:
    reminder_desk.garbage = [garbage]
    receipts = Receipts(reminder_desk.url, lambda: "t", QUICK, workers=1)
    try:
        key = keyed(1)[0].idempotency_key
        receipts.expect("sms", key)
        wait_for(lambda: reminder_desk.accepted == [key], timeout=5, every=0.02,
                 what="the receipt, posted again")
    finally:
        receipts.close()


def test_a_receipts_batch_answered_409_is_sent_again(
        tmp_path: Path, reminder_desk: ReminderDesk) -> None:
    """The reminder's batch route answers 409 when its receipts kept conflicting: "send it
    again", not "give them up"."""
    reminder_desk.statuses = [409]
    receipts = Receipts(reminder_desk.url, lambda: "t", QUICK, workers=1)
    try:
        keys = [m.idempotency_key for m in keyed(3)]
        receipts.expect_many([("sms", key, None) for key in keys])
        wait_for(lambda: sorted(reminder_desk.accepted) == sorted(keys), timeout=5,
                 every=0.02, what="the receipts, posted again")
    finally:
        receipts.close()


def test_receipts_a_batch_expected_are_posted_after_the_sink_restarts(
        tmp_path: Path, reminder_desk: ReminderDesk) -> None:
    folder = tmp_path / "outbox"
    closed = f"http://127.0.0.1:{devstack.free_port()}"  # nothing listens: none is posted
    first = ProviderSink(Outbox(folder), Receipts(closed, lambda: "t", QUICK)).start()
    messages = keyed(3)
    try:
        answers = gateway(first.url).send_many(messages)
        assert answers is not None and all(isinstance(a, str) for a in answers)
    finally:
        first.stop()  # at once: their receipts are still pending
    again = ProviderSink(Outbox(folder), Receipts(reminder_desk.url, lambda: "t", QUICK)).start()
    try:
        wait_for(lambda: sorted(reminder_desk.accepted) == sorted(
            m.idempotency_key for m in messages), timeout=5, every=0.02,
            what="the receipts left pending")
        # A repeat of the batch after they were posted expects none of them again.
        assert gateway(again.url).send_many(messages) == answers
    finally:
        again.stop()
    assert sorted(reminder_desk.accepted) == sorted(m.idempotency_key for m in messages)


def test_a_key_twice_in_one_batch_is_kept_once_and_answered_with_one_id(
        tmp_path: Path, reminder_desk: ReminderDesk) -> None:
    sink = ProviderSink(Outbox(tmp_path / "outbox"),
                        Receipts(reminder_desk.url, lambda: "t", QUICK)).start()
    try:
        (message,) = keyed(1)
        answers = gateway(sink.url).send_many([message, message])
        assert answers is not None and answers[0] == answers[1]
        assert len(read_jsonl(tmp_path / "outbox" / "sms.jsonl")) == 1
        wait_for(lambda: reminder_desk.accepted == [message.idempotency_key], timeout=5,
                 every=0.02, what="its one receipt")
    finally:
        sink.stop()
    assert reminder_desk.accepted == [message.idempotency_key]
