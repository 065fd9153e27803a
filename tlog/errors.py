"""Typed transparency-log errors. Each carries a stable `code` (the problem+json type suffix) and a
`kind` that the HTTP layer maps to a status; the core itself knows nothing of HTTP.

Verification in `tlog` returns a verified object or raises exactly one of these per failure kind, so
`weighstation verify` can say *why* a proof, note or checkpoint was refused without parsing messages.
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorKind = Literal["invalid", "not_found", "conflict", "unavailable", "forbidden", "unauthorized", "gone"]


class TlogError(Exception):
    code: ClassVar[str] = "tlog-error"
    kind: ClassVar[ErrorKind] = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Merkle tree ----------------------------------------------------------------------------


class MalformedHash(TlogError):
    """A value used as a tree hash is not exactly 32 bytes (SHA-256 is the only hash we accept)."""

    code = "malformed-hash"


class ProofRequestInvalid(TlogError):
    """A proof or root was asked for with parameters no tree can satisfy."""

    code = "proof-request-invalid"


class IndexOutOfRange(ProofRequestInvalid):
    """The leaf index is negative or not below the tree size."""

    code = "index-out-of-range"


class SizeBeyondTree(ProofRequestInvalid):
    """The tree size is negative, larger than the tree holds, or above MAX_TREE_SIZE."""

    code = "size-beyond-tree"


class SizesReversed(ProofRequestInvalid):
    """A consistency proof was asked from a larger tree to a smaller one."""

    code = "sizes-reversed"


class InclusionProofInvalid(TlogError):
    """The inclusion proof does not lead from the leaf hash at that index to the root of that size
    (RFC 9162 §2.1.3.2): a hash, the index, the size, the root or the proof length is wrong."""

    code = "inclusion-proof-invalid"
    kind = "forbidden"


class ConsistencyProofInvalid(TlogError):
    """The consistency proof does not show the first tree is a prefix of the second
    (RFC 9162 §2.1.4.2): a hash, a size, a root or the proof length is wrong."""

    code = "consistency-proof-invalid"
    kind = "forbidden"


# --- Signed notes ---------------------------------------------------------------------------


class MalformedNote(TlogError):
    """Not a c2sp.org/signed-note: bad UTF-8, a control character, no blank line before the
    signatures, a malformed or duplicated signature line, or bytes after the last signature."""

    code = "malformed-note"


class NoteTooLarge(MalformedNote):
    """The note, one of its lines, or its number of signatures exceeds the bounds we accept."""

    code = "note-too-large"


class MalformedVerifierKey(TlogError):
    """A verifier key string is not "<name>+<8 hex key ID>+<base64(type || public key)>", or its
    key ID is not the one its key derives, or its public key is not valid for its type."""

    code = "malformed-verifier-key"


class UnsupportedSignatureType(MalformedVerifierKey):
    """The verifier key's signature type byte is neither 0x01 (Ed25519) nor 0x02 (ECDSA)."""

    code = "unsupported-signature-type"


class UnsupportedSignerAlgorithm(TlogError):
    """The log key's algorithm has no signed-note signature type we sign with (Ed25519, EC P-256)."""

    code = "unsupported-signer-algorithm"


class UnknownKey(TlogError):
    """No signature line is from a key the verifier trusts (same key name and key ID)."""

    code = "unknown-key"
    kind = "forbidden"


class NoteSignatureInvalid(TlogError):
    """A signature line from a trusted key does not verify over the note text."""

    code = "note-signature-invalid"
    kind = "forbidden"


# --- Checkpoints ----------------------------------------------------------------------------


class MalformedCheckpoint(TlogError):
    """The signed text is not a c2sp.org/tlog-checkpoint body: fewer than three lines, an empty
    line, an empty origin, or a line longer than the bound."""

    code = "malformed-checkpoint"


class CheckpointSizeInvalid(MalformedCheckpoint):
    """The size line is not ASCII decimal without leading zeros, or exceeds MAX_TREE_SIZE."""

    code = "checkpoint-size-invalid"


class CheckpointRootInvalid(MalformedCheckpoint):
    """The root line is not canonical standard base64 of exactly 32 bytes."""

    code = "checkpoint-root-invalid"


class CheckpointOriginMismatch(TlogError):
    """The checkpoint is validly signed but names another log than the one the verifier expects."""

    code = "checkpoint-origin-mismatch"
    kind = "forbidden"


# --- Tiles ----------------------------------------------------------------------------------


class InvalidTilePath(TlogError):
    """A path is not a canonical c2sp.org/tlog-tiles tile or entry-bundle path."""

    code = "invalid-tile-path"


class TileNotInTree(TlogError):
    """The tile (or its width) does not exist in a tree of the given size."""

    code = "tile-not-in-tree"
    kind = "not_found"


class MalformedTile(TlogError):
    """Tile bytes are not a whole number of 32-byte hashes of the expected width."""

    code = "malformed-tile"


class MalformedEntryBundle(TlogError):
    """An entry bundle is not a sequence of uint16-length-prefixed entries of the expected count."""

    code = "malformed-entry-bundle"


# --- Truck statements -----------------------------------------------------------------------


class MalformedStatement(TlogError):
    """Not a truck statement: not JSON, a duplicated or unknown field, a missing field, a value of the
    wrong type or out of its bounds (names, truck id, origin, size, time), or too large."""

    code = "statement-malformed"


class StatementNotCanonical(MalformedStatement):
    """Valid JSON that is not the RFC 8785 canonical serialization of itself (whitespace, key order,
    escapes, number form): the signature covers exact bytes, so there is only one accepted form."""

    code = "statement-not-canonical"


class UnknownStatementKind(MalformedStatement):
    """The predicate kind is neither mission_manifest nor telemetry_snapshot (or the statement or
    predicate type is not ours)."""

    code = "statement-kind-unknown"


class StatementDigestInvalid(MalformedStatement):
    """A digest is not lower-case hex SHA-256 (the subject's payload digest, or `previous`), or the
    checkpoint root is not canonical base64 of 32 bytes."""

    code = "statement-digest-invalid"


class StatementSequenceInvalid(MalformedStatement):
    """The sequence is below 1 or beyond 2**53 - 1, or `previous` is empty for a later statement or
    set for the first one."""

    code = "statement-sequence-invalid"


# --- Evidence bundles ---------------------------------------------------------------------------


class BundleError(TlogError):
    """An evidence bundle or trust file was refused; `weighstation verify` prints the reason."""

    code = "bundle-invalid"


class MalformedBundle(BundleError):
    """Not a bundle of our media type, a member missing or of the wrong type, or an entry that does not
    hold what the bundle says (another kind, another truck or sequence, another statement digest)."""

    code = "bundle-malformed"


class MalformedTrust(BundleError):
    """The trust file is not ours or a key, root or origin in it cannot be read."""

    code = "trust-malformed"


class BundleCertificateInvalid(BundleError):
    """The signing certificate does not chain to a trusted root at the time the statement was logged,
    does not name the statement's truck, or was logged with a status other than good."""

    code = "bundle-certificate-invalid"


class BundleSignatureInvalid(BundleError):
    """The statement's signature does not verify with the signing certificate's key."""

    code = "bundle-signature-invalid"


class BundleAttestationInvalid(BundleError):
    """The attestation result in the bundle is not signed by a trusted result key, is not the logged
    one, is of another truck, or did not cover the time the statement was logged."""

    code = "bundle-attestation-invalid"
