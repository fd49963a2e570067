"""Sends many to a request: the gateway's `send_many` against the provider sink's
`POST /v1/messages:batch` on a loopback port, each message answered as the single route would
answer it, and `send_all`'s way of handing a claim's messages to the channels."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dunwell.sinks import (
    MESSAGES_A_BATCH,
    Behaviour,
    Outbox,
    ProviderSink,
    Receipts,
    read_jsonl,
)
from tests.helpers import wait_for
from tests.integration.test_channels import QUICK, ReceiptDesk, desk, sms  # noqa: F401

from services.reminder.channels import (
    SENDS,
    ChannelError,
    ChannelRefused,
    HttpGateway,
    OutboundMessage,
    Retry,
    send_all,
)

REFUSED = "+8613700000000"
UNREACHABLE = "+8613900000000"


def keyed(count: int, start: int = 1, to: str = "+8613800000000") -> list[OutboundMessage]:
    return [sms(f"11111111-0000-4000-8000-{n:012d}", to) for n in range(start, start + count)]


@pytest.fixture
def provider(tmp_path: Path, desk: ReceiptDesk) -> Iterator[ProviderSink]:  # noqa: F811
    sink = ProviderSink(Outbox(tmp_path / "outbox"), Receipts(desk.url, lambda: "t", QUICK),
                        behaviour=Behaviour(refuse_to=frozenset({REFUSED}),
                                            fail_to=frozenset({UNREACHABLE}))).start()
    try:
        yield sink
    finally:
        sink.stop()


def gateway(url: str) -> HttpGateway:
    return HttpGateway(url, retry=Retry(attempts=4, first_pause=0.05, deadline=3))


def test_a_batch_is_kept_in_one_request_and_each_message_answered(
        provider: ProviderSink, tmp_path: Path, desk: ReceiptDesk) -> None:  # noqa: F811
    messages = [*keyed(3), sms("22222222-0000-4000-8000-000000000001", REFUSED),
                sms("22222222-0000-4000-8000-000000000002", UNREACHABLE)]
    answers = gateway(provider.url).send_many(messages)
    assert answers is not None and len(answers) == 5
    assert all(isinstance(a, str) and a.startswith("prov-") for a in answers[:3])
    assert isinstance(answers[3], ChannelRefused)
    assert "400" in str(answers[3]) and "recipient_refused" in str(answers[3])
    assert isinstance(answers[4], str)  # taken; its receipt will say failed
    assert provider.requests == 1
    kept = read_jsonl(tmp_path / "outbox" / "sms.jsonl")
    assert [e["idempotency_key"] for e in kept] == [m.idempotency_key for m in
                                                    messages if m.to != REFUSED]
    # The same batch again: the same ids, nothing kept twice, no receipt expected twice.
    again = gateway(provider.url).send_many(messages)
    assert again is not None and again[:3] == answers[:3] and again[4] == answers[4]
    assert len(read_jsonl(tmp_path / "outbox" / "sms.jsonl")) == 4
    wait_for(lambda: len(desk.received) >= 4, timeout=5, every=0.02, what="four receipts")
    by_key = {body["message_id"]: body for _, body, _ in desk.received}
    assert set(by_key) == {m.idempotency_key for m in messages if m.to != REFUSED}
    assert by_key[messages[4].idempotency_key]["status"] == "failed"
    assert len(desk.received) == 4


def test_a_busy_provider_is_asked_again_for_the_whole_batch(tmp_path: Path) -> None:
    sink = ProviderSink(Outbox(tmp_path / "outbox"), behaviour=Behaviour(busy_first=2)).start()
    try:
        answers = gateway(sink.url).send_many(keyed(4))
        assert answers is not None and all(isinstance(a, str) for a in answers)
        assert sink.requests == 3
        assert len(read_jsonl(tmp_path / "outbox" / "sms.jsonl")) == 4
    finally:
        sink.stop()


def test_a_provider_that_stays_down_fails_every_message_of_the_batch() -> None:
    with socket_closed() as url:
        answers = HttpGateway(url, retry=Retry(attempts=2, first_pause=0.01, deadline=1)
                              ).send_many(keyed(3))
    assert answers is not None and len(answers) == 3
    assert all(type(a) is ChannelError for a in answers)


def post(sink: ProviderSink, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=5)
    data = raw if raw is not None else json.dumps(body).encode()
    connection.request("POST", "/v1/messages:batch", data,
                       {"content-type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def test_the_sinks_batch_route_refuses_what_is_not_a_batch_and_keeps_nothing(
        tmp_path: Path) -> None:
    sink = ProviderSink(Outbox(tmp_path / "outbox")).start()
    try:
        item = {"idempotency_key": "k-1", "channel": "sms", "to": "+8613800000000",
                "text": "hi"}
        for body in ([item], {"messages": []}, {"messages": [item] * (MESSAGES_A_BATCH + 1)},
                     {"messages": "x"}, None):
            status, answer = post(sink, body)
            assert status == 422, body
            assert answer["error"]["code"] == "invalid"
        status, _ = post(sink, None, raw=b"{not json")
        assert status == 400
        status, answer = post(sink, {"messages": [item, {**item, "channel": "fax"},
                                                  {**item, "to": 5}, "x"]})
        assert status == 200
        assert [i["status"] for i in answer["items"]] == [201, 422, 422, 422]
        assert answer["items"][2]["error"]["message"] == "missing or not text: to"
        assert [e["idempotency_key"] for e in read_jsonl(tmp_path / "outbox" / "sms.jsonl")
                ] == ["k-1"]
    finally:
        sink.stop()


class _OnlySingles(BaseHTTPRequestHandler):
    """A provider with the single route only: its batch route is a 404."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append(self.path)
        if self.path != "/v1/messages":
            answer, status = b'{"error": "not_found"}', 404
        else:
            answer = json.dumps({"provider_id": "p-" + json.loads(body)["idempotency_key"]
                                 }).encode()
            status = 201
        self.send_response(status)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_provider_without_batches_gets_the_messages_one_by_one() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OnlySingles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        singles = gateway(url)
        messages = keyed(3)
        with ThreadPoolExecutor(4) as pool:
            first = send_all({"sms": singles}, messages, pool)
            assert not singles.takes_batches
            second = send_all({"sms": singles}, keyed(3, start=10), pool)
        assert first == [f"p-{m.idempotency_key}" for m in messages]
        assert all(isinstance(a, str) for a in second)
        assert _OnlySingles.seen.count("/v1/messages:batch") == 1  # asked once, then not
        assert _OnlySingles.seen.count("/v1/messages") == 6
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_send_all_batches_a_channel_and_counts_each_message(provider: ProviderSink) -> None:
    sms_gateway = gateway(provider.url)
    sent_before = SENDS.labels("sms", "sent")._value.get()
    refused_before = SENDS.labels("sms", "refused")._value.get()
    messages = [*keyed(5), sms("22222222-0000-4000-8000-000000000001", REFUSED)]
    with ThreadPoolExecutor(4) as pool:
        answers = send_all({"sms": sms_gateway}, messages, pool)
    assert provider.requests == 1  # one batch for six
    assert [isinstance(a, str) for a in answers] == [True] * 5 + [False]
    assert SENDS.labels("sms", "sent")._value.get() - sent_before == 5
    assert SENDS.labels("sms", "refused")._value.get() - refused_before == 1


class socket_closed:
    """A loopback URL where nothing listens."""

    def __enter__(self) -> str:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self._probe = probe
        return f"http://127.0.0.1:{probe.getsockname()[1]}"

    def __exit__(self, *exc_info: object) -> None:
        self._probe.close()
