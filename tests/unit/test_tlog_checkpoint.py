"""tlog.checkpoint: signing through the key backend, verifying, and every refusal.

Body negatives are signed by the test log key (`resign`), so each shows the body check under test
fires on its own, not because a signature broke. The C2SP example's body is parsed (its key is not
published); the Rekor and Pixel 6 checkpoints (ECDSA, signature type 0x02) verify end to end.
"""

from __future__ import annotations

import base64

import pytest

from pki.filekeys import FileKeyBackend
from pki.signer import KeyAlgorithm
from tests.unit.vectors.tlog.load import vectors
from tlog.checkpoint import (
    MAX_BODY_LINE_BYTES,
    MAX_EXTENSION_LINES,
    Checkpoint,
    VerifiedCheckpoint,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from tlog.errors import (
    CheckpointOriginMismatch,
    CheckpointRootInvalid,
    CheckpointSizeInvalid,
    ConsistencyProofInvalid,
    InclusionProofInvalid,
    MalformedCheckpoint,
    MalformedNote,
    NoteSignatureInvalid,
    NoteTooLarge,
    TlogError,
    UnknownKey,
)
from tlog.merkle import EMPTY_ROOT, MAX_TREE_SIZE, MerkleTree, leaf_hash
from tlog.note import MAX_LINE_BYTES, NoteSigner, VerifierKey, sign_note

NOTES = vectors("signed-notes.json")
ORIGIN = "weighstation.example/log"
TREE = MerkleTree(leaf_hash(f"entry {i}".encode()) for i in range(20))
ROOT_B64 = base64.b64encode(TREE.root(20)).decode()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> FileKeyBackend:
    return FileKeyBackend(tmp_path_factory.mktemp("checkpoint-keys"), b"passphrase")


@pytest.fixture(scope="module")
def signer(backend: FileKeyBackend) -> NoteSigner:
    return NoteSigner.create(ORIGIN, backend.create(KeyAlgorithm.ED25519, "log"))


@pytest.fixture(scope="module")
def key(signer: NoteSigner) -> VerifierKey:
    # What an insurer's trust file holds: the verifier key string, parsed.
    return VerifierKey.parse(str(signer.verifier_key))


def checkpoint_at(size: int, extensions: tuple[str, ...] = ()) -> Checkpoint:
    return Checkpoint(ORIGIN, size, TREE.root(size), extensions)


def test_round_trip(signer: NoteSigner, key: VerifierKey) -> None:
    cp = checkpoint_at(20, ("Timestamp: 1700000000",))
    data = sign_checkpoint(cp, [signer])
    assert data.decode().startswith(f"{ORIGIN}\n20\n{ROOT_B64}\nTimestamp: 1700000000\n\n\u2014 {ORIGIN} ")
    verified = verify_checkpoint(data, [key], origin=ORIGIN)
    assert verified.checkpoint == cp
    assert (verified.origin, verified.size, verified.root_hash) == (ORIGIN, 20, TREE.root(20))


def test_ecdsa_p256_log_key(backend: FileKeyBackend) -> None:
    p256 = NoteSigner.create(ORIGIN, backend.create(KeyAlgorithm.EC_P256, "log-ec"))
    data = sign_checkpoint(checkpoint_at(7), [p256])
    assert verify_checkpoint(data, [VerifierKey.parse(str(p256.verifier_key))], origin=ORIGIN).size == 7


def test_empty_tree(signer: NoteSigner, key: VerifierKey) -> None:
    data = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), [signer])
    assert verify_checkpoint(data, [key], origin=ORIGIN).root_hash == EMPTY_ROOT


def test_c2sp_example_body_parses() -> None:
    case = NOTES["c2sp_checkpoint_example"]
    text = case["note"].split("\n\n")[0] + "\n"
    cp = parse_checkpoint(text)
    assert (cp.origin, cp.size, cp.root_hash.hex(), cp.extensions) == (
        case["origin"],
        case["size"],
        case["root"],
        (),
    )
    assert cp.text() == text


def test_c2sp_example_is_signed_by_a_key_we_do_not_know(key: VerifierKey) -> None:
    case = NOTES["c2sp_checkpoint_example"]
    with pytest.raises(UnknownKey):
        verify_checkpoint(case["note"].encode(), [key], origin=case["origin"])


def test_real_ecdsa_checkpoints() -> None:
    for case in NOTES["ecdsa_checkpoints"]["cases"]:
        cp = verify_checkpoint(case["note"].encode(), [VerifierKey.parse(case["key"])], origin=case["origin"])
        assert cp.size == case["size"]
        assert len(cp.root_hash) == 32


# --- Refusals --------------------------------------------------------------------------------


def resign(text: str, signer: NoteSigner) -> bytes:
    """Sign any text as the log would, so only the body check under test can fail."""
    return sign_note(text, [signer])


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("hex", "0x14"),
        ("letters", "2O"),
        ("plus-sign", "+20"),
        ("minus-sign", "-20"),
        ("leading-space", " 20"),
        ("trailing-space", "20 "),
        ("fullwidth-digits", "\uff12\uff10"),
        ("underscore", "2_0"),
        ("leading-zero", "020"),
        ("double-zero", "00"),
        ("above-max", str(MAX_TREE_SIZE + 1)),
        ("twenty-digits", "1" * 20),
        ("empty", ""),
    ],
)
def test_bad_sizes(signer: NoteSigner, key: VerifierKey, name: str, size: str) -> None:
    data = resign(f"{ORIGIN}\n{size}\n{ROOT_B64}\n", signer)
    with pytest.raises(CheckpointSizeInvalid):
        verify_checkpoint(data, [key], origin=ORIGIN)


@pytest.mark.parametrize(
    ("name", "root"),
    [
        ("not-base64", "not base64 at all!"),
        ("unpadded", ROOT_B64.rstrip("=")),
        ("url-safe-alphabet", base64.urlsafe_b64encode(b"\xfb" * 32).decode()),
        ("spare-bits", ROOT_B64[:-2] + "B="),
        ("31-bytes", base64.b64encode(TREE.root(20)[:31]).decode()),
        ("33-bytes", base64.b64encode(TREE.root(20) + b"\x00").decode()),
        ("hex", TREE.root(20).hex()),
    ],
)
def test_bad_roots(signer: NoteSigner, key: VerifierKey, name: str, root: str) -> None:
    data = resign(f"{ORIGIN}\n20\n{root}\n", signer)
    with pytest.raises(CheckpointRootInvalid):
        verify_checkpoint(data, [key], origin=ORIGIN)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("two-lines", f"{ORIGIN}\n20\n"),
        ("one-line", f"{ORIGIN}\n"),
        ("empty-extension-line", f"{ORIGIN}\n20\n{ROOT_B64}\n\nextension\n"),
        ("origin-over-bound", f"{'o' * (MAX_BODY_LINE_BYTES + 1)}\n20\n{ROOT_B64}\n"),
        ("extension-over-bound", f"{ORIGIN}\n20\n{ROOT_B64}\n{'e' * (MAX_BODY_LINE_BYTES + 1)}\n"),
        ("too-many-extensions", f"{ORIGIN}\n20\n{ROOT_B64}\n" + "ext\n" * (MAX_EXTENSION_LINES + 1)),
    ],
)
def test_bad_bodies(signer: NoteSigner, key: VerifierKey, name: str, text: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        verify_checkpoint(resign(text, signer), [key], origin=ORIGIN)


def test_missing_blank_line(signer: NoteSigner, key: VerifierKey) -> None:
    data = sign_checkpoint(checkpoint_at(20), [signer])
    with pytest.raises(MalformedNote, match="blank line"):
        verify_checkpoint(data.replace(b"\n\n", b"\n"), [key], origin=ORIGIN)


def test_trailing_garbage_after_signatures(signer: NoteSigner, key: VerifierKey) -> None:
    data = sign_checkpoint(checkpoint_at(20), [signer])
    for garbage in (b"x", b"\n", b"garbage\n", b"\x00"):
        with pytest.raises(MalformedNote):
            verify_checkpoint(data + garbage, [key], origin=ORIGIN)


def test_line_over_the_note_bound(signer: NoteSigner, key: VerifierKey) -> None:
    data = sign_checkpoint(checkpoint_at(20), [signer])
    with pytest.raises(NoteTooLarge):
        verify_checkpoint(b"o" * (MAX_LINE_BYTES + 1) + data, [key], origin=ORIGIN)


def test_unknown_key_hint(signer: NoteSigner, backend: FileKeyBackend) -> None:
    data = sign_checkpoint(checkpoint_at(20), [signer])
    # Same key name, another key: another key hint, so the signature is not ours.
    other = NoteSigner.create(ORIGIN, backend.create(KeyAlgorithm.ED25519, "other")).verifier_key
    with pytest.raises(UnknownKey):
        verify_checkpoint(data, [other], origin=ORIGIN)


def test_bad_signature(signer: NoteSigner, key: VerifierKey) -> None:
    data = sign_checkpoint(checkpoint_at(20), [signer])
    with pytest.raises(NoteSignatureInvalid):
        verify_checkpoint(data.replace(b"\n20\n", b"\n21\n"), [key], origin=ORIGIN)
    with pytest.raises(NoteSignatureInvalid):
        verify_checkpoint(
            data.replace(ROOT_B64.encode(), base64.b64encode(TREE.root(19))), [key], origin=ORIGIN
        )


def test_origin_mismatch(signer: NoteSigner, key: VerifierKey) -> None:
    data = resign(f"other.example/log\n20\n{ROOT_B64}\n", signer)
    with pytest.raises(CheckpointOriginMismatch):
        verify_checkpoint(data, [key], origin=ORIGIN)


def test_every_one_bit_flip_of_a_signed_checkpoint_is_refused(signer: NoteSigner, key: VerifierKey) -> None:
    data = sign_checkpoint(checkpoint_at(13, ("ext",)), [signer])
    verify_checkpoint(data, [key], origin=ORIGIN)
    for bit in range(len(data) * 8):
        mutated = bytearray(data)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(TlogError):
            verify_checkpoint(bytes(mutated), [key], origin=ORIGIN)


def test_checkpoints_are_validated_when_built() -> None:
    root = TREE.root(1)
    with pytest.raises(MalformedCheckpoint):
        Checkpoint("", 1, root)
    with pytest.raises(MalformedCheckpoint):
        Checkpoint("two\nlines", 1, root)
    with pytest.raises(CheckpointSizeInvalid):
        Checkpoint(ORIGIN, -1, root)
    with pytest.raises(CheckpointSizeInvalid):
        Checkpoint(ORIGIN, MAX_TREE_SIZE + 1, root)
    with pytest.raises(CheckpointRootInvalid):
        Checkpoint(ORIGIN, 1, root[:31])
    with pytest.raises(MalformedCheckpoint):
        Checkpoint(ORIGIN, 1, root, ("",))


# --- Proofs against a verified checkpoint ------------------------------------------------------


def verified_at(size: int, signer: NoteSigner, key: VerifierKey, origin: str = ORIGIN) -> VerifiedCheckpoint:
    data = sign_checkpoint(Checkpoint(origin, size, TREE.root(size)), [signer])
    return verify_checkpoint(data, [key], origin=origin)


def test_inclusion_against_a_checkpoint(signer: NoteSigner, key: VerifierKey) -> None:
    cp = verified_at(20, signer, key)
    for i in range(20):
        assert cp.verify_inclusion(TREE.subtree(0, i), i, TREE.inclusion_proof(i, 20)).size == 20
    with pytest.raises(InclusionProofInvalid):
        cp.verify_inclusion(TREE.subtree(0, 3), 4, TREE.inclusion_proof(3, 20))
    # A proof for another size does not verify against this checkpoint's signed size and root.
    with pytest.raises(InclusionProofInvalid):
        cp.verify_inclusion(TREE.subtree(0, 3), 3, TREE.inclusion_proof(3, 19))


def test_consistency_between_checkpoints(signer: NoteSigner, key: VerifierKey) -> None:
    old, new = verified_at(7, signer, key), verified_at(20, signer, key)
    assert new.verify_consistency(old, TREE.consistency_proof(7, 20)).size1 == 7
    with pytest.raises(ConsistencyProofInvalid):
        old.verify_consistency(new, TREE.consistency_proof(7, 20))
    other = verified_at(7, signer, key, origin="other.example/log")
    with pytest.raises(ConsistencyProofInvalid, match="two logs"):
        new.verify_consistency(other, TREE.consistency_proof(7, 20))


def test_error_codes() -> None:
    assert [
        e.code
        for e in (MalformedCheckpoint, CheckpointSizeInvalid, CheckpointRootInvalid, CheckpointOriginMismatch)
    ] == [
        "malformed-checkpoint",
        "checkpoint-size-invalid",
        "checkpoint-root-invalid",
        "checkpoint-origin-mismatch",
    ]
