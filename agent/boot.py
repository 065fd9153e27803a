"""The truck's measured boot, simulated: components measured into the TPM's PCRs, with the TCG PC
Client Platform Firmware Profile (PFP) crypto-agile event log a real firmware and bootloader would
leave (attest.eventlog encodes it; the authority parses and replays it).

A boot is a pure description (`truck_boot`): every component's bytes derive from (seed, model,
release), so the golden PCR values of a release are computed without a TPM (`expected_pcrs`),
and `overrides` swaps a component's bytes to boot modified firmware. `measure_boot` extends each
measured event's digest (hash of the component's bytes, one per bank) with `TruckTpm.pcr_extend`
and returns the log. EV_NO_ACTION events are logged and never extended. agent.tpm is imported for
types only: computing golden values needs no tpm2-pytss.

PCR map: 0-7 as the PFP (§3.3.4) assigns them; 8-9 as GRUB measures; 10-15 the autonomy stack.
PCR 10 is IMA's on a stock Linux: this truck image runs no IMA, its loader measures there instead.

    PCR  what                                        event types (in log order)
    0    platform firmware (SRTM)                    EV_NO_ACTION StartupLocality + SP800-155 Event,
                                                     EV_S_CRTM_VERSION, EV_EFI_PLATFORM_FIRMWARE_BLOB2,
                                                     EV_NONHOST_CODE (safety MCU), EV_POST_CODE (ACPI)
    1    firmware configuration                      EV_PLATFORM_CONFIG_FLAGS, EV_EFI_VARIABLE_BOOT
    2    option ROMs (CAN/lidar gateway NIC)         EV_EFI_BOOT_SERVICES_DRIVER
    3    option ROM configuration                    (separator only)
    4    boot manager, bootloader                    EV_EFI_ACTION, then EV_EFI_BOOT_SERVICES_APPLICATION
    5    boot configuration: GPT (A/B slots)         EV_EFI_GPT_EVENT, EV_EFI_ACTION (ExitBootServices)
    6    platform manufacturer                       (separator only)
    7    Secure Boot policy                          EV_EFI_VARIABLE_DRIVER_CONFIG (SecureBoot, db),
                                                     then EV_EFI_VARIABLE_AUTHORITY
    8    bootloader commands, kernel command line    EV_IPL
    9    kernel, initrd                              EV_IPL
    10   autonomy base OS (rootfs)                   EV_COMPACT_HASH
    11   perception stack                            EV_EVENT_TAG
    12   planning and control                        EV_EVENT_TAG
    13   safety supervisor                           EV_EVENT_TAG
    14   HD maps and ML models                       EV_EVENT_TAG
    15   vehicle configuration (model calibration)   EV_EVENT_TAG

Every PCR 0-7 gets an EV_SEPARATOR (data 0x00000000, digest its hash) when the firmware hands
over to the boot option, as EDK2 does; PCR 4, 5 and 7 see more events after it.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from attest.alg import Alg
from attest.eventlog import (
    STARTUP_LOCALITIES,
    EventType,
    encode_event,
    encode_spec_id_event,
    spec_id_for,
    startup_locality_data,
)

if TYPE_CHECKING:
    from agent.tpm import PcrBank

DEFAULT_SEED = b"weighstation simulated fleet firmware"
DEFAULT_MODEL = "hauler-9"
DEFAULT_RELEASE = "2026.11.1"
BOOT_PCRS = range(16)
VENDOR_INFO = b"weighstation-sim"

_ALGS: dict[PcrBank, int] = {"sha1": Alg.SHA1, "sha256": Alg.SHA256, "sha384": Alg.SHA384}
_EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
_EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
_EFI_CERT_SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")
_GPT_ESP = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
_GPT_LINUX = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
# IANA Private Enterprise Number reserved for documentation (RFC 5612).
_VENDOR_PEN = 32473
# The opaque images among the components and their sizes (their bytes derive from the seed).
_BLOBS = {
    "firmware": 16384,
    "safety-mcu-firmware": 8192,
    "acpi-tables": 4096,
    "option-rom": 4096,
    "bootloader": 8192,
    "kernel": 32768,
    "initrd": 16384,
    "autonomy-rootfs": 32768,
    "perception": 16384,
    "planning": 16384,
    "safety-supervisor": 8192,
    "maps-and-models": 32768,
}


class PcrExtender(Protocol):
    """What measuring needs of a TPM (agent.tpm.TruckTpm is one)."""

    def pcr_extend(self, pcr: int, digests: Mapping[PcrBank, bytes]) -> None: ...


@dataclass(frozen=True)
class BootEvent:
    """One log record. `content` is what is measured (its hash is extended); None for EV_NO_ACTION."""

    name: str
    pcr: int
    type: int
    content: bytes | None
    data: bytes

    def digest(self, bank: PcrBank) -> bytes:
        if self.content is None:
            return bytes(hashlib.new(bank).digest_size)  # EV_NO_ACTION: zeros, never extended
        return hashlib.new(bank, self.content).digest()


@dataclass(frozen=True)
class ComponentDigest:
    """A measured component as a release manifest lists it."""

    name: str
    pcr: int
    event_type: str
    digest: bytes


@dataclass(frozen=True)
class TruckBoot:
    """A boot, in measurement order. Pure: nothing here touches a TPM."""

    model: str
    release: str
    startup_locality: int
    events: tuple[BootEvent, ...]

    def components(self, bank: PcrBank = "sha256") -> tuple[ComponentDigest, ...]:
        """Every measured component but the separators: name, PCR, event type, digest."""
        return tuple(
            ComponentDigest(e.name, e.pcr, EventType(e.type).name, e.digest(bank))
            for e in self.events
            if e.content is not None and e.type != EventType.EV_SEPARATOR
        )

    def event_log(self, banks: Sequence[PcrBank] = ("sha256",)) -> bytes:
        """The crypto-agile log of this boot, with one digest per bank, declared in that order."""
        header = encode_spec_id_event(spec_id_for((_ALGS[b] for b in banks), VENDOR_INFO))
        records = (
            encode_event(e.pcr, e.type, ((_ALGS[b], e.digest(b)) for b in banks), e.data) for e in self.events
        )
        return header + b"".join(records)

    def expected_pcrs(self, bank: PcrBank = "sha256", pcrs: Sequence[int] = BOOT_PCRS) -> dict[int, bytes]:
        """The PCR values a TPM started at `startup_locality` holds after this boot: the golden
        values of the release. Computed from the events directly, not from the encoded log."""
        size = hashlib.new(bank).digest_size
        # After TPM2_Startup(CLEAR): zeros, PCR 0 ending in the startup locality, D-RTM PCRs all ones.
        values = {p: b"\xff" * size if 17 <= p <= 22 else bytes(size) for p in pcrs}
        if 0 in values:
            values[0] = bytes(size - 1) + bytes([self.startup_locality])
        for event in self.events:
            if event.content is not None and event.pcr in values:
                values[event.pcr] = hashlib.new(bank, values[event.pcr] + event.digest(bank)).digest()
        return values


@dataclass(frozen=True)
class MeasuredBoot:
    """A boot as measured into a TPM: the log written alongside, in the banks extended."""

    boot: TruckBoot
    banks: tuple[PcrBank, ...]
    log: bytes


def measure_boot(
    tpm: PcrExtender, boot: TruckBoot, banks: Sequence[PcrBank] = ("sha256",), log_path: Path | None = None
) -> MeasuredBoot:
    """Extend every measured event of `boot` into `tpm` in each of `banks` (all must be allocated:
    swtpm here has only sha256), and write the event log to `log_path` if given."""
    for event in boot.events:
        if event.content is not None:
            tpm.pcr_extend(event.pcr, {bank: event.digest(bank) for bank in banks})
    log = boot.event_log(banks)
    if log_path is not None:
        log_path.write_bytes(log)
    return MeasuredBoot(boot, tuple(banks), log)


def truck_boot(
    model: str = DEFAULT_MODEL,
    release: str = DEFAULT_RELEASE,
    *,
    seed: bytes = DEFAULT_SEED,
    overrides: Mapping[str, bytes] | None = None,
    startup_locality: int = 0,
) -> TruckBoot:
    """The boot of `release` of `model`, reproducible from `seed`. `overrides` replaces the bytes of
    named components (see `component_names`): a modified boot. The locality is the one the TPM
    was started at (swtpm: 0); it goes in the StartupLocality event."""
    if startup_locality not in STARTUP_LOCALITIES:
        raise ValueError(f"a TPM starts up at locality 0 or 3 (4: H-CRTM), not {startup_locality}")
    parts = _default_contents(seed, model, release)
    unknown = set(overrides or {}) - set(parts)
    if unknown:
        raise ValueError(f"no component named {', '.join(sorted(unknown))}")
    parts.update(overrides or {})
    events = _events(parts, model, release, startup_locality)
    return TruckBoot(model, release, startup_locality, events)


def component_names() -> tuple[str, ...]:
    return tuple(_default_contents(DEFAULT_SEED, DEFAULT_MODEL, DEFAULT_RELEASE))


# --- what the components are made of ---------------------------------------------------------


def _blob(seed: bytes, model: str, release: str, name: str, size: int) -> bytes:
    return hashlib.shake_256(b"\0".join((seed, model.encode(), release.encode(), name.encode()))).digest(size)


def _default_contents(seed: bytes, model: str, release: str) -> dict[str, bytes]:
    parts = {name: _blob(seed, model, release, name, size) for name, size in _BLOBS.items()}
    bootloader_hash = hashlib.sha256(parts["bootloader"]).digest()
    owner = uuid.UUID(bytes=hashlib.sha256(seed + b"owner").digest()[:16], version=4)
    return parts | {
        "crtm-version": f"WS-ECU {model} {release}\0".encode("utf-16-le"),
        "firmware-config": f"model={model}\nwatchdog=on\ncan-bus=500k\nboot-slot=A\n".encode(),
        "boot-order": _efi_variable(_EFI_GLOBAL_VARIABLE, "BootOrder", struct.pack("<2H", 0, 1)),
        "secure-boot": _efi_variable(_EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01"),
        # db allows the release's bootloader by hash; the authority event names the entry used.
        "secure-boot-db": _efi_variable(
            _EFI_IMAGE_SECURITY_DATABASE, "db", _sha256_list(owner, bootloader_hash)
        ),
        "secure-boot-authority": _efi_variable(
            _EFI_IMAGE_SECURITY_DATABASE, "db", owner.bytes_le + bootloader_hash
        ),
        "partition-table": _gpt(seed, model),
        "bootloader-config": b"set root=(hd0,gpt2)",
        "kernel-cmdline": f"/vmlinuz root=PARTLABEL=rootfs_a ro ws.release={model}/{release}".encode(),
        "vehicle-config": f"model={model}\nwheelbase_mm=5900\nlidar=4\ncameras=8\nradar=6\n".encode(),
    }


def _events(parts: Mapping[str, bytes], model: str, release: str, locality: int) -> tuple[BootEvent, ...]:
    t = EventType

    def measured(name: str, pcr: int, type_: EventType, data: bytes | None = None) -> BootEvent:
        return BootEvent(name, pcr, type_, parts[name], parts[name] if data is None else data)

    def action(name: str, pcr: int, text: str) -> BootEvent:
        return BootEvent(name, pcr, t.EV_EFI_ACTION, text.encode(), text.encode())

    def image(name: str, base: int, path: bytes) -> bytes:
        return struct.pack("<4Q", base, len(parts[name]), 0, len(path)) + path

    def tag(name: str, pcr: int, tag_id: int) -> BootEvent:
        label = f"{name} {release}".encode()
        return measured(name, pcr, t.EV_EVENT_TAG, struct.pack("<II", tag_id, len(label)) + label)

    pci_nic = _pci_root() + _node(1, 1, bytes([0, 3])) + _END
    boot_file = _node(4, 4, "\\EFI\\weighstation\\grubx64.efi\0".encode("utf-16-le")) + _END
    return (
        BootEvent("startup-locality", 0, t.EV_NO_ACTION, None, startup_locality_data(locality)),
        # PFP "SP800-155 Event": vendor (IANA PEN) and the reference manifest this boot claims.
        BootEvent("sp800-155", 0, t.EV_NO_ACTION, None, _sp800_155(model, release)),
        measured("crtm-version", 0, t.EV_S_CRTM_VERSION),
        measured(
            "firmware", 0, t.EV_EFI_PLATFORM_FIRMWARE_BLOB2, _fw_blob2(b"Fv(TruckEcuMain)", parts["firmware"])
        ),
        measured("safety-mcu-firmware", 0, t.EV_NONHOST_CODE, f"safety-mcu {release}".encode()),
        measured("acpi-tables", 0, t.EV_POST_CODE, b"ACPI DATA"),
        measured("secure-boot", 7, t.EV_EFI_VARIABLE_DRIVER_CONFIG),
        measured("secure-boot-db", 7, t.EV_EFI_VARIABLE_DRIVER_CONFIG),
        measured("firmware-config", 1, t.EV_PLATFORM_CONFIG_FLAGS),
        measured("boot-order", 1, t.EV_EFI_VARIABLE_BOOT),
        measured("option-rom", 2, t.EV_EFI_BOOT_SERVICES_DRIVER, image("option-rom", 0x7F000000, pci_nic)),
        action("boot-attempt", 4, "Calling EFI Application from Boot Option"),
        *(BootEvent("separator", pcr, t.EV_SEPARATOR, bytes(4), bytes(4)) for pcr in range(8)),
        measured("secure-boot-authority", 7, t.EV_EFI_VARIABLE_AUTHORITY),
        measured(
            "bootloader", 4, t.EV_EFI_BOOT_SERVICES_APPLICATION, image("bootloader", 0x7E000000, boot_file)
        ),
        measured("partition-table", 5, t.EV_EFI_GPT_EVENT),
        # GRUB's PCR 8 strings: "<kind>: <text>\0", the digest over <text> alone.
        measured("bootloader-config", 8, t.EV_IPL, b"grub_cmd: " + parts["bootloader-config"] + b"\0"),
        measured("kernel-cmdline", 8, t.EV_IPL, b"kernel_cmdline: " + parts["kernel-cmdline"] + b"\0"),
        measured("kernel", 9, t.EV_IPL, b"/vmlinuz\0"),
        measured("initrd", 9, t.EV_IPL, b"/initrd.img\0"),
        action("exit-boot-services", 5, "Exit Boot Services Invocation"),
        action("exit-boot-services-returned", 5, "Exit Boot Services Returned with Success"),
        measured("autonomy-rootfs", 10, t.EV_COMPACT_HASH, f"autonomy-rootfs {release}".encode()),
        tag("perception", 11, 0x57530001),
        tag("planning", 12, 0x57530002),
        tag("safety-supervisor", 13, 0x57530003),
        tag("maps-and-models", 14, 0x57530004),
        tag("vehicle-config", 15, 0x57530005),
    )


# --- UEFI structures (UEFI 2.10 and PFP §10.2 layouts, little-endian) --------------------------

_END = bytes([0x7F, 0xFF, 4, 0])  # End of Hardware Device Path
_DISK_LAST_LBA = 31277231  # a 16 GB eMMC in 512-byte sectors
_GPT_LAYOUT = (
    ("esp", _GPT_ESP, 2048, 264191),
    ("boot_a", _GPT_LINUX, 264192, 526335),
    ("boot_b", _GPT_LINUX, 526336, 788479),
    ("rootfs_a", _GPT_LINUX, 788480, 16033791),
    ("rootfs_b", _GPT_LINUX, 16033792, 31277197),
)


def _node(type_: int, subtype: int, payload: bytes) -> bytes:
    return struct.pack("<BBH", type_, subtype, 4 + len(payload)) + payload


def _pci_root() -> bytes:
    return _node(2, 1, struct.pack("<II", 0x0A0341D0, 0))  # ACPI(PNP0A03, 0)


def _efi_variable(guid: uuid.UUID, name: str, data: bytes) -> bytes:
    """UEFI_VARIABLE_DATA: VariableName GUID, UnicodeNameLength, VariableDataLength, name, data."""
    return guid.bytes_le + struct.pack("<QQ", len(name), len(data)) + name.encode("utf-16-le") + data


def _sha256_list(owner: uuid.UUID, *hashes: bytes) -> bytes:
    """An EFI_SIGNATURE_LIST of EFI_CERT_SHA256 entries."""
    entries = b"".join(owner.bytes_le + h for h in hashes)
    return _EFI_CERT_SHA256.bytes_le + struct.pack("<III", 28 + len(entries), 0, 16 + 32) + entries


def _fw_blob2(description: bytes, blob: bytes) -> bytes:
    """UEFI_PLATFORM_FIRMWARE_BLOB2: description, then base and length of the measured blob."""
    return bytes([len(description)]) + description + struct.pack("<QQ", 0xFF000000, len(blob))


def _sp800_155(model: str, release: str) -> bytes:
    manifest = uuid.uuid5(uuid.NAMESPACE_URL, f"weighstation:release:{model}:{release}")
    return b"SP800-155 Event\0" + struct.pack("<I", _VENDOR_PEN) + manifest.bytes_le


def _gpt(seed: bytes, model: str) -> bytes:
    """UEFI_GPT_DATA of the truck's A/B disk: GPT header, partition count, the used entries."""

    def guid(label: str) -> bytes:
        digest = hashlib.sha256(b"\0".join((seed, model.encode(), label.encode()))).digest()
        return uuid.UUID(bytes=digest[:16], version=4).bytes_le

    entries = b"".join(
        type_.bytes_le
        + guid(name)
        + struct.pack("<QQQ", first, last, 0)
        + name.encode("utf-16-le").ljust(72, b"\0")
        for name, type_, first, last in _GPT_LAYOUT
    )
    array_crc = zlib.crc32(entries.ljust(128 * 128, b"\0"))  # the CRC covers all 128 slots
    lbas = struct.pack("<QQQQ", 1, _DISK_LAST_LBA, 34, _DISK_LAST_LBA - 33)
    tail = guid("disk") + struct.pack("<QIII", 2, 128, 128, array_crc)

    def header(crc: int) -> bytes:
        return b"EFI PART" + struct.pack("<IIII", 0x00010000, 92, crc, 0) + lbas + tail

    return header(zlib.crc32(header(0))) + struct.pack("<Q", len(_GPT_LAYOUT)) + entries
