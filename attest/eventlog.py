"""The TCG PC Client Platform Firmware Profile (PFP) crypto-agile event log, parsed strictly, and
the encoder the truck agent writes it with. Little-endian throughout, unlike TPM structures.

    TCG_PCR_EVENT (SHA-1 format; only the first record): u32 pcrIndex = 0, u32 eventType =
        EV_NO_ACTION, 20-byte digest = zeros, u32 eventDataSize, TCG_EfiSpecIDEvent:
        "Spec ID Event03\\0", u32 platformClass, u8 specVersionMinor = 0, u8 specVersionMajor = 2,
        u8 specErrata, u8 uintnSize = 2 (UINT64), u32 numberOfAlgorithms,
        {u16 algorithmId, u16 digestSize} * numberOfAlgorithms, u8 vendorInfoSize, vendorInfo
    TCG_PCR_EVENT2 (every later record): u32 pcrIndex, u32 eventType, TPML_DIGEST_VALUES
        (u32 count, {u16 hashAlg, digest} * count), u32 eventSize, event

`parse_event_log` accepts a log only if every byte is accounted for: the Spec ID event first and
well-formed, its algorithms known hashes with their true digest sizes, each later record carrying
exactly one digest of each declared algorithm, PCR indices within 0..23, sizes within bounds, no
truncation and no trailing bytes. EV_NO_ACTION records must carry all-zero digests (PFP §10.4.5):
a measured event relabelled EV_NO_ACTION to hide it from the replay is refused here.

Event types are parsed but are labels, never evidence: a truck can write any type next to any
digest. Only the replay (attest.replay) turns a log into something the TPM vouches for, and it
looks at the digests and at one type, EV_NO_ACTION, which the PFP defines as "not extended" (so
relabelling an event to or from it changes the replay and is caught there).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from attest.alg import Alg, alg_name
from attest.errors import EventLogAlgorithmMismatch, EventLogSpecIdInvalid, MalformedEventLog

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
PLATFORM_CLASS_CLIENT = 0
PLATFORM_CLASS_SERVER = 1
UINTN_SIZE_64 = 2
MAX_PCR = 23
# Bounds, generous for firmware logs (tens of KiB; a dbx variable event is the largest, ~20 KiB).
MAX_LOG_SIZE = 1 << 20
MAX_EVENT_SIZE = 1 << 18
# TPM 2.0 Part 1: PCR 0 after TPM2_Startup at locality 3 ends in 0x03; after an H-CRTM, in 0x04.
STARTUP_LOCALITIES = frozenset({0, 3, 4})

# Digest sizes of the hash algorithms a log may declare (TCG Algorithm Registry).
DIGEST_SIZES: dict[int, int] = {Alg.SHA1: 20, Alg.SHA256: 32, Alg.SHA384: 48, Alg.SHA512: 64, Alg.SM3_256: 32}


class EventType(enum.IntEnum):
    """PFP §10.4.1 event types (a label on a record; see the module docstring)."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_UNUSED = 0x00000002
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_EVENT_TAG = 0x00000006
    EV_S_CRTM_CONTENTS = 0x00000007
    EV_S_CRTM_VERSION = 0x00000008
    EV_CPU_MICROCODE = 0x00000009
    EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
    EV_TABLE_OF_DEVICES = 0x0000000B
    EV_COMPACT_HASH = 0x0000000C
    EV_IPL = 0x0000000D
    EV_IPL_PARTITION_DATA = 0x0000000E
    EV_NONHOST_CODE = 0x0000000F
    EV_NONHOST_CONFIG = 0x00000010
    EV_NONHOST_INFO = 0x00000011
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2


def event_type_name(value: int) -> str:
    try:
        return EventType(value).name
    except ValueError:
        return f"0x{value:08x}"


@dataclass(frozen=True)
class SpecIdEvent:
    """TCG_EfiSpecIDEvent: what the log declares about itself."""

    platform_class: int
    spec_version: tuple[int, int]  # (major, minor)
    spec_errata: int
    uintn_size: int
    algorithms: tuple[tuple[int, int], ...]  # (TPM_ALG_ID, digest size), in declared order
    vendor_info: bytes

    @property
    def algorithm_ids(self) -> tuple[int, ...]:
        return tuple(alg for alg, _ in self.algorithms)


@dataclass(frozen=True)
class Event:
    """One TCG_PCR_EVENT2. `number` counts records from 1 (0 is the Spec ID event); `offset` is
    where the record starts in the log. `type` is a label, see the module docstring."""

    number: int
    offset: int
    pcr: int
    type: int
    digests: tuple[tuple[int, bytes], ...]  # (TPM_ALG_ID, digest), in logged order
    data: bytes

    @property
    def type_name(self) -> str:
        return event_type_name(self.type)

    @property
    def extended(self) -> bool:
        """Whether the PFP has this record extended into its PCR (all but EV_NO_ACTION)."""
        return self.type != EventType.EV_NO_ACTION

    def digest(self, alg: int) -> bytes:
        for logged, value in self.digests:
            if logged == alg:
                return value
        raise EventLogAlgorithmMismatch(f"event {self.number} carries no {alg_name(alg)} digest")


@dataclass(frozen=True)
class EventLog:
    """A parsed crypto-agile log. `startup_locality` is that of the StartupLocality event (0 if
    none): it sets PCR 0's initial value. `raw` is exactly the parsed bytes."""

    spec_id: SpecIdEvent
    events: tuple[Event, ...]
    startup_locality: int
    raw: bytes


class _Reader:
    """A little-endian cursor; every read consumes bytes or raises MalformedEventLog."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.offset

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise MalformedEventLog(
                f"event log truncated at offset {self.offset}: {what} wants {n} bytes, {self.remaining} left"
            )
        out = self._data[self.offset : self.offset + n]
        self.offset += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack("<H", self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value


def _spec_id(r: _Reader) -> SpecIdEvent:
    """The first record; any flaw in it, truncation included, is EventLogSpecIdInvalid."""
    try:
        return _spec_id_record(r)
    except EventLogSpecIdInvalid:
        raise
    except MalformedEventLog as exc:
        raise EventLogSpecIdInvalid(f"Spec ID event: {exc.reason}") from None


def _spec_id_record(r: _Reader) -> SpecIdEvent:
    # 1. The SHA-1-format header record: PCR 0, EV_NO_ACTION, a zero digest.
    pcr, event_type, digest = r.u32("pcrIndex"), r.u32("eventType"), r.take(20, "digest")
    body = _Reader(r.take(r.u32("eventDataSize"), "event data"))
    if pcr != 0 or event_type != EventType.EV_NO_ACTION or any(digest):
        raise EventLogSpecIdInvalid(
            f"the first record is PCR {pcr} {event_type_name(event_type)} with digest {digest.hex()}; "
            "a crypto-agile log opens with PCR 0 EV_NO_ACTION and a zero digest"
        )
    # 2. TCG_EfiSpecIDEvent, every field checked and every byte consumed.
    signature = body.take(16, "signature")
    if signature != SPEC_ID_SIGNATURE:
        raise EventLogSpecIdInvalid(f"Spec ID signature is {signature!r}, not {SPEC_ID_SIGNATURE!r}")
    platform_class = body.u32("platformClass")
    minor, major, errata, uintn = (body.u8(f) for f in ("minor", "major", "errata", "uintnSize"))
    count = body.u32("numberOfAlgorithms")
    if count == 0 or count > len(DIGEST_SIZES):
        raise EventLogSpecIdInvalid(f"numberOfAlgorithms is {count}; 1..{len(DIGEST_SIZES)} allowed")
    algorithms = tuple((body.u16("algorithmId"), body.u16("digestSize")) for _ in range(count))
    vendor_info = body.take(body.u8("vendorInfoSize"), "vendorInfo")
    if body.remaining:
        raise EventLogSpecIdInvalid(f"Spec ID event has {body.remaining} trailing byte(s)")
    if platform_class not in (PLATFORM_CLASS_CLIENT, PLATFORM_CLASS_SERVER):
        raise EventLogSpecIdInvalid(f"platformClass {platform_class} is neither client (0) nor server (1)")
    if (major, minor) != (2, 0):
        raise EventLogSpecIdInvalid(f"spec version {major}.{minor}; a TPM 2.0 crypto-agile log is 2.0")
    if uintn != UINTN_SIZE_64:
        raise EventLogSpecIdInvalid(f"uintnSize {uintn}; only 2 (UINT64) is accepted")
    for alg, size in algorithms:
        if DIGEST_SIZES.get(alg) != size:
            known = f"it is {DIGEST_SIZES[alg]}" if alg in DIGEST_SIZES else "not a known hash"
            raise EventLogSpecIdInvalid(
                f"algorithm {alg_name(alg)} declared with digest size {size}; {known}"
            )
    if len({alg for alg, _ in algorithms}) != count:
        raise EventLogSpecIdInvalid("an algorithm is declared twice")
    return SpecIdEvent(platform_class, (major, minor), errata, uintn, algorithms, vendor_info)


def _event(r: _Reader, number: int, spec_id: SpecIdEvent) -> Event:
    offset = r.offset
    pcr = r.u32("pcrIndex")
    if pcr > MAX_PCR:
        raise MalformedEventLog(f"event {number} at offset {offset}: PCR index {pcr} is above {MAX_PCR}")
    event_type = r.u32("eventType")
    count = r.u32("digest count")
    sizes = dict(spec_id.algorithms)
    if count != len(sizes):
        raise EventLogAlgorithmMismatch(
            f"event {number} at offset {offset} carries {count} digest(s); the log declares {len(sizes)}"
        )
    digests: list[tuple[int, bytes]] = []
    for _ in range(count):
        alg = r.u16("hashAlg")
        if alg not in sizes or any(alg == seen for seen, _ in digests):
            raise EventLogAlgorithmMismatch(
                f"event {number} at offset {offset}: a {alg_name(alg)} digest where the log declares "
                f"one each of {', '.join(alg_name(a) for a in sizes)}"
            )
        digests.append((alg, r.take(sizes[alg], f"{alg_name(alg)} digest")))
    size = r.u32("eventSize")
    if size > MAX_EVENT_SIZE:
        raise MalformedEventLog(
            f"event {number} at offset {offset}: eventSize {size} exceeds {MAX_EVENT_SIZE}"
        )
    data = r.take(size, "event data")
    if event_type == EventType.EV_NO_ACTION and any(any(d) for _, d in digests):
        raise MalformedEventLog(f"event {number} at offset {offset}: EV_NO_ACTION with a non-zero digest")
    return Event(number, offset, pcr, event_type, tuple(digests), data)


def _startup_locality(events: Sequence[Event]) -> int:
    """The StartupLocality event's locality (PFP §10.4.5.3), or 0. It must be in PCR 0, once,
    before anything is extended into PCR 0: it describes PCR 0's initial value."""
    locality: int | None = None
    pcr0_extended = False
    for event in events:
        if event.extended:
            pcr0_extended = pcr0_extended or event.pcr == 0
            continue
        if not event.data.startswith(STARTUP_LOCALITY_SIGNATURE):
            if event.data.startswith(SPEC_ID_SIGNATURE[:13]):
                raise MalformedEventLog(f"event {event.number}: a second Spec ID event")
            continue
        where = f"StartupLocality event {event.number}"
        if len(event.data) != len(STARTUP_LOCALITY_SIGNATURE) + 1:
            raise MalformedEventLog(f"{where} is {len(event.data)} bytes, not 17")
        if event.pcr != 0 or pcr0_extended or locality is not None:
            raise MalformedEventLog(f"{where} must come once, in PCR 0, before PCR 0 is extended")
        locality = event.data[-1]
        if locality not in STARTUP_LOCALITIES:
            raise MalformedEventLog(f"{where}: locality {locality} is not one of 0, 3, 4")
    return locality or 0


def parse_event_log(data: bytes) -> EventLog:
    """Parse a crypto-agile event log; raise MalformedEventLog (or a subclass) or
    EventLogAlgorithmMismatch on anything the PFP does not allow or that is left over."""
    data = bytes(data)
    if len(data) > MAX_LOG_SIZE:
        raise MalformedEventLog(f"event log of {len(data)} bytes exceeds {MAX_LOG_SIZE}")
    r = _Reader(data)
    spec_id = _spec_id(r)
    events: list[Event] = []
    # No trailing garbage: records follow each other to the last byte, and a partial record is
    # reported as truncated by _Reader.
    while r.remaining:
        events.append(_event(r, len(events) + 1, spec_id))
    return EventLog(spec_id, tuple(events), _startup_locality(events), data)


# --- encoding (the truck agent's side; tests mutate logs with it) ----------------------------


def encode_spec_id_event(spec_id: SpecIdEvent) -> bytes:
    """The SHA-1-format TCG_PCR_EVENT carrying `spec_id` (the log's first record)."""
    body = (
        SPEC_ID_SIGNATURE
        + struct.pack(
            "<I4BI",
            spec_id.platform_class,
            spec_id.spec_version[1],
            spec_id.spec_version[0],
            spec_id.spec_errata,
            spec_id.uintn_size,
            len(spec_id.algorithms),
        )
        + b"".join(struct.pack("<HH", alg, size) for alg, size in spec_id.algorithms)
        + bytes([len(spec_id.vendor_info)])
        + spec_id.vendor_info
    )
    return struct.pack("<II", 0, EventType.EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body


def encode_event(pcr: int, event_type: int, digests: Iterable[tuple[int, bytes]], data: bytes) -> bytes:
    """One TCG_PCR_EVENT2 record. Encodes what it is given (tests use it to make bad logs)."""
    digests = list(digests)
    values = b"".join(struct.pack("<H", alg) + digest for alg, digest in digests)
    return struct.pack("<III", pcr, event_type, len(digests)) + values + struct.pack("<I", len(data)) + data


def spec_id_for(algorithms: Iterable[int], vendor_info: bytes = b"") -> SpecIdEvent:
    """A PC Client, TPM 2.0, UINT64 Spec ID event declaring `algorithms`."""
    declared = tuple((alg, DIGEST_SIZES[alg]) for alg in algorithms)
    return SpecIdEvent(PLATFORM_CLASS_CLIENT, (2, 0), 0, UINTN_SIZE_64, declared, vendor_info)


def startup_locality_data(locality: int) -> bytes:
    """TCG_EfiStartupLocalityEvent: the data of the EV_NO_ACTION StartupLocality event."""
    return STARTUP_LOCALITY_SIGNATURE + bytes([locality])
