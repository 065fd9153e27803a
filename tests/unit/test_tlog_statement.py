"""Truck statements (tlog.statement): the canonical form of a good vector, and one field changed at a
time, each refused with its own typed error; non-canonical spellings of the same statement refused."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785

from tlog.errors import (
    MalformedStatement,
    StatementDigestInvalid,
    StatementNotCanonical,
    StatementSequenceInvalid,
    TlogError,
    UnknownStatementKind,
)
from tlog.statement import (
    MAX_SAFE_INTEGER,
    MAX_STATEMENT_BYTES,
    StatementCheckpoint,
    build_statement,
    parse_statement,
    statement_hash,
)

PAYLOAD = hashlib.sha256(b"manifest: load 42, Hamburg -> Rotterdam").digest()
ROOT = hashlib.sha256(b"root").digest()
PREVIOUS = hashlib.sha256(b"statement 1").digest()
AT = datetime(2026, 11, 24, 2, 0, 0, tzinfo=UTC)

# The good vector, written out by hand: RFC 8785 orders keys by UTF-16 code units ("_type" < "predicate"
# < "predicateType" < "subject"), no whitespace.
GOOD = (
    '{"_type":"https://in-toto.io/Statement/v1",'
    '"predicate":{"checkpoint":{"origin":"fleet.test/log","root":"'
    + "SBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I="
    + '","size":7},'
    '"issued_at":"2026-11-24T02:00:00Z","kind":"mission_manifest","previous":"'
    + PREVIOUS.hex()
    + '","sequence":2,"truck":"truck-1"},'
    '"predicateType":"https://weighstation.dev/truck-statement/v1",'
    '"subject":[{"digest":{"sha256":"' + PAYLOAD.hex() + '"},"name":"manifest-42.json"}]}'
).encode()


def good_bytes() -> bytes:
    return build_statement(
        name="manifest-42.json",
        payload_sha256=PAYLOAD,
        kind="mission_manifest",
        truck="truck-1",
        sequence=2,
        previous=PREVIOUS,
        checkpoint=StatementCheckpoint("fleet.test/log", 7, ROOT),
        issued_at=AT,
    )


def good_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(GOOD)
    return document


def test_build_gives_the_canonical_bytes_and_parse_reads_them_back() -> None:
    data = good_bytes()
    assert data == GOOD
    parsed = parse_statement(data)
    assert parsed.name == "manifest-42.json"
    assert parsed.payload_sha256 == PAYLOAD
    assert parsed.kind == "mission_manifest"
    assert parsed.truck == "truck-1"
    assert parsed.sequence == 2
    assert parsed.previous == PREVIOUS
    assert parsed.checkpoint == StatementCheckpoint("fleet.test/log", 7, ROOT)
    assert parsed.issued_at == AT
    assert parsed.data == data
    assert parsed.sha256 == statement_hash(data) == hashlib.sha256(data).digest()


def test_first_statement_has_empty_previous() -> None:
    data = build_statement(
        name="snap",
        payload_sha256=PAYLOAD,
        kind="telemetry_snapshot",
        truck="truck-1",
        sequence=1,
        previous=None,
        checkpoint=StatementCheckpoint("fleet.test/log", 0, ROOT),
        issued_at=AT,
    )
    parsed = parse_statement(data)
    assert parsed.previous is None
    assert b'"previous":""' in data


def test_rfc8785_string_escapes_of_the_name() -> None:
    """RFC 8785 §3.2.2.2: only the short escapes and \\u00xx for other controls; everything else literal.
    A name with a non-ASCII character and a quote round-trips byte for byte."""
    data = build_statement(
        name='fahrt-€-"42"',
        payload_sha256=PAYLOAD,
        kind="mission_manifest",
        truck="truck-1",
        sequence=1,
        previous=None,
        checkpoint=StatementCheckpoint("fleet.test/log", 0, ROOT),
        issued_at=AT,
    )
    assert '"name":"fahrt-€-\\"42\\""'.encode() in data
    assert parse_statement(data).name == 'fahrt-€-"42"'


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _drop(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return change


P = "predicate"
CASES: dict[str, tuple[Callable[[dict[str, Any]], None], type[TlogError]]] = {
    "type": (_set(("_type",), "https://in-toto.io/Statement/v0.1"), UnknownStatementKind),
    "predicate_type": (_set(("predicateType",), "https://slsa.dev/provenance/v1"), UnknownStatementKind),
    "kind": (_set((P, "kind"), "fuel_receipt"), UnknownStatementKind),
    "kind_not_string": (_set((P, "kind"), 1), UnknownStatementKind),
    "unknown_top_field": (_set(("extra",), 1), MalformedStatement),
    "unknown_predicate_field": (_set((P, "speed"), 80), MalformedStatement),
    "unknown_checkpoint_field": (_set((P, "checkpoint", "signature"), "x"), MalformedStatement),
    "missing_issued_at": (_drop((P, "issued_at")), MalformedStatement),
    "missing_subject": (_drop(("subject",)), MalformedStatement),
    "no_subject": (_set(("subject",), []), MalformedStatement),
    "two_subjects": (
        _set(("subject",), [{"name": "a", "digest": {"sha256": PAYLOAD.hex()}}] * 2),
        MalformedStatement,
    ),
    "subject_name_empty": (_set(("subject", 0, "name"), ""), MalformedStatement),
    "subject_name_control": (_set(("subject", 0, "name"), "a\nb"), MalformedStatement),
    "subject_name_too_long": (_set(("subject", 0, "name"), "n" * 257), MalformedStatement),
    "digest_upper_case": (
        _set(("subject", 0, "digest", "sha256"), PAYLOAD.hex().upper()),
        StatementDigestInvalid,
    ),
    "digest_short": (_set(("subject", 0, "digest", "sha256"), PAYLOAD.hex()[:62]), StatementDigestInvalid),
    "digest_other_algorithm": (_set(("subject", 0, "digest"), {"sha512": "00" * 64}), MalformedStatement),
    "digest_extra_algorithm": (_set(("subject", 0, "digest", "sha1"), "00" * 20), MalformedStatement),
    "truck_empty": (_set((P, "truck"), ""), MalformedStatement),
    "truck_space": (_set((P, "truck"), "truck 1"), MalformedStatement),
    "truck_not_string": (_set((P, "truck"), 7), MalformedStatement),
    "sequence_zero": (_set((P, "sequence"), 0), StatementSequenceInvalid),
    "sequence_negative": (_set((P, "sequence"), -2), StatementSequenceInvalid),
    "sequence_string": (_set((P, "sequence"), "2"), MalformedStatement),
    "sequence_bool": (_set((P, "sequence"), True), MalformedStatement),
    "previous_empty_later": (_set((P, "previous"), ""), StatementSequenceInvalid),
    "previous_bad_hex": (_set((P, "previous"), "zz" * 32), StatementDigestInvalid),
    "previous_set_on_first": (_set((P, "sequence"), 1), StatementSequenceInvalid),
    "checkpoint_size_negative": (_set((P, "checkpoint", "size"), -1), MalformedStatement),
    "checkpoint_size_string": (_set((P, "checkpoint", "size"), "7"), MalformedStatement),
    "checkpoint_root_short": (_set((P, "checkpoint", "root"), "AAAA"), StatementDigestInvalid),
    "checkpoint_root_urlsafe": (
        _set((P, "checkpoint", "root"), "SBNJTRN-FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I"),
        StatementDigestInvalid,
    ),
    "checkpoint_origin_space": (_set((P, "checkpoint", "origin"), "fleet test"), MalformedStatement),
    "checkpoint_not_object": (_set((P, "checkpoint"), "fleet.test/log 7"), MalformedStatement),
    "issued_at_offset": (_set((P, "issued_at"), "2026-11-24T02:00:00+00:00"), MalformedStatement),
    "issued_at_fraction": (_set((P, "issued_at"), "2026-11-24T02:00:00.5Z"), MalformedStatement),
    "issued_at_month_13": (_set((P, "issued_at"), "2026-13-24T02:00:00Z"), MalformedStatement),
    "issued_at_arabic_digits": (_set((P, "issued_at"), "٢٠٢٦-11-24T02:00:00Z"), MalformedStatement),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_field_changed_is_refused(case: str) -> None:
    change, error = CASES[case]
    document = copy.deepcopy(good_document())
    change(document)
    with pytest.raises(error) as caught:
        parse_statement(rfc8785.dumps(document))
    # The exact class, not a parent: each failure kind has its own code.
    assert type(caught.value) is error, caught.value.reason


def _reordered(data: bytes) -> bytes:
    document = json.loads(data)
    return json.dumps(
        dict(reversed(list(document.items()))), separators=(",", ":"), ensure_ascii=False
    ).encode()


NON_CANONICAL: dict[str, Callable[[bytes], bytes]] = {
    "spaces": lambda d: json.dumps(json.loads(d), ensure_ascii=False).encode(),
    "indented": lambda d: json.dumps(json.loads(d), indent=2, sort_keys=True, ensure_ascii=False).encode(),
    "trailing_newline": lambda d: d + b"\n",
    "leading_space": lambda d: b" " + d,
    "keys_reordered": _reordered,
    "escaped_ascii": lambda d: d.replace(b'"truck-1"', b'"\\u0074ruck-1"'),
    "escaped_slash": lambda d: d.replace(b"fleet.test/log", b"fleet.test\\/log"),
    "bom": lambda d: b"\xef\xbb\xbf" + d,
}


@pytest.mark.parametrize("case", sorted(NON_CANONICAL))
def test_non_canonical_spelling_is_refused(case: str) -> None:
    data = NON_CANONICAL[case](GOOD)
    assert data != GOOD
    with pytest.raises(MalformedStatement):
        parse_statement(data)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (GOOD.replace(b'"sequence":2', b'"sequence":2.0'), MalformedStatement),
        (GOOD.replace(b'"sequence":2', b'"sequence":2e0'), MalformedStatement),
        (GOOD.replace(b'"sequence":2', b'"sequence":NaN'), MalformedStatement),
        (
            GOOD.replace(
                b'"kind":"mission_manifest"', b'"kind":"mission_manifest","kind":"mission_manifest"'
            ),
            MalformedStatement,
        ),
        (GOOD[:-1], MalformedStatement),
        (b"\xff" + GOOD, MalformedStatement),
        (b"[]", MalformedStatement),
        (b"[" * 100_000, MalformedStatement),
    ],
    ids=["float", "exponent", "nan", "duplicate_key", "truncated", "not_utf8", "array", "deep"],
)
def test_not_one_json_statement_is_refused(data: bytes, error: type[TlogError]) -> None:
    with pytest.raises(error):
        parse_statement(data)


def test_sequence_beyond_the_safe_integers_is_refused() -> None:
    """2**53 has no exact RFC 8785 number form; the canonical serializer cannot even write it."""
    data = GOOD.replace(b'"sequence":2', f'"sequence":{MAX_SAFE_INTEGER + 1}'.encode())
    with pytest.raises(StatementSequenceInvalid):
        parse_statement(data)


def test_whitespace_is_not_canonical_specifically() -> None:
    with pytest.raises(StatementNotCanonical):
        parse_statement(json.dumps(json.loads(GOOD), sort_keys=True, ensure_ascii=False).encode())


def test_too_large_is_refused_before_parsing() -> None:
    document = good_document()
    document["subject"][0]["name"] = "n" * 200
    padded = rfc8785.dumps(document) + b" " * MAX_STATEMENT_BYTES
    with pytest.raises(MalformedStatement, match="at most"):
        parse_statement(padded)


def test_the_builder_refuses_what_the_parser_would() -> None:
    with pytest.raises(MalformedStatement):
        build_statement(
            name="bad\x00name",
            payload_sha256=PAYLOAD,
            kind="mission_manifest",
            truck="truck-1",
            sequence=1,
            previous=None,
            checkpoint=StatementCheckpoint("fleet.test/log", 0, ROOT),
            issued_at=AT,
        )
