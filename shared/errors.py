"""Errors told to operators (dead-letter headers, logs) without the personal data they may carry.

A validation error names the fields and what is wrong, never the values. Any other error keeps
its type and its message with phone numbers, e-mail addresses and long digit runs (accounts,
ID numbers) masked, cut to a length a header can carry.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

_EMAIL = re.compile(r"[^\s@'\"<>()]+@[^\s@'\"<>()]+")
_DIGITS = re.compile(r"\+?\d[\d\s().-]{4,}\d")
# A phone number has 8 digits or more, an account or ID number more still; sizes, offsets and
# counts an operator reads are shorter.
DIGITS = 8
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
LIMIT = 300


def mask(text: str) -> str:
    """`text` with e-mail addresses and runs of eight or more digits replaced (an IPv4
    address is an operator's fact, not a person's, and is kept)."""
    text = _EMAIL.sub("<email>", text)
    return _DIGITS.sub(lambda m: m.group() if _IPV4.fullmatch(m.group())
                       or sum(c.isdigit() for c in m.group()) < DIGITS else "<digits>", text)


def describe(error: BaseException) -> str:
    """`Type: message`, safe for a header or a log line."""
    if isinstance(error, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                 for e in error.errors(include_input=False, include_url=False)[:5]]
        message = "; ".join(parts)
    else:
        message = str(error)
    name = type(error).__name__
    message = mask(message).removeprefix(f"{name}: ")
    text = f"{name}: {message}" if message else name
    return text[:LIMIT]


def header(text: str, limit: int = 1000) -> bytes:
    """`text` as UTF-8 of at most `limit` bytes, never cut inside a character."""
    return text.encode()[:limit].decode("utf-8", "ignore").encode()
