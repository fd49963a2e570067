"""Key rotation, below the service: a note verified by any of the log's keys, the keys an
auditor is handed (vkey lines or the published JSON), and which run of checkpoints each key
signed, found in a real store signed by three keys in turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.tlog import (
    Checkpoint,
    TrustedKey,
    VerificationError,
    leaf_hash,
    main,
    open_checkpoint,
    open_signed_checkpoint,
    read_vkeys,
)
from tests.unit.audit.logs import EVERY, ORIGIN, SIZE, grow

from services.audit.application import AuditLog
from services.audit.keys import log_keys, retired_vkeys
from services.audit.signer import generate_signer, load_signer, sign_note
from services.audit.store import LogStore, StoreReader
from services.audit.verify import verify_store

KEYS = [generate_signer(ORIGIN) for _ in range(3)]  # (skey, vkey), oldest first
BODY = Checkpoint(ORIGIN, 7, leaf_hash(b"seven")).body()


def signed(body: str, *skeys: str) -> str:
    """A note with one signature line per key, in that order (a co-signed note)."""
    note = ""
    for skey in skeys:
        name, signer = load_signer(skey)
        line = sign_note(body, name, signer).removeprefix(body + "\n")
        note += line
    return f"{body}\n{note}"


def vkey(n: int) -> str:
    return KEYS[n][1]


def key_id(n: int) -> str:
    return vkey(n).split("+")[1]


# --- a note and a set of keys ---------------------------------------------------------------


def test_a_note_verifies_under_any_key_of_the_set_and_names_its_signers() -> None:
    note = signed(BODY, KEYS[0][0])
    checkpoint, signers = open_signed_checkpoint(note, [vkey(1), vkey(0)])
    assert checkpoint.size == 7 and [s.vkey for s in signers] == [vkey(0)]
    assert open_checkpoint(note, vkey(0)).size == 7  # one vkey, as before a rotation
    cosigned = signed(BODY, KEYS[0][0], KEYS[1][0])
    for keys in ([vkey(0)], [vkey(1)], [vkey(0), vkey(1)]):
        assert open_checkpoint(cosigned, keys).size == 7


def test_a_note_by_no_key_of_the_set_fails_naming_who_signed_it() -> None:
    note = signed(BODY, KEYS[2][0])
    with pytest.raises(VerificationError) as failure:
        open_checkpoint(note, [vkey(0), vkey(1)])
    assert failure.value.message == (
        f"note carries no signature by {ORIGIN} with a key given (key ID {key_id(0)}, "
        f"{key_id(1)}); it is signed by {ORIGIN}+{key_id(2)}")


def test_a_bad_signature_by_a_trusted_key_fails_even_beside_a_good_one() -> None:
    note = signed(BODY, KEYS[0][0], KEYS[1][0])
    lines = note.split("\n")
    # B's line carries B's signature over another body: a trusted key's line that fails.
    forged = signed(Checkpoint(ORIGIN, 8, leaf_hash(b"x")).body(), KEYS[1][0]).split("\n")
    lines[-2] = forged[-2]
    with pytest.raises(VerificationError, match="does not verify"):
        open_checkpoint("\n".join(lines), [vkey(0), vkey(1)])


def test_the_origin_must_be_the_name_of_the_key_that_signed() -> None:
    other_skey, other_vkey = generate_signer("another.log/audit")
    with pytest.raises(VerificationError, match=r"is not the log 'another\.log/audit'"):
        open_checkpoint(signed(BODY, other_skey), [vkey(0), other_vkey])


def test_a_retired_key_is_bounded_by_its_last_checkpoint_unless_another_signed() -> None:
    bounded = [TrustedKey(vkey(0), until_size=6), TrustedKey(vkey(1))]
    with pytest.raises(VerificationError, match="signed none past size 6") as failure:
        open_checkpoint(signed(BODY, KEYS[0][0]), bounded)
    assert failure.value.size == 7
    assert open_checkpoint(signed(BODY, KEYS[0][0], KEYS[1][0]), bounded).size == 7
    assert open_checkpoint(signed(BODY, KEYS[0][0]),
                           [TrustedKey(vkey(0), until_size=7)]).size == 7



def test_a_key_given_both_retired_and_current_counts_as_either_in_any_order() -> None:
    """An auditor handed the published keys and the current vkey as well may list one key
    twice, bounded and not: the verdict never depends on the order of the --key options."""
    note = signed(BODY, KEYS[0][0])
    both = [TrustedKey(vkey(0), until_size=6), TrustedKey(vkey(0))]
    for keys in (both, both[::-1]):
        checkpoint, signers = open_signed_checkpoint(note, keys)
        assert checkpoint.size == 7 and len(signers) == 2
    with pytest.raises(VerificationError, match="signed none past size 6"):
        open_checkpoint(note, [TrustedKey(vkey(0), until_size=6),
                               TrustedKey(vkey(0), until_size=5)])


# --- what an auditor is handed --------------------------------------------------------------


def test_keys_are_read_from_text_lines_or_the_published_json(tmp_path: Path) -> None:
    assert read_vkeys(vkey(0)) == [TrustedKey(vkey(0))]
    lines = tmp_path / "audit.vkeys"
    lines.write_text(f"# retired in December\n{vkey(0)}\n\n{vkey(1)}\n")
    assert read_vkeys(str(lines)) == [TrustedKey(vkey(0)), TrustedKey(vkey(1))]
    published = tmp_path / "keys.json"
    published.write_text(json.dumps({"origin": ORIGIN, "public_key": vkey(1), "keys": [
        {"vkey": vkey(0), "status": "retired", "from_size": 1, "until_size": 40},
        {"vkey": vkey(1), "status": "current", "from_size": 41, "until_size": None}]}))
    assert read_vkeys(str(published)) == [TrustedKey(vkey(0), 40), TrustedKey(vkey(1))]
    answer = tmp_path / "checkpoint.json"
    answer.write_text(json.dumps({"tree_size": 3, "note": "", "public_key": vkey(1)}))
    assert read_vkeys(str(answer)) == [TrustedKey(vkey(1))]
    for bad in ('{"keys": [{"status": "retired"}]}', '{"keys": 3}', "{not json",
                json.dumps({"keys": [{"vkey": vkey(0), "status": "retired",
                                      "until_size": "40"}]})):
        published.write_text(bad)
        with pytest.raises(VerificationError):
            read_vkeys(str(published))


def test_the_offline_verifier_takes_several_keys(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`python tlog.py bundle --key A --key B`: a bad key among them is bad input (2)."""
    (tmp_path / "bundle.json").write_text("{}")
    assert main([str(tmp_path / "bundle.json"), "--key", vkey(0), "--key", "nope"]) == 2
    assert "--key: verifier key is malformed" in capsys.readouterr().err
    assert main([str(tmp_path / "bundle.json"), "--key", vkey(0), "--vkey", vkey(1)]) == 1
    assert "bundle format" in capsys.readouterr().err


def test_retired_keys_must_be_this_logs_verifier_keys() -> None:
    assert retired_vkeys(f" {vkey(0)} ,{vkey(1)}\n{vkey(0)}\n", ORIGIN) == [vkey(0), vkey(1)]
    with pytest.raises(ValueError, match="not the origin"):
        retired_vkeys(generate_signer("another.log/audit")[1], ORIGIN)
    with pytest.raises(ValueError, match="malformed"):
        retired_vkeys("nope", ORIGIN)


# --- a store signed by three keys in turn ---------------------------------------------------


def rotate(path: Path, to: int) -> AuditLog:
    """The log restarted on key `to`, every older key retired, oldest first."""
    return AuditLog(LogStore(path), ORIGIN, load_signer(KEYS[to][0])[1], vkey(to),
                    retired=[vkey(n) for n in range(to)])


@pytest.fixture(scope="module")
def three_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Leaves 0..99 signed by key 0, 100..224 by key 1, 225..299 by key 2 (every 25)."""
    path = tmp_path_factory.mktemp("audit") / "audit.db"
    notes: list[str] = []
    for to, (start, end) in enumerate([(0, 100), (100, 225), (225, SIZE)]):
        log = rotate(path, to)
        grow(log, start, end, notes)
        log.store.close()
    return path


def test_each_keys_run_of_checkpoints_is_found(three_keys: Path) -> None:
    log = rotate(three_keys, 2)
    runs = [(k.status, k.key_id, k.from_size, k.until_size) for k in log.published_keys()]
    assert runs == [("retired", key_id(0), EVERY, 100), ("retired", key_id(1), 125, 225),
                    ("current", key_id(2), 250, None)]
    log.store.close()


def test_before_the_new_key_signs_the_retired_run_ends_at_the_latest(three_keys: Path,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = rotate(path, 0)
    grow(log, 0, 60, [])
    log.store.close()
    log = rotate(path, 1)
    assert [(k.from_size, k.until_size) for k in log.published_keys()] == [(25, 60),
                                                                           (None, None)]
    grow(log, 60, 70, [])
    assert [(k.from_size, k.until_size) for k in log.published_keys()] == [(25, 60), (70, None)]
    log.store.close()


def test_retired_keys_out_of_order_publish_no_run_rather_than_a_wrong_one(
        three_keys: Path) -> None:
    store = LogStore(three_keys)
    keys = log_keys(store, vkey(2), [vkey(1), vkey(0)])
    store.close()
    assert keys[0].from_size is None  # key 1 listed first: its run cannot be confirmed
    assert keys[1].until_size is None  # key 0 then gets no bound that could be wrong
    assert (keys[2].from_size, keys[2].until_size) == (250, None)


def test_verify_store_across_two_rotations(three_keys: Path) -> None:
    reader = StoreReader(three_keys)
    try:
        report = verify_store(reader, [vkey(0), vkey(1), vkey(2)])
        assert report.ok, report.findings
        assert report.checkpoints_verified == SIZE // EVERY
        assert report.signed_by == {vkey(0): 4, vkey(1): 5, vkey(2): 3}
        partial = verify_store(reader, [vkey(1), vkey(2)])
    finally:
        reader.close()
    unverified = [f for f in partial.findings if f.problem.startswith("stored checkpoint")]
    assert [f.size for f in unverified] == [25, 50, 75, 100]
    assert all(f"it is signed by {ORIGIN}+{key_id(0)}" in f.problem for f in unverified)
