"""Verifier side of the audit transparency log (RFC 6962 trees, C2SP notes).

Only the standard library and ``cryptography`` are imported here, because the
offline evidence verifier ships this module on its own to auditors: with this one file,

    python tlog.py BUNDLE.json --key KEY    (--key once per key of the log after a rotation)

verifies an evidence bundle's proofs and that its leaves are its loan's (and that those it
carries as `strategies` are lenders' StrategyPublished, and those under `registry` the
collectors' and agencies' registry entries); `dunwell verify` is the same check,
and re-derives the bundle's compliance verdicts from those leaves too: the rules are handed in
as a `Judge`, since this file alone knows none. Nothing here holds a private
key: signing lives with the audit service (services/audit/signer.py), which builds on the
formats defined here (key IDs, key names, note framing).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
BUNDLE_FORMAT = "dunwell-evidence/v1"
MAX_SIGNATURES = 100
ED25519_TYPE = 0x01
SIGNATURE_PREFIX = "\u2014 "
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
# A lender's strategy, which a bundle may carry beside its loan's leaves: its subject is the
# lender, not the loan (the rules read it for the visit requests that name it).
STRATEGY_TYPE = "StrategyPublished"
# The registry's entries, which a bundle may carry under `registry`: each is an event of the
# collector (the agency) its data names; the rules read those of the visits' collectors.
REGISTRY_TYPES = {"CollectorRegistered": "collector_id", "CollectorRevoked": "collector_id",
                  "AgencyRegistered": "agency_id"}
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
_MAX_SIZE = 2**64 - 1

_T = TypeVar("_T")

# The rules, handed in: a loan's leaves (index, bytes), with the bundle's `strategies` leaves
# among them in index order, and the installation's pack in; the loan's pack and its verdicts
# ({rule, verdict, evidence, findings}) out. A ValueError it raises is a failure; one with a
# `leaf_index` attribute names that leaf.
Judge = Callable[[Sequence[tuple[int, bytes]], str],
                 tuple[str, Sequence[Mapping[str, object]]]]


class VerificationError(Exception):
    """Evidence failed to verify; carries the failing leaf index or tree size for the CLI."""

    def __init__(
        self, message: str, /, *, leaf_index: int | None = None, size: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.leaf_index = leaf_index
        self.size = size


# --- RFC 6962 hashing -------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """Hash leaf data with the 0x00 prefix so a leaf can never pose as a node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two children with the 0x01 prefix (RFC 6962 domain separation)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_hash(value: object, what: str, **where: int | None) -> bytes:
    """Reject anything that is not a 32-byte digest before it reaches a comparison."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise VerificationError(f"{what} is not a {HASH_SIZE}-byte hash", **where)
    return value


# --- RFC 9162 proof verification ---------------------------------------------


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an audit path (RFC 9162 2.1.3.2); raises VerificationError naming index and size."""
    where: dict[str, int | None] = {"leaf_index": index, "size": size}
    if index < 0 or index >= size:
        raise VerificationError(f"leaf index {index} is outside tree size {size}", **where)
    _check_hash(root, "root", **where)
    result = _check_hash(leaf_hash, "leaf hash", **where)
    fn, sn = index, size - 1
    for element in proof:
        _check_hash(element, "inclusion proof element", **where)
        if sn == 0:
            raise VerificationError(
                f"inclusion proof for leaf {index} in size {size} has extra hashes", **where
            )
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            while fn & 1 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, element)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError(
            f"inclusion proof for leaf {index} in size {size} is too short", **where
        )
    if result != root:
        raise VerificationError(
            f"inclusion proof for leaf {index} does not lead to the root of size {size}",
            **where,
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that tree `second` extends tree `first` (RFC 9162 2.1.4.2)."""
    span = f"from size {first} to size {second}"
    if first < 0 or first > second:
        raise VerificationError(f"consistency {span} is impossible", size=second)
    _check_hash(first_root, "first root", size=second)
    _check_hash(second_root, "second root", size=second)
    if first == 0:
        if proof or first_root != EMPTY_ROOT:
            raise VerificationError(f"consistency proof {span} must be empty", size=second)
        return
    if first == second:
        if proof or first_root != second_root:
            raise VerificationError(f"checkpoints of equal size {second} differ", size=second)
        return
    hashes = [_check_hash(p, "consistency proof element", size=second) for p in proof]
    if not hashes:
        raise VerificationError(f"consistency proof {span} is empty", size=second)
    if first & (first - 1) == 0:
        hashes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = hashes[0]
    for element in hashes[1:]:
        if sn == 0:
            raise VerificationError(f"consistency proof {span} has extra hashes", size=second)
        if fn & 1 or fn == sn:
            fr, sr = node_hash(element, fr), node_hash(element, sr)
            while fn & 1 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, element)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise VerificationError(f"consistency proof {span} does not verify", size=second)


# --- base64 and names -------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Encode as standard padded base64, the only encoding C2SP formats use."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, what: str) -> bytes:
    """Decode canonical base64 only, so one value has exactly one accepted spelling."""
    if not isinstance(text, str):
        raise VerificationError(f"{what} is not a base64 string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None
    if b64encode(data) != text:
        raise VerificationError(f"{what} is not canonical base64")
    return data


def _valid_key_name(name: object) -> bool:
    """Key names are non-empty and free of Unicode spaces, '+' and control characters."""
    return (
        isinstance(name, str)
        and name != ""
        and "+" not in name
        and not any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in name)
    )


def check_key_name(name: str) -> None:
    """Refuse to sign or encode with a name a conforming verifier would reject."""
    if not _valid_key_name(name):
        raise ValueError(f"invalid key name {name!r}")


# --- checkpoints --------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: which log, how many leaves, which root."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        """Refuse values that would serialise to an ambiguous or invalid body."""
        if not self.origin or any(ord(c) < 0x20 for c in self.origin):
            raise ValueError("checkpoint origin must be a non-empty single line")
        size: object = self.size  # what arrived, which need not be what was annotated
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
            raise ValueError(f"checkpoint size {size!r} out of range")
        root: object = self.root
        if not isinstance(root, bytes) or len(root) != HASH_SIZE:
            raise ValueError("checkpoint root must be a 32-byte hash")

    def body(self) -> str:
        """Render the exact note text that gets signed; we never emit extension lines."""
        return f"{self.origin}\n{self.size}\n{b64encode(self.root)}\n"


def parse_checkpoint_body(text: object) -> Checkpoint:
    """Parse a checkpoint body strictly: three lines, canonical size, 32-byte root."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise VerificationError("checkpoint body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise VerificationError(
            f"checkpoint body has {len(lines)} lines, expected exactly 3 (no extensions)"
        )
    origin, size_text, root_text = lines
    if not _DECIMAL.fullmatch(size_text):
        raise VerificationError(f"checkpoint size {size_text!r} is not canonical decimal")
    root = b64decode(root_text, "checkpoint root")
    try:
        return Checkpoint(origin, int(size_text), root)
    except ValueError as exc:
        raise VerificationError(str(exc)) from None


# --- Ed25519 signed notes ---------------------------------------------------------


def key_id(name: str, public_key: bytes) -> bytes:
    """Compute the 4-byte signed-note key ID binding key name, algorithm and key."""
    material = name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + public_key
    return hashlib.sha256(material).digest()[:4]


def has_control_chars(text: str) -> bool:
    """Signed notes forbid ASCII control characters other than newline."""
    return any(ord(c) < 0x20 and c != "\n" for c in text)


def _split_note(note: object) -> tuple[str, list[str]]:
    """Split a note into body and signature lines, rejecting malformed framing."""
    if not isinstance(note, str) or not note.endswith("\n"):
        raise VerificationError("signed note must be text ending with a newline")
    if has_control_chars(note):
        raise VerificationError("signed note contains control characters")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise VerificationError("signed note is not UTF-8 text") from None
    split = note.rfind("\n\n")
    if split < 0:
        raise VerificationError("signed note has no blank line before its signatures")
    body, signatures = note[: split + 1], note[split + 2 :]
    if not signatures:
        raise VerificationError("signed note has no signature lines")
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"signed note has more than {MAX_SIGNATURES} signatures")
    return body, lines


def _parse_signature_line(line: str) -> tuple[str, bytes]:
    """Return (key name, key ID || signature) from one '— name base64' line."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise VerificationError("signed note has a malformed signature line")
    parts = line[len(SIGNATURE_PREFIX) :].split(" ")
    if len(parts) != 2 or not _valid_key_name(parts[0]):
        raise VerificationError("signed note has a malformed signature line")
    blob = b64decode(parts[1], "note signature")
    if len(blob) < 5:
        raise VerificationError("note signature is too short")
    return parts[0], blob


def verify_note(note: str, name: str, public_key: bytes) -> str:
    """Return the note body once a signature by (name, public_key) verifies."""
    body, signed = _verified_lines(note, [(name, key_id(name, public_key),
                                           _load_public_key(public_key))])
    if not signed:
        raise VerificationError(f"note carries no signature by {name}")
    return body


_Verifier = tuple[str, bytes, Ed25519PublicKey]  # key name, key ID, key


def _verified_lines(note: object, verifiers: Sequence[_Verifier]
                    ) -> tuple[str, list[int]]:
    """The note's body and which of `verifiers` (by position) signed it. A line by a key not
    among them is ignored, as a note may carry others' signatures (a witness's, a key from
    before a rotation); a line by one of them that does not verify fails the note."""
    body, lines = _split_note(note)
    signed: list[int] = []
    for line in lines:
        signer, blob = _parse_signature_line(line)
        # A key given twice (retired with a bound, and current without) is each of them: which
        # of its entries counts never depends on the order the keys were given in.
        positions = [n for n, (name, kid, _) in enumerate(verifiers)
                     if signer == name and blob[:4] == kid]
        if not positions:
            continue  # unknown key: MUST be ignored
        try:
            verifiers[positions[0]][2].verify(blob[4:], body.encode("utf-8"))
        except InvalidSignature:
            raise VerificationError(f"signature by {signer} does not verify") from None
        signed.extend(n for n in positions if n not in signed)
    return body, signed


def note_signers(note: object) -> list[str]:
    """Who signed a note, as '<name>+<hex key ID>' per signature line, nothing verified: what
    a failure names, and how the log tells which of its keys signed a stored checkpoint."""
    _, lines = _split_note(note)
    signers = []
    for line in lines:
        signer, blob = _parse_signature_line(line)
        signers.append(f"{signer}+{blob[:4].hex()}")
    return signers


def _load_public_key(public_key: object) -> Ed25519PublicKey:
    """Load a raw Ed25519 key, turning a bad length into a verification failure."""
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise VerificationError("Ed25519 public key must be 32 bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise VerificationError("Ed25519 public key is invalid") from None


@dataclass(frozen=True)
class TrustedKey:
    """A verifier key of the log. A key retired by a rotation stays trusted for the
    checkpoints it signed; `until_size`, when known, is the largest of them, so a checkpoint
    past it signed by that key alone (a leaked old key, say) is refused."""

    vkey: str
    until_size: int | None = None


# One vkey (the form before key rotation), or the log's keys: current and retired.
Keys = str | TrustedKey | Sequence[str | TrustedKey]


def _listed(keys: Keys) -> list[TrustedKey]:
    listed = [keys] if isinstance(keys, str | TrustedKey) else list(keys)
    trusted = [k if isinstance(k, TrustedKey) else TrustedKey(k) for k in listed]
    if not trusted:
        raise VerificationError("no verifier key given")
    return trusted


def trusted_keys(keys: Keys) -> list[TrustedKey]:
    """The keys as TrustedKey, each decoded so that a malformed one fails here."""
    trusted = _listed(keys)
    for key in trusted:
        decode_vkey(key.vkey)
    return trusted


def open_checkpoint(note: str, keys: Keys) -> Checkpoint:
    """Verify a checkpoint note against a vkey, or any of the log's keys; the origin must
    equal the key name."""
    return open_signed_checkpoint(note, keys)[0]


def open_signed_checkpoint(note: str, keys: Keys) -> tuple[Checkpoint, list[TrustedKey]]:
    """Verify a checkpoint note by at least one of `keys`; returns it and the keys that signed
    it. A checkpoint signed by no key of the set fails, naming the keys that did sign it."""
    trusted = _listed(keys)
    decoded = [decode_vkey(key.vkey) for key in trusted]
    verifiers = [(name, key_id(name, public), _load_public_key(public))
                 for name, public in decoded]
    body, signed = _verified_lines(note, verifiers)
    if not signed:
        names = " or ".join(sorted({name for name, _, _ in verifiers}))
        given = ", ".join(kid.hex() for _, kid, _ in verifiers)
        raise VerificationError(f"note carries no signature by {names} with a key given (key "
                                f"ID {given}); it is signed by {', '.join(note_signers(note))}")
    checkpoint = parse_checkpoint_body(body)
    signers = [trusted[n] for n in signed]
    if checkpoint.origin not in {decoded[n][0] for n in signed}:
        raise VerificationError(
            f"checkpoint origin {checkpoint.origin!r} is not the log {decoded[signed[0]][0]!r}",
            size=checkpoint.size,
        )
    bounds = [key.until_size for key in signers]
    if all(bound is not None for bound in bounds):
        last = max(bound for bound in bounds if bound is not None)
        if checkpoint.size > last:
            raise VerificationError(
                f"checkpoint of size {checkpoint.size} is signed only by a retired key, "
                f"which signed none past size {last}", size=checkpoint.size)
    return checkpoint, signers


# --- key text: '<name>+<hex key id>+<base64(0x01 || key)>', for vkeys and skeys --------


def encode_vkey(name: str, public_key: bytes) -> str:
    """Encode a verifier key as '<name>+<hex key id>+<base64(0x01 || key)>'."""
    check_key_name(name)
    if len(public_key) != 32:
        raise ValueError("Ed25519 public key must be 32 bytes")
    encoded = b64encode(bytes([ED25519_TYPE]) + public_key)
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def split_key_text(text: object, what: str) -> tuple[str, str, bytes]:
    """Parse '<name>+<hex id>+<base64(0x01 || key)>' into (name, hex id, raw key).

    The signer's skey is this shape behind 'PRIVATE+KEY+'; the ID is not checked here.
    """
    if not isinstance(text, str):
        raise VerificationError(f"{what} is not text")
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not _valid_key_name(parts[0]) or not _KEY_ID_HEX.fullmatch(parts[1]):
        raise VerificationError(f"{what} is malformed")
    name, id_hex, key_b64 = parts
    key = b64decode(key_b64, what)
    if len(key) != 33 or key[0] != ED25519_TYPE:
        raise VerificationError(f"{what} is not an Ed25519 key")
    return name, id_hex, key[1:]


def read_vkey(key: str) -> str:
    """A verifier key given as its text, or as the path of a file holding it."""
    path = Path(key)
    return path.read_text().strip() if path.is_file() else key.strip()


def read_vkeys(key: str) -> list[TrustedKey]:
    """The log's keys from a vkey text or a file: one vkey a line (blank lines and '#'
    comments skipped), or the JSON the audit service publishes (`/v1/keys`, `/v1/checkpoint`):
    every entry of its `keys`, a retired one bound to its `until_size`; else its `public_key`.
    """
    path = Path(key)
    text = path.read_text() if path.is_file() else key
    if not text.lstrip().startswith(("{", "[")):
        lines = [line.strip() for line in text.splitlines()]
        return [TrustedKey(line) for line in lines if line and not line.startswith("#")]
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise VerificationError("the keys file is not JSON") from None
    entries = document.get("keys", [document.get("public_key")]) \
        if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise VerificationError("the keys file has no list of keys")
    return [_published_key(entry) for entry in entries]


def _published_key(entry: object) -> TrustedKey:
    """One key as published: its vkey text, or {vkey, status, until_size, ...}."""
    if isinstance(entry, str):
        return TrustedKey(entry)
    vkey = _field(entry, "vkey", str, "published key")
    assert isinstance(entry, Mapping)
    until = entry.get("until_size") if entry.get("status") == "retired" else None
    if until is not None and (not isinstance(until, int) or isinstance(until, bool)):
        raise VerificationError("published key field 'until_size' is not an integer")
    return TrustedKey(vkey, until)


def decode_vkey(vkey: str) -> tuple[str, bytes]:
    """Parse a verifier key, rejecting a key ID that does not match name and key."""
    name, id_hex, public_key = split_key_text(vkey, "verifier key")
    if key_id(name, public_key).hex() != id_hex:
        raise VerificationError("verifier key ID does not match its name and key")
    return name, public_key


# --- evidence bundles -----------------------------------------------------------


_KIND_NAMES = {int: "an integer", str: "a string", list: "a list"}


def _field(mapping: object, key: str, kind: type[_T], what: str) -> _T:
    """Fetch a typed JSON field, turning any shape error into a VerificationError."""
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise VerificationError(f"{what} is missing {key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        kind_name = _KIND_NAMES.get(kind, kind.__name__)
        raise VerificationError(f"{what} field {key!r} is not {kind_name}")
    return value


def _hash_list(value: list[object], what: str) -> list[bytes]:
    """Decode a JSON list of base64 32-byte hashes."""
    return [_check_hash(b64decode(item, what), what) for item in value]


def _verify_leaves(leaves: object, checkpoint: Checkpoint, section: str = "leaves") -> None:
    """Check every leaf's inclusion in order; the first failure names its leaf index."""
    if not isinstance(leaves, list):
        raise VerificationError(f"bundle {section!r} is not a list")
    previous = -1
    for item in leaves:
        index = _field(item, "leaf_index", int, "bundle leaf")
        try:
            _verify_leaf(item, index, previous, checkpoint)
        except VerificationError as exc:
            raise VerificationError(exc.message, leaf_index=index, size=checkpoint.size) from None
        previous = index


def _verify_leaf(item: object, index: int, previous: int, checkpoint: Checkpoint) -> None:
    """Check one bundle leaf: ordering, encoding, and its inclusion proof."""
    if index <= previous:
        raise VerificationError(
            f"leaf index {index} does not follow {previous} (indices must strictly increase)"
        )
    data = b64decode(_field(item, "leaf", str, "bundle leaf"), "leaf")
    proof = _hash_list(_field(item, "inclusion_proof", list, "bundle leaf"), "inclusion proof")
    verify_inclusion(leaf_hash(data), index, checkpoint.size, proof, checkpoint.root)


def _disjoint(bundle: Mapping[str, object]) -> None:
    """A leaf is in one of `leaves`, `strategies` and `registry`, never in two."""
    seen: dict[int, str] = {}
    for section, leaves in (("leaves", _bundle_leaves(bundle)),
                            ("strategies", _strategy_leaves(bundle)),
                            ("registry", _registry_leaves(bundle))):
        for index, _ in leaves:
            if index in seen:
                raise VerificationError(f"leaf {index} is in both {seen[index]!r} and "
                                        f"{section!r}", leaf_index=index)
            seen[index] = section


def _verify_extension(
    base: Checkpoint, note: str, proof: Sequence[object], vkey: Keys
) -> Checkpoint:
    """Open a later checkpoint and prove the base checkpoint is a prefix of it."""
    later = open_checkpoint(note, vkey)
    hashes = [_check_hash(p, "consistency proof element", size=later.size) for p in proof]
    verify_consistency(base.size, later.size, base.root, later.root, hashes)
    return later


def verify_bundle(
    bundle: Mapping[str, object],
    vkey: Keys,
    later_checkpoint_note: str | None = None,
    consistency_proof: Sequence[bytes] | None = None,
) -> Checkpoint:
    """Verify a dunwell evidence bundle's proofs end to end; returns the latest verified
    checkpoint. (Whose leaves they are is `verify_loan`'s to check, after this.)

    Unknown JSON keys are ignored (no proof covers them); explicit later-checkpoint
    arguments are checked against the bundle's own checkpoint. `vkey` may be the log's keys
    across a rotation: a bundle proven against a checkpoint from before it verifies by the
    retired key, a later checkpoint by the current one.
    """
    if not isinstance(bundle, Mapping):
        raise VerificationError("bundle is not a JSON object")
    if bundle.get("format") != BUNDLE_FORMAT:
        raise VerificationError(f"bundle format is not {BUNDLE_FORMAT!r}")
    _field(bundle, "loan_id", str, "bundle")
    checkpoint = open_checkpoint(_field(bundle, "checkpoint", str, "bundle"), vkey)
    _verify_leaves(bundle.get("leaves"), checkpoint)
    for part in ("strategies", "registry"):
        if bundle.get(part) is not None:
            _verify_leaves(bundle.get(part), checkpoint, part)
    _disjoint(bundle)
    latest = checkpoint
    section = bundle.get("consistency")
    if section is not None:
        note = _field(section, "checkpoint", str, "bundle consistency")
        proof = _field(section, "proof", list, "bundle consistency")
        hashes = _hash_list(proof, "consistency proof")
        latest = _verify_extension(checkpoint, note, hashes, vkey)
    if (later_checkpoint_note is None) != (consistency_proof is None):
        raise VerificationError("a later checkpoint and its consistency proof go together")
    if later_checkpoint_note is not None and consistency_proof is not None:
        if not isinstance(later_checkpoint_note, str):
            raise VerificationError("later checkpoint is not a signed note text")
        later = _verify_extension(checkpoint, later_checkpoint_note, consistency_proof, vkey)
        latest = later if later.size >= latest.size else latest
    return latest


# --- the bundle's leaves are its loan's -------------------------------------------------------


def verify_loan(bundle: Mapping[str, object]) -> None:
    """Every leaf of a bundle whose proofs have verified is an event of the bundle's loan: its
    CloudEvent `subject`, and its `data.loan_id` where it has one, are the bundle's `loan_id`.

    The proofs show that each leaf is in the log, not whose it is: without this, another
    loan's bundle relabelled, or another loan's leaf spliced in, would verify (and would be
    judged as this loan's). The first leaf that is not this loan's is named.
    """
    loan_id = _field(bundle, "loan_id", str, "bundle")
    for index, data in _bundle_leaves(bundle):
        problem = _not_of_loan(data, loan_id)
        if problem is not None:
            raise VerificationError(f"leaf {index} {problem}, not of the bundle's loan "
                                    f"{_shown(loan_id)}", leaf_index=index)
    for index, data in _strategy_leaves(bundle):
        problem = _not_a_strategy(data)
        if problem is not None:
            raise VerificationError(f"strategy leaf {index} {problem}", leaf_index=index)
    for index, data in _registry_leaves(bundle):
        problem = _not_a_registry_entry(data)
        if problem is not None:
            raise VerificationError(f"registry leaf {index} {problem}", leaf_index=index)


def _json_object(data: bytes) -> dict[str, Any] | None:
    """The leaf as a JSON object, or None when it is not one."""
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def _not_a_strategy(data: bytes) -> str | None:
    """Why a `strategies` leaf is not a lender's StrategyPublished; None when it is. (Which
    lender's, and which version, the rules match with the visit requests that name one.)"""
    event = _json_object(data)
    if event is None:
        return "is not a JSON CloudEvent"
    kind = event.get("type")
    if kind != STRATEGY_TYPE:
        return f"is a {_shown(kind) if isinstance(kind, str) else 'leaf'}, not a {STRATEGY_TYPE}"
    payload, subject = event.get("data"), event.get("subject")
    lender = payload.get("lender_id") if isinstance(payload, dict) else None
    if not isinstance(subject, str) or subject != lender:
        return "is not an event of the lender its data names"
    return None


def _not_a_registry_entry(data: bytes) -> str | None:
    """Why a `registry` leaf is not a collector's or agency's registry entry; None when it is:
    a CollectorRegistered / CollectorRevoked of the collector, an AgencyRegistered of the
    agency, its data names."""
    event = _json_object(data)
    if event is None:
        return "is not a JSON CloudEvent"
    kind = event.get("type")
    key = REGISTRY_TYPES.get(kind) if isinstance(kind, str) else None
    if key is None:
        shown = _shown(kind) if isinstance(kind, str) else "leaf"
        return f"is a {shown}, not one of {', '.join(sorted(REGISTRY_TYPES))}"
    payload, subject = event.get("data"), event.get("subject")
    named = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(subject, str) or subject != named:
        return f"is not an event of the {key.removesuffix('_id')} its data names"
    return None


def _not_of_loan(data: bytes, loan_id: str) -> str | None:
    """Why the leaf is not an event of `loan_id`; None when it is."""
    event = _json_object(data)
    if event is None:
        return "is not a JSON CloudEvent"
    subject = event.get("subject")
    if not isinstance(subject, str):
        return "has no subject"
    if subject != loan_id:
        return f"is an event of {_shown(subject)}"
    payload = event.get("data")
    if isinstance(payload, dict) and "loan_id" in payload and payload["loan_id"] != loan_id:
        named = payload["loan_id"]
        return f"has data.loan_id {_shown(named) if isinstance(named, str) else repr(named)[:32]}"
    return None


# --- compliance verdicts, re-derived from the bundle's leaves ----------------------------------


def _section(bundle: Mapping[str, object], key: str, what: str) -> list[tuple[int, bytes]]:
    """One list of a bundle whose proofs have verified, as (index, bytes); none when an older
    bundle lacks it."""
    leaves = bundle.get(key)
    if leaves is None and key != "leaves":
        return []
    assert isinstance(leaves, list)  # verify_bundle has checked every one
    return [(_field(item, "leaf_index", int, what),
             b64decode(_field(item, "leaf", str, what), "leaf")) for item in leaves]


def _bundle_leaves(bundle: Mapping[str, object]) -> list[tuple[int, bytes]]:
    """The loan's own leaves."""
    return _section(bundle, "leaves", "bundle leaf")


def _strategy_leaves(bundle: Mapping[str, object]) -> list[tuple[int, bytes]]:
    """The StrategyPublished leaves a bundle carries beside its loan's."""
    return _section(bundle, "strategies", "strategy leaf")


def _registry_leaves(bundle: Mapping[str, object]) -> list[tuple[int, bytes]]:
    """The registry leaves (collectors', agencies') a bundle carries beside its loan's."""
    return _section(bundle, "registry", "registry leaf")


def _judged_leaves(bundle: Mapping[str, object]) -> list[tuple[int, bytes]]:
    """What the rules judge: the loan's leaves, the strategies' and the registry's, in index
    order."""
    return sorted(_bundle_leaves(bundle) + _strategy_leaves(bundle) + _registry_leaves(bundle),
                  key=lambda leaf: leaf[0])


_Said = tuple[str, tuple[int, ...], tuple[int, ...]]  # verdict, evidence, finding indices


def _shown(text: str) -> str:
    """A bundle's text as it may be printed: plain when short and printable, else quoted."""
    return text if text.isprintable() and len(text) <= 32 else repr(text[:32])


def _said(verdict: object, what: str) -> tuple[str, _Said]:
    """One verdict's rule and what it says, refusing any other shape."""
    rule = _shown(_field(verdict, "rule", str, what))
    said = _shown(_field(verdict, "verdict", str, what))
    evidence = _field(verdict, "evidence", list, what)
    findings = _field(verdict, "findings", list, what)
    indices = [_field(finding, "leaf_index", int, f"{what} finding") for finding in findings]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in evidence):
        raise VerificationError(f"{what} {rule}: evidence is not a list of leaf indices")
    return rule, (said, tuple(evidence), tuple(indices))


def _verdicts(verdicts: Sequence[object], what: str) -> dict[str, _Said]:
    found: dict[str, _Said] = {}
    for verdict in verdicts:
        rule, said = _said(verdict, what)
        if rule in found:
            raise VerificationError(f"{what} gives rule {rule} twice")
        found[rule] = said
    return found


def verdict_differences(bundle: Mapping[str, object], judge: Judge) -> list[str]:
    """Where the bundle's verdicts differ from those its own leaves give; [] when they agree.

    Verdict, evidence and the leaf of each finding are compared; a finding's wording is not
    (it may change between versions of the rules without changing what was found).
    """
    pack = _shown(_field(bundle, "pack", str, "bundle"))
    said = _verdicts(_field(bundle, "verdicts", list, "bundle"), "bundle verdict")
    derived_pack, derived = judge(_judged_leaves(bundle), pack)
    found = _verdicts(derived, "re-derived verdict")
    differences = [] if derived_pack == pack else [
        f"pack: bundle says {pack}, leaves say {derived_pack}"]
    for rule, (verdict, evidence, findings) in found.items():
        theirs = said.pop(rule, None)
        if theirs is None:
            differences.append(f"{rule}: bundle has no verdict, leaves say {verdict}")
        elif theirs[0] != verdict:
            differences.append(f"{rule}: bundle says {theirs[0]}, leaves say {verdict}")
        elif theirs[1] != evidence:
            differences.append(f"{rule}: bundle's evidence {list(theirs[1])} is not the "
                               f"leaves' {list(evidence)}")
        elif theirs[2] != findings:
            differences.append(f"{rule}: bundle's findings at leaves {list(theirs[2])} are not "
                               f"the leaves' {list(findings)}")
    differences += [f"{rule}: bundle says {verdict}, but there is no such rule"
                    for rule, (verdict, _, _) in said.items()]
    return differences


def _verdict_note(bundle: Mapping[str, object], judge: Judge | None) -> list[str] | str:
    """The differences found, or a note of what was (not) checked."""
    if "verdicts" not in bundle:
        return "the bundle carries no verdicts: none were checked"
    if judge is None:
        return "verdicts not re-derived: this file holds no rules (`dunwell verify` does)"
    return verdict_differences(bundle, judge) or "every verdict re-derived from the leaves"


# --- the offline verifier's command ---------------------------------------------------------


def main(argv: Sequence[str] | None = None, judge: Judge | None = None) -> int:
    """Verify a bundle offline; 0 when all holds, 1 naming the first failure (or every verdict
    the leaves contradict), 2 bad input. Every leaf must be an event of the bundle's loan (a
    `strategies` leaf, a lender's StrategyPublished; a `registry` leaf, a collector's or an
    agency's registry entry).
    With `judge`, the verdicts are re-derived too."""
    parser = argparse.ArgumentParser(
        prog="tlog.py", description="Verify a dunwell evidence bundle offline: the checkpoint's "
        "signature, every leaf's inclusion proof, that every leaf is an event of the bundle's "
        "loan (or, under 'strategies', a lender's StrategyPublished; under 'registry', a "
        "collector's or agency's registry entry), and consistency with a "
        "later checkpoint if the bundle carries one. "
        "(`dunwell verify` also re-derives the bundle's verdicts.)")
    parser.add_argument("bundle", type=Path, help="the bundle (JSON) from /v1/loans/{id}/evidence")
    parser.add_argument("--key", "--vkey", required=True, action="append",
                        help="the log's public key (vkey text), or a file holding it: one vkey "
                        "a line, or the keys the log publishes (GET /v1/keys, as JSON), "
                        "current and retired. Repeatable: across a key rotation, give the "
                        "old key and the new")
    args = parser.parse_args(argv)
    try:
        vkey = trusted_keys([k for given in args.key for k in read_vkeys(given)])
        bundle = json.loads(args.bundle.read_text())
    except VerificationError as error:
        print(f"error: --key: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        checkpoint = verify_bundle(bundle, vkey)
        verify_loan(bundle)
        verdicts = _verdict_note(bundle, judge)
    except (VerificationError, ValueError) as error:
        where = ""
        leaf_index, size = getattr(error, "leaf_index", None), getattr(error, "size", None)
        if isinstance(leaf_index, int):
            where = f" (first failing leaf index {leaf_index})"
        elif isinstance(size, int):
            where = f" (size {size})"
        print(f"FAILED{where}: {error}", file=sys.stderr)
        return 1
    if isinstance(verdicts, list):
        for difference in verdicts:
            print(f"FAILED: {difference}", file=sys.stderr)
        return 1
    print(f"OK: {checkpoint.origin} size {checkpoint.size} verified; {verdicts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
