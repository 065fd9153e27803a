"""c2sp.org/tlog-checkpoint: the signed tree head, as a signed note.

The note text is at least three non-empty lines: the origin (the log's identity), the tree size in
ASCII decimal without leading zeros, the base64 root hash; then optional non-empty extension lines.
Signing goes through `tlog.note.NoteSigner`, i.e. through the key backend (file key or Transit).

`verify_checkpoint` takes the note bytes as they came off the wire and:

1. opens the note strictly and verifies every signature from a trusted key (`tlog.note.open_note`:
   `MalformedNote`, `NoteTooLarge`, `NoteSignatureInvalid`, `UnknownKey`); every later step reads
   only signed text;
2. parses the body (`MalformedCheckpoint`, `CheckpointSizeInvalid`, `CheckpointRootInvalid`);
3. checks the origin is the log the caller expects (`CheckpointOriginMismatch`).

A `VerifiedCheckpoint` then checks proofs against its own signed size and root, so a proof can
never be checked against a size or root from the same untrusted bundle.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tlog.errors import (
    CheckpointOriginMismatch,
    CheckpointRootInvalid,
    CheckpointSizeInvalid,
    ConsistencyProofInvalid,
    MalformedCheckpoint,
)
from tlog.merkle import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    VerifiedConsistency,
    VerifiedInclusion,
    verify_consistency,
    verify_inclusion,
)
from tlog.note import NoteSigner, VerifiedNote, VerifierKey, open_note, sign_note, strict_b64decode

# A checkpoint body line (origin, extension) longer than this is not one a log of ours writes.
MAX_BODY_LINE_BYTES = 1024
MAX_EXTENSION_LINES = 16

# At most 19 digits: MAX_TREE_SIZE has 19, and this keeps int() away from huge inputs.
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_CONTROL = re.compile(r"[\x00-\x1f]")


def _check_line(line: str, what: str) -> None:
    if not line:
        raise MalformedCheckpoint(f"checkpoint {what} line is empty")
    if _CONTROL.search(line):
        raise MalformedCheckpoint(f"checkpoint {what} line holds a control character")
    if len(line.encode("utf-8")) > MAX_BODY_LINE_BYTES:
        raise MalformedCheckpoint(f"checkpoint {what} line exceeds {MAX_BODY_LINE_BYTES} bytes")


@dataclass(frozen=True)
class Checkpoint:
    """origin, size, root hash, extension lines. Construction validates every field."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointSizeInvalid(f"tree size {self.size} is outside 0..{MAX_TREE_SIZE}")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointRootInvalid(f"root hash is {len(self.root_hash)} bytes, not {HASH_SIZE}")
        if len(self.extensions) > MAX_EXTENSION_LINES:
            raise MalformedCheckpoint(f"more than {MAX_EXTENSION_LINES} extension lines")
        for line in self.extensions:
            _check_line(line, "extension")

    def text(self) -> str:
        """The note text: origin, size, root and extension lines, each ending in a newline."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions))


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body strictly. Only call this on text whose signature verified."""
    if not text.endswith("\n"):
        raise MalformedCheckpoint("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedCheckpoint(f"checkpoint has {len(lines)} lines, needs origin, size and root")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE.fullmatch(size_text):
        raise CheckpointSizeInvalid(f"size {size_text[:32]!r} is not decimal without leading zeros")
    size = int(size_text)
    try:
        root = strict_b64decode(root_text)
    except ValueError as exc:
        raise CheckpointRootInvalid(f"root hash: {exc}") from exc
    return Checkpoint(origin=origin, size=size, root_hash=root, extensions=tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> bytes:
    """The signed checkpoint note. By convention the log's key name is its origin."""
    return sign_note(checkpoint.text(), signers)


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose signature by a trusted key verified, and whose origin is the expected one."""

    checkpoint: Checkpoint
    note: VerifiedNote

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash

    def verify_inclusion(self, leaf_hash: bytes, index: int, proof: Sequence[bytes]) -> VerifiedInclusion:
        """The leaf is at `index` in the tree this checkpoint signs (its size, its root)."""
        return verify_inclusion(leaf_hash, index, self.size, proof, self.root_hash)

    def verify_consistency(self, older: VerifiedCheckpoint, proof: Sequence[bytes]) -> VerifiedConsistency:
        """`older` (of the same log) is a prefix of the tree this checkpoint signs."""
        if older.origin != self.origin:
            raise ConsistencyProofInvalid(f"checkpoints of two logs: {older.origin!r} and {self.origin!r}")
        return verify_consistency(older.size, self.size, proof, older.root_hash, self.root_hash)


def verify_checkpoint(data: bytes, verifiers: Iterable[VerifierKey], *, origin: str) -> VerifiedCheckpoint:
    """Verify a signed checkpoint of the log `origin` with the trusted verifier keys."""
    # 1. Strict note framing and the signatures of trusted keys.
    note = open_note(data, verifiers)
    # 2. The body, read from signed text only.
    checkpoint = parse_checkpoint(note.text)
    # 3. The log it names is the one the caller expects.
    if checkpoint.origin != origin:
        raise CheckpointOriginMismatch(f"checkpoint is of {checkpoint.origin[:64]!r}, not {origin!r}")
    return VerifiedCheckpoint(checkpoint=checkpoint, note=note)
