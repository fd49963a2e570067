# ruff: noqa: RUF001 - the Chinese texts use full-width punctuation, as they should
"""The channel adapters against the embedded default's real sinks on loopback ports.

The provider sink and the SMTP sink are the things under test together with the gateways;
the reminder service's receipt route is not, so a tiny stand-in takes the receipts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import mailbox
import signal
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
import uvicorn
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response

from dunwell import devstack
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
from tests.helpers import wait_for

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
    """Takes receipts as the reminder service would, answering the statuses it is told to."""

    port: int
    answers: list[int] = field(default_factory=list)  # then 202 for ever
    received: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/receipts/{channel}")
        async def receipt(channel: str, request: Request) -> Response:
            self.received.append((channel, await request.json(),
                                  request.headers.get("authorization", "")))
            return Response(status_code=self.answers.pop(0) if self.answers else 202)

        return app


@pytest.fixture
def desk() -> Iterator[ReceiptDesk]:
    desk = ReceiptDesk(devstack.free_port())
    server = uvicorn.Server(uvicorn.Config(desk.app(), host="127.0.0.1", port=desk.port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, every=0.02, what="the receipt desk")
    try:
        yield desk
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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
    with pytest.raises(ChannelRefused, match=r"\(400\)") as refused:
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
        with pytest.raises(ChannelRefused, match=r"\(401\)"):
            quick_gateway(sink).send(sms())
        assert quick_gateway(sink, token="s3cret").send(sms())
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
