"""Truck statements: a mission manifest or telemetry snapshot, signed by the truck's TPM identity key.

The statement is an in-toto Statement v1 whose one subject is the payload (by name and SHA-256; the
payload itself stays off the log) and whose predicate binds it to the truck's chain and to the log:

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": <payload name>, "digest": {"sha256": <hex>}}],
     "predicateType": "https://weighstation.dev/truck-statement/v1",
     "predicate": {"kind": "mission_manifest" | "telemetry_snapshot", "truck": <truck id>,
                   "sequence": <1, 2, ...>, "previous": <hex SHA-256 of the previous statement's bytes,
                   "" for sequence 1>, "checkpoint": {"origin": ..., "size": n, "root": <base64>},
                   "issued_at": "YYYY-MM-DDTHH:MM:SSZ"}}

serialized with RFC 8785 (JSON Canonicalization Scheme). The truck signs those exact bytes with
ECDSA P-256 / SHA-256 (DER), which is also what a Sigstore hashedrekord artifact signature is.

`parse_statement` is strict: one canonical form (it re-serializes and compares bytes), exactly the
fields above (unknown or duplicated ones are refused), each value of its type and within its bounds.
It checks form only; who signed it, its chain and its checkpoint are the server's checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, cast

import rfc8785

from tlog.errors import (
    MalformedStatement,
    StatementDigestInvalid,
    StatementNotCanonical,
    StatementSequenceInvalid,
    UnknownStatementKind,
)
from tlog.merkle import HASH_SIZE
from tlog.note import is_valid_key_name, strict_b64decode

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://weighstation.dev/truck-statement/v1"
StatementKind = Literal["mission_manifest", "telemetry_snapshot"]
KINDS: tuple[StatementKind, ...] = ("mission_manifest", "telemetry_snapshot")

# A statement is a few hundred bytes; the bound keeps parsing cheap and the log entry small.
MAX_STATEMENT_BYTES = 4096
MAX_NAME_CHARS = 256
MAX_ORIGIN_CHARS = 255
# RFC 8785 numbers are IEEE doubles: integers beyond 2**53 - 1 have no exact canonical form.
MAX_SAFE_INTEGER = 2**53 - 1

_TOP = frozenset({"_type", "subject", "predicateType", "predicate"})
_SUBJECT = frozenset({"name", "digest"})
_DIGEST = frozenset({"sha256"})
_PREDICATE = frozenset({"kind", "truck", "sequence", "previous", "checkpoint", "issued_at"})
_CHECKPOINT = frozenset({"origin", "size", "root"})
_HEX256 = re.compile(r"[0-9a-f]{64}")
_TRUCK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def statement_hash(data: bytes) -> bytes:
    """SHA-256 of a statement's exact bytes: what the next statement's `previous` names."""
    return hashlib.sha256(data).digest()


def format_time(at: datetime) -> str:
    """RFC 3339 in UTC, whole seconds, 'Z': the one form `issued_at` takes."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StatementCheckpoint:
    """The log checkpoint the truck saw before signing: a not-before bound on the statement."""

    origin: str
    size: int
    root_hash: bytes


@dataclass(frozen=True)
class TruckStatement:
    """A parsed statement. `data` is the exact canonical bytes it was read from (what was signed)."""

    name: str
    payload_sha256: bytes
    kind: StatementKind
    truck: str
    sequence: int
    previous: bytes | None  # None for sequence 1
    checkpoint: StatementCheckpoint
    issued_at: datetime
    data: bytes

    @property
    def sha256(self) -> bytes:
        return statement_hash(self.data)


def _document(
    *,
    name: str,
    payload_sha256: bytes,
    kind: str,
    truck: str,
    sequence: int,
    previous: bytes | None,
    checkpoint: StatementCheckpoint,
    issued_at: str,
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": payload_sha256.hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "kind": kind,
            "truck": truck,
            "sequence": sequence,
            "previous": previous.hex() if previous is not None else "",
            "checkpoint": {
                "origin": checkpoint.origin,
                "size": checkpoint.size,
                "root": _b64(checkpoint.root_hash),
            },
            "issued_at": issued_at,
        },
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build_statement(
    *,
    name: str,
    payload_sha256: bytes,
    kind: StatementKind,
    truck: str,
    sequence: int,
    previous: bytes | None,
    checkpoint: StatementCheckpoint,
    issued_at: datetime,
) -> bytes:
    """The canonical bytes for the agent to sign. They are parsed back before being returned, so the
    builder can never produce a statement the server's parser refuses."""
    data = rfc8785.dumps(
        _document(
            name=name,
            payload_sha256=payload_sha256,
            kind=kind,
            truck=truck,
            sequence=sequence,
            previous=previous,
            checkpoint=checkpoint,
            issued_at=format_time(issued_at),
        )
    )
    parse_statement(data)
    return data


# --- strict parsing -------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    raise MalformedStatement(message)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            _fail(f"field {key[:64]!r} appears twice")
        seen[key] = value
    return seen


def _no_float(text: str) -> NoReturn:
    _fail(f"number {text[:32]!r} is not an integer")


def _no_constant(text: str) -> NoReturn:
    _fail(f"{text} is not JSON")


def _object(value: object, fields: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(f"{what} is not an object")
    keys = set(value)
    if unknown := keys - fields:
        _fail(f"{what} has unknown field(s) {sorted(unknown)[:4]}")
    if missing := fields - keys:
        _fail(f"{what} lacks field(s) {sorted(missing)}")
    return cast(dict[str, Any], value)


def _string(value: object, what: str, *, max_chars: int) -> str:
    if not isinstance(value, str):
        _fail(f"{what} is not a string")
    if not value or len(value) > max_chars:
        _fail(f"{what} must be 1..{max_chars} characters")
    if _CONTROL.search(value):
        _fail(f"{what} holds a control character")
    return value


def _integer(value: object, what: str) -> int:
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{what} is not an integer")
    return value


def _hex256(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX256.fullmatch(value):
        raise StatementDigestInvalid(f"{what} is not 64 lower-case hex digits (SHA-256)")
    return bytes.fromhex(value)


def _time(value: object) -> datetime:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        _fail("predicate.issued_at is not RFC 3339 UTC 'YYYY-MM-DDTHH:MM:SSZ'")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        _fail(f"predicate.issued_at {value!r} is not a calendar time")


def _checkpoint(value: object) -> StatementCheckpoint:
    body = _object(value, _CHECKPOINT, "predicate.checkpoint")
    origin = _string(body["origin"], "predicate.checkpoint.origin", max_chars=MAX_ORIGIN_CHARS)
    if not is_valid_key_name(origin):
        _fail("predicate.checkpoint.origin is not a log origin (no spaces or '+')")
    size = _integer(body["size"], "predicate.checkpoint.size")
    if not 0 <= size <= MAX_SAFE_INTEGER:
        _fail(f"predicate.checkpoint.size must be 0..{MAX_SAFE_INTEGER}")
    root_text = body["root"]
    try:
        root = strict_b64decode(root_text) if isinstance(root_text, str) else b""
    except ValueError:
        root = b""
    if len(root) != HASH_SIZE:
        raise StatementDigestInvalid("predicate.checkpoint.root is not canonical base64 of 32 bytes")
    return StatementCheckpoint(origin=origin, size=size, root_hash=root)


def parse_statement(data: bytes) -> TruckStatement:
    """Parse a statement's exact bytes, refusing anything but the one canonical form of one statement."""
    if len(data) > MAX_STATEMENT_BYTES:
        _fail(f"a statement is at most {MAX_STATEMENT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
        document = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedStatement(f"not UTF-8 JSON: {exc}") from None
    except RecursionError:
        _fail("nested too deeply")
    # 1. The envelope: exactly the in-toto fields, our predicate type.
    top = _object(document, _TOP, "statement")
    if top["_type"] != STATEMENT_TYPE:
        raise UnknownStatementKind(f"_type is not {STATEMENT_TYPE}")
    if top["predicateType"] != PREDICATE_TYPE:
        raise UnknownStatementKind(f"predicateType is not {PREDICATE_TYPE}")
    # 2. One subject: the payload by name and SHA-256.
    subjects = top["subject"]
    if not isinstance(subjects, list) or len(subjects) != 1:
        _fail("subject must be a list of exactly one payload")
    subject = _object(subjects[0], _SUBJECT, "subject[0]")
    name = _string(subject["name"], "subject[0].name", max_chars=MAX_NAME_CHARS)
    digest = _object(subject["digest"], _DIGEST, "subject[0].digest")
    payload = _hex256(digest["sha256"], "subject[0].digest.sha256")
    # 3. The predicate: kind, truck, its chain, the checkpoint seen, the time.
    predicate = _object(top["predicate"], _PREDICATE, "predicate")
    kind = predicate["kind"]
    if kind not in KINDS:
        raise UnknownStatementKind(f"kind {str(kind)[:64]!r} is not one of {', '.join(KINDS)}")
    truck = predicate["truck"]
    if not isinstance(truck, str) or not _TRUCK.fullmatch(truck):
        _fail("predicate.truck is not a truck id")
    sequence = _integer(predicate["sequence"], "predicate.sequence")
    if not 1 <= sequence <= MAX_SAFE_INTEGER:
        raise StatementSequenceInvalid(f"predicate.sequence must be 1..{MAX_SAFE_INTEGER}")
    previous_text = predicate["previous"]
    previous: bytes | None = None
    if sequence == 1:
        if previous_text != "":
            raise StatementSequenceInvalid('the first statement (sequence 1) has previous ""')
    else:
        if previous_text == "":
            raise StatementSequenceInvalid(f"statement {sequence} must name its previous statement")
        previous = _hex256(previous_text, "predicate.previous")
    checkpoint = _checkpoint(predicate["checkpoint"])
    issued_at = _time(predicate["issued_at"])
    # 4. One form only: the bytes must be their own RFC 8785 serialization.
    try:
        canonical = rfc8785.dumps(document)
    except rfc8785.CanonicalizationError as exc:
        raise MalformedStatement(f"no canonical form: {exc}") from None
    if canonical != data:
        raise StatementNotCanonical("the statement is not in RFC 8785 canonical form")
    return TruckStatement(
        name=name,
        payload_sha256=payload,
        kind=cast(StatementKind, kind),
        truck=truck,
        sequence=sequence,
        previous=previous,
        checkpoint=checkpoint,
        issued_at=issued_at,
        data=data,
    )
