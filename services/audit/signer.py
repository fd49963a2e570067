"""The signing half of the transparency log: Ed25519 signer keys and signed notes.

Only the audit service and `dunwell audit keygen` hold a private key, so this lives here and
not in shared/tlog.py, which auditors run on its own and which must never need a secret.
The formats (key IDs, note framing, key names) are tlog's: a note signed here is exactly what
`tlog.verify_note` accepts.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from shared.tlog import (
    ED25519_TYPE,
    SIGNATURE_PREFIX,
    VerificationError,
    b64encode,
    check_key_name,
    encode_vkey,
    has_control_chars,
    key_id,
    split_key_text,
)

SKEY_PREFIX = "PRIVATE+KEY+"


def public_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """Raw 32-byte public key, the form key IDs and vkeys are computed over."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_note(body: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign `body` as a C2SP signed note with one Ed25519 signature line."""
    check_key_name(name)
    if not body.endswith("\n") or has_control_chars(body):
        raise ValueError("note body must end with a newline and contain no control characters")
    signature = private_key.sign(body.encode("utf-8"))
    blob = key_id(name, public_bytes(private_key)) + signature
    return f"{body}\n{SIGNATURE_PREFIX}{name} {b64encode(blob)}\n"


def generate_signer(name: str) -> tuple[str, str]:
    """Create a fresh log key; returns (skey text to keep secret, public vkey)."""
    check_key_name(name)
    private_key = Ed25519PrivateKey.generate()
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public_key = public_bytes(private_key)
    skey = (
        f"{SKEY_PREFIX}{name}+{key_id(name, public_key).hex()}+"
        f"{b64encode(bytes([ED25519_TYPE]) + seed)}"
    )
    return skey, encode_vkey(name, public_key)


def load_signer(skey_text: object) -> tuple[str, Ed25519PrivateKey]:
    """Load an skey ('PRIVATE+KEY+<name>+<hex id>+<b64(0x01||seed)>'), checking its ID."""
    text = skey_text.strip() if isinstance(skey_text, str) else ""
    if not text.startswith(SKEY_PREFIX):
        raise ValueError("signer key must start with PRIVATE+KEY+")
    try:
        name, id_hex, seed = split_key_text(text[len(SKEY_PREFIX) :], "signer key")
    except VerificationError as exc:
        raise ValueError(exc.message) from None
    private_key = Ed25519PrivateKey.from_private_bytes(seed)
    if key_id(name, public_bytes(private_key)).hex() != id_hex:
        raise ValueError("signer key ID does not match its name and key")
    return name, private_key
