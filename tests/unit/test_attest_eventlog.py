"""attest.eventlog and attest.replay on event logs a real swtpm boot recorded (vectors/attest/eventlog).

The good vectors must parse, replay to the PCR values the TPM held and appraise. Each negative
mutates one thing in a good log and is named after it; it must fail for its own reason.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any

import pytest

from agent.boot import truck_boot
from attest.alg import Alg
from attest.errors import (
    EventLogAlgorithmMismatch,
    EventLogReplayMismatch,
    EventLogSpecIdInvalid,
    MalformedEventLog,
    MissingSeparator,
    PcrWithoutEvents,
)
from attest.eventlog import (
    MAX_EVENT_SIZE,
    MAX_LOG_SIZE,
    EventLog,
    EventType,
    encode_event,
    encode_spec_id_event,
    parse_event_log,
    spec_id_for,
    startup_locality_data,
)
from attest.replay import AppraisedLog, appraise_event_log, initial_value, replay
from tests.unit.vectors.attest.eventlog.load import (
    ALGORITHM_COUNT_AT,
    DIGEST_AT,
    DIGEST_COUNT_AT,
    EVENT_SIZE_AT,
    FIRST_ALGORITHM_AT,
    FIRST_DIGEST_SIZE_AT,
    HASH_ALG_AT,
    PCR_AT,
    PLATFORM_CLASS_AT,
    SPEC_SIGNATURE_AT,
    UINTN_SIZE_AT,
    VERSION_MAJOR_AT,
    log_bytes,
    numbers,
    pcr_values,
    put_u8,
    put_u16,
    put_u32,
    record_at,
    split,
    swapped,
    vector,
    with_type,
    without,
)

SHA256 = Alg.SHA256
BOOT_PCRS = range(16)
ET = EventType


def appraise(log: bytes, values: dict[int, bytes] | None = None, bank: int = SHA256) -> AppraisedLog:
    return appraise_event_log(parse_event_log(log), bank, pcr_values() if values is None else values)


def separator_of(log: bytes, pcr: int) -> int:
    (number,) = numbers(log, pcr=pcr, type_=ET.EV_SEPARATOR)
    return number


# --- the good vectors ------------------------------------------------------------------------


def test_recorded_log_parses_with_its_spec_id_event() -> None:
    log = parse_event_log(log_bytes())
    spec = log.spec_id
    assert (spec.platform_class, spec.spec_version, spec.uintn_size) == (0, (2, 0), 2)
    assert spec.algorithms == ((SHA256, 32),)
    assert spec.vendor_info == b"weighstation-sim"
    assert log.startup_locality == 0
    assert len(log.events) == 35
    assert log.events[0].offset == 32 + 49  # right after the SHA-1-format Spec ID record
    assert [e.number for e in log.events] == list(range(1, 36))
    assert {e.pcr for e in log.events} == set(BOOT_PCRS)
    no_action = [e for e in log.events if not e.extended]
    assert [(e.pcr, e.data[:16]) for e in no_action] == [
        (0, b"StartupLocality\x00"),
        (0, b"SP800-155 Event\x00"),
    ]
    assert all(e.digest(SHA256) == bytes(32) for e in no_action)


@pytest.mark.parametrize("name", ["boot", "boot-locality-3"])
def test_recorded_log_replays_to_the_recorded_tpm_values(name: str) -> None:
    log = parse_event_log(log_bytes(name))
    assert log.startup_locality == vector(name)["startup_locality"]
    assert replay(log, SHA256, BOOT_PCRS) == pcr_values(name)


def test_locality_3_startup_is_pcr0_initial_value() -> None:
    log = parse_event_log(log_bytes("boot-locality-3"))
    assert initial_value(log, SHA256, 0) == bytes(31) + b"\x03"
    assert initial_value(log, SHA256, 1) == bytes(32)
    assert initial_value(log, SHA256, 17) == b"\xff" * 32  # D-RTM PCRs until a D-RTM launch
    # Same measurements, other initial value: only PCR 0 differs between the two recorded boots.
    zero, three = pcr_values("boot"), pcr_values("boot-locality-3")
    assert [p for p in BOOT_PCRS if zero[p] != three[p]] == [0]


def test_appraisal_reports_the_replayed_events_of_the_appraised_pcrs() -> None:
    appraised = appraise_event_log(parse_event_log(log_bytes()), SHA256, {9: pcr_values()[9]})
    assert appraised.pcr_values == {9: pcr_values()[9]}
    assert [(e.pcr, e.type_name, e.data) for e in appraised.events] == [
        (9, "EV_IPL", b"/vmlinuz\x00"),
        (9, "EV_IPL", b"/initrd.img\x00"),
    ]
    kernel = truck_boot().components()
    assert [e.digest for e in appraised.events] == [c.digest for c in kernel if c.pcr == 9]
    # A path is the truck's description of the kernel, not what was measured.
    assert not any(e.data_measured for e in appraised.events)


def test_appraisal_of_all_boot_pcrs_passes_and_skips_no_action_events() -> None:
    appraised = appraise_event_log(parse_event_log(log_bytes()), SHA256, pcr_values())
    assert len(appraised.events) == 33
    assert ET.EV_NO_ACTION not in {e.type for e in appraised.events}
    measured = {e.type_name for e in appraised.events if e.data_measured}
    assert {"EV_SEPARATOR", "EV_S_CRTM_VERSION", "EV_EFI_VARIABLE_DRIVER_CONFIG", "EV_EFI_ACTION"} <= measured


def test_recorded_log_is_the_agents_pure_boot_log() -> None:
    """The agent's boot is reproducible: the golden values of a release come without a TPM."""
    for name in ("boot", "boot-locality-3"):
        boot = truck_boot(startup_locality=vector(name)["startup_locality"])
        assert boot.event_log(("sha256",)) == log_bytes(name)
        assert boot.expected_pcrs("sha256") == pcr_values(name)


def test_encoding_round_trips() -> None:
    log = parse_event_log(log_bytes())
    again = encode_spec_id_event(log.spec_id) + b"".join(
        encode_event(e.pcr, e.type, e.digests, e.data) for e in log.events
    )
    assert again == log_bytes()


def test_a_log_with_two_banks_replays_each() -> None:
    boot = truck_boot()
    log = parse_event_log(boot.event_log(("sha256", "sha384")))
    assert log.spec_id.algorithm_ids == (SHA256, Alg.SHA384)
    assert replay(log, Alg.SHA384, BOOT_PCRS) == boot.expected_pcrs("sha384")
    assert replay(log, SHA256, BOOT_PCRS) == pcr_values()


# --- bad logs: structure ---------------------------------------------------------------------


def test_truncated_mid_event() -> None:
    log = log_bytes()
    cut = log[: record_at(log, 20) + 30]  # inside the digest of a separator
    with pytest.raises(MalformedEventLog, match="truncated"):
        parse_event_log(cut)


def test_truncated_at_an_event_boundary_parses_but_does_not_replay() -> None:
    """A log cut between records is well-formed: only the TPM's values expose it."""
    log = log_bytes()
    kernel_gone = log[: record_at(log, numbers(log, pcr=9)[-1])]  # up to the initrd, which is gone
    with pytest.raises(EventLogReplayMismatch) as caught:
        appraise(kernel_gone, {9: pcr_values()[9]})
    assert caught.value.pcrs == (9,)


@pytest.mark.parametrize("garbage", [b"\x00", bytes(4), b"\xff" * 64])
def test_trailing_garbage(garbage: bytes) -> None:
    with pytest.raises(MalformedEventLog):
        parse_event_log(log_bytes() + garbage)


def test_pcr_index_above_23() -> None:
    log = log_bytes()
    with pytest.raises(MalformedEventLog, match="PCR index 24"):
        parse_event_log(put_u32(log, record_at(log, 5) + PCR_AT, 24))


def test_event_size_beyond_the_bound() -> None:
    log = log_bytes()
    with pytest.raises(MalformedEventLog, match="eventSize"):
        parse_event_log(put_u32(log, record_at(log, 5) + EVENT_SIZE_AT, MAX_EVENT_SIZE + 1))


def test_event_size_beyond_the_log() -> None:
    log = log_bytes()
    with pytest.raises(MalformedEventLog, match="truncated"):
        parse_event_log(put_u32(log, record_at(log, 35) + EVENT_SIZE_AT, 1000))


def test_log_beyond_the_size_bound() -> None:
    header, records = split(log_bytes())
    padding = encode_event(16, ET.EV_EVENT_TAG, [(SHA256, bytes(32))], bytes(MAX_EVENT_SIZE))
    with pytest.raises(MalformedEventLog, match="exceeds"):
        parse_event_log(header + b"".join(records) + padding * (MAX_LOG_SIZE // MAX_EVENT_SIZE))


def test_digest_count_two() -> None:
    log = log_bytes()
    with pytest.raises(EventLogAlgorithmMismatch, match="2 digest"):
        parse_event_log(put_u32(log, record_at(log, 5) + DIGEST_COUNT_AT, 2))


def test_digest_count_huge_is_refused_before_reading() -> None:
    log = log_bytes()
    with pytest.raises(EventLogAlgorithmMismatch):
        parse_event_log(put_u32(log, record_at(log, 5) + DIGEST_COUNT_AT, 0xFFFFFFFF))


@pytest.mark.parametrize("alg", [Alg.SHA1, Alg.SHA384, 0x1234])
def test_digest_of_an_undeclared_algorithm(alg: int) -> None:
    """A SHA-1 digest (20 bytes) or a SHA-384 one (48) where the log declares only SHA-256."""
    log = log_bytes()
    with pytest.raises(EventLogAlgorithmMismatch):
        parse_event_log(put_u16(log, record_at(log, 5) + HASH_ALG_AT, alg))


def test_digest_shorter_than_declared() -> None:
    """A 20-byte digest in a record of a log declaring SHA-256: the rest of the log desynchronises."""
    log = log_bytes()
    at = record_at(log, 5) + DIGEST_AT
    with pytest.raises((MalformedEventLog, EventLogAlgorithmMismatch)):
        parse_event_log(log[: at + 20] + log[at + 32 :])


def test_no_action_event_with_a_digest() -> None:
    log = log_bytes()
    sp800 = numbers(log, type_=ET.EV_NO_ACTION)[1]
    with pytest.raises(MalformedEventLog, match="EV_NO_ACTION with a non-zero digest"):
        parse_event_log(put_u8(log, record_at(log, sp800) + DIGEST_AT, 1))


# --- bad logs: the Spec ID event -------------------------------------------------------------


def test_spec_id_missing() -> None:
    """A log that starts straight with TCG_PCR_EVENT2 records."""
    _, records = split(log_bytes())
    with pytest.raises(EventLogSpecIdInvalid):
        parse_event_log(b"".join(records))


def test_empty_log() -> None:
    with pytest.raises(EventLogSpecIdInvalid, match="truncated"):
        parse_event_log(b"")


@pytest.mark.parametrize(
    ("offset", "mutate", "match"),
    [
        (0, lambda d, at: put_u32(d, at, 1), "first record"),  # pcrIndex
        (4, lambda d, at: put_u32(d, at, ET.EV_POST_CODE), "first record"),  # eventType
        (8, lambda d, at: put_u8(d, at, 1), "first record"),  # SHA-1 digest
        (SPEC_SIGNATURE_AT + 14, lambda d, at: put_u8(d, at, ord("2")), "signature"),  # "Event02"
        (PLATFORM_CLASS_AT, lambda d, at: put_u32(d, at, 7), "platformClass"),
        (VERSION_MAJOR_AT, lambda d, at: put_u8(d, at, 1), "spec version"),
        (UINTN_SIZE_AT, lambda d, at: put_u8(d, at, 1), "uintnSize"),
        (ALGORITHM_COUNT_AT, lambda d, at: put_u32(d, at, 0), "numberOfAlgorithms"),
        (ALGORITHM_COUNT_AT, lambda d, at: put_u32(d, at, 6), "numberOfAlgorithms"),
        (FIRST_DIGEST_SIZE_AT, lambda d, at: put_u16(d, at, 20), "digest size 20; it is 32"),
        (FIRST_ALGORITHM_AT, lambda d, at: put_u16(d, at, 0x1234), "not a known hash"),
        (28, lambda d, at: put_u32(d, at, 50), "trailing"),  # eventDataSize one too large
        (28, lambda d, at: put_u32(d, at, 48), "truncated"),  # vendorInfo cut
    ],
    ids=[
        "pcr-index",
        "event-type",
        "sha1-digest",
        "signature-event02",
        "platform-class",
        "spec-version",
        "uintn-size",
        "no-algorithms",
        "too-many-algorithms",
        "digest-size",
        "unknown-algorithm",
        "event-data-size-long",
        "event-data-size-short",
    ],
)
def test_spec_id_field(offset: int, mutate: Callable[[bytes, int], bytes], match: str) -> None:
    log = log_bytes()
    with pytest.raises(EventLogSpecIdInvalid, match=match):
        parse_event_log(mutate(log, offset))


def test_spec_id_declaring_an_algorithm_twice() -> None:
    spec = spec_id_for([SHA256])
    twice = type(spec)(spec.platform_class, (2, 0), 0, 2, ((SHA256, 32), (SHA256, 32)), b"")
    with pytest.raises(EventLogSpecIdInvalid, match="twice"):
        parse_event_log(encode_spec_id_event(twice))


def test_a_second_spec_id_event() -> None:
    log = log_bytes()
    header = split(log)[0]
    again = encode_event(0, ET.EV_NO_ACTION, [(SHA256, bytes(32))], header[32:])
    with pytest.raises(MalformedEventLog, match="second Spec ID"):
        parse_event_log(log + again)


# --- StartupLocality ---------------------------------------------------------------------------


def _locality_event(locality: int, pcr: int = 0) -> bytes:
    return encode_event(pcr, ET.EV_NO_ACTION, [(SHA256, bytes(32))], startup_locality_data(locality))


def test_startup_locality_rewritten_changes_pcr0_only() -> None:
    log = log_bytes()
    rewritten = put_u8(log, record_at(log, 1) + 50 + 16, 3)  # the locality byte of the event data
    assert parse_event_log(rewritten).startup_locality == 3
    with pytest.raises(EventLogReplayMismatch) as caught:
        appraise(rewritten)
    assert caught.value.pcrs == (0,)


@pytest.mark.parametrize(
    ("place", "match"),
    [
        ("second", "once"),
        ("pcr1", "PCR 0"),
        ("after-pcr0-extended", "before PCR 0"),
        ("locality-2", "locality 2"),
    ],
)
def test_startup_locality_misplaced(place: str, match: str) -> None:
    header, records = split(log_bytes())
    if place == "second":
        records.insert(1, _locality_event(3))
    elif place == "pcr1":
        records[0] = _locality_event(0, pcr=1)
    elif place == "after-pcr0-extended":
        records.insert(5, _locality_event(3))
        del records[0]
    else:
        records[0] = _locality_event(2)
    with pytest.raises(MalformedEventLog, match=match):
        parse_event_log(header + b"".join(records))


def test_startup_locality_of_the_wrong_size() -> None:
    header, records = split(log_bytes())
    records[0] = encode_event(0, ET.EV_NO_ACTION, [(SHA256, bytes(32))], startup_locality_data(0) + b"\0")
    with pytest.raises(MalformedEventLog, match="not 17"):
        parse_event_log(header + b"".join(records))


# --- bad logs: replay and appraisal ----------------------------------------------------------


def test_reordered_events_of_one_pcr() -> None:
    log = log_bytes()
    kernel, initrd = numbers(log, pcr=9)
    with pytest.raises(EventLogReplayMismatch, match="PCR 9") as caught:
        appraise(swapped(log, kernel, initrd))
    assert caught.value.pcrs == (9,)
    assert caught.value.code == "event-log-replay-mismatch"


def test_reordered_events_of_different_pcrs_still_replay() -> None:
    """The TPM records the order within a PCR, not across PCRs: nothing to refuse."""
    log = log_bytes()
    reordered = swapped(log, numbers(log, pcr=9)[-1], numbers(log, pcr=10)[0])  # initrd <-> rootfs
    assert replay(parse_event_log(reordered), SHA256, BOOT_PCRS) == pcr_values()


def test_separator_relabelled_no_action() -> None:
    """Hiding a measured event as EV_NO_ACTION: its non-zero digest gives it away at once."""
    log = log_bytes()
    with pytest.raises(MalformedEventLog, match="EV_NO_ACTION"):
        parse_event_log(with_type(log, separator_of(log, 4), ET.EV_NO_ACTION))


def test_separator_relabelled_no_action_with_its_digest_zeroed() -> None:
    """Even made consistent, an EV_NO_ACTION is not extended: the replay of that PCR changes."""
    log = log_bytes()
    at = record_at(log, separator_of(log, 4))
    hidden = with_type(log, separator_of(log, 4), ET.EV_NO_ACTION)
    hidden = hidden[: at + DIGEST_AT] + bytes(32) + hidden[at + DIGEST_AT + 32 :]
    with pytest.raises(EventLogReplayMismatch) as caught:
        appraise(hidden)
    assert caught.value.pcrs == (4,)


def test_no_action_relabelled_as_measured() -> None:
    """The StartupLocality event relabelled EV_POST_CODE: its zero digest is now extended."""
    log = log_bytes()
    with pytest.raises(EventLogReplayMismatch) as caught:
        appraise(with_type(log, 2, ET.EV_POST_CODE))
    assert caught.value.pcrs == (0,)


@pytest.mark.parametrize("new_type", [ET.EV_EVENT_TAG, ET.EV_POST_CODE, ET.EV_IPL, 0x7FFFFFFF])
def test_measured_events_relabelled_as_other_measured_types_change_no_decision(new_type: int) -> None:
    """Types are labels: relabelling every measured event, separators included, leaves the
    replayed values, the separator check and the reported digests exactly as they were."""
    log = log_bytes()
    relabelled = log
    for number in numbers(log):
        if parse_event_log(log).events[number - 1].extended:
            relabelled = with_type(relabelled, number, new_type)
    good = appraise(log)
    bad = appraise(relabelled)
    assert bad.pcr_values == good.pcr_values
    assert [(e.pcr, e.digest, e.data) for e in bad.events] == [(e.pcr, e.digest, e.data) for e in good.events]
    assert {e.type for e in bad.events} == {new_type}


def test_quoted_pcr_without_events() -> None:
    values = pcr_values() | {16: bytes(32)}
    with pytest.raises(PcrWithoutEvents, match="PCR 16") as caught:
        appraise(log_bytes(), values)
    assert caught.value.pcr == 16


def test_quoted_pcr_whose_only_events_are_no_action() -> None:
    header, records = split(log_bytes())
    note = encode_event(16, ET.EV_NO_ACTION, [(SHA256, bytes(32))], b"not a measurement")
    with pytest.raises(PcrWithoutEvents):
        appraise(header + b"".join(records) + note, pcr_values() | {16: bytes(32)})


def test_pcr_without_events_after_its_only_events_are_dropped() -> None:
    log = log_bytes()
    with pytest.raises(PcrWithoutEvents) as caught:
        appraise(without(log, *numbers(log, pcr=15)))
    assert caught.value.pcr == 15


def test_missing_separator_even_when_the_replay_matches() -> None:
    """A boot that never closed PCR 1: the values are honest, the boot is not complete."""
    log = without(log_bytes(), separator_of(log_bytes(), 1))
    values = pcr_values() | replay(parse_event_log(log), SHA256, [1])
    with pytest.raises(MissingSeparator, match="PCR 1") as caught:
        appraise(log, values)
    assert caught.value.pcr == 1
    assert appraise(log, {p: v for p, v in values.items() if p != 1}).events  # PCR 1 not appraised


def test_error_separator() -> None:
    log = log_bytes()
    at = record_at(log, separator_of(log, 6))
    error = hashlib.sha256(b"\xff" * 4).digest()
    failed = log[: at + DIGEST_AT] + error + log[at + DIGEST_AT + 32 : at + 50] + b"\xff" * 4 + log[at + 54 :]
    values = pcr_values() | {6: replay(parse_event_log(failed), SHA256, [6])[6]}
    with pytest.raises(MissingSeparator, match="error separator"):
        appraise(failed, values)


def test_tpm_value_differs() -> None:
    values = pcr_values()
    values[9] = bytes([values[9][0] ^ 1]) + values[9][1:]
    with pytest.raises(EventLogReplayMismatch, match="PCR 9") as caught:
        appraise(log_bytes(), values)
    assert caught.value.pcrs == (9,)


def test_another_boots_values() -> None:
    """A modified kernel's TPM values against the good release's log: PCR 9 alone differs."""
    modified = truck_boot(overrides={"kernel": b"patched kernel"}).expected_pcrs()
    with pytest.raises(EventLogReplayMismatch) as caught:
        appraise(log_bytes(), modified)
    assert caught.value.pcrs == (9,)


def test_pcr_value_of_the_wrong_size() -> None:
    with pytest.raises(EventLogReplayMismatch):
        appraise(log_bytes(), pcr_values() | {5: bytes(48)})


def test_bank_the_log_does_not_carry() -> None:
    with pytest.raises(EventLogAlgorithmMismatch, match="not SHA384"):
        appraise(log_bytes(), {p: bytes(48) for p in BOOT_PCRS}, bank=Alg.SHA384)


def test_replay_refuses_pcrs_outside_0_to_23() -> None:
    with pytest.raises(ValueError, match=r"0\.\.23"):
        replay(parse_event_log(log_bytes()), SHA256, [24])


def test_error_codes_are_stable() -> None:
    assert MalformedEventLog.code == "malformed-event-log"
    assert EventLogSpecIdInvalid.code == "event-log-spec-id"
    assert EventLogAlgorithmMismatch.code == "event-log-algorithm-mismatch"
    assert PcrWithoutEvents.code == "pcr-without-events"
    assert MissingSeparator.code == "missing-separator"
    assert EventLogReplayMismatch.code == "event-log-replay-mismatch"
    assert issubclass(EventLogSpecIdInvalid, MalformedEventLog)
    assert EventLogReplayMismatch.kind == MissingSeparator.kind == "forbidden"


def test_parsed_log_keeps_its_bytes() -> None:
    log = log_bytes()
    parsed = parse_event_log(log)
    assert isinstance(parsed, EventLog)
    assert parsed.raw == log
    assert struct.unpack_from("<I", log, parsed.events[0].offset)[0] == 0  # PCR 0 first


# --- the agent's boot description (agent.boot, pure) ----------------------------------------------


def test_boot_components_follow_the_pcr_map() -> None:
    components = {c.name: (c.pcr, c.event_type) for c in truck_boot().components()}
    assert len(components) == len(truck_boot().components())  # names are unique
    assert components["crtm-version"] == (0, "EV_S_CRTM_VERSION")
    assert components["firmware"] == (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB2")
    assert components["firmware-config"] == (1, "EV_PLATFORM_CONFIG_FLAGS")
    assert components["option-rom"] == (2, "EV_EFI_BOOT_SERVICES_DRIVER")
    assert components["bootloader"] == (4, "EV_EFI_BOOT_SERVICES_APPLICATION")
    assert components["partition-table"] == (5, "EV_EFI_GPT_EVENT")
    assert components["secure-boot-db"] == (7, "EV_EFI_VARIABLE_DRIVER_CONFIG")
    assert components["kernel-cmdline"] == (8, "EV_IPL")
    assert components["kernel"] == (9, "EV_IPL")
    assert components["autonomy-rootfs"] == (10, "EV_COMPACT_HASH")
    assert [components[n][0] for n in ("perception", "planning", "safety-supervisor", "maps-and-models")] == [
        11,
        12,
        13,
        14,
    ]
    assert components["vehicle-config"] == (15, "EV_EVENT_TAG")
    kernel = next(c for c in truck_boot().components() if c.name == "kernel")
    (measured,) = [e.content for e in truck_boot().events if e.name == "kernel"]
    assert measured is not None and kernel.digest == hashlib.sha256(measured).digest()


def test_boot_depends_on_release_and_overrides_only_where_it_should() -> None:
    good = truck_boot().expected_pcrs()
    assert truck_boot().expected_pcrs() == good  # reproducible
    other_release = truck_boot(release="2026.12.0").expected_pcrs()
    # Configuration, disk layout and vehicle calibration belong to the model, not the release.
    assert {p for p in BOOT_PCRS if other_release[p] == good[p]} == {1, 3, 5, 6, 15}
    patched = truck_boot(overrides={"kernel-cmdline": b"/vmlinuz init=/bin/sh"}).expected_pcrs()
    assert [p for p in BOOT_PCRS if patched[p] != good[p]] == [8]


def test_boot_expected_values_of_unmeasured_pcrs_are_their_reset_values() -> None:
    values = truck_boot().expected_pcrs("sha256", range(24))
    assert values[16] == values[23] == bytes(32)
    assert values[17] == b"\xff" * 32


@pytest.mark.parametrize(
    "kwargs",
    [{"startup_locality": 2}, {"overrides": {"no-such-component": b""}}],
    ids=["locality-2", "unknown-component"],
)
def test_boot_refuses_what_no_truck_boots(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        truck_boot(**kwargs)


def test_appraising_no_pcr_is_refused() -> None:
    with pytest.raises(ValueError, match="no PCR"):
        appraise(log_bytes(), {})
