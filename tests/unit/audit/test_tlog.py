"""Adversarial tests for the offline verifier: every tampering must be a VerificationError."""

from __future__ import annotations

import ast
import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tlog import (
    Checkpoint,
    VerificationError,
    decode_vkey,
    encode_vkey,
    key_id,
    leaf_hash,
    open_checkpoint,
    parse_checkpoint_body,
    verify_bundle,
    verify_consistency,
    verify_inclusion,
    verify_note,
)

from services.audit.merkle import MemoryNodes, consistency_proof, inclusion_proof, nodes_for_appends
from services.audit.merkle import root as tree_root
from services.audit.signer import generate_signer, load_signer, sign_note

ORIGIN = "audit.dunwell.example/collections"
SKEY, VKEY = generate_signer(ORIGIN)
_, SIGNER = load_signer(SKEY)
OTHER_SKEY, OTHER_VKEY = generate_signer(ORIGIN)  # same name, different key
_, OTHER_SIGNER = load_signer(OTHER_SKEY)
LEAVES = [json.dumps({"loan_id": f"L{i % 3}", "seq": i}).encode() for i in range(40)]

# Go's golang.org/x/mod/sumdb/note example: an external interop vector.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def log() -> MemoryNodes:
    store = MemoryNodes()
    store.put(nodes_for_appends(0, [leaf_hash(d) for d in LEAVES], store))
    return store


def checkpoint_note(
    log: MemoryNodes, size: int, signer: Ed25519PrivateKey = SIGNER, name: str = ORIGIN
) -> str:
    return sign_note(Checkpoint(ORIGIN, size, tree_root(size, log)).body(), name, signer)


def make_bundle(
    log: MemoryNodes, indices: list[int], size: int, later: int | None = None
) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "format": "dunwell-evidence/v1",
        "loan_id": "L1",
        "checkpoint": checkpoint_note(log, size),
        "leaves": [
            {
                "leaf_index": i,
                "leaf": b64(LEAVES[i]),
                "inclusion_proof": [b64(h) for h in inclusion_proof(i, size, log)],
            }
            for i in indices
        ],
    }
    if later is not None:
        bundle["consistency"] = {
            "checkpoint": checkpoint_note(log, later),
            "proof": [b64(h) for h in consistency_proof(size, later, log)],
        }
    return bundle


def rejected(check: Callable[[], object]) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        check()
    return info.value


# --- inclusion -------------------------------------------------------------------------


def inclusion_case(log: MemoryNodes, index: int = 13, size: int = 29) -> tuple[Any, ...]:
    return (
        leaf_hash(LEAVES[index]),
        index,
        size,
        inclusion_proof(index, size, log),
        tree_root(size, log),
    )


def test_inclusion_happy_path(log: MemoryNodes) -> None:
    verify_inclusion(*inclusion_case(log))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, i, n, p, r: (h, i, n, [b"\x00" * 32, *p[1:]], r), id="forged"),
        pytest.param(lambda h, i, n, p, r: (h, i, n, p[:-1], r), id="truncated"),
        pytest.param(lambda h, i, n, p, r: (h, i, n, [*p, p[0]], r), id="extra-hash"),
        # Sizes giving the same path shape are indistinguishable here by design: the
        # signed checkpoint is what binds a size to its root.
        pytest.param(lambda h, i, n, p, r: (h, i, 16, p, r), id="smaller-size"),
        pytest.param(lambda h, i, n, p, r: (h, i, 2 * n, p, r), id="much-larger-size"),
        pytest.param(lambda h, i, n, p, r: (leaf_hash(LEAVES[i + 1]), i, n, p, r), id="swapped"),
        pytest.param(lambda h, i, n, p, r: (h, i + 1, n, p, r), id="wrong-index"),
        pytest.param(lambda h, i, n, p, r: (h, n, n, p, r), id="index-at-size"),
        pytest.param(lambda h, i, n, p, r: (h, -1, n, p, r), id="negative-index"),
        pytest.param(lambda h, i, n, p, r: (h, i, n, [p[0][:31], *p[1:]], r), id="short-hash"),
        pytest.param(lambda h, i, n, p, r: (h, i, n, list(reversed(p)), r), id="reordered"),
        pytest.param(lambda h, i, n, p, r: (h, i, n, p, tree_root_of(n - 1)), id="wrong-root"),
    ],
)
def test_inclusion_tampering_is_rejected(log: MemoryNodes, tamper: Callable[..., Any]) -> None:
    args = tamper(*inclusion_case(log))
    error = rejected(lambda: verify_inclusion(*args))
    assert error.leaf_index == args[1] and error.size == args[2]


def tree_root_of(size: int) -> bytes:
    store = MemoryNodes()
    store.put(nodes_for_appends(0, [leaf_hash(d) for d in LEAVES], store))
    return tree_root(size, store)


def test_single_leaf_tree_needs_empty_path(log: MemoryNodes) -> None:
    verify_inclusion(leaf_hash(LEAVES[0]), 0, 1, [], tree_root(1, log))
    rejected(
        lambda: verify_inclusion(leaf_hash(LEAVES[0]), 0, 1, [b"\x00" * 32], tree_root(1, log))
    )


# --- consistency --------------------------------------------------------------------------


def test_consistency_happy_paths(log: MemoryNodes) -> None:
    for first, second in [(1, 2), (4, 8), (7, 29), (16, 40), (29, 29)]:
        proof = consistency_proof(first, second, log)
        verify_consistency(first, second, tree_root(first, log), tree_root(second, log), proof)


@pytest.mark.parametrize(
    ("first", "second", "tamper"),
    [
        (7, 29, lambda p: [b"\x01" * 32, *p[1:]]),
        (7, 29, lambda p: p[:-1]),
        (7, 29, lambda p: [*p, p[0]]),
        (7, 29, lambda p: []),
        (8, 29, lambda p: p[1:]),
        (29, 29, lambda p: [b"\x00" * 32]),
        (0, 29, lambda p: [b"\x00" * 32]),
    ],
)
def test_consistency_tampering_is_rejected(
    log: MemoryNodes, first: int, second: int, tamper: Callable[[list[bytes]], list[bytes]]
) -> None:
    proof = tamper(consistency_proof(first, second, log))
    first_root = tree_root(first, log)
    error = rejected(
        lambda: verify_consistency(first, second, first_root, tree_root(second, log), proof)
    )
    assert error.size == second


def test_consistency_wrong_sizes_and_roots(log: MemoryNodes) -> None:
    proof = consistency_proof(7, 29, log)
    r7, r29 = tree_root(7, log), tree_root(29, log)
    rejected(lambda: verify_consistency(7, 64, r7, r29, proof))
    rejected(lambda: verify_consistency(7, 16, r7, r29, proof))
    rejected(lambda: verify_consistency(6, 29, r7, r29, proof))
    rejected(lambda: verify_consistency(7, 29, r29, r29, proof))
    rejected(lambda: verify_consistency(29, 7, r29, r7, proof))
    rejected(lambda: verify_consistency(29, 29, r29, r7, []))


# --- notes, checkpoints and keys ----------------------------------------------------------------


def test_go_sumdb_note_vector_interop() -> None:
    name, signer = load_signer(GO_SKEY)
    assert name == "PeterNeumann"
    assert sign_note(GO_TEXT, name, signer) == GO_NOTE
    assert decode_vkey(GO_VKEY)[0] == "PeterNeumann"
    assert verify_note(GO_NOTE, *decode_vkey(GO_VKEY)) == GO_TEXT
    rejected(lambda: verify_note(GO_NOTE.replace("problem,", "problem;"), *decode_vkey(GO_VKEY)))


def test_keys_round_trip() -> None:
    name, public_key = decode_vkey(VKEY)
    assert name == ORIGIN
    assert encode_vkey(name, public_key) == VKEY
    assert VKEY.split("+")[1] == key_id(name, public_key).hex()


def test_checkpoint_happy_path(log: MemoryNodes) -> None:
    checkpoint = open_checkpoint(checkpoint_note(log, 29), VKEY)
    assert checkpoint == Checkpoint(ORIGIN, 29, tree_root(29, log))
    assert parse_checkpoint_body(checkpoint.body()) == checkpoint


def test_unknown_signatures_are_ignored(log: MemoryNodes) -> None:
    note = checkpoint_note(log, 29)
    foreign = sign_note(
        Checkpoint(ORIGIN, 29, tree_root(29, log)).body(), "witness.example", OTHER_SIGNER
    )
    cosigned = note + foreign.split("\n\n")[1]
    assert open_checkpoint(cosigned, VKEY).size == 29


def test_checkpoint_signed_by_another_key(log: MemoryNodes) -> None:
    note = checkpoint_note(log, 29, signer=OTHER_SIGNER)
    assert "no signature" in str(rejected(lambda: open_checkpoint(note, VKEY)))


def test_checkpoint_signed_under_another_name(log: MemoryNodes) -> None:
    rejected(lambda: open_checkpoint(checkpoint_note(log, 29, name="evil.example/log"), VKEY))


def test_origin_must_match_key_name(log: MemoryNodes) -> None:
    skey, vkey = generate_signer("other.example/log")
    name, signer = load_signer(skey)
    note = sign_note(Checkpoint(ORIGIN, 29, tree_root(29, log)).body(), name, signer)
    rejected(lambda: open_checkpoint(note, vkey))


def test_extension_line_is_rejected_even_when_signed(log: MemoryNodes) -> None:
    body = Checkpoint(ORIGIN, 29, tree_root(29, log)).body() + "extension line\n"
    note = sign_note(body, ORIGIN, SIGNER)
    assert "no extensions" in str(rejected(lambda: open_checkpoint(note, VKEY)))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda n: n + "appended text\n", id="appended-line"),
        pytest.param(lambda n: n + "\nappended paragraph\n", id="appended-paragraph"),
        pytest.param(lambda n: n[:-1], id="no-trailing-newline"),
        pytest.param(lambda n: n.replace("\n\n", "\n"), id="no-blank-line"),
        pytest.param(lambda n: n.replace("\n\n", "\nextension\n\n"), id="inserted-extension"),
        pytest.param(lambda n: n.replace("\n29\n", "\n30\n"), id="tampered-size"),
        pytest.param(lambda n: n.replace("\n29\n", "\n029\n"), id="leading-zero-size"),
        pytest.param(lambda n: n.replace("\n29\n", "\n+29\n"), id="signed-size"),
        pytest.param(lambda n: _flip_root(n), id="tampered-root"),  # noqa: PLW0108 - defined below
        pytest.param(lambda n: n.replace("\u2014 ", "-- "), id="ascii-dash"),
        pytest.param(lambda n: n.replace("\n", "\r\n"), id="crlf"),
        pytest.param(lambda n: n + "".join(n.split("\n\n")[1] for _ in range(100)), id="101-sigs"),
        pytest.param(lambda n: "", id="empty"),
        pytest.param(lambda n: n.replace(ORIGIN, ORIGIN + "\udc80", 1), id="lone-surrogate"),
    ],
)
def test_tampered_notes_are_rejected(log: MemoryNodes, tamper: Callable[[str], str]) -> None:
    note = tamper(checkpoint_note(log, 29))
    rejected(lambda: open_checkpoint(note, VKEY))


def _flip_root(note: str) -> str:
    lines = note.split("\n")
    root = bytearray(base64.b64decode(lines[2]))
    root[0] ^= 1
    lines[2] = b64(bytes(root))
    return "\n".join(lines)


def test_up_to_100_signatures_are_accepted(log: MemoryNodes) -> None:
    note = checkpoint_note(log, 29)
    extra = sign_note(note.split("\n\n")[0] + "\n", "witness.example", OTHER_SIGNER)
    crowded = note + extra.split("\n\n")[1] * 99
    assert open_checkpoint(crowded, VKEY).size == 29


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n29\n{b64(b'x' * 31)}\n",
        f"{ORIGIN}\n29\n{b64(b'x' * 33)}\n",
        f"{ORIGIN}\n29\nnot base64!\n",
        f"\n29\n{b64(b'x' * 32)}\n",
        f"{ORIGIN}\n 29\n{b64(b'x' * 32)}\n",
        f"{ORIGIN}\n-1\n{b64(b'x' * 32)}\n",
        f"{ORIGIN}\n\u0662\u0669\n{b64(b'x' * 32)}\n",
        f"{ORIGIN}\n{2**64}\n{b64(b'x' * 32)}\n",
        f"{ORIGIN}\n29\n{b64(b'x' * 32)}",
    ],
)
def test_malformed_checkpoint_bodies(body: str) -> None:
    rejected(lambda: parse_checkpoint_body(body))


@pytest.mark.parametrize(
    "vkey",
    [
        pytest.param(lambda v: v.replace(v.split("+")[1], "00000000"), id="wrong-key-id"),
        pytest.param(lambda v: "other.example+" + v.split("+", 1)[1], id="wrong-name"),
        pytest.param(lambda v: v.rsplit("+", 1)[0], id="missing-key"),
        pytest.param(
            lambda v: v.split("+")[0] + "+" + v.split("+")[1] + "+" + b64(b"\x02" + b"k" * 32),
            id="wrong-alg",
        ),
        pytest.param(lambda v: v[:-4], id="short-key"),
        pytest.param(lambda v: v.upper(), id="uppercased"),
    ],
)
def test_bad_vkeys_are_rejected(log: MemoryNodes, vkey: Callable[[str], str]) -> None:
    bad = vkey(VKEY)
    rejected(lambda: open_checkpoint(checkpoint_note(log, 29), bad))


def test_load_signer_rejects_wrong_key_id() -> None:
    parts = SKEY.split("+", 4)
    parts[3] = "00000000"
    with pytest.raises(ValueError, match="key ID"):
        load_signer("+".join(parts))


# --- evidence bundles ---------------------------------------------------------------------


def test_bundle_happy_paths(log: MemoryNodes) -> None:
    assert verify_bundle(make_bundle(log, [1, 4, 7, 28], 29), VKEY).size == 29
    assert verify_bundle(make_bundle(log, [1, 4, 7], 29, later=40), VKEY).size == 40
    assert verify_bundle(make_bundle(log, [], 29), VKEY).size == 29
    later = checkpoint_note(log, 40)
    proof = consistency_proof(29, 40, log)
    assert verify_bundle(make_bundle(log, [4], 29), VKEY, later, proof).size == 40


def test_bundle_survives_json_round_trip(log: MemoryNodes) -> None:
    text = json.dumps(make_bundle(log, [0, 3, 6, 9], 29, later=33))
    assert verify_bundle(json.loads(text), VKEY).size == 33


def test_bundle_malformed_leaf_names_leaf_index(log: MemoryNodes) -> None:
    bundle = make_bundle(log, [1, 4, 7], 29)
    bundle["leaves"][1]["inclusion_proof"][0] = "not base64"
    error = rejected(lambda: verify_bundle(bundle, VKEY))
    assert (error.leaf_index, error.size) == (4, 29)


def test_bundle_tampered_leaf_names_leaf_index(log: MemoryNodes) -> None:
    bundle = make_bundle(log, [1, 4, 7, 28], 29)
    data = bytearray(base64.b64decode(bundle["leaves"][2]["leaf"]))
    data[5] ^= 0x20
    bundle["leaves"][2]["leaf"] = b64(bytes(data))
    error = rejected(lambda: verify_bundle(bundle, VKEY))
    assert (error.leaf_index, error.size) == (7, 29)


def test_bundle_leaf_moved_to_other_index(log: MemoryNodes) -> None:
    bundle = make_bundle(log, [1, 4], 29)
    bundle["leaves"][1]["leaf_index"] = 5
    assert rejected(lambda: verify_bundle(bundle, VKEY)).leaf_index == 5


@pytest.mark.parametrize("indices", [[4, 1], [4, 4], [7, 28, 9]])
def test_bundle_out_of_order_indices(log: MemoryNodes, indices: list[int]) -> None:
    error = rejected(lambda: verify_bundle(make_bundle(log, indices, 29), VKEY))
    assert "increase" in str(error)


def test_bundle_index_beyond_checkpoint(log: MemoryNodes) -> None:
    bundle = make_bundle(log, [3], 29)
    bundle["leaves"][0]["leaf_index"] = 29
    assert rejected(lambda: verify_bundle(bundle, VKEY)).leaf_index == 29


def test_bundle_bad_consistency_proof_names_size(log: MemoryNodes) -> None:
    bundle = make_bundle(log, [1], 29, later=40)
    bundle["consistency"]["proof"][0] = b64(b"\x07" * 32)
    assert rejected(lambda: verify_bundle(bundle, VKEY)).size == 40


def test_bundle_consistency_to_forked_checkpoint(log: MemoryNodes) -> None:
    forked = MemoryNodes()
    forked.put(nodes_for_appends(0, [leaf_hash(d) for d in LEAVES[:29] + [b"forged"] * 11], forked))
    bundle = make_bundle(log, [1], 29)
    bundle["consistency"] = {
        "checkpoint": sign_note(
            Checkpoint(ORIGIN, 40, tree_root(40, forked)).body(), ORIGIN, SIGNER
        ),
        "proof": [b64(h) for h in consistency_proof(29, 40, log)],
    }
    assert rejected(lambda: verify_bundle(bundle, VKEY)).size == 40


def test_explicit_later_checkpoint_bad_proof(log: MemoryNodes) -> None:
    later = checkpoint_note(log, 40)
    proof = consistency_proof(28, 40, log)
    bundle = make_bundle(log, [1], 29)
    assert rejected(lambda: verify_bundle(bundle, VKEY, later, proof)).size == 40
    rejected(lambda: verify_bundle(bundle, VKEY, later, None))
    rejected(lambda: verify_bundle(bundle, VKEY, checkpoint_note(log, 20), []))


def test_bundle_with_foreign_checkpoint(log: MemoryNodes) -> None:
    bundle = make_bundle(log, [1], 29)
    bundle["checkpoint"] = checkpoint_note(log, 29, signer=OTHER_SIGNER)
    rejected(lambda: verify_bundle(bundle, VKEY))


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b.update(format="dunwell-evidence/v2"), id="format"),
        pytest.param(lambda b: b.pop("format"), id="no-format"),
        pytest.param(lambda b: b.pop("loan_id"), id="no-loan-id"),
        pytest.param(lambda b: b.update(loan_id=7), id="loan-id-int"),
        pytest.param(lambda b: b.update(checkpoint=None), id="checkpoint-null"),
        pytest.param(lambda b: b.update(leaves={}), id="leaves-object"),
        pytest.param(lambda b: b.pop("leaves"), id="no-leaves"),
        pytest.param(lambda b: b["leaves"].append("x"), id="leaf-string"),
        pytest.param(lambda b: b["leaves"][0].update(leaf_index="1"), id="index-string"),
        pytest.param(lambda b: b["leaves"][0].update(leaf_index=True), id="index-bool"),
        pytest.param(lambda b: b["leaves"][0].update(leaf_index=1.0), id="index-float"),
        pytest.param(lambda b: b["leaves"][0].update(leaf="%%%"), id="leaf-not-b64"),
        pytest.param(lambda b: b["leaves"][0].update(leaf=None), id="leaf-null"),
        pytest.param(lambda b: b["leaves"][0].update(inclusion_proof="x"), id="proof-string"),
        pytest.param(lambda b: b["leaves"][0]["inclusion_proof"].append(3), id="proof-item-int"),
        pytest.param(
            lambda b: b["leaves"][0]["inclusion_proof"].__setitem__(0, "AAAA"), id="proof-short"
        ),
        pytest.param(
            lambda b: b["leaves"][0]["inclusion_proof"].__setitem__(0, "é"), id="proof-non-ascii"
        ),
        pytest.param(lambda b: b.update(consistency=[]), id="consistency-list"),
        pytest.param(
            lambda b: b.update(consistency={"checkpoint": "x"}), id="consistency-no-proof"
        ),
        pytest.param(
            lambda b: b.update(consistency={"checkpoint": 1, "proof": []}), id="consistency-int"
        ),
        pytest.param(
            lambda b: b.update(consistency={"checkpoint": b["checkpoint"], "proof": ["x"]}),
            id="consistency-bad-b64",
        ),
    ],
)
def test_malformed_bundles_raise_verification_error(
    log: MemoryNodes, mutate: Callable[[dict[str, Any]], object]
) -> None:
    bundle = make_bundle(log, [1, 4], 29)
    mutate(bundle)
    rejected(lambda: verify_bundle(bundle, VKEY))


@pytest.mark.parametrize("bundle", [None, [], "text", 3])
def test_non_object_bundles(bundle: Any) -> None:
    rejected(lambda: verify_bundle(bundle, VKEY))


def test_the_verifier_module_holds_no_signing_code() -> None:
    """tlog.py goes to auditors alone: stdlib and cryptography only, and no private key."""
    tree = ast.parse((Path(__file__).parents[3] / "shared" / "tlog.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    roots = {name.split(".")[0] for name in imported}
    assert roots - sys.stdlib_module_names - {"__future__"} == {"cryptography"}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
              for alias in node.names}
    assert not {name for name in names if "Private" in name}
    defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert not defined & {"sign_note", "generate_signer", "load_signer"}
