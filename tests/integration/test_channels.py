# ruff: noqa: RUF001 - the Chinese texts use full-width punctuation, as they should
"""The channel adapters against the embedded default's real sinks on loopback ports.

The provider sink and the SMTP sink are the things under test together with the gateways;
the reminder service's receipt route is not, so a tiny stand-in takes the receipts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import logging
import mailbox
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from dunwell import devstack, sinks
from dunwell.sinks import (
    Behaviour,
    MaildirKeeper,
    Outbox,
    ProviderSink,
    ReceiptPolicy,
    Receipts,
    SmtpSink,
    read_jsonl,
)
from tests.helpers import served, wait_for

from services.reminder.channels import (
    ChannelError,
    ChannelRefused,
    HttpGateway,
    OutboundMessage,
    Retry,
    SmtpGateway,
    SmtpServer,
    message_id,
)

PHONE = "+8613800000000"
QUICK = ReceiptPolicy(delay=0.05, first_pause=0.05, longest_pause=0.2, attempts=5,
                      attempts_on_404=3)


def sms(key: str = "11111111-0000-4000-8000-000000000001", to: str = PHONE) -> OutboundMessage:
    return OutboundMessage(key, "sms", to, "您的借款L-1已逾期，逾期金额1200.50 CNY。")


# --- the reminder service's receipt route, stood in for ---------------------------------------


@dataclass
class ReceiptDesk:
    """Takes receipts as the reminder service's batch route would, answering the statuses it
    is told to: a 404 is each receipt's own `rejected` (`not_found`) in a 200, as that route
    answers a receipt whose send is not known; any other status is the whole request's."""

    port: int
    answers: list[int] = field(default_factory=list)  # then 200, every receipt accepted
    received: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/receipts/{channel}:batch")
        async def receipts(channel: str, request: Request) -> Response:
            body = await request.json()
            for receipt in body["receipts"]:
                self.received.append((channel, receipt,
                                      request.headers.get("authorization", "")))
            status = self.answers.pop(0) if self.answers else 200
            if status not in (200, 404):
                return Response(status_code=status)
            said = "accepted" if status == 200 else "rejected"
            return JSONResponse({"items": [
                {"index": index, "message_id": receipt["message_id"], "status": said}
                for index, receipt in enumerate(body["receipts"])]})

        return app


@pytest.fixture
def desk() -> Iterator[ReceiptDesk]:
    desk = ReceiptDesk(devstack.free_port())
    with served(desk.app(), desk.port, "the receipt desk"):
        yield desk


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox"


def start_provider(outbox: Path, desk: ReceiptDesk | None = None,
                   behaviour: Behaviour | None = None) -> ProviderSink:
    receipts = Receipts(desk.url, lambda: "provider-token", QUICK) if desk else None
    return ProviderSink(Outbox(outbox), receipts, behaviour=behaviour).start()


@pytest.fixture
def provider(outbox: Path, desk: ReceiptDesk) -> Iterator[ProviderSink]:
    sink = start_provider(outbox, desk, Behaviour(fail_to=frozenset({"+8613900000000"}),
                                                  refuse_to=frozenset({"+8613700000000"})))
    try:
        yield sink
    finally:
        sink.stop()


def quick_gateway(sink: ProviderSink, token: str | None = None) -> HttpGateway:
    return HttpGateway(sink.url, token, retry=Retry(attempts=4, first_pause=0.05, deadline=3))


# --- SMS and push -----------------------------------------------------------------------------


def test_a_send_is_recorded_and_its_receipt_posted(provider: ProviderSink, outbox: Path,
                                                   desk: ReceiptDesk) -> None:
    message = sms()
    provider_id = quick_gateway(provider).send(message)
    [entry] = read_jsonl(outbox / "sms.jsonl")
    assert entry["provider_id"] == provider_id
    assert {k: entry[k] for k in ("idempotency_key", "channel", "to", "text", "language")} == {
        "idempotency_key": message.idempotency_key, "channel": "sms", "to": PHONE,
        "text": message.text, "language": "zh-CN"}
    wait_for(lambda: desk.received, timeout=5, every=0.02, what="a receipt")
    [(channel, body, authorization)] = desk.received
    assert channel == "sms"
    assert authorization == "Bearer provider-token"
    assert body["message_id"] == message.idempotency_key
    assert body["status"] == "delivered"
    assert dt.datetime.fromisoformat(body["at"]).utcoffset() == dt.timedelta(0)
    assert body["at"].endswith("Z")


def test_a_repeated_key_answers_the_first_provider_id_and_is_kept_once(
        provider: ProviderSink, outbox: Path, desk: ReceiptDesk) -> None:
    gateway = quick_gateway(provider)
    first = gateway.send(sms())
    assert gateway.send(sms()) == first
    assert len(read_jsonl(outbox / "sms.jsonl")) == 1
    wait_for(lambda: desk.received, timeout=5, every=0.02, what="a receipt")
    time.sleep(0.3)
    assert len(desk.received) == 1


def test_replicas_sending_one_key_at_once_leave_one_message(provider: ProviderSink,
                                                            outbox: Path) -> None:
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(quick_gateway(provider).send(sms())))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1 and len(ids) == 8
    assert len(read_jsonl(outbox / "sms.jsonl")) == 1


def test_push_goes_to_its_own_outbox(provider: ProviderSink, outbox: Path) -> None:
    push = OutboundMessage("22222222-0000-4000-8000-000000000001", "push", "B-1", "提醒",
                           language="en")
    quick_gateway(provider).send(push)
    [entry] = read_jsonl(outbox / "push.jsonl")
    assert (entry["to"], entry["language"]) == ("B-1", "en")
    assert not (outbox / "sms.jsonl").exists()


def test_a_refusal_is_not_tried_again(provider: ProviderSink, outbox: Path) -> None:
    with pytest.raises(ChannelRefused, match=r"\(400, code recipient_refused\)") as refused:
        quick_gateway(provider).send(sms(to="+8613700000000"))
    assert provider.requests == 1
    assert "13700000000" not in str(refused.value)
    assert not (outbox / "sms.jsonl").exists()


def test_a_busy_provider_is_tried_again(outbox: Path) -> None:
    sink = start_provider(outbox, behaviour=Behaviour(busy_first=2))
    try:
        provider_id = quick_gateway(sink).send(sms())
    finally:
        sink.stop()
    assert sink.requests == 3
    assert [e["provider_id"] for e in read_jsonl(outbox / "sms.jsonl")] == [provider_id]


def test_a_provider_that_is_not_there_is_a_channel_error() -> None:
    gateway = HttpGateway(f"http://127.0.0.1:{devstack.free_port()}",
                          retry=Retry(attempts=2, first_pause=0.05, deadline=2))
    with pytest.raises(ChannelError) as raised:
        gateway.send(sms())
    assert not isinstance(raised.value, ChannelRefused)


def test_the_provider_token_is_sent(outbox: Path) -> None:
    sink = start_provider(outbox, behaviour=Behaviour(api_token="s3cret"))
    try:
        assert quick_gateway(sink, token="s3cret").send(sms())
    finally:
        sink.stop()


def test_a_wrong_token_is_not_a_refusal_of_the_message(outbox: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """An expired token is this installation's fault: the reminder waits (ChannelError) and
    goes once the token is right, instead of being dropped for good as refused."""
    sink = start_provider(outbox, behaviour=Behaviour(api_token="s3cret"))
    try:
        with caplog.at_level(logging.WARNING, logger="services.reminder.channels"), \
                pytest.raises(ChannelError, match="401") as raised:
            quick_gateway(sink, token="expired").send(sms())
        assert not isinstance(raised.value, ChannelRefused)
        assert sink.requests == 1
        assert [r.levelname for r in caplog.records] == ["ERROR"]
        assert "401" in caplog.text and "13800000000" not in caplog.text
        assert quick_gateway(sink, token="s3cret").send(sms())  # the reminder, tried later
    finally:
        sink.stop()


def test_a_base_url_that_is_wrong_is_not_a_refusal_of_the_message(
        provider: ProviderSink) -> None:
    gateway = HttpGateway(f"{provider.url}/wrong", retry=Retry(attempts=4, deadline=3))
    with pytest.raises(ChannelError, match="404") as raised:
        gateway.send(sms())
    assert not isinstance(raised.value, ChannelRefused)


# --- a provider that trickles its answer ----------------------------------------------------


@dataclass
class Trickler:
    """A provider on loopback that sends its answer a byte at a time, `every` seconds apart:
    `what` is "headers" (the status line itself trickles) or "body"."""

    what: str
    every: float
    port: int = 0
    connections: list[socket.socket] = field(default_factory=list)

    def serve(self, listener: socket.socket, stopping: threading.Event) -> None:
        listener.settimeout(0.05)
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            self.connections.append(connection)
            threading.Thread(target=self._answer, args=(connection, stopping),
                             daemon=True).start()

    def _answer(self, connection: socket.socket, stopping: threading.Event) -> None:
        """Ten bytes trickled, then the rest of a good answer at once."""
        body = b'          {"provider_id": "too-late"}'
        answer = (b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n" % len(body)) + body
        start = 0 if self.what == "headers" else answer.index(b"\r\n\r\n") + 4
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            connection.sendall(answer[:start])
            for byte in answer[start:start + 10]:
                if stopping.wait(self.every):
                    return
                connection.sendall(bytes([byte]))
            connection.sendall(answer[start + 10:])


@pytest.fixture(params=["headers", "body"])
def trickler(request: pytest.FixtureRequest) -> Iterator[Trickler]:
    listener = socket.create_server(("127.0.0.1", 0))
    trickler = Trickler(request.param, every=0.45, port=listener.getsockname()[1])
    stopping = threading.Event()
    thread = threading.Thread(target=trickler.serve, args=(listener, stopping), daemon=True)
    thread.start()
    try:
        yield trickler
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()


def test_a_trickling_provider_cannot_hold_a_send_past_its_deadline(trickler: Trickler) -> None:
    """Each read gets a byte within the read timeout, so only the deadline ends the send:
    on time, even when the last byte came just before it (the next read is cut off)."""
    gateway = HttpGateway(f"http://127.0.0.1:{trickler.port}", read_timeout=1.0,
                          retry=Retry(attempts=4, first_pause=0.05, deadline=1.0))
    started = time.monotonic()
    with pytest.raises(ChannelError, match="within") as raised:
        gateway.send(sms())
    took = time.monotonic() - started
    gateway.close()
    assert not isinstance(raised.value, ChannelRefused)
    assert took < 1.0 + 0.25  # a read waiting for the next byte would end at 1.35 s
    assert len(trickler.connections) == 1


# --- the provider sink's outbox across a crash ------------------------------------------------


def _message(key: str, text: str = "t") -> dict[str, str]:
    return {"idempotency_key": key, "channel": "sms", "to": PHONE, "text": text,
            "language": "zh-CN"}


def test_a_line_a_crash_cut_short_does_not_swallow_the_next_message(outbox: Path) -> None:
    """The crash left half a line, cut inside a character; the next message is appended on
    a line of its own, so a restarted sink still answers its repeat with the first id."""
    outbox.mkdir()
    (outbox / "sms.jsonl").write_bytes(
        '{"idempotency_key": "k0", "channel": "sms", "text": "您'.encode()[:-1])
    first, new = Outbox(outbox).accept(_message("k1"), dt.datetime.now(dt.UTC))
    assert new
    again, new = Outbox(outbox).accept(_message("k1"), dt.datetime.now(dt.UTC))
    assert (again, new) == (first, False)  # one SMS under one key
    assert [e["idempotency_key"] for e in read_jsonl(outbox / "sms.jsonl")] == ["k1"]


def test_an_unreadable_line_is_passed_over_and_the_records_after_it_are_read(
        outbox: Path) -> None:
    outbox.mkdir()
    good = [json.dumps({**_message(f"k{i}"), "provider_id": f"prov-{i}"}) for i in range(3)]
    (outbox / "sms.jsonl").write_bytes(
        good[0].encode() + b"\n{broken\n" + b"\xff\xfe\n" + b"[1, 2]\n" + good[1].encode()
        + b"\n\n" + good[2].encode() + b"\n")
    box = Outbox(outbox)
    for i in range(3):
        assert box.accept(_message(f"k{i}"), dt.datetime.now(dt.UTC)) == (f"prov-{i}", False)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_text_with_a_line_separator_in_it_is_still_known_after_a_restart(
        outbox: Path, separator: str) -> None:
    """Kept as UTF-8 (ensure_ascii=False), such a character is raw in its line; it ends no
    JSON line, so the record must not be split there when read back."""
    first, _ = Outbox(outbox).accept(_message("k1", f"第一行{separator}第二行"),
                                     dt.datetime.now(dt.UTC))
    assert Outbox(outbox).accept(_message("k1"), dt.datetime.now(dt.UTC)) == (first, False)


# --- receipts across a stop, a repeat, a token being renewed -------------------------------------


def test_a_receipt_answered_401_is_tried_again(provider: ProviderSink,
                                               desk: ReceiptDesk) -> None:
    """The token may be being renewed: a 401 is tried again, a few times, like a 5xx."""
    desk.answers = [401, 401]
    quick_gateway(provider).send(sms())
    wait_for(lambda: len(desk.received) == 3, timeout=5, every=0.02, what="three tries")
    assert provider.receipts is not None
    wait_for(lambda: provider.receipts and provider.receipts.posted, timeout=2, every=0.02)


def test_a_receipt_answered_401_for_ever_is_given_up_after_a_few_tries(
        outbox: Path, desk: ReceiptDesk) -> None:
    policy = ReceiptPolicy(delay=0.05, first_pause=0.05, longest_pause=0.1, attempts=10,
                           attempts_on_401=3)
    desk.answers = [401] * 10
    sink = ProviderSink(Outbox(outbox), Receipts(desk.url, lambda: "old-token", policy)).start()
    try:
        quick_gateway(sink).send(sms())
        wait_for(lambda: len(desk.received) >= 3, timeout=5, every=0.02)
        time.sleep(0.4)
        assert len(desk.received) == 3
    finally:
        sink.stop()


def test_receipts_pending_at_a_stop_are_posted_after_the_next_start(
        outbox: Path, desk: ReceiptDesk) -> None:
    desk.answers = [503] * 1000  # the reminder service is failing when the sink stops
    patient = ReceiptPolicy(delay=0.05, first_pause=0.05, longest_pause=0.2, attempts=100)
    first = ProviderSink(Outbox(outbox), Receipts(desk.url, lambda: "t", patient)).start()
    try:
        quick_gateway(first).send(sms())
        wait_for(lambda: desk.received, timeout=5, every=0.02, what="a first try")
    finally:
        first.stop()
    desk.answers = []
    again = start_provider(outbox, desk)
    try:
        assert again.receipts is not None
        wait_for(lambda: again.receipts and again.receipts.posted, timeout=5, every=0.02,
                 what="the receipt kept over the stop")
        [posted] = again.receipts.posted
        assert posted["message_id"] == sms().idempotency_key
    finally:
        again.stop()


def test_a_repeated_send_schedules_a_receipt_that_was_never_posted(
        outbox: Path, desk: ReceiptDesk) -> None:
    desk.answers = [403]  # given up at once
    sink = start_provider(outbox, desk)
    try:
        gateway = quick_gateway(sink)
        first = gateway.send(sms())
        wait_for(lambda: desk.received, timeout=5, every=0.02, what="a receipt given up")
        time.sleep(0.2)
        assert sink.receipts is not None and not sink.receipts.posted
        assert gateway.send(sms()) == first  # the reminder's retry after a lost answer
        wait_for(lambda: sink.receipts and sink.receipts.posted, timeout=5, every=0.02,
                 what="the receipt, scheduled again")
    finally:
        sink.stop()
    assert len(read_jsonl(outbox / "sms.jsonl")) == 1


def test_a_repeated_send_before_any_receipt_journal_schedules_its_receipt(
        outbox: Path, desk: ReceiptDesk) -> None:
    """A sink that kept no receipts (none configured) restarted with them: the repeat is
    told to the reminder service, since nothing says it ever was."""
    first = start_provider(outbox)
    try:
        provider_id = quick_gateway(first).send(sms())
    finally:
        first.stop()
    again = start_provider(outbox, desk)
    try:
        assert quick_gateway(again).send(sms()) == provider_id
        wait_for(lambda: desk.received, timeout=5, every=0.02, what="a receipt")
    finally:
        again.stop()


def test_a_posted_receipt_is_not_posted_again_after_a_restart(outbox: Path,
                                                              desk: ReceiptDesk) -> None:
    first = start_provider(outbox, desk)
    try:
        quick_gateway(first).send(sms())
        wait_for(lambda: first.receipts and first.receipts.posted, timeout=5, every=0.02)
    finally:
        first.stop()
    again = start_provider(outbox, desk)
    try:
        quick_gateway(again).send(sms())  # a repeat
        time.sleep(0.4)
    finally:
        again.stop()
    assert len(desk.received) == 1


# --- the provider sink's answers to malformed requests -------------------------------------------


def _raw(port: int, request: bytes) -> tuple[int, dict[str, Any], str | None]:
    """`request` sent as is; the status, JSON body and Connection header of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, json.loads(response.read()), response.getheader("connection")


def _post(headers: str, body: bytes = b"") -> bytes:
    return (f"POST /v1/messages HTTP/1.1\r\nHost: sink\r\n{headers}\r\n").encode() + body


@pytest.mark.parametrize(("request_", "ends"), [
    (_post("Content-Length: abc\r\n", b"{}"), True),
    (_post("Content-Length: -1\r\n", b"{}"), True),
    (_post("Content-Length: 2\r\nContent-Length: 3\r\n", b"{}"), True),
    (_post("Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"), True),
    (_post("Content-Length: 60000\r\n", b"[" * 30000 + b"]" * 30000), False),
    (_post("Content-Length: 9\r\n", b"not json!"), False),
    (_post("Content-Length: 2\r\n", b"\xff\xfe"), False)])
def test_a_malformed_request_is_answered_400_with_json(outbox: Path, request_: bytes,
                                                       ends: bool) -> None:
    sink = start_provider(outbox)
    try:
        status, body, connection = _raw(sink.port, request_)
        assert status == 400
        assert body["error"]["code"] == "invalid"
        assert (connection == "close") is ends
        ok = json.dumps({"idempotency_key": "k", "channel": "sms", "to": PHONE,
                         "text": "t"}).encode()
        assert _raw(sink.port, _post(f"Content-Length: {len(ok)}\r\n", ok))[0] == 201
    finally:
        sink.stop()


def test_a_body_that_does_not_come_is_answered_not_waited_for(
        outbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "BODY_SECONDS", 0.3)
    sink = start_provider(outbox)
    try:
        started = time.monotonic()
        status, body, connection = _raw(sink.port, _post("Content-Length: 100\r\n", b"{"))
        assert time.monotonic() - started < 2
        assert (status, body["error"]["code"], connection) == (400, "invalid", "close")
    finally:
        sink.stop()


def test_a_body_too_large_is_answered_413_and_the_answer_arrives(outbox: Path) -> None:
    sink = start_provider(outbox)
    try:
        big = b"x" * (sinks.MAX_BODY + 10)
        status, body, _ = _raw(sink.port, _post(f"Content-Length: {len(big)}\r\n", big))
        assert (status, body["error"]["code"]) == (413, "too_large")
    finally:
        sink.stop()


def test_a_restarted_sink_still_knows_the_first_id(outbox: Path) -> None:
    first_sink = start_provider(outbox)
    try:
        first = quick_gateway(first_sink).send(sms())
    finally:
        first_sink.stop()
    again = start_provider(outbox)
    try:
        assert quick_gateway(again).send(sms()) == first
    finally:
        again.stop()
    assert len(read_jsonl(outbox / "sms.jsonl")) == 1


def test_a_failed_delivery_is_reported(provider: ProviderSink, desk: ReceiptDesk) -> None:
    quick_gateway(provider).send(sms(to="+8613900000000"))
    wait_for(lambda: desk.received, timeout=5, every=0.02, what="a receipt")
    body = desk.received[0][1]
    assert (body["status"], body["reason"]) == ("failed", "unreachable")


def test_a_receipt_is_tried_again_while_the_reminder_service_fails(
        provider: ProviderSink, desk: ReceiptDesk) -> None:
    desk.answers = [503, 500, 404]
    quick_gateway(provider).send(sms())
    wait_for(lambda: len(desk.received) == 4, timeout=5, every=0.02, what="four tries")
    bodies = [body for _, body, _ in desk.received]
    assert all(body == bodies[0] for body in bodies)  # the same receipt, the same `at`
    assert provider.receipts is not None
    wait_for(lambda: provider.receipts and provider.receipts.posted, timeout=2, every=0.02)


def test_a_receipt_refused_with_4xx_is_given_up(provider: ProviderSink,
                                                desk: ReceiptDesk) -> None:
    desk.answers = [403, 202]
    quick_gateway(provider).send(sms())
    wait_for(lambda: desk.received, timeout=5, every=0.02, what="a receipt")
    time.sleep(0.5)
    assert len(desk.received) == 1


def test_a_404_receipt_is_tried_only_a_few_times(provider: ProviderSink,
                                                 desk: ReceiptDesk) -> None:
    desk.answers = [404] * 10
    quick_gateway(provider).send(sms())
    wait_for(lambda: len(desk.received) >= QUICK.attempts_on_404, timeout=5, every=0.02)
    time.sleep(0.5)
    assert len(desk.received) == QUICK.attempts_on_404


# --- e-mail -------------------------------------------------------------------------------------

MAIL = OutboundMessage("33333333-0000-4000-8000-000000000001", "email", "wang@example.org",
                       "王芳，您好：\n\n您的借款L-1已逾期，逾期金额1200.50 CNY。\n",
                       subject="借款L-1还款提醒")
FROM = "dunwell <reminders@dunwell.localhost>"


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def smtp_sink(maildir: Path) -> Iterator[SmtpSink]:
    sink = SmtpSink(maildir, devstack.free_port()).start()
    try:
        yield sink
    finally:
        sink.stop()


def kept(maildir: Path) -> list[mailbox.MaildirMessage]:
    return [message for _, message in mailbox.Maildir(maildir, create=False).items()]


def test_a_mail_in_chinese_reaches_the_maildir_under_its_message_id(
        smtp_sink: SmtpSink, maildir: Path) -> None:
    gateway = SmtpGateway(SmtpServer(port=smtp_sink.port, starttls=False), FROM)
    assert gateway.send(MAIL) == message_id(MAIL.idempotency_key)
    [stored] = kept(maildir)
    mail = message_from_bytes(stored.as_bytes(), policy=default)
    assert mail["Message-ID"] == f"<{MAIL.idempotency_key}@dunwell>"
    assert str(make_header(decode_header(mail["Subject"]))) == "借款L-1还款提醒"
    assert mail.get_content().replace("\r\n", "\n") == MAIL.text
    assert mail["To"] == "wang@example.org"


def test_a_resend_is_recognisable_by_its_message_id(smtp_sink: SmtpSink, maildir: Path) -> None:
    gateway = SmtpGateway(SmtpServer(port=smtp_sink.port), FROM)
    gateway.send(MAIL)
    gateway.send(MAIL)
    assert {m["Message-ID"] for m in kept(maildir)} == {message_id(MAIL.idempotency_key)}


def test_a_refused_recipient_is_a_refusal(smtp_sink: SmtpSink, maildir: Path) -> None:
    gateway = SmtpGateway(SmtpServer(port=smtp_sink.port), FROM)
    nobody = OutboundMessage("k-1", "email", "nobody@example.invalid", "text", subject="s")
    with pytest.raises(ChannelRefused, match="550") as refused:
        gateway.send(nobody)
    assert "example.invalid" not in str(refused.value)
    assert kept(maildir) == []


@pytest.fixture
def plain_relay(maildir: Path) -> Iterator[tuple[int, list[str]]]:
    """A relay without SMTPUTF8; yields its port and the envelope recipients it was given."""
    recipients: list[str] = []

    class Keeper(MaildirKeeper):
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                              rcpt_options: list[str]) -> str:
            recipients.append(address)
            return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    port = devstack.free_port()
    controller = Controller(Keeper(maildir), hostname="127.0.0.1", port=port,
                            enable_SMTPUTF8=False)
    controller.start()
    try:
        yield port, recipients
    finally:
        controller.stop()


def test_a_domain_in_another_script_reaches_a_relay_without_smtputf8(
        plain_relay: tuple[int, list[str]], maildir: Path) -> None:
    port, recipients = plain_relay
    to_chinese_domain = OutboundMessage(MAIL.idempotency_key, "email", "wang@例子.中国",
                                        MAIL.text, subject=MAIL.subject)
    SmtpGateway(SmtpServer(port=port), FROM).send(to_chinese_domain)
    assert recipients == ["wang@xn--fsqu00a.xn--fiqs8s"]
    [stored] = kept(maildir)
    assert stored["To"] == "wang@xn--fsqu00a.xn--fiqs8s"


def test_a_local_part_in_another_script_is_refused_by_a_relay_without_smtputf8(
        plain_relay: tuple[int, list[str]], maildir: Path) -> None:
    """Not a ChannelError tried again for ever: this relay will never take the address."""
    port, _ = plain_relay
    to_chinese_name = OutboundMessage(MAIL.idempotency_key, "email", "王芳@example.com",
                                      MAIL.text, subject=MAIL.subject)
    with pytest.raises(ChannelRefused, match="SMTPUTF8") as refused:
        SmtpGateway(SmtpServer(port=port), FROM).send(to_chinese_name)
    assert "王芳" not in str(refused.value)
    assert kept(maildir) == []


def test_a_local_part_in_another_script_goes_to_a_relay_with_smtputf8(
        smtp_sink: SmtpSink, maildir: Path) -> None:
    to_chinese_name = OutboundMessage(MAIL.idempotency_key, "email", "王芳@例子.中国",
                                      MAIL.text, subject=MAIL.subject)
    SmtpGateway(SmtpServer(port=smtp_sink.port), FROM).send(to_chinese_name)
    [stored] = kept(maildir)
    assert message_from_bytes(stored.as_bytes(), policy=default)["To"] == \
        "王芳@xn--fsqu00a.xn--fiqs8s"


def test_a_relay_that_is_not_there_is_a_channel_error() -> None:
    gateway = SmtpGateway(SmtpServer(port=devstack.free_port(), timeout=2), FROM)
    with pytest.raises(ChannelError) as raised:
        gateway.send(MAIL)
    assert not isinstance(raised.value, ChannelRefused)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as a private relay's own CA would issue."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "relay.pem", folder / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_relay(tmp_path: Path, maildir: Path) -> Iterator[tuple[int, Path]]:
    """A relay that insists on STARTTLS; yields its port and the certificate to trust."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = devstack.free_port()
    controller = Controller(MaildirKeeper(maildir), hostname="127.0.0.1", port=port,
                            tls_context=context, require_starttls=True)
    controller.start()
    try:
        yield port, cert
    finally:
        controller.stop()


def test_starttls_to_a_relay_that_requires_it(tls_relay: tuple[int, Path],
                                              maildir: Path) -> None:
    port, cert = tls_relay
    trust = ssl.create_default_context(cafile=str(cert))
    SmtpGateway(SmtpServer(port=port, starttls=True, tls=trust), FROM).send(MAIL)
    assert [m["Message-ID"] for m in kept(maildir)] == [message_id(MAIL.idempotency_key)]


def test_without_starttls_such_a_relay_is_a_channel_error_not_a_refusal(
        tls_relay: tuple[int, Path], maildir: Path) -> None:
    port, _ = tls_relay
    with pytest.raises(ChannelError) as raised:
        SmtpGateway(SmtpServer(port=port, starttls=False), FROM).send(MAIL)
    assert not isinstance(raised.value, ChannelRefused)  # our setting, not the message
    assert kept(maildir) == []


def test_an_untrusted_certificate_is_a_channel_error(tls_relay: tuple[int, Path]) -> None:
    port, _ = tls_relay
    with pytest.raises(ChannelError, match="SSL"):
        SmtpGateway(SmtpServer(port=port, starttls=True), FROM).send(MAIL)


# --- the sinks as devstack starts them -----------------------------------------------------------


def test_devstack_starts_both_sinks_and_sigterm_stops_them(tmp_path: Path,
                                                           desk: ReceiptDesk) -> None:
    var = tmp_path / "var"
    sinks = devstack.start_sinks(var, desk.url, var / "logs", receipt_delay=0.05,
                                 ports={"provider": devstack.free_port(),
                                        "smtp": devstack.free_port()})
    try:
        env = sinks.reminder_env()
        HttpGateway(env["REMINDER_SMS_GATEWAY_URL"]).send(sms())
        SmtpGateway(SmtpServer(port=int(env["REMINDER_SMTP_PORT"])), FROM).send(MAIL)
        wait_for(lambda: desk.received, timeout=10, every=0.05, what="a receipt")
        assert desk.received[0][2].startswith("Bearer ey")  # a JWT minted by devstack
        assert (var / "provider.token").stat().st_mode & 0o777 == 0o600
    finally:
        for process in (sinks.provider, sinks.smtp):
            process.popen.send_signal(signal.SIGTERM)
        codes = [process.popen.wait(10) for process in (sinks.provider, sinks.smtp)]
    assert codes == [0, 0]
    assert len(read_jsonl(sinks.outbox / "sms.jsonl")) == 1
    assert len(kept(sinks.maildir)) == 1
    for process in (sinks.provider, sinks.smtp):
        log = process.log_path.read_text()
        assert "stopped" in log
        assert "13800000000" not in log and "wang@example.org" not in log
