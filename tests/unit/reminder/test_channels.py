# ruff: noqa: RUF001 - the Chinese texts use full-width punctuation, as they should
"""The channel adapters' own decisions, without a network: what is tried again, what is a
refusal, what an exception may say, and what a mail looks like."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import default

import httpx
import pytest
from pydantic import ValidationError

from services.reminder.channels import (
    ChannelError,
    ChannelRefused,
    HttpGateway,
    OutboundMessage,
    Retry,
    SmtpGateway,
    SmtpServer,
    _smtp_failure,
    build_gateways,
    message_id,
)
from services.reminder.settings import Settings

PHONE = "+8613800000000"
SMS = OutboundMessage("7d5e0c1a-0000-4000-8000-000000000001", "sms", PHONE,
                      "您的借款L-1已逾期，逾期金额1200.50 CNY。")


def gateway(*answers: httpx.Response | Exception, seen: list[httpx.Request] | None = None,
            retry: Retry | None = None, token: str | None = None) -> HttpGateway:
    """An HttpGateway whose provider gives `answers` in turn; pauses are not slept."""
    pending = list(answers)
    requests = seen if seen is not None else []

    def provider(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return HttpGateway("http://provider.test/", token, retry=retry,
                       transport=httpx.MockTransport(provider), sleep=lambda _: None)


def test_a_send_posts_the_message_under_its_key() -> None:
    seen: list[httpx.Request] = []
    sms = gateway(httpx.Response(201, json={"provider_id": "p-1"}), seen=seen, token="t0k")
    assert sms.send(SMS) == "p-1"
    request = seen[0]
    assert str(request.url) == "http://provider.test/v1/messages"
    assert request.headers["idempotency-key"] == SMS.idempotency_key
    assert request.headers["authorization"] == "Bearer t0k"
    assert json.loads(request.content) == {
        "idempotency_key": SMS.idempotency_key, "channel": "sms", "to": PHONE,
        "text": SMS.text, "language": "zh-CN"}


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_an_answer_about_the_message_is_a_refusal_at_once(status: int) -> None:
    seen: list[httpx.Request] = []
    sms = gateway(httpx.Response(status, json={"error": {"message": "no"}}), seen=seen)
    with pytest.raises(ChannelRefused, match=rf"\({status}\)"):
        sms.send(SMS)
    assert len(seen) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308, 401, 403, 404, 405, 409, 410])
def test_an_installation_fault_is_a_channel_error_at_once_and_logged(
        status: int, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong URL or an expired token is fixed by an operator, and the reminders then go:
    not a refusal (that would drop every reminder for good), not retried within the send."""
    seen: list[httpx.Request] = []
    answer = httpx.Response(status, headers={"location": "https://elsewhere.test/"},
                            json={"error": {"code": "unauthorized", "message": f"to {PHONE}"}})
    sms = gateway(answer, seen=seen, token="expired")
    with caplog.at_level(logging.WARNING, logger="services.reminder.channels"), \
            pytest.raises(ChannelError) as raised:
        sms.send(SMS)
    assert not isinstance(raised.value, ChannelRefused)
    assert len(seen) == 1
    [record] = caplog.records
    assert record.levelno >= logging.WARNING
    assert str(status) in record.getMessage() and SMS.idempotency_key in record.getMessage()
    assert "13800000000" not in caplog.text and "逾期" not in caplog.text
    assert "expired" not in caplog.text  # nor the token


def test_a_trickled_answer_is_cut_off_at_the_deadline() -> None:
    """httpx's read timeout is per read: a provider sending a byte now and then must not
    hold a send past its deadline."""

    def trickle() -> Iterator[bytes]:
        for _ in range(20):
            time.sleep(0.1)
            yield b" "

    sms = HttpGateway("http://provider.test", retry=Retry(attempts=4, deadline=0.5),
                      transport=httpx.MockTransport(
                          lambda _: httpx.Response(200, content=trickle())),
                      sleep=lambda _: None)
    started = time.monotonic()
    with pytest.raises(ChannelError, match="within") as raised:
        sms.send(SMS)
    assert time.monotonic() - started < 0.5 + 0.2
    assert not isinstance(raised.value, ChannelRefused)


@pytest.mark.parametrize("first", [
    httpx.Response(500), httpx.Response(502), httpx.Response(503), httpx.Response(408),
    httpx.Response(429, headers={"retry-after": "1"}), httpx.ConnectError("refused"),
    httpx.ReadTimeout("slow")])
def test_what_may_pass_is_tried_again(first: httpx.Response | Exception) -> None:
    seen: list[httpx.Request] = []
    sms = gateway(first, httpx.Response(200, json={"provider_id": "p-2"}), seen=seen)
    assert sms.send(SMS) == "p-2"
    assert len(seen) == 2
    assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]


def test_a_provider_that_stays_down_is_a_channel_error_after_the_last_try() -> None:
    seen: list[httpx.Request] = []
    sms = gateway(*[httpx.Response(503)] * 3, seen=seen, retry=Retry(attempts=3))
    with pytest.raises(ChannelError) as raised:
        sms.send(SMS)
    assert not isinstance(raised.value, ChannelRefused)
    assert len(seen) == 3


def test_the_tries_end_within_the_deadline() -> None:
    slept: list[float] = []
    sms = HttpGateway("http://provider.test", retry=Retry(attempts=10, first_pause=1.0,
                                                          deadline=3.5),
                      transport=httpx.MockTransport(lambda _: httpx.Response(503)),
                      sleep=slept.append)
    with pytest.raises(ChannelError):
        sms.send(SMS)
    assert sum(slept) < 3.5
    assert slept == [1.0, 2.0]


def test_a_success_without_a_provider_id_is_tried_again() -> None:
    sms = gateway(httpx.Response(200, text="ok"), httpx.Response(200, json={"provider_id": "p"}))
    assert sms.send(SMS) == "p"


def test_errors_name_no_phone_number_and_no_text() -> None:
    echo = {"error": {"message": f"number {PHONE} is blocked; text {SMS.text}"}}
    with pytest.raises(ChannelRefused) as refused:
        gateway(httpx.Response(400, json=echo)).send(SMS)
    assert "13800000000" not in str(refused.value)
    with pytest.raises(ChannelError) as failed:
        gateway(*[httpx.ConnectError(f"to {PHONE}")] * 4).send(SMS)
    assert "13800000000" not in str(failed.value)
    assert "逾期" not in str(refused.value)


LETTER = OutboundMessage("7d5e0c1a-0000-4000-8000-000000000003", "sms", PHONE,
                         "Dear Wang Fang, Loan L-1: 1200.50 CNY is overdue. Please repay by "
                         "2026-10-21 via transfer to 6222.")


@pytest.mark.parametrize("body", [
    {"error": {"message": f"rejected: {LETTER.text[5:80]} to {PHONE[3:]}"}},
    {"detail": [{"msg": "bad", "input": LETTER.text[10:40]}]},
    {"error": LETTER.text[5:30]},
    {"message": "queue full for: " + LETTER.text[:60]}])
def test_no_word_of_an_answer_reaches_a_reason_or_a_log(
        body: dict[str, object], caplog: pytest.LogCaptureFixture) -> None:
    """A provider that quotes part of the message: ReminderFailed.reason goes to Kafka and
    the audit log, so only the status (and a short code) is told, never the answer's words."""
    sms = gateway(httpx.Response(503, json=body), httpx.Response(400, json=body))
    with caplog.at_level(logging.DEBUG), pytest.raises(ChannelRefused) as refused:
        sms.send(LETTER)
    assert str(refused.value) == "sms provider refused the message (400)"
    for words in ("Wang Fang", "overdue", "1200.50", "6222", "13800000000", "rejected",
                  "queue"):
        assert words not in caplog.text
        assert words not in str(refused.value)


@pytest.mark.parametrize(("body", "told"), [
    ({"error": {"code": "recipient_refused", "message": f"no {PHONE}"}}, "recipient_refused"),
    ({"error": "invalid_token"}, "invalid_token"),
    ({"code": "E.1042"}, "E.1042"),
    ({"error": {"code": "13800000000"}}, None),  # a number, not a code
    ({"error": {"code": "Wang"}}, None),  # a word of the message
    ({"error": {"code": "x" * 41}}, None),
    ({"error": {"code": "no such user"}}, None),
    ("not an object", None)])
def test_only_a_code_shaped_like_an_identifier_is_told(body: object, told: str | None) -> None:
    with pytest.raises(ChannelRefused) as refused:
        gateway(httpx.Response(422, json=body)).send(LETTER)
    expected = f"422, code {told}" if told else "422"
    assert str(refused.value) == f"sms provider refused the message ({expected})"


MAIL = OutboundMessage("7d5e0c1a-0000-4000-8000-000000000002", "email", "wang@example.org",
                       "王芳，您好：\n\n您的借款L-1已逾期。\n", subject="借款L-1还款提醒")


def test_a_mail_is_utf8_with_a_message_id_from_its_key() -> None:
    mail = SmtpGateway(SmtpServer(), "dunwell <reminders@dunwell.localhost>").compose(MAIL)
    raw = mail.as_bytes()
    assert raw.isascii()  # the relay needs neither SMTPUTF8 nor 8BITMIME
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["Message-ID"] == f"<{MAIL.idempotency_key}@dunwell>"
    assert str(make_header(decode_header(parsed["Subject"]))) == "借款L-1还款提醒"
    assert parsed.get_content().replace("\r\n", "\n") == MAIL.text
    assert parsed["Content-Language"] == "zh-CN"
    assert parsed["Content-Transfer-Encoding"] == "base64"
    assert base64.b64decode(parsed.get_payload()).decode().replace("\r\n", "\n") == MAIL.text


def test_a_message_id_keeps_only_safe_characters() -> None:
    assert message_id("a b<c>@d") == "<a-b-c--d@dunwell>"


@pytest.mark.parametrize("to", ["not-an-address", "wang@example.org\r\nBcc: x@y.z"])
def test_an_unusable_address_is_refused(to: str) -> None:
    gateway_ = SmtpGateway(SmtpServer(), "reminders@dunwell.localhost")
    with pytest.raises(ChannelRefused):
        gateway_.compose(OutboundMessage("k", "email", to, "text"))


@pytest.mark.parametrize(("code", "refused"), [(550, True), (554, True), (450, False),
                                               (421, False)])
def test_smtp_5xx_is_a_refusal_4xx_may_pass(code: int, refused: bool) -> None:
    failure = _smtp_failure("the recipient", code, b"<wang@example.org>: no such user")
    assert isinstance(failure, ChannelRefused) is refused
    assert "wang@example.org" not in str(failure)


def test_a_relays_words_are_not_told_only_its_codes() -> None:
    failure = _smtp_failure("the message", 554,
                            b"5.7.1 rejected: Dear Wang Fang, Loan L-1 is overdue")
    assert str(failure) == "e-mail relay answered 554 5.7.1 about the message"
    assert str(_smtp_failure("the recipient", 550, b"wang: unknown")) == \
        "e-mail relay answered 550 about the recipient"


@pytest.mark.parametrize(("to", "header", "envelope"), [
    ("wang@例子.中国", "wang@xn--fsqu00a.xn--fiqs8s", "wang@xn--fsqu00a.xn--fiqs8s"),
    ("Wang <wang@example.org>", "Wang <wang@example.org>", "wang@example.org")])
def test_a_domain_in_another_script_is_idna_encoded(to: str, header: str,
                                                    envelope: str) -> None:
    mail = SmtpGateway(SmtpServer(), "reminders@dunwell.localhost").compose(
        OutboundMessage("k", "email", to, "正文", subject="提醒"))
    assert str(mail["To"]) == header
    assert mail["To"].addresses[0].addr_spec == envelope
    assert mail.as_bytes().isascii()


@pytest.mark.parametrize("to", ["a,b@example.org", "a@example.org, b@example.org",
                                "wang@" + "例" * 80 + ".中国"])
def test_not_exactly_one_usable_address_is_refused(to: str) -> None:
    with pytest.raises(ChannelRefused):
        SmtpGateway(SmtpServer(), "reminders@dunwell.localhost").compose(
            OutboundMessage("k", "email", to, "text"))


def test_the_gateways_default_to_the_local_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDER_SMTP_PORT", "2525")
    gateways = build_gateways(Settings())
    assert set(gateways) == {"sms", "push", "email"}
    sms = gateways["sms"]
    assert isinstance(sms, HttpGateway)
    assert sms.url == "http://127.0.0.1:8005/v1/messages"
    email = gateways["email"]
    assert isinstance(email, SmtpGateway)
    assert (email.server.host, email.server.port, email.server.starttls) == \
        ("127.0.0.1", 2525, False)


def test_a_password_is_not_sent_in_clear_to_a_remote_relay() -> None:
    with pytest.raises(ValidationError, match="STARTTLS"):
        Settings(smtp_host="smtp.example.org", smtp_username="dunwell")
    Settings(smtp_host="smtp.example.org", smtp_username="dunwell", smtp_starttls=True)
    Settings(smtp_host="127.0.0.1", smtp_username="dunwell")
