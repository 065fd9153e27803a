"""c2sp.org/signed-note: verifier keys, signing with a `pki.signer.Signer`, strict opening.

A note is UTF-8 text ending in a newline, a blank line, then lines "— <key name> <base64(key ID ||
signature)>". The text is split from the signatures at the *last* blank line. Two signature types:

- 0x01 Ed25519 (the spec's own): signature over the text; key ID = SHA-256(name || 0x0A || 0x01 ||
  32-byte key)[:4]. The log's default.
- 0x02 ECDSA "as implemented by transparency-dev/witness" (the spec assigns the byte, that
  implementation defines it): ASN.1 DER ECDSA over SHA-256(text); verifier key material is
  0x02 || DER SubjectPublicKeyInfo; key ID = SHA-256(DER SPKI)[:4] (no name). We sign with P-256
  only (the spec's SHOULD) and verify P-256, P-384 and P-521 (its MUST).

Verifier keys are "<name>+<8 lowercase hex key ID>+<base64(type || key material)>".

Opening (`open_note`) rejects anything malformed before it looks at a signature, ignores lines from
keys it does not know (the spec's MUST: this is how witness cosignatures and key rotation work),
fails the whole note if a known key's signature does not verify, and fails if no known key signed.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from pki.signer import KeyAlgorithm, Signer
from tlog.errors import (
    MalformedNote,
    MalformedVerifierKey,
    NoteSignatureInvalid,
    NoteTooLarge,
    UnknownKey,
    UnsupportedSignatureType,
    UnsupportedSignerAlgorithm,
)

# Bounds. The spec asks verifiers to accept at least 16 signatures, and warns that post-quantum
# signature lines reach ~5 kB; these leave room for both and still bound the work per note.
MAX_NOTE_BYTES = 1 << 20
MAX_LINE_BYTES = 8192
MAX_SIGNATURES = 64

_SIG_PREFIX = "\u2014 "  # em dash, space
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
_ECDSA_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class SignatureType(enum.IntEnum):
    """The signed-note signature type identifier bytes we implement."""

    ED25519 = 0x01
    ECDSA = 0x02


NotePublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def strict_b64decode(text: str) -> bytes:
    """Standard base64 (RFC 4648 §4) in its one canonical form, or ValueError: padding required,
    no whitespace, no spare bits, so each value has exactly one encoding."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def is_valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode space, no '+', no control character (signed-note "Format")."""
    return bool(name) and "+" not in name and not any(ch.isspace() or ord(ch) < 0x20 for ch in name)


def _derive_key_id(name: str, sig_type: SignatureType, public_key: NotePublicKey) -> int:
    """The spec's key ID for this name, type and key: the "key hint" of every signature line."""
    if sig_type is SignatureType.ED25519 and isinstance(public_key, ed25519.Ed25519PublicKey):
        data = name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key.public_bytes_raw()
    elif sig_type is SignatureType.ECDSA and isinstance(public_key, ec.EllipticCurvePublicKey):
        data = _spki(public_key)
    else:
        raise MalformedVerifierKey(f"a {type(public_key).__name__} is not a {sig_type.name} key")
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big")


@dataclass(frozen=True, eq=False)
class VerifierKey:
    """A trusted public key: the key name, the 32-bit key ID (the "key hint"), the type, the key.

    Construction checks the key ID is the one the name, type and key derive, so a signature line
    is matched to a key only by the tuple the spec defines. Two keys are equal when their verifier
    key strings are (key objects have no equality).
    """

    name: str
    key_id: int
    type: SignatureType
    public_key: NotePublicKey

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise MalformedVerifierKey(f"invalid key name {self.name[:64]!r}")
        if isinstance(self.public_key, ec.EllipticCurvePublicKey) and not isinstance(
            self.public_key.curve, _ECDSA_CURVES
        ):
            raise MalformedVerifierKey(
                f"ECDSA curve {self.public_key.curve.name} is not P-256, P-384 or P-521"
            )
        derived = _derive_key_id(self.name, self.type, self.public_key)
        if self.key_id != derived:
            raise MalformedVerifierKey(
                f"key ID {self.key_id:08x} is not {self.name!r}'s key ID {derived:08x}"
            )

    @classmethod
    def for_public_key(cls, name: str, public_key: PublicKeyTypes) -> VerifierKey:
        """The verifier key of an Ed25519 (type 0x01) or ECDSA (type 0x02) public key."""
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            sig_type = SignatureType.ED25519
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            sig_type = SignatureType.ECDSA
        else:
            raise UnsupportedSignatureType(f"no signed-note signature type for {type(public_key).__name__}")
        return cls(name, _derive_key_id(name, sig_type, public_key), sig_type, public_key)

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse "<name>+<hex key ID>+<base64>"; the key ID must be the one the key derives."""
        name, plus1, rest = text.partition("+")
        key_id_hex, plus2, material_b64 = rest.partition("+")
        if not (plus1 and plus2 and is_valid_key_name(name)):
            raise MalformedVerifierKey("verifier key is not <name>+<key ID>+<base64 key>")
        if not _KEY_ID_HEX.fullmatch(key_id_hex):
            raise MalformedVerifierKey(f"key ID {key_id_hex[:16]!r} is not 8 lowercase hex digits")
        try:
            material = strict_b64decode(material_b64)
        except ValueError as exc:
            raise MalformedVerifierKey(f"verifier key material: {exc}") from exc
        if len(material) < 2:
            raise MalformedVerifierKey("verifier key material is too short")
        sig_type, key = _load_key(material[0], material[1:])
        return cls(name, int(key_id_hex, 16), sig_type, key)

    def material(self) -> bytes:
        """type || public key, as the verifier key string carries it."""
        if isinstance(self.public_key, ed25519.Ed25519PublicKey):
            return bytes([self.type]) + self.public_key.public_bytes_raw()
        return bytes([self.type]) + _spki(self.public_key)

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(self.material()).decode('ascii')}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifierKey) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def verify(self, text: bytes, signature: bytes) -> None:
        """Check one signature over the note text; raises NoteSignatureInvalid."""
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(signature, text)
            else:
                self.public_key.verify(signature, text, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise NoteSignatureInvalid(f"signature by {self.name}+{self.key_id:08x} does not verify") from exc


def _spki(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_key(sig_type: int, data: bytes) -> tuple[SignatureType, NotePublicKey]:
    if sig_type == SignatureType.ED25519:
        if len(data) != 32:
            raise MalformedVerifierKey(f"Ed25519 key is {len(data)} bytes, not 32")
        return SignatureType.ED25519, ed25519.Ed25519PublicKey.from_public_bytes(data)
    if sig_type == SignatureType.ECDSA:
        try:
            key = serialization.load_der_public_key(data)
        except ValueError as exc:
            raise MalformedVerifierKey("ECDSA key is not a DER SubjectPublicKeyInfo") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _ECDSA_CURVES):
            raise MalformedVerifierKey("ECDSA key is not on P-256, P-384 or P-521")
        # The key ID hashes these exact bytes: accept only the one DER encoding of the key.
        if _spki(key) != data:
            raise MalformedVerifierKey("ECDSA key is not in canonical DER")
        return SignatureType.ECDSA, key
    raise UnsupportedSignatureType(f"signature type 0x{sig_type:02x} is not Ed25519 (0x01) or ECDSA (0x02)")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID, and the signature bytes after the key ID."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(frozen=True)
class VerifiedNote:
    """The note text, the signatures that verified with trusted keys, and the ones from unknown keys
    (kept, e.g. witness cosignatures a later verifier may know, but vouching for nothing here)."""

    text: str
    signatures: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class NoteSigner:
    """A `pki.signer.Signer` (file key or Transit) that signs notes under a key name."""

    signer: Signer
    verifier_key: VerifierKey

    @classmethod
    def create(cls, name: str, signer: Signer) -> NoteSigner:
        if signer.algorithm not in (KeyAlgorithm.ED25519, KeyAlgorithm.EC_P256):
            raise UnsupportedSignerAlgorithm(f"notes are signed with Ed25519 or EC P-256: {signer.algorithm}")
        return cls(signer, VerifierKey.for_public_key(name, signer.public_key()))

    @property
    def name(self) -> str:
        return self.verifier_key.name

    def sign(self, text: bytes) -> NoteSignature:
        """Sign through the backend; its own errors (pki.errors.SignerUnavailable) pass through."""
        key = self.signer.private_key()
        if isinstance(key, ed25519.Ed25519PrivateKey):
            signature = key.sign(text)
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            signature = key.sign(text, ec.ECDSA(hashes.SHA256()))
        else:
            raise UnsupportedSignerAlgorithm(f"key {self.signer.key_ref} is {type(key).__name__}")
        # A remote backend could hand back anything: never publish a signature that does not verify.
        self.verifier_key.verify(text, signature)
        return NoteSignature(self.name, self.verifier_key.key_id, signature)


def check_note_text(text: str) -> None:
    """The text must be non-empty, end in a newline, and hold no control character but newline."""
    if not text.endswith("\n"):
        raise MalformedNote("note text must be non-empty and end with a newline")
    if _CONTROL.search(text):
        raise MalformedNote("note text holds a control character")
    if len(text.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteTooLarge(f"note text exceeds {MAX_NOTE_BYTES} bytes")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """The signed note: text, blank line, one signature line per signer."""
    check_note_text(text)
    if not signers:
        raise ValueError("a note needs at least one signer")
    data = text.encode("utf-8")
    lines = [s.sign(data).line() for s in signers]
    return (text + "\n" + "".join(lines)).encode("utf-8")


def _parse(data: bytes) -> tuple[str, list[NoteSignature]]:
    if len(data) > MAX_NOTE_BYTES:
        raise NoteTooLarge(f"note exceeds {MAX_NOTE_BYTES} bytes")
    try:
        note = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedNote("note is not valid UTF-8") from exc
    if _CONTROL.search(note):
        raise MalformedNote("note holds a control character other than newline")
    if any(len(line.encode("utf-8")) > MAX_LINE_BYTES for line in note.split("\n")):
        raise NoteTooLarge(f"note has a line longer than {MAX_LINE_BYTES} bytes")
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNote("no blank line separates the text from the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNote("note does not end with a complete signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteTooLarge(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    signatures = [_parse_signature_line(line) for line in lines]
    seen: set[tuple[str, int]] = set()
    for sig in signatures:
        if (sig.name, sig.key_id) in seen:
            raise MalformedNote(f"two signatures from key {sig.name}+{sig.key_id:08x}")
        seen.add((sig.name, sig.key_id))
    return text, signatures


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNote("a line after the blank line is not a signature line")
    name, space, blob_b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not space or not is_valid_key_name(name):
        raise MalformedNote("signature line has no valid key name")
    try:
        blob = strict_b64decode(blob_b64)
    except ValueError as exc:
        raise MalformedNote(f"signature of {name!r}: {exc}") from exc
    if len(blob) < 5:
        raise MalformedNote(f"signature of {name!r} is shorter than a key ID and a signature")
    return NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def open_note(data: bytes, verifiers: Iterable[VerifierKey]) -> VerifiedNote:
    """Parse strictly, then verify every signature from a trusted key.

    Raises MalformedNote / NoteTooLarge (framing), NoteSignatureInvalid (a trusted key's signature
    fails: the whole note is refused), UnknownKey (no trusted key signed).
    """
    known: dict[tuple[str, int], VerifierKey] = {}
    for v in verifiers:
        if known.setdefault((v.name, v.key_id), v) != v:
            raise MalformedVerifierKey(f"two different trusted keys share {v.name}+{v.key_id:08x}")
    text, signatures = _parse(data)
    message = text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    for sig in signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            unverified.append(sig)
            continue
        key.verify(message, sig.signature)
        verified.append(sig)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in signatures)
        raise UnknownKey(f"no signature from a trusted key (signed by: {names})")
    return VerifiedNote(text=text, signatures=tuple(verified), unverified=tuple(unverified))
