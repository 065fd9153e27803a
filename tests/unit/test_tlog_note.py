"""tlog.note on published signed-note vectors (vectors/tlog/signed-notes.json), then negatives.

The golang/mod PeterNeumann key is an Ed25519 seed: loaded as a pki FileSigner, signing the Go text
must reproduce the Go note byte for byte (Ed25519 is deterministic). The ECDSA (type 0x02) vectors
are real checkpoints of the Rekor and Pixel 6 logs. Each negative changes one thing of a note our
own key signed, and is named after it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from pki.filekeys import FileKeyBackend, FileSigner
from pki.signer import KeyAlgorithm
from tests.unit.vectors.tlog.load import vectors
from tlog.errors import (
    MalformedNote,
    MalformedVerifierKey,
    NoteSignatureInvalid,
    NoteTooLarge,
    UnknownKey,
    UnsupportedSignatureType,
    UnsupportedSignerAlgorithm,
)
from tlog.note import (
    MAX_LINE_BYTES,
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    NoteSignature,
    NoteSigner,
    SignatureType,
    VerifierKey,
    open_note,
    sign_note,
)

NOTES = vectors("signed-notes.json")
GO = NOTES["go_sumdb_note"]
PETER = VerifierKey.parse(GO["peter_key"])
ENOCH = VerifierKey.parse(GO["enoch_key"])
DASH = "\u2014"


def go_signer() -> FileSigner:
    # "PRIVATE+KEY+<name>+<hash>+base64(0x01 || 32-byte seed)": the seed may hold '+', so split 4 times.
    material = base64.b64decode(GO["signer_key"].split("+", 4)[4])
    assert material[0] == SignatureType.ED25519
    key = ed25519.Ed25519PrivateKey.from_private_bytes(material[1:])
    return FileSigner(key_ref="file:peter-0000000000000000", algorithm=KeyAlgorithm.ED25519, key=key)


# --- Published vectors ---------------------------------------------------------------------------


def test_go_note_verifies() -> None:
    note = open_note((GO["text"] + "\n" + GO["peter_line"]).encode(), [PETER])
    assert note.text == GO["text"]
    assert [(s.name, s.key_id) for s in note.signatures] == [("PeterNeumann", 0xC74F20A3)]
    assert note.unverified == ()


def test_signing_with_a_pki_signer_reproduces_the_go_note() -> None:
    signer = NoteSigner.create("PeterNeumann", go_signer())
    assert signer.verifier_key == PETER
    assert sign_note(GO["text"], [signer]) == (GO["text"] + "\n" + GO["peter_line"]).encode()


def test_doubly_signed_go_note() -> None:
    data = (GO["text"] + "\n" + GO["peter_line"] + GO["enoch_line"]).encode()
    both = open_note(data, [PETER, ENOCH])
    assert [s.name for s in both.signatures] == ["PeterNeumann", "EnochRoot"]
    only_enoch = open_note(data, [ENOCH])
    assert [s.name for s in only_enoch.signatures] == ["EnochRoot"]
    assert [(s.name, s.key_id) for s in only_enoch.unverified] == [("PeterNeumann", 0xC74F20A3)]


def test_go_verifier_key_manglings_are_refused() -> None:
    """golang/mod TestNewVerifier: every proper substring, and every byte + 1, fails."""
    vkey = GO["peter_key"]
    for i in range(len(vkey)):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(MalformedVerifierKey):
                    VerifierKey.parse(vkey[i:j])
        with pytest.raises(MalformedVerifierKey):
            VerifierKey.parse(vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :])


def test_c2sp_verifier_key_example() -> None:
    case = NOTES["c2sp_verifier_key_example"]
    key = VerifierKey.parse(case["key"])
    assert (key.name, key.key_id, key.type) == ("example.com/foo", 0x530D903A, SignatureType.ED25519)
    assert isinstance(key.public_key, ed25519.Ed25519PublicKey)
    assert key.public_key.public_bytes_raw().hex() == case["public_key"]
    assert str(key) == case["key"]
    assert open_note(case["note"].encode(), [key]).text == "This is an example message.\n"


def test_c2sp_spec_example_parses_but_names_a_key_nobody_published() -> None:
    case = NOTES["c2sp_spec_example"]
    # The text holds a blank line and a non-ASCII letter: the split is at the *last* blank line.
    with pytest.raises(UnknownKey, match=r"quasimodo\.example/salvatore\+367ba04b"):
        open_note(case["note"].encode(), [PETER])


def test_ecdsa_checkpoints_of_real_logs_verify() -> None:
    for case in NOTES["ecdsa_checkpoints"]["cases"]:
        key = VerifierKey.parse(case["key"])
        assert key.type is SignatureType.ECDSA
        assert str(key) == case["key"]
        der = base64.b64decode(case["key"].split("+", 2)[2])[1:]
        # Type 0x02's key ID is the truncated SHA-256 of the DER SPKI, without the name.
        assert key.key_id == int.from_bytes(hashlib.sha256(der).digest()[:4], "big")
        note = open_note(case["note"].encode(), [key])
        assert note.text.splitlines()[:2] == [case["origin"], str(case["size"])]


# --- Signing with the key backend ----------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> FileKeyBackend:
    return FileKeyBackend(tmp_path_factory.mktemp("note-keys"), b"passphrase")


@pytest.fixture(scope="module")
def log_signer(backend: FileKeyBackend) -> NoteSigner:
    return NoteSigner.create("log.example/fleet", backend.create(KeyAlgorithm.ED25519, "log"))


def test_ed25519_and_p256_signers_round_trip(backend: FileKeyBackend, log_signer: NoteSigner) -> None:
    p256 = NoteSigner.create("log.example/fleet", backend.create(KeyAlgorithm.EC_P256, "log-ec"))
    assert p256.verifier_key.type is SignatureType.ECDSA
    text = "weighstation\nsecond line\n"
    data = sign_note(text, [log_signer, p256])
    keys = [VerifierKey.parse(str(s.verifier_key)) for s in (log_signer, p256)]
    note = open_note(data, keys)
    assert note.text == text
    assert [s.key_id for s in note.signatures] == [k.key_id for k in keys]
    # Loaded again from the backend (a fresh process), the same key signs under the same key ID.
    reloaded = NoteSigner.create("log.example/fleet", backend.load(log_signer.signer.key_ref))
    assert reloaded.verifier_key == log_signer.verifier_key


def test_ecdsa_p384_keys_verify_as_the_spec_allows() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    vkey = VerifierKey.for_public_key("p384.example", key.public_key())
    text = b"p384\n"
    blob = vkey.key_id.to_bytes(4, "big") + key.sign(text, ec.ECDSA(hashes.SHA256()))
    data = b"p384\n\n" + f"{DASH} p384.example {base64.b64encode(blob).decode()}\n".encode()
    assert open_note(data, [VerifierKey.parse(str(vkey))]).text == "p384\n"


def test_signers_the_note_format_does_not_take(backend: FileKeyBackend) -> None:
    with pytest.raises(UnsupportedSignerAlgorithm):
        NoteSigner.create("log.example", backend.create(KeyAlgorithm.EC_P384, "p384"))
    with pytest.raises(MalformedVerifierKey):
        NoteSigner.create("log example", backend.create(KeyAlgorithm.ED25519, "spaced"))
    with pytest.raises(MalformedVerifierKey):
        NoteSigner.create("log+example", backend.create(KeyAlgorithm.ED25519, "plus"))


@dataclass(frozen=True)
class MismatchedSigner:
    """A backend that answers with another key than the one it advertises."""

    key_ref: str
    algorithm: KeyAlgorithm
    advertised: ed25519.Ed25519PrivateKey
    actual: ed25519.Ed25519PrivateKey

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self.advertised.public_key()

    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        return self.actual


def test_a_backend_signature_that_does_not_verify_is_never_published() -> None:
    signer = MismatchedSigner(
        "file:x-0000000000000000",
        KeyAlgorithm.ED25519,
        ed25519.Ed25519PrivateKey.generate(),
        ed25519.Ed25519PrivateKey.generate(),
    )
    with pytest.raises(NoteSignatureInvalid):
        sign_note("text\n", [NoteSigner.create("log.example", signer)])


def test_note_texts_that_cannot_be_signed(log_signer: NoteSigner) -> None:
    for text in ["", "no final newline", "tab\there\n", "carriage\r\n"]:
        with pytest.raises(MalformedNote):
            sign_note(text, [log_signer])
    with pytest.raises(NoteTooLarge):
        sign_note("x" * MAX_NOTE_BYTES + "\n", [log_signer])
    with pytest.raises(ValueError, match="at least one signer"):
        sign_note("text\n", [])


# --- Negatives, each one change to a note our key signed ------------------------------------------


TEXT = "log.example/fleet\n42\n"


@pytest.fixture(scope="module")
def signed(log_signer: NoteSigner) -> bytes:
    return sign_note(TEXT, [log_signer])


def sig_line(signed: bytes) -> str:
    return signed.decode().split("\n\n", 1)[1]


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("missing-blank-line", lambda s: s.replace(b"\n\n", b"\n")),
        ("trailing-garbage", lambda s: s + b"garbage"),
        ("trailing-garbage-line", lambda s: s + b"garbage\n"),
        ("trailing-blank-line", lambda s: s + b"\n"),
        ("no-final-newline", lambda s: s[:-1]),
        ("carriage-return", lambda s: s.replace(b"42\n", b"42\r\n")),
        ("nul-byte", lambda s: s.replace(b"42", b"4\x002")),
        ("invalid-utf8", lambda s: s.replace(b"42", b"4\xff")),
        ("hyphens-for-em-dash", lambda s: s.replace(DASH.encode(), b"--")),
        ("no-space-after-name", lambda s: s.replace(b"fleet ", b"fleet")),
        ("plus-in-key-name", lambda s: s.replace(b"example/fleet ", b"example/fl+et ")),
        ("base64-garbage", lambda s: s[:-6] + b"!!!!=\n"),
        ("base64-unpadded", lambda s: s.rstrip(b"=\n") + b"\n"),
        ("signature-too-short", lambda s: s.split(b"fleet ")[0] + b"fleet " + b"AAAAAA==\n"),
    ],
)
def test_malformed_notes_are_refused(
    signed: bytes, log_signer: NoteSigner, name: str, mutate: Callable[[bytes], bytes]
) -> None:
    mutated = mutate(signed)
    assert mutated != signed, name
    with pytest.raises(MalformedNote):
        open_note(mutated, [log_signer.verifier_key])


def test_non_canonical_base64_signature_is_refused(signed: bytes, log_signer: NoteSigner) -> None:
    # 68-byte blob: base64 ends in one '=' after a char whose 2 low bits are padding; set one.
    line = sig_line(signed)
    blob64 = line.rsplit(" ", 1)[1].rstrip("\n")
    assert blob64.endswith("=") and not blob64.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(blob64[-2]) | 1]
    mutated = signed.replace(blob64.encode(), (blob64[:-2] + last + "=").encode())
    assert mutated != signed
    with pytest.raises(MalformedNote, match="canonical"):
        open_note(mutated, [log_signer.verifier_key])


def test_duplicate_signature_lines_are_refused(signed: bytes, log_signer: NoteSigner) -> None:
    with pytest.raises(MalformedNote, match="two signatures"):
        open_note(signed + sig_line(signed).encode(), [log_signer.verifier_key])


def test_bounds(signed: bytes, log_signer: NoteSigner) -> None:
    with pytest.raises(NoteTooLarge):
        open_note(b"x" * (MAX_NOTE_BYTES + 1), [log_signer.verifier_key])
    long_line = b"y" * (MAX_LINE_BYTES + 1) + b"\n"
    with pytest.raises(NoteTooLarge):
        open_note(long_line + signed, [log_signer.verifier_key])
    others = [
        NoteSignature(f"witness{i}.example", i, b"\x00" * 64).line().encode() for i in range(MAX_SIGNATURES)
    ]
    with pytest.raises(NoteTooLarge):
        open_note(signed + b"".join(others), [log_signer.verifier_key])
    # MAX_SIGNATURES - 1 unknown ones besides ours is within bounds, and they are kept, unverified.
    note = open_note(signed + b"".join(others[: MAX_SIGNATURES - 1]), [log_signer.verifier_key])
    assert len(note.unverified) == MAX_SIGNATURES - 1


def test_unknown_keys(signed: bytes, log_signer: NoteSigner) -> None:
    with pytest.raises(UnknownKey):
        open_note(signed, [PETER])
    with pytest.raises(UnknownKey):
        open_note(signed, [])
    # Same name, another key (so another key ID): still unknown.
    other = VerifierKey.for_public_key(log_signer.name, ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(UnknownKey):
        open_note(signed, [other])
    # Same key ID under another name: unknown too.
    renamed = signed.replace(b"\xe2\x80\x94 log.example/fleet ", b"\xe2\x80\x94 other.example ")
    with pytest.raises(UnknownKey):
        open_note(renamed, [log_signer.verifier_key])


def test_bad_signatures(signed: bytes, log_signer: NoteSigner) -> None:
    key = log_signer.verifier_key
    with pytest.raises(NoteSignatureInvalid):
        open_note(signed.replace(b"42", b"43"), [key])
    blob = base64.b64decode(sig_line(signed).rsplit(" ", 1)[1])
    flipped = blob[:10] + bytes([blob[10] ^ 1]) + blob[11:]
    line = NoteSignature(key.name, key.key_id, flipped[4:]).line().encode()
    with pytest.raises(NoteSignatureInvalid):
        open_note(TEXT.encode() + b"\n" + line, [key])
    # One known key fails: the note is refused even though another known key's signature is good.
    good_peter = sign_note(TEXT, [NoteSigner.create("PeterNeumann", go_signer())])
    with pytest.raises(NoteSignatureInvalid):
        open_note(good_peter + line, [key, PETER])


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", MalformedVerifierKey),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", MalformedVerifierKey),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n", MalformedVerifierKey),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", MalformedVerifierKey),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", MalformedVerifierKey),
        ("PeterNeumann+c74f20a3+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", UnsupportedSignatureType),
        ("PeterNeumann+c74f20a3+AQ==", MalformedVerifierKey),
    ],
)
def test_malformed_verifier_keys(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        VerifierKey.parse(text)


def test_ecdsa_verifier_key_must_be_an_allowed_curve_in_canonical_der() -> None:
    p224 = ec.generate_private_key(ec.SECP224R1()).public_key()
    with pytest.raises(MalformedVerifierKey):
        VerifierKey.for_public_key("p224.example", p224)
    der = p224.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_id = hashlib.sha256(der).hexdigest()[:8]
    material = base64.b64encode(bytes([SignatureType.ECDSA]) + der).decode()
    with pytest.raises(MalformedVerifierKey):
        VerifierKey.parse(f"p224.example+{key_id}+{material}")
    not_der = base64.b64encode(bytes([SignatureType.ECDSA]) + b"not der").decode()
    with pytest.raises(MalformedVerifierKey):
        VerifierKey.parse(f"x+{key_id}+{not_der}")


def test_a_verifier_key_with_a_wrong_key_id_cannot_be_built() -> None:
    with pytest.raises(MalformedVerifierKey):
        VerifierKey(PETER.name, PETER.key_id ^ 1, PETER.type, PETER.public_key)
    with pytest.raises(MalformedVerifierKey):
        VerifierKey(PETER.name, PETER.key_id, SignatureType.ECDSA, PETER.public_key)


def test_error_codes() -> None:
    assert [
        e.code
        for e in (
            MalformedNote,
            NoteTooLarge,
            MalformedVerifierKey,
            UnsupportedSignatureType,
            UnsupportedSignerAlgorithm,
            UnknownKey,
            NoteSignatureInvalid,
        )
    ] == [
        "malformed-note",
        "note-too-large",
        "malformed-verifier-key",
        "unsupported-signature-type",
        "unsupported-signer-algorithm",
        "unknown-key",
        "note-signature-invalid",
    ]
