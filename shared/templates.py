# ruff: noqa: RUF001 - the Chinese texts use full-width punctuation, as they should
"""The register of approved message templates (C5), kept once like the policy packs.

A template is approved for one channel under an id and a version, with a text per language
(`zh-CN` default, `en`). A new wording is a new version, never an edit: a reminder names the
id and version it used, and the audit checks them against this register. The reminder
service renders from it; the audit service only reads which ids and versions exist and what
kind each is.

Kinds:
- `reminder`: a message about the debt; it must show every item of `REQUIRED_CONTENT` (C5);
- `reestablish`: to a pre-agreed contact person (C13); it must say nothing of the debt, so it
  may show none of `DEBT_CONTENT`.
- `visit_notice`: a field visit's advance notice (C8); it must show every item of
  `NOTICE_CONTENT`: the window, the place, who comes and how to check them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from types import MappingProxyType

REQUIRED_CONTENT = ("amount", "currency", "deadline", "repayment_channel",
                    "verification_channel")
DEBT_CONTENT = ("loan_id", "amount", "currency", "deadline", "repayment_channel")
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"

# A visit's notice tells the borrower when (the window, in their time), where (the kind of
# address), who (the collectors' names) and how to check them (the verification route with
# each letter's code).
NOTICE_CONTENT = ("window_start", "window_end", "place", "collectors", "verification")

REMINDER = "reminder"
REESTABLISH = "reestablish"
VISIT_NOTICE = "visit_notice"


@dataclass(frozen=True)
class Template:
    template_id: str
    version: int
    channel: str
    kind: str
    texts: MappingProxyType[str, str]  # language -> text
    subjects: MappingProxyType[str, str] = field(  # e-mail only
        default_factory=lambda: MappingProxyType({}))

    def fields(self, language: str) -> set[str]:
        """The placeholders the text of `language` shows."""
        return {name for _, name, _, _ in string.Formatter().parse(self.texts[language])
                if name}

    def text(self, language: str) -> str:
        return self.texts.get(language) or self.texts[DEFAULT_LANGUAGE]


def _t(template_id: str, version: int, channel: str, kind: str, texts: dict[str, str],
       subjects: dict[str, str] | None = None) -> Template:
    return Template(template_id, version, channel, kind, MappingProxyType(texts),
                    MappingProxyType(subjects or {}))


_DEBT_ZH = ("您的借款{loan_id}已逾期，逾期金额{amount} {currency}。请于{deadline}前通过"
            "{repayment_channel}还款。如需核实本信息的真实性，请通过{verification_channel}联系我们。")
_DEBT_EN = ("Loan {loan_id}: {amount} {currency} is overdue. Please repay by {deadline} via "
            "{repayment_channel}. To check that this message is genuine, contact "
            "{verification_channel}.")

_APPROVED = (
    # The first template, kept approved: earlier logs name it.
    _t("sms.first_reminder", 1, "sms", REMINDER, {"zh-CN": _DEBT_EN, "en": _DEBT_EN}),
    _t("sms.reminder", 1, "sms", REMINDER, {"zh-CN": _DEBT_ZH, "en": _DEBT_EN}),
    _t("email.reminder", 1, "email", REMINDER,
       {"zh-CN": "{name}，您好：\n\n" + _DEBT_ZH + "\n",
        "en": "Dear {name},\n\n" + _DEBT_EN + "\n"},
       {"zh-CN": "借款{loan_id}还款提醒", "en": "Repayment reminder for loan {loan_id}"}),
    _t("push.reminder", 1, "push", REMINDER,
       {"zh-CN": _DEBT_ZH, "en": _DEBT_EN}),
    _t("call.reminder", 1, "call", REMINDER,
       {"zh-CN": "通话要点：说明逾期金额{amount} {currency}、还款期限{deadline}、还款方式"
                 "{repayment_channel}，以及核实渠道{verification_channel}；询问还款意愿与能力。",
        "en": "Call script: state the overdue {amount} {currency}, the deadline {deadline}, "
              "how to repay ({repayment_channel}) and how to verify the call "
              "({verification_channel}); ask about willingness and ability to pay."}),
    # A courtesy reminder while the cadence is paused for a promise or a repayment plan: the
    # amount and deadline are the promise's (or the instalment's), not the case's.
    _t("sms.promise_courtesy", 1, "sms", REMINDER,
       {"zh-CN": "温馨提示：您就借款{loan_id}承诺于{deadline}前还款{amount} {currency}，请按时通过"
                 "{repayment_channel}还款。如需核实本信息的真实性，请通过{verification_channel}联系"
                 "我们。",
        "en": "A friendly reminder: on loan {loan_id} you agreed to pay {amount} {currency} by "
              "{deadline}, via {repayment_channel}. To check that this message is genuine, "
              "contact {verification_channel}."}),
    _t("visit.notice", 1, "sms", VISIT_NOTICE,
       {"zh-CN": "{lender_name}通知：我们将于{window_start}至{window_end}到您的{place}上门拜访，"
                 "上门人员：{collectors}。上门人员会出示身份证、工作证和授权委托书；您可通过"
                 "{verification}核实其身份。如您不同意本次上门，请回复或致电告知，我们将取消。",
        "en": "{lender_name}: we plan to visit you at your {place} between {window_start} and "
              "{window_end}. Coming: {collectors}. They will show an ID card, a work badge and "
              "the lender's authorisation letter; you can check them at {verification}. If you "
              "do not agree to this visit, tell us and it will not go ahead."}),
    _t("contact.reestablish", 1, "call", REESTABLISH,
       {"zh-CN": "您好，我们是{lender_name}，想与{borrower_name}取得联系。请转告其通过"
                 "{verification_channel}回电。谢谢。",
        "en": "Hello, this is {lender_name}. We are trying to reach {borrower_name}; please "
              "ask them to call us back through {verification_channel}. Thank you."}),
)

APPROVED: MappingProxyType[tuple[str, int], Template] = MappingProxyType(
    {(t.template_id, t.version): t for t in _APPROVED})

# The template each channel's reminder step uses, and the one for a pre-agreed contact.
CURRENT = MappingProxyType({"sms": ("sms.reminder", 1), "email": ("email.reminder", 1),
                            "push": ("push.reminder", 1), "call": ("call.reminder", 1)})
REESTABLISH_TEMPLATE = ("contact.reestablish", 1)
COURTESY_TEMPLATE = ("sms.promise_courtesy", 1)  # before a promise's or an instalment's due date
VISIT_NOTICE_TEMPLATE = ("visit.notice", 1)  # a field visit's advance notice (C8)


def approved(template_id: str, version: int) -> Template | None:
    return APPROVED.get((template_id, version))
