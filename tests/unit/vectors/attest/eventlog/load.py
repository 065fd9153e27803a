"""Loading the recorded measured-boot vectors (see regenerate.py) and mutating one thing in them.

Offsets (little-endian fields). The Spec ID record: pcrIndex @0, eventType @4, digest @8 (20 bytes),
eventDataSize @28, then TCG_EfiSpecIDEvent @32: signature @32, platformClass @48, specVersionMinor
@52, specVersionMajor @53, specErrata @54, uintnSize @55, numberOfAlgorithms @56, the first
{algorithmId, digestSize} @60/@62. A TCG_PCR_EVENT2 record of a sha256-only log, from its start:
pcrIndex @0, eventType @4, digest count @8, hashAlg @12, digest @14, eventSize @46, data @50.
"""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path
from typing import Any

from attest.eventlog import parse_event_log

HERE = Path(__file__).resolve().parent

SPEC_SIGNATURE_AT = 32
PLATFORM_CLASS_AT = 48
VERSION_MINOR_AT = 52
VERSION_MAJOR_AT = 53
UINTN_SIZE_AT = 55
ALGORITHM_COUNT_AT = 56
FIRST_ALGORITHM_AT = 60
FIRST_DIGEST_SIZE_AT = 62

PCR_AT = 0
TYPE_AT = 4
DIGEST_COUNT_AT = 8
HASH_ALG_AT = 12
DIGEST_AT = 14
EVENT_SIZE_AT = 46


def vector(name: str = "boot") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((HERE / "vectors.json").read_text())[name]
    return loaded


def log_bytes(name: str = "boot") -> bytes:
    file_name: str = vector(name)["log"]
    return (HERE / file_name).read_bytes()


def pcr_values(name: str = "boot") -> dict[int, bytes]:
    """The sha256 PCRs 0-15 the TPM held after the boot."""
    return {int(p): bytes.fromhex(v) for p, v in vector(name)["pcrs"].items()}


def split(log: bytes) -> tuple[bytes, list[bytes]]:
    """The Spec ID record and the TCG_PCR_EVENT2 records, as bytes."""
    offsets = [e.offset for e in parse_event_log(log).events] + [len(log)]
    return log[: offsets[0]], [log[a:b] for a, b in itertools.pairwise(offsets)]


def join(header: bytes, records: list[bytes]) -> bytes:
    return header + b"".join(records)


def put_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<I", value) + data[offset + 4 :]


def put_u16(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<H", value) + data[offset + 2 :]


def put_u8(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1 :]


def record_at(log: bytes, number: int) -> int:
    """Offset of TCG_PCR_EVENT2 record `number` (1-based, as attest.eventlog counts)."""
    return parse_event_log(log).events[number - 1].offset


def numbers(log: bytes, *, pcr: int | None = None, type_: int | None = None) -> list[int]:
    """Numbers of the records in `pcr` and/or of type `type_`, in log order."""
    return [
        e.number
        for e in parse_event_log(log).events
        if (pcr is None or e.pcr == pcr) and (type_ is None or e.type == type_)
    ]


def with_type(log: bytes, number: int, event_type: int) -> bytes:
    return put_u32(log, record_at(log, number) + TYPE_AT, event_type)


def swapped(log: bytes, a: int, b: int) -> bytes:
    header, records = split(log)
    records[a - 1], records[b - 1] = records[b - 1], records[a - 1]
    return join(header, records)


def without(log: bytes, *drop: int) -> bytes:
    header, records = split(log)
    return join(header, [r for i, r in enumerate(records, start=1) if i not in drop])
